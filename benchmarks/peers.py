"""What a user would do instead, side by side with our pipeline: the same seed labels and split,
scored on dev labels (shared/data/<set>/dev_labels.csv; benchmarks only). One table per pipeline.

Rows:
- **ours**: `pseudolabel run` + `retrain` with the pipeline's defaults (or an existing run: --run);
- **ultralytics trainer**: `YOLO('yolov8n-cls.yaml').train(...)` on the seed split, staged in a
  temporary folder, offline (pseudolabel/yolo.py), then its own `predict`;
- **VAE + probe, seeds (seed 000)**: a VAE on the pool, its encoder frozen, one linear layer (a
  sigmoid neuron for K = 2) trained on the seed training split only, as the write-up did;
- **retrain --pretrain vae --probe**: the same, but the probe learns from our run's folders;
- **two plain models + vote (seed 001)**: `run` with no FixMatch, no student pool labels and no
  label check: its folders and unclear share; accuracy of the two models' mean probabilities;
- **k-NN on SimCLR embeddings**: our SimCLR pretraining on the pool, then the k nearest seed images
  (cosine) vote.

Columns: accuracy and EER (K = 2) or macro F1 on dev; folder precision (macro) and unclear share
for the methods that sort a pool; wall seconds on this machine.

    python benchmarks/peers.py --pipeline pipelines/eyes.yaml
    python benchmarks/peers.py --pipeline pipelines/cifar10.yaml --json /tmp/peers-cifar10.json
    python benchmarks/peers.py --run runs/bench-eyes          # reuse a finished run (retrains it if no final/)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402

from pseudolabel.config.schema import Config, load_config, with_overrides  # noqa: E402
from pseudolabel.core.metrics import classification_metrics, multiclass_metrics  # noqa: E402


def figures(y: np.ndarray, p: np.ndarray, classes) -> dict:
    """accuracy and EER (K = 2) or macro F1 of (N, K) probabilities ``p`` against (N,) classes ``y``."""
    m = multiclass_metrics(y, p, classes)
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    if p.shape[1] == 2:
        out["eer"] = classification_metrics(y, p[:, 1])["eer"]
    return out


class Bench:
    """The pipeline, its dev labels and the seed split every row shares."""

    def __init__(self, pipeline: Path, out: Path | None, seed: int, overrides: dict):
        cfg = load_config(pipeline)
        images, labels = (Path(p) if Path(p).is_absolute() else ROOT / p for p in (cfg.images, cfg.labels))
        self.cfg = with_overrides(cfg, images=str(images), labels=str(labels), seed=seed, **overrides)
        self.out, self.images = out or ROOT / "runs" / f"peers-{cfg.name}", images
        self.dev = quality.read_dev(quality.dev_path(self.cfg), self.cfg.classes)

    def dev_arrays(self, cfg: Config):
        return quality._dev_arrays(self.out, self.dev, cfg.hw, cfg.channels, self.images)

    def split(self, run: Path) -> dict[str, list[tuple[str, int]]]:
        with open(run / "split.csv") as f:
            rows = list(csv.DictReader(f))
        return {s: [(r["image"], int(r["label"])) for r in rows if r["split"] == s] for s in ("train", "val")}


def ours(b: Bench, run: Path | None) -> tuple[dict, Path]:
    from pseudolabel.serve.predict import Classifier
    from pseudolabel.stages.retrain import retrain
    from pseudolabel.stages.run import run_pipeline

    if run is None:
        run = b.out / "ours"
        run_pipeline(b.cfg, run, overwrite=True, progress=False)
    cfg = load_config(run / "config.yaml")
    if not (run / "final" / "metrics.json").is_file():
        retrain(cfg, run, run / "bench-journal.csv", progress=False)
    s = quality.score_run(run, b.dev)
    x, y, _ = b.dev_arrays(cfg)
    row = figures(y, Classifier.load(run).predict_array(x), cfg.classes)
    final = json.loads((run / "final" / "metrics.json").read_text())
    row.update(folder_precision=s["macro_precision"], unclear=s["unclear"],
               seconds=s["seconds"]["total"] + final["seconds"])  # fmt: skip
    return row, run


def plain_vote(b: Bench) -> dict:
    from pseudolabel.core import runstate
    from pseudolabel.stages.run import run_pipeline

    cfg = with_overrides(b.cfg, student_max=0, **{"yolo.fixmatch_epochs": 0, "label_check.enabled": False})
    run = b.out / "plain"
    t = time.perf_counter()
    run_pipeline(cfg, run, overwrite=True, progress=False)
    seconds = time.perf_counter() - t
    s = quality.score_run(run, b.dev)
    rows = runstate.read_predictions(run)
    lab = [i for i, r in enumerate(rows) if r["image"] in b.dev]
    y = np.array([b.dev[rows[i]["image"]] for i in lab])
    p = np.mean([runstate.load_scores(run, m)[lab] for m in runstate.scored_models(run)], axis=0)
    return {**figures(y, p, cfg.classes), "folder_precision": s["macro_precision"], "unclear": s["unclear"],
            "seconds": seconds}  # fmt: skip


def yolo_trainer(b: Bench, split: dict, epochs: int) -> dict:
    from pseudolabel.models.yolo import ultralytics_probs, ultralytics_train, yolo_imgsz

    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "data"  # its *.cache files land here, not beside the user's images
        for part, pairs in split.items():
            for name, label in pairs:
                d = stage / part / f"{label:03d}"  # zero-padded: ultralytics sorts class folders by name
                d.mkdir(parents=True, exist_ok=True)
                os.symlink(b.images / name, d / name)
        imgsz = yolo_imgsz(b.cfg.hw)[0]
        t = time.perf_counter()
        model = ultralytics_train(stage, epochs=epochs, imgsz=imgsz, project=Path(tmp) / "project", seed=b.cfg.seed)
        _, y, names = b.dev_arrays(b.cfg)
        p = ultralytics_probs(model, [b.images / n for n in names], imgsz)
        seconds = time.perf_counter() - t
    order = [list(model.names.values()).index(f"{k:03d}") for k in range(b.cfg.num_classes)]
    return {**figures(y, p[:, order], b.cfg.classes), "seconds": seconds}


def _pool_and_seeds(b: Bench, cfg: Config, split: dict):
    from pseudolabel.data.images import Problems
    from pseudolabel.data.pool import load_pool

    pool = load_pool(b.images, cfg.image_size, cfg.channels, Problems(quiet=True), False)
    idx = pool.index()
    arrays = {}
    for part, pairs in split.items():
        arrays[part] = (np.asarray(pool.images[[idx[n] for n, _ in pairs]]), np.array([lab for _, lab in pairs]))
    return pool, arrays


def _backbone(cfg: Config, seed: int):
    import torch

    from pseudolabel.config.schema import norm_stats
    from pseudolabel.models.backbones import create_backbone

    torch.manual_seed(seed)
    rc = cfg.retrain
    return create_backbone(rc.backbone, num_classes=cfg.num_classes, in_chans=cfg.channels, image_size=cfg.hw,
                           input_size=rc.input_size, variant=rc.variant, width=rc.width, norm=norm_stats(cfg))


def vae_seeds(b: Bench, cfg: Config, split: dict) -> dict:
    from pseudolabel.train.fixmatch import predict_probs
    from pseudolabel.train.probe import fit_probe
    from pseudolabel.train.vae import attach_latent, pretrain_vae

    rc = cfg.retrain
    t = time.perf_counter()
    pool, s = _pool_and_seeds(b, cfg, split)
    net = attach_latent(_backbone(cfg, cfg.seed), rc.vae_latent)
    pretrain_vae(net, pool.images, epochs=rc.pretrain_epochs, epoch_steps=rc.pretrain_epoch_steps,
                 batch_size=rc.pretrain_batch_size, lr=rc.pretrain_lr, beta=rc.vae_beta, seed=cfg.seed, progress=False)
    fit_probe(net, *s["train"], *s["val"], num_classes=cfg.num_classes, epochs=rc.probe_steps, lr=rc.probe_lr,
              weight_decay=rc.probe_weight_decay, seed=cfg.seed, progress=False)  # fmt: skip
    x, y, _ = b.dev_arrays(cfg)
    p = predict_probs(net, x).numpy()
    return {**figures(y, p, cfg.classes), "seconds": time.perf_counter() - t}


def vae_run(b: Bench, run: Path) -> dict:
    from pseudolabel.serve.predict import Classifier
    from pseudolabel.stages.retrain import retrain

    copy = b.out / "vae-probe"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("final", "cache"))
    cfg = with_overrides(load_config(copy / "config.yaml"), **{"retrain.pretrain": "vae", "retrain.probe": True,
                                                               "retrain.members": 1, "retrain.tta": "none"})
    m = retrain(cfg, copy, copy / "bench-journal.csv", progress=False)
    x, y, _ = b.dev_arrays(cfg)
    return {**figures(y, Classifier.load(copy).predict_array(x), cfg.classes), "seconds": m["seconds"]}


def knn_simclr(b: Bench, cfg: Config, split: dict, k: int) -> dict:
    from pseudolabel.train.probe import embed
    from pseudolabel.train.simclr import pretrain_simclr

    rc = cfg.retrain
    t = time.perf_counter()
    pool, s = _pool_and_seeds(b, cfg, split)
    net = _backbone(cfg, cfg.seed)
    pretrain_simclr(net, pool.images, epochs=rc.pretrain_epochs, epoch_steps=rc.pretrain_epoch_steps,
                    batch_size=rc.pretrain_batch_size, lr=rc.pretrain_lr, temperature=rc.pretrain_temperature,
                    seed=cfg.seed, progress=False)  # fmt: skip
    x_ref = np.concatenate([s["train"][0], s["val"][0]])
    y_ref = np.concatenate([s["train"][1], s["val"][1]])
    x, y, _ = b.dev_arrays(cfg)
    ref, q = (e / np.linalg.norm(e, axis=1, keepdims=True).clip(1e-9) for e in (embed(net, x_ref).numpy(),
                                                                               embed(net, x).numpy()))
    near = np.argsort(-(q @ ref.T), axis=1)[:, :k]
    p = np.stack([np.bincount(y_ref[row], minlength=cfg.num_classes) / k for row in near])
    return {**figures(y, p, cfg.classes), "seconds": time.perf_counter() - t}


ROWS = {  # name: what it means for a user choosing a tool
    "ours": "pseudolabel run + retrain, the defaults",
    "ultralytics trainer": "yolo classify train on the seeds alone",
    "VAE + probe, seeds (seed 000)": "seed 000's method: a VAE's frozen encoder and one neuron on the seeds",
    "retrain --pretrain vae --probe": "our VAE probe, learning from the run's folders",
    "two plain models + vote (seed 001)": "seed 001's method: two supervised models and the vote, no FixMatch",
    "k-NN on SimCLR embeddings": "self-supervised embeddings and the nearest seeds, no training on labels",
}


def table(rows: dict[str, dict], binary: bool) -> str:
    pct = lambda v: "-" if v is None or v != v else f"{100 * v:.1f} %"  # noqa: E731  (NaN: no dev image there)
    lines = [f"| method | accuracy | {'EER' if binary else 'macro F1'} | folder precision | unclear share | seconds |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        second = r.get("eer") if binary else r.get("macro_f1")
        lines.append(f"| {name} | {pct(r['accuracy'])} | {pct(second)} | {pct(r.get('folder_precision'))} | "
                     f"{pct(r.get('unclear'))} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default=str(ROOT / "pipelines" / "eyes.yaml"))
    ap.add_argument("--run", type=Path, help="a finished run of the pipeline's defaults to use as 'ours'")
    ap.add_argument("--out", type=Path, help="work folder (default: runs/peers-<pipeline>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--yolo-epochs", type=int, default=50, help="ultralytics trainer epochs on the seeds")
    ap.add_argument("--knn", type=int, default=5, help="neighbours for the k-NN row")
    ap.add_argument("--only", help="comma-separated row names to run (default: all)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a pipeline key for every row (YAML value), e.g. --set limit=300 for a smoke run")
    args = ap.parse_args(argv)
    import yaml

    over = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in args.set)}
    b = Bench(Path(args.pipeline), args.out, args.seed, over)
    b.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else set(ROWS)
    rows: dict[str, dict] = {}
    row, run = ours(b, args.run)
    rows["ours"] = row
    print(f"ours: {json.dumps(row)}", file=sys.stderr, flush=True)
    cfg, split = load_config(run / "config.yaml"), b.split(run)  # the resolved config (pool mean/std) and split
    steps = {"ultralytics trainer": lambda: yolo_trainer(b, split, args.yolo_epochs),
             "VAE + probe, seeds (seed 000)": lambda: vae_seeds(b, cfg, split),
             "retrain --pretrain vae --probe": lambda: vae_run(b, run),
             "two plain models + vote (seed 001)": lambda: plain_vote(b),
             "k-NN on SimCLR embeddings": lambda: knn_simclr(b, cfg, split, args.knn)}  # fmt: skip
    for name, fn in steps.items():
        if name in only:
            rows[name] = fn()
            print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr, flush=True)  # a long run keeps each row
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
    print(f"\n{cfg.name}: {len(split['train'])} seed labels train, {len(split['val'])} validate; "
          f"{len(b.dev)} dev labels score\n")
    print(table(rows, cfg.num_classes == 2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
