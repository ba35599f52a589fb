"""Quality benchmark for `pseudolabel run` (then `retrain` and `resort`) on any pipeline with dev labels.

Reads the pipeline's ``dev_labels.csv`` (next to its images folder: true labels for pool images). Only
benchmarks and tests may read it; the pipeline never does.

    python benchmarks/quality.py                                  # eyes: run into runs/bench-quality, score it
    python benchmarks/quality.py --pipeline pipelines/cifar10.yaml --retrain --resort
    python benchmarks/quality.py --run runs/eyes                  # score an existing run folder

Prints each class folder's precision (the share of its dev-labeled images whose true label matches it)
and their macro mean, the share of the pool left unclear, each seed model's dev accuracy, and the
wall seconds of each stage; with --retrain the final model's dev accuracy, confusion matrix and the
baselines on the same seed labels; with --resort the folders again after the re-sort.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudolabel.config.schema import Config, load_config, with_overrides  # noqa: E402
from pseudolabel.core import runstate  # noqa: E402
from pseudolabel.core.metrics import classification_metrics, multiclass_metrics  # noqa: E402
from pseudolabel.data.labels import _label_of  # noqa: E402
from pseudolabel.stages.label_check import flagged_label  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "eyes" / "dev_labels.csv"  # the eyes benchmarks' default


def dev_path(cfg: Config) -> Path:
    """The pipeline's dev_labels.csv: next to its images folder."""
    images = Path(cfg.images)
    return (images if images.is_absolute() else ROOT / images).parent / "dev_labels.csv"


def read_dev(path: Path = DEV, classes: tuple[str, ...] = ("closed", "open")) -> dict[str, int]:
    """{image: class index} from a dev_labels.csv (labels by index or by class name)."""
    with open(path) as f:
        return {r["image"]: _label_of(r["label"], classes) for r in csv.DictReader(f)}


def score_run(run_dir: Path, dev: dict[str, int]) -> dict:
    """Dev-label figures for a finished run folder."""
    rows = runstate.read_predictions(run_dir)
    info = runstate.RunInfo.load(run_dir)
    out: dict = {"pool": len(rows), "folders": list(info.folders), "classes": list(info.classes)}
    out["unclear"] = sum(r["decision"] == runstate.UNCLEAR for r in rows) / len(rows)
    for k, folder in enumerate(info.folders):
        truth = [dev[r["image"]] for r in rows if r["decision"] == folder and r["image"] in dev]
        out[f"precision_{folder}"] = float(np.mean([t == k for t in truth])) if truth else float("nan")
        out[f"n_dev_{folder}"] = len(truth)
    out["macro_precision"] = float(np.nanmean([out[f"precision_{f}"] for f in info.folders]))
    lab = np.array([i for i, r in enumerate(rows) if r["image"] in dev])
    y = np.array([dev[rows[i]["image"]] for i in lab])
    for m in runstate.scored_models(run_dir):
        p = runstate.load_scores(run_dir, m)[lab]
        out[f"{m}_dev_acc"] = multiclass_metrics(y, p, info.classes)["accuracy"]
        if p.shape[1] == 2:
            out[f"{m}_dev_eer"] = classification_metrics(y, p[:, 1])["eer"]
    flagged = [r for r in rows if r.get("issue")]
    out["flagged"], out["flagged_seeds"] = len(flagged), sum(r["source"].startswith("seed") for r in flagged)
    checked = [r for r in flagged if r["image"] in dev]  # flagged images whose true label we know
    out["flagged_dev"] = len(checked)
    out["flagged_dev_wrong"] = sum(dev[r["image"]] != flagged_label(r["issue"]) for r in checked)
    out["seconds"] = json.loads((run_dir / "timings.json").read_text())
    return out


def print_table(res: dict) -> None:
    names = dict(zip(res["folders"], res["classes"]))
    print("\n| figure | value |\n|---|---|")
    for f in res["folders"]:
        title = f"{f}/" + (f" ({names[f]})" if names[f] != f else "")
        print(f"| precision of {title} | {100 * res[f'precision_{f}']:.2f} % ({res[f'n_dev_{f}']} dev images) |")
    print(f"| macro precision of the class folders | {100 * res['macro_precision']:.2f} % |")
    print(f"| unclear share of the pool | {100 * res['unclear']:.1f} % |")
    for k in [k for k in res if k.endswith("_dev_acc")]:
        name = k[: -len("_dev_acc")]
        eer = f" / EER {100 * res[name + '_dev_eer']:.1f} %" if name + "_dev_eer" in res else ""
        print(f"| {name} dev accuracy | {100 * res[k]:.1f} %{eer} |")
    print(f"| label check: flagged (seed labels) | {res['flagged']} ({res['flagged_seeds']}) |")
    print(f"| label check: flagged with a dev label / truly wrong | {res['flagged_dev']} / {res['flagged_dev_wrong']} |")
    for stage, sec in res["seconds"].items():
        print(f"| seconds: {stage} | {sec:.0f} |")


