"""Quality benchmark for `pseudolabel run` on the eyes pool.

Reads ../shared/data/eyes/dev_labels.csv (true labels for 1,000 pool images). Only
benchmarks and tests may read it; the pipeline never does.

    python benchmarks/quality.py                 # run the eyes pipeline into runs/bench-quality, then score it
    python benchmarks/quality.py --run runs/eyes # score an existing run folder

Prints the precision of 0/ and 1/ (the share of dev-labeled images in the folder whose
true label matches it), the share of the pool left unclear, each seed model's dev
accuracy and EER, and the wall seconds of each stage.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudolabel.config import load_config, with_overrides  # noqa: E402
from pseudolabel.metrics import classification_metrics  # noqa: E402
from pseudolabel.label_issues import flagged_label  # noqa: E402
from pseudolabel.sort import decision_of, model_columns, read_predictions  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "eyes" / "dev_labels.csv"


def read_dev(path: Path = DEV) -> dict[str, int]:
    with open(path) as f:
        return {r["image"]: int(r["label"]) for r in csv.DictReader(f)}


def score_run(run_dir: Path, dev: dict[str, int]) -> dict:
    """Dev-label figures for a finished run folder."""
    rows = read_predictions(run_dir)
    models = model_columns(list(rows[0]))
    out: dict = {"pool": len(rows)}
    out["unclear"] = sum(r["decision"] == "unclear" for r in rows) / len(rows)
    for folder in ("0", "1"):
        truth = [dev[r["image"]] for r in rows if r["decision"] == folder and r["image"] in dev]
        out[f"precision_{folder}"] = float(np.mean([t == int(folder) for t in truth])) if truth else float("nan")
        out[f"n_dev_{folder}"] = len(truth)
    lab = [r for r in rows if r["image"] in dev]
    y = np.array([dev[r["image"]] for r in lab])
    for m in models:
        s = np.array([float(r[m]) for r in lab])
        met = classification_metrics(y, s)
        out[f"{m}_dev_acc"], out[f"{m}_dev_eer"] = met["accuracy"], met["eer"]
    flagged = [r for r in rows if r.get("issue")]
    out["flagged"], out["flagged_seeds"] = len(flagged), sum(r["source"].startswith("seed") for r in flagged)
    checked = [r for r in flagged if r["image"] in dev]  # flagged images whose true label we know
    out["flagged_dev"] = len(checked)
    out["flagged_dev_wrong"] = sum(dev[r["image"]] != flagged_label(r["issue"]) for r in checked)
    out["seconds"] = json.loads((run_dir / "timings.json").read_text())
    return out


def print_table(res: dict) -> None:
    print("\n| figure | value | target |\n|---|---|---|")
    print(f"| precision of 0/ (closed) | {100 * res['precision_0']:.2f} % ({res['n_dev_0']} dev images) | >= 98.5 % |")
    print(f"| precision of 1/ (open) | {100 * res['precision_1']:.2f} % ({res['n_dev_1']} dev images) | >= 98.5 % |")
    print(f"| unclear share of the pool | {100 * res['unclear']:.1f} % | <= 20 % |")
    for k in [k for k in res if k.endswith("_dev_acc")]:
        name = k[: -len("_dev_acc")]
        print(f"| {name} dev accuracy / EER | {100 * res[k]:.1f} % / {100 * res[name + '_dev_eer']:.1f} % | |")
    print(f"| label check: flagged (seed labels) | {res['flagged']} ({res['flagged_seeds']}) | |")
    print(f"| label check: flagged with a dev label / truly wrong | {res['flagged_dev']} / {res['flagged_dev_wrong']} | |")
    for stage, sec in res["seconds"].items():
        target = "<= 300 s" if stage == "total" else ""
        print(f"| seconds: {stage} | {sec:.0f} | {target} |")


def sweep(run_dir: Path, dev: dict[str, int], margins_a=(0.3, 0.4, 0.45, 0.48, 0.49), margins_b=(0.0, 0.05, 0.1, 0.2, 0.3)):
    """Precision of 0/ and 1/ and the unclear share for other margins, from a run's scores (no retraining).
    Seed labels are not applied here, so figures differ slightly from the run's own folders."""
    from pseudolabel.vote import vote

    rows = read_predictions(run_dir)
    models = load_config(run_dir / "config.yaml").models  # the run's two voters (a re-sort adds a `final` column)
    a, b = (np.array([float(r[m]) for r in rows]) for m in models)
    lab = np.array([i for i, r in enumerate(rows) if r["image"] in dev])
    y = np.array([dev[rows[i]["image"]] for i in lab])
    print(f"\n| margin {models[0]} | margin {models[1]} | precision 0/ | precision 1/ | unclear |\n|---|---|---|---|---|")
    for ma in margins_a:
        for mb in margins_b:
            d = vote(a, b, margin=(ma, mb)).decision
            p0, p1 = (float(np.mean(y[d[lab] == c] == c)) for c in (0, 1))
            print(f"| {ma} | {mb} | {100 * p0:.2f} % | {100 * p1:.2f} % | {100 * np.mean(d == -1):.1f} % |")


