"""Backbone benchmark: speed and accuracy of candidate final-model networks at 24x24 on this CPU.

Each candidate (any timm name, or yolov8-cls) is trained supervised, with the same
augmentations, optimiser and epochs, on the labeled set `pseudolabel retrain` would use
for a finished run (seed labels plus the agreed folders), then scored on
../shared/data/eyes/dev_labels.csv: overall and on the dev images the run left unclear
(the hard ones). Speed: training images/s and batched predict images/s.

    python benchmarks/backbones.py --run runs/eyes
    python benchmarks/backbones.py --run runs/eyes --names yolov8-cls resnet18 --input-size 32 64
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import _dev_arrays, read_dev  # noqa: E402
from pseudolabel.config import SeedTrainConfig, load_config  # noqa: E402
from pseudolabel.data import Problems  # noqa: E402
from pseudolabel.metrics import classification_metrics  # noqa: E402

NAMES = ("tinycnn", "yolov8-cls", "resnet10t", "resnet18", "resnet50", "mobilenetv3_small_100", "mobilenetv3_large_100",
         "efficientnet_b0", "regnetx_002", "ghostnet_100", "lcnet_100", "convnext_atto")  # fmt: skip


def dev_set(run_dir: Path, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, C, H, W) uint8 dev images, (N,) labels, (N,) bool: left unclear by the run."""
    with open(run_dir / "predictions.csv") as f:
        decision = {r["image"]: r["decision"] for r in csv.DictReader(f)}
    x, y, names = _dev_arrays(run_dir, read_dev(), cfg.image_size, cfg.channels)
    return x, y, np.array([decision.get(n) == "unclear" for n in names])


def measure(name: str, input_size: int, data, dev, cfg, epochs: int) -> dict:
    """Train one candidate and return its figures."""
    import torch

    from pseudolabel.fixmatch import predict_probs
    from pseudolabel.models import build_backbone, fit_module

    torch.manual_seed(cfg.seed)
    net = build_backbone(name, cfg.channels, cfg.image_size, input_size)
    tc = SeedTrainConfig(epochs=epochs, batch_size=64, lr=2e-3, patience=epochs)
    fit = fit_module(net, data.x_lb, data.y_lb, data.x_val, data.y_val, tc, cfg.seed, name, False)
    x, y, unclear = dev
    xf = torch.from_numpy(x).float() / 255
    predict_probs(net, xf[:256])
    t = time.perf_counter()
    score = predict_probs(net, xf.repeat(4, 1, 1, 1), batch_size=512)[: len(x), 1].numpy()
    ips = 4 * len(x) / (time.perf_counter() - t)
    right = (score >= 0.5) == y
    return {"name": name, "input": input_size, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "train_img_s": epochs * len(data.x_lb) / fit.seconds, "predict_img_s": ips, "dev_acc": right.mean(),
            "dev_eer": classification_metrics(y, score)["eer"], "unclear_acc": right[unclear].mean()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished `pseudolabel run` folder")
    ap.add_argument("--names", nargs="*", default=list(NAMES))
    ap.add_argument("--input-size", nargs="*", type=int, default=[32])
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    from pseudolabel.retrain import gather

    cfg = load_config(args.run / "config.yaml")
    data = gather(cfg, args.run, args.run / "no-journal.csv", Problems())
    dev = dev_set(args.run, cfg)
    print(f"{len(data.x_lb)} labeled training images, {args.epochs} epochs; dev {len(dev[1])} images "
          f"({int(dev[2].sum())} left unclear by the run)\n")  # fmt: skip
    print("| backbone | input px | params (M) | train img/s | predict img/s | dev acc | dev EER | unclear dev acc |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.input_size:
        for name in args.names:
            try:
                r = measure(name, size, data, dev, cfg, args.epochs)
            except Exception as exc:  # a timm model that cannot take this input size
                print(f"| {name} | {size} | failed: {str(exc).splitlines()[0][:80]} | | | | | |", flush=True)
                continue
            print(f"| {r['name']} | {r['input']} | {r['params_m']:.2f} | {r['train_img_s']:.0f} | {r['predict_img_s']:.0f} "
                  f"| {100 * r['dev_acc']:.1f} % | {100 * r['dev_eer']:.1f} % | {100 * r['unclear_acc']:.1f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