def sweep(run_dir: Path, dev: dict[str, int], thresholds_a=(0.5, 0.8, 0.9, 0.95, 0.98, 0.99),
          thresholds_b=(0.3, 0.5, 0.55, 0.6, 0.7, 0.8)) -> list[dict]:
    """Macro folder precision and the unclear share for other vote thresholds, from the run's kept
    seed-model scores (no retraining). Seed labels are not applied here, so figures differ slightly
    from the run's own folders."""
    from pseudolabel.core.vote import vote

    info = runstate.RunInfo.load(run_dir)
    rows = runstate.read_predictions(run_dir)
    a, b = (runstate.load_scores(run_dir, m) for m in info.models)  # the voters, never the final model
    lab = np.array([i for i, r in enumerate(rows) if r["image"] in dev])
    y = np.array([dev[rows[i]["image"]] for i in lab])
    out = []
    print(f"\n| threshold {info.models[0]} | threshold {info.models[1]} | macro precision | unclear |\n|---|---|---|---|")
    for ta, tb in itertools.product(thresholds_a, thresholds_b):
        d = vote(a, b, threshold=(ta, tb)).decision
        prec = [float(np.mean(y[d[lab] == c] == c)) for c in range(len(info.classes)) if (d[lab] == c).any()]
        out.append({"a": ta, "b": tb, "macro_precision": float(np.mean(prec)) if prec else float("nan"),
                    "unclear": float(np.mean(d < 0))})
        print(f"| {ta} | {tb} | {100 * out[-1]['macro_precision']:.2f} % | {100 * out[-1]['unclear']:.1f} % |")
    return out


def _dev_arrays(run_dir: Path, dev: dict[str, int], size, channels: int, images: Path | None = None):
    """(N, C, H, W) uint8 dev images, (N,) labels and the N sorted image names (eyes images by default)."""
    from pseudolabel.data.images import load_image

    images = images or ROOT.parent / "shared" / "data" / "eyes" / "images"
    names = sorted(n for n in dev if (images / n).exists())
    x = np.stack([load_image(images / n, size, channels) for n in names])
    return x, np.array([dev[n] for n in names]), names


def _images_of(cfg: Config) -> Path:
    p = Path(cfg.images)
    return p if p.is_absolute() else ROOT / p


def final_figures(run_dir: Path, dev: dict[str, int], seed: int | None, quiet: bool) -> dict:
    """Retrain the run's final model, then score it and two baselines on the dev labels."""
    from pseudolabel.serve.predict import Classifier
    from pseudolabel.stages.retrain import retrain

    cfg = with_overrides(load_config(run_dir / "config.yaml"), seed=seed)
    t = time.perf_counter()
    retrain(cfg, run_dir, run_dir / "bench-journal.csv", overwrite=True, progress=not quiet)
    out = {"retrain_seconds": time.perf_counter() - t}
    x_dev, y_dev, _ = _dev_arrays(run_dir, dev, cfg.hw, cfg.channels, _images_of(cfg))
    clf = Classifier.load(run_dir)
    p = clf.predict_array(x_dev)
    m = multiclass_metrics(y_dev, p, cfg.classes)
    fm = json.loads((run_dir / "final" / "metrics.json").read_text())
    out.update(final_acc=m["accuracy"], final_macro_f1=m["macro_f1"], final_top2=m["top2_accuracy"],
               final_confusion=m["confusion"], params=fm["parameters"], members=len(fm.get("members", [0])),
               pretrain_seconds=fm["pretrain_seconds"], train_seconds=fm["train_seconds"])  # fmt: skip
    if p.shape[1] == 2:
        out["final_eer"] = classification_metrics(y_dev, p[:, 1])["eer"]
    out.update(baselines(run_dir, cfg, x_dev, y_dev))
    out.update(throughput(clf, run_dir))
    return out