def _dev_arrays(run_dir: Path, dev: dict[str, int], size: int, channels: int):
    """(N, C, H, W) uint8 dev images, (N,) labels and the N sorted image names."""
    from pseudolabel.data import load_image

    images = ROOT.parent / "shared" / "data" / "eyes" / "images"
    names = sorted(n for n in dev if (images / n).exists())
    x = np.stack([load_image(images / n, size, channels) for n in names])
    return x, np.array([dev[n] for n in names]), names


def final_figures(run_dir: Path, dev: dict[str, int], seed: int | None, quiet: bool) -> dict:
    """Retrain the run's final model, then score it and two baselines on the dev labels."""
    import time

    from pseudolabel.metrics import classification_metrics as cm
    from pseudolabel.predict import EyeStateClassifier
    from pseudolabel.retrain import retrain

    cfg = with_overrides(load_config(run_dir / "config.yaml"), seed=seed)
    t = time.perf_counter()
    retrain(cfg, run_dir, run_dir / "bench-journal.csv", overwrite=True, progress=not quiet)
    out = {"retrain_seconds": time.perf_counter() - t}
    x_dev, y_dev, _ = _dev_arrays(run_dir, dev, cfg.image_size, cfg.channels)
    clf = EyeStateClassifier.load(run_dir)
    m = cm(y_dev, clf.predict_array(x_dev))
    fm = json.loads((run_dir / "final" / "metrics.json").read_text())
    out.update(final_acc=m["accuracy"], final_eer=m["eer"], params=fm["parameters"], members=len(fm.get("members", [0])),
               pretrain_seconds=fm["pretrain_seconds"], train_seconds=fm["train_seconds"])
    out.update(baselines(run_dir, cfg, x_dev, y_dev))
    out.update(throughput(clf, run_dir))
    return out


def baselines(run_dir: Path, cfg, x_dev: np.ndarray, y_dev: np.ndarray) -> dict:
    """Same 80 seed labels: the final backbone trained supervised only, and logistic regression on pixels."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from pseudolabel.config import SeedTrainConfig
    from pseudolabel.metrics import classification_metrics as cm

    from pseudolabel.data import load_image
    from pseudolabel.fixmatch import predict_probs
    from pseudolabel.models import build_backbone, fit_module

    with open(run_dir / "split.csv") as f:
        split = list(csv.DictReader(f))
    images = Path(cfg.images)
    arr = lambda rows: np.stack([load_image(images / r["image"], cfg.image_size, cfg.channels) for r in rows])  # noqa: E731
    tr, va = [r for r in split if r["split"] == "train"], [r for r in split if r["split"] == "val"]
    xt, yt, xv, yv = arr(tr), np.array([int(r["label"]) for r in tr]), arr(va), np.array([int(r["label"]) for r in va])
    torch.manual_seed(cfg.seed)
    net = build_backbone(cfg.retrain.backbone, cfg.channels, cfg.image_size, cfg.retrain.input_size, cfg.retrain.variant)
    fit_module(net, xt, yt, xv, yv, SeedTrainConfig(epochs=60, batch_size=16, lr=2e-3, patience=60), cfg.seed, "baseline", False)
    sup = cm(y_dev, predict_probs(net, torch.from_numpy(x_dev).float() / 255)[:, 1].numpy())
    lr = LogisticRegression(C=0.1, max_iter=5000).fit(xt.reshape(len(xt), -1) / 255, yt)
    lrm = cm(y_dev, lr.predict_proba(x_dev.reshape(len(x_dev), -1) / 255)[:, 1])
    return {"supervised_acc": sup["accuracy"], "supervised_eer": sup["eer"], "logreg_acc": lrm["accuracy"], "logreg_eer": lrm["eer"]}


def throughput(clf, run_dir: Path, n: int = 4000, batch: int = 512) -> dict:
    """Images per second, batched on this CPU, for the TorchScript model and ONNX Runtime."""
    import time

    import onnxruntime as ort

    x = np.random.default_rng(0).integers(0, 255, (n, clf.channels, clf.size, clf.size), dtype=np.uint8)
    clf.predict_array(x[:batch])
    t = time.perf_counter()
    clf.predict_array(x, batch_size=batch)
    torch_ips = n / (time.perf_counter() - t)
    sess = ort.InferenceSession(str(run_dir / "final" / "model.onnx"), providers=["CPUExecutionProvider"])
    xf = x.astype(np.float32) / 255
    sess.run(None, {"images": xf[:batch]})
    t = time.perf_counter()
    for i in range(0, n, batch):
        sess.run(None, {"images": xf[i : i + batch]})
    return {"torch_img_s": torch_ips, "onnx_img_s": n / (time.perf_counter() - t)}


def resort_figures(run_dir: Path, dev: dict[str, int]) -> dict:
    """Run `pseudolabel resort` on ``run_dir`` (in place: the run must have final/), then score its folders."""
    from pseudolabel.resort import resort_run

    cfg = load_config(run_dir / "config.yaml")
    summary = resort_run(run_dir, run_dir / "bench-journal.csv", cfg.resort)
    res = score_run(run_dir, dev)
    print(f"\n| after `pseudolabel resort` ({cfg.resort.closed_below:g} / {cfg.resort.open_above:g}, keep_agreed "
          f"{cfg.resort.keep_agreed:g}) | value | target |"
          "\n|---|---|---|")
    print(f"| precision of 0/ (closed) | {100 * res['precision_0']:.2f} % ({res['n_dev_0']} dev images) | >= 99 % |")
    print(f"| precision of 1/ (open) | {100 * res['precision_1']:.2f} % ({res['n_dev_1']} dev images) | >= 99 % |")
    print(f"| unclear share of the pool | {100 * res['unclear']:.1f} % | <= 10 % |")
    print(f"| seconds | {summary['seconds']:.0f} | |")
    return {"precision_0": res["precision_0"], "precision_1": res["precision_1"], "unclear": res["unclear"],
            "seconds": summary["seconds"]}  # fmt: skip


def resort_sweep(before: list[dict], run_dir: Path, dev: dict[str, int], closed=(0.005, 0.01, 0.02, 0.05, 0.1),
                 opened=(0.99, 0.995, 0.998, 0.999), keeps=(1.0, 0.95, 0.9, 0.8)) -> list[dict]:
    """Precision of 0/ and 1/ and the unclear share for other resort settings: the same pure rule on
    the predictions.csv rows from ``before`` the real resort, with the `final` scores it left in
    ``run_dir`` (no files move). Assumes no review."""
    from pseudolabel.resort import movable_images, resort

    score = {r["image"]: float(r["final"]) for r in read_predictions(run_dir)}
    s = np.array([score[r["image"]] for r in before])
    now = np.array([decision_of(r["decision"]) for r in before])
    settle = load_config(run_dir / "config.yaml").resort.settle_flagged  # as the real resort did
    movable = movable_images(before, {r["image"]: r["decision"] for r in before}, set(), settle)  # no review
    voted = np.array([r["source"] == "vote" for r in before])
    lab = np.array([i for i, r in enumerate(before) if r["image"] in dev])
    y = np.array([dev[before[i]["image"]] for i in lab])
    out = []
    print("\n| keep_agreed | closed_below | open_above | precision 0/ | precision 1/ | unclear |\n|---|---|---|---|---|---|")
    for k, c, o in itertools.product(keeps, closed, opened):
        d, _ = resort(s, now, movable, np.zeros(len(s), bool), closed_below=c, open_above=o, voted=voted, keep_agreed=k)
        p0, p1 = (float(np.mean(y[d[lab] == j] == j)) for j in (0, 1))
        out.append({"keep_agreed": k, "closed_below": c, "open_above": o, "precision_0": p0, "precision_1": p1,
                    "unclear": float(np.mean(d == -1))})  # fmt: skip
        print(f"| {k} | {c} | {o} | {100 * p0:.2f} % | {100 * p1:.2f} % | {100 * np.mean(d == -1):.1f} % |")
    return out


def print_final(res: dict) -> None:
    print("\n| final model (retrain) | dev accuracy | dev EER | target |\n|---|---|---|---|")
    print(f"| pipeline: FixMatch on the merged set, {res.get('members', 1)} member(s) ({res['params'] / 1e6:.2f} M params) "
          f"| {100 * res['final_acc']:.2f} % | {100 * res['final_eer']:.2f} % | >= 97 %, <= 3 % |")
    print(f"| baseline: same network, 80 seed labels only | {100 * res['supervised_acc']:.2f} % | {100 * res['supervised_eer']:.2f} % | |")
    print(f"| baseline: logistic regression on raw pixels, 80 seed labels | {100 * res['logreg_acc']:.2f} % | {100 * res['logreg_eer']:.2f} % | |")
    print(f"\nretrain wall seconds: {res['retrain_seconds']:.0f} (target <= 900)")
    print(f"predict throughput, batched on CPU: torch {res['torch_img_s']:.0f} images/s, ONNX Runtime {res['onnx_img_s']:.0f} images/s")


STABLE = {"precision_0": ("precision of 0/", 100, "%"), "precision_1": ("precision of 1/", 100, "%"),
          "unclear": ("unclear share of the pool", 100, "%"),
          "yolov8-cls_dev_acc": ("seed model yolov8-cls alone: dev accuracy", 100, "%"),
          "resnet50_dev_acc": ("seed model resnet50 alone: dev accuracy", 100, "%"),
          "final_acc": ("final model: dev accuracy", 100, "%"), "final_eer": ("final model: dev EER", 100, "%"),
          "supervised_acc": ("baseline: same network, 80 seed labels only: accuracy", 100, "%"),
          "supervised_eer": ("baseline: same network, 80 seed labels only: EER", 100, "%"),
          "logreg_acc": ("baseline: logistic regression on pixels: accuracy", 100, "%"),
          "logreg_eer": ("baseline: logistic regression on pixels: EER", 100, "%"),
          "flagged": ("label check: images flagged", 1, ""), "flagged_seeds": ("label check: seed labels flagged", 1, ""),
          "resort_precision_0": ("after `resort`: precision of 0/", 100, "%"),
          "resort_precision_1": ("after `resort`: precision of 1/", 100, "%"),
          "resort_unclear": ("after `resort`: unclear share of the pool", 100, "%"),
          "run_seconds": ("`run` wall seconds", 1, "s"), "retrain_seconds": ("`retrain` wall seconds", 1, "s"),
          "pretrain_seconds": ("`retrain` stage: SimCLR, all members", 1, "s"),
          "train_seconds": ("`retrain` stage: warm-up and FixMatch, all members", 1, "s"),
          "resort_seconds": ("`resort` wall seconds", 1, "s"),
          "torch_img_s": ("predict, TorchScript, images/s", 1, ""), "onnx_img_s": ("predict, ONNX Runtime, images/s", 1, "")}


def seeds_table(results: list[dict]) -> None:
    """Mean ± std over seeds of the figures in STABLE, then of each `run` stage's wall seconds.

    ``results``: one dict per seed as `main_one` returns it (run figures, ``seconds``, ``final``)."""
    flat = [{**r, **r.get("final", {}), **{f"resort_{k}": v for k, v in r.get("resort", {}).items()},
             "run_seconds": r["seconds"]["total"]} for r in results]  # fmt: skip
    rows = [(label, scale, unit, [f[key] for f in flat if key in f]) for key, (label, scale, unit) in STABLE.items()]
    stages = [{k.split(" (")[0]: v for k, v in r["seconds"].items()} for r in results]  # "train resnet50 (3080 labeled)"
    rows += [(f"`run` stage: {stage}", 1, "s", [s[stage] for s in stages if stage in s]) for stage in stages[0] if stage != "total"]
    print(f"\n| figure | mean ± std over {len(flat)} seeds | per seed |\n|---|---|---|")
    for label, scale, unit, values in rows:
        v = np.array(values, dtype=float) * scale
        if len(v):
            print(f"| {label} | {v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f} {unit} | "
                  + ", ".join(f"{x:.2f}" for x in v) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="score this existing run folder instead of running")
    ap.add_argument("--pipeline", default=str(ROOT / "pipelines" / "eyes.yaml"))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-quality")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--sweep", action="store_true", help="also print precision/unclear for other margins "
                    "(and, with --resort, for other resort thresholds)")
    ap.add_argument("--retrain", action="store_true", help="also retrain the final model and score it and the baselines")
    ap.add_argument("--resort", action="store_true", help="after --retrain (or on a --run with final/), run "
                    "`pseudolabel resort` on the run in place and score its folders again")
    ap.add_argument("--seeds", type=int, help="run, retrain and resort with seeds 0..N-1 into OUT/seedK; print mean ± std")
    ap.add_argument("--table", type=Path, help="print the mean ± std table again from the --json of a --seeds run")
    args = ap.parse_args(argv)
    if args.table:
        seeds_table(json.loads(args.table.read_text()))
        return 0
    dev = read_dev()
    if args.seeds:
        results, args.resort = [], True
        for k in range(args.seeds):
            results.append(main_one(args, dev, k, retrain=True, out=args.out / f"seed{k}"))
            print(f"seed {k} done", flush=True)
        seeds_table(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    res = main_one(args, dev, args.seed, args.retrain, run_dir=args.run, out=args.out)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


def main_one(args, dev: dict[str, int], seed: int | None, retrain: bool, run_dir: Path | None = None,
             out: Path | None = None) -> dict:
    """Score ``run_dir``, or first run the pipeline into ``out`` when no run_dir is given; optionally retrain."""
    if run_dir is None:
        from pseudolabel.pipeline import run_pipeline

        run_dir = out
        shared = ROOT.parent / "shared" / "data" / "eyes"
        cfg = with_overrides(load_config(args.pipeline), images=str(shared / "images"),
                             labels=str(shared / "targets.json"), seed=seed)  # fmt: skip
        run_pipeline(cfg, run_dir, overwrite=True, progress=sys.stderr.isatty())
    res = score_run(run_dir, dev)
    print_table(res)
    if args.sweep:
        sweep(run_dir, dev)
    if retrain:
        fin = final_figures(run_dir, dev, seed, quiet=not sys.stderr.isatty())
        print_final(fin)
        res["final"] = fin
    if args.resort:
        before = read_predictions(run_dir) if args.sweep else []  # the sweep replays the rule on these
        res["resort"] = resort_figures(run_dir, dev)
        if args.sweep:
            res["resort_sweep"] = resort_sweep(before, run_dir, dev)
    return res


if __name__ == "__main__":
    sys.exit(main())