def baselines(run_dir: Path, cfg: Config, x_dev: np.ndarray, y_dev: np.ndarray) -> dict:
    """The same seed labels: the final backbone trained supervised only, and logistic regression on pixels."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from pseudolabel.config.schema import SeedTrainConfig, norm_stats
    from pseudolabel.data.images import load_image
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.train.fixmatch import predict_probs
    from pseudolabel.train.supervised import fit_module

    with open(run_dir / "split.csv") as f:
        split = list(csv.DictReader(f))
    images = _images_of(cfg)
    arr = lambda rows: np.stack([load_image(images / r["image"], cfg.hw, cfg.channels) for r in rows])  # noqa: E731
    tr, va = [r for r in split if r["split"] == "train"], [r for r in split if r["split"] == "val"]
    xt, yt, xv, yv = arr(tr), np.array([int(r["label"]) for r in tr]), arr(va), np.array([int(r["label"]) for r in va])
    torch.manual_seed(cfg.seed)
    rc = cfg.retrain
    net = create_backbone(rc.backbone, num_classes=cfg.num_classes, in_chans=cfg.channels, image_size=cfg.hw,
                          input_size=rc.input_size, variant=rc.variant, width=rc.width, norm=norm_stats(cfg))
    fit_module(net, xt, yt, xv, yv, SeedTrainConfig(epochs=60, batch_size=16, lr=2e-3, patience=60), cfg.seed, "baseline", False)
    sup = predict_probs(net, torch.from_numpy(x_dev).float() / 255).numpy()
    lr = LogisticRegression(C=0.1, max_iter=5000).fit(xt.reshape(len(xt), -1) / 255, yt)
    lrp = lr.predict_proba(x_dev.reshape(len(x_dev), -1) / 255)
    out = {"supervised_acc": float((sup.argmax(1) == y_dev).mean()), "logreg_acc": float((lrp.argmax(1) == y_dev).mean())}
    if cfg.num_classes == 2:
        out.update(supervised_eer=classification_metrics(y_dev, sup[:, 1])["eer"],
                   logreg_eer=classification_metrics(y_dev, lrp[:, 1])["eer"])
    return out


def throughput(clf, run_dir: Path, n: int = 4000, batch: int = 512) -> dict:
    """Images per second, batched on this CPU, for the TorchScript model and ONNX Runtime. A network that
    upsamples its input (a pretrained encoder at 224 px) is timed in the smaller batches its export chose,
    on fewer images."""
    import onnxruntime as ort

    if clf.batch < batch:
        batch, n = clf.batch, min(n, 20 * clf.batch)
    h, w = clf.hw
    x = np.random.default_rng(0).integers(0, 255, (n, clf.channels, h, w), dtype=np.uint8)
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
    from pseudolabel.stages.resort import resort_run

    cfg = load_config(run_dir / "config.yaml")
    summary = resort_run(run_dir, run_dir / "bench-journal.csv", cfg.resort)
    res = score_run(run_dir, dev)
    print(f"\n| after `pseudolabel resort` (accept {cfg.resort.accept}, keep_agreed {cfg.resort.keep_agreed:g}) | value |"
          "\n|---|---|")
    for f in res["folders"]:
        print(f"| precision of {f}/ | {100 * res[f'precision_{f}']:.2f} % ({res[f'n_dev_{f}']} dev images) |")
    print(f"| macro precision | {100 * res['macro_precision']:.2f} % |")
    print(f"| unclear share of the pool | {100 * res['unclear']:.1f} % |")
    print(f"| seconds | {summary['seconds']:.0f} |")
    return {**{k: res[k] for k in res if k.startswith("precision_")}, "macro_precision": res["macro_precision"],
            "unclear": res["unclear"], "seconds": summary["seconds"]}  # fmt: skip


def resort_sweep(before: list[dict], run_dir: Path, dev: dict[str, int], accepts=(0.8, 0.9, 0.95, 0.98, 0.99, 0.998),
                 keeps=(1.0, 0.95, 0.9, 0.8)) -> list[dict]:
    """Macro folder precision and the unclear share for other resort settings (one accept for every
    class): the same pure rule on the predictions.csv rows from ``before`` the real resort, with the
    final scores it kept (no files move). Assumes no review."""
    from pseudolabel.stages.resort import movable_images, resort

    info = runstate.RunInfo.load(run_dir)
    p = runstate.load_scores(run_dir, runstate.FINAL)
    now = np.array([info.decision_of(r["decision"]) for r in before])
    settle = load_config(run_dir / "config.yaml").resort.settle_flagged  # as the real resort did
    movable = movable_images(before, {r["image"]: r["decision"] for r in before}, {}, settle)  # no review
    voted = np.array([r["source"] == "vote" for r in before])
    lab = np.array([i for i, r in enumerate(before) if r["image"] in dev])
    y = np.array([dev[before[i]["image"]] for i in lab])
    out = []
    print("\n| keep_agreed | accept | macro precision | unclear |\n|---|---|---|---|")
    for k, a in itertools.product(keeps, accepts):
        d, _ = resort(p, now, movable, np.zeros(len(p), bool), accept=(a,) * p.shape[1], voted=voted, keep_agreed=k)
        prec = [float(np.mean(y[d[lab] == c] == c)) for c in range(p.shape[1]) if (d[lab] == c).any()]
        out.append({"keep_agreed": k, "accept": a, "macro_precision": float(np.mean(prec)), "unclear": float(np.mean(d < 0))})
        print(f"| {k} | {a} | {100 * out[-1]['macro_precision']:.2f} % | {100 * out[-1]['unclear']:.1f} % |")
    return out


def print_final(res: dict, classes: tuple[str, ...]) -> None:
    eer = lambda key: f" / EER {100 * res[key]:.2f} %" if key in res else ""  # noqa: E731
    print("\n| final model (retrain) | dev accuracy |\n|---|---|")
    print(f"| pipeline: FixMatch on the merged set, {res.get('members', 1)} member(s) ({res['params'] / 1e6:.2f} M params) "
          f"| {100 * res['final_acc']:.2f} %{eer('final_eer')} (macro F1 {100 * res['final_macro_f1']:.2f} %, "
          f"top-2 {100 * res['final_top2']:.2f} %) |")
    print(f"| baseline: same network, seed labels only | {100 * res['supervised_acc']:.2f} %{eer('supervised_eer')} |")
    print(f"| baseline: logistic regression on raw pixels, seed labels | {100 * res['logreg_acc']:.2f} %{eer('logreg_eer')} |")
    print("\nconfusion matrix on the dev labels (rows = true class):\n")
    print("| true \\ predicted | " + " | ".join(classes) + " |\n|---|" + "---|" * len(classes))
    for c, row in zip(classes, res["final_confusion"]):
        print(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    print(f"\nretrain wall seconds: {res['retrain_seconds']:.0f}")
    print(f"predict throughput, batched on CPU: torch {res['torch_img_s']:.0f} images/s, ONNX Runtime {res['onnx_img_s']:.0f} images/s")


STABLE = {"macro_precision": ("macro precision of the class folders", 100, "%"),
          "unclear": ("unclear share of the pool", 100, "%"),
          "yolov8-cls_dev_acc": ("seed model yolov8-cls alone: dev accuracy", 100, "%"),
          "resnet50_dev_acc": ("seed model resnet50 alone: dev accuracy", 100, "%"),
          "final_acc": ("final model: dev accuracy", 100, "%"), "final_eer": ("final model: dev EER", 100, "%"),
          "final_macro_f1": ("final model: dev macro F1", 100, "%"),
          "supervised_acc": ("baseline: same network, seed labels only: accuracy", 100, "%"),
          "logreg_acc": ("baseline: logistic regression on pixels: accuracy", 100, "%"),
          "flagged": ("label check: images flagged", 1, ""), "flagged_seeds": ("label check: seed labels flagged", 1, ""),
          "resort_macro_precision": ("after `resort`: macro precision", 100, "%"),
          "resort_unclear": ("after `resort`: unclear share of the pool", 100, "%"),
          "run_seconds": ("`run` wall seconds", 1, "s"), "retrain_seconds": ("`retrain` wall seconds", 1, "s"),
          "resort_seconds": ("`resort` wall seconds", 1, "s"),
          "torch_img_s": ("predict, TorchScript, images/s", 1, ""), "onnx_img_s": ("predict, ONNX Runtime, images/s", 1, "")}


def seeds_table(results: list[dict]) -> None:
    """Mean ± std over seeds of the figures in STABLE, then of each `run` stage's wall seconds."""
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
    ap.add_argument("--dev", type=Path, help="dev labels (default: dev_labels.csv next to the pipeline's images)")
    ap.add_argument("--out", type=Path, help="run folder (default: runs/bench-<pipeline>)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--sweep", action="store_true", help="also print precision/unclear for other vote thresholds "
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
    cfg = load_config(args.run / "config.yaml" if args.run else args.pipeline)
    dev = read_dev(args.dev or dev_path(cfg), cfg.classes)
    args.out = args.out or ROOT / "runs" / f"bench-{cfg.name}"
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
        from pseudolabel.stages.run import run_pipeline

        run_dir = out
        cfg = load_config(args.pipeline)
        images, labels = (Path(p) if Path(p).is_absolute() else ROOT / p for p in (cfg.images, cfg.labels))
        cfg = with_overrides(cfg, images=str(images), labels=str(labels), seed=seed)
        run_pipeline(cfg, run_dir, overwrite=True, progress=sys.stderr.isatty())
    res = score_run(run_dir, dev)
    print_table(res)
    if args.sweep:
        res["sweep"] = sweep(run_dir, dev)
    if retrain:
        fin = final_figures(run_dir, dev, seed, quiet=not sys.stderr.isatty())
        print_final(fin, tuple(res["classes"]))
        res["final"] = fin
    if args.resort:
        before = runstate.read_predictions(run_dir) if args.sweep else []  # the sweep replays the rule on these
        res["resort"] = resort_figures(run_dir, dev)
        if args.sweep:
            res["resort_sweep"] = resort_sweep(before, run_dir, dev)
    return res


if __name__ == "__main__":
    sys.exit(main())
