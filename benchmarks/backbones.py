"""Backbone benchmark: speed and dev accuracy of candidate final-model networks, for any pipeline.

Each candidate (a registered backbone such as tinycnn or yolov8-cls, or any timm name) is trained
supervised, with the same augmentations, optimiser and epochs, on the labeled set `pseudolabel
retrain` would use for a finished run (seed labels plus the agreed folders), then scored on the
pipeline's dev_labels.csv (next to its images): accuracy and macro F1, EER for two classes, and the
accuracy on the dev images the run left unclear (the hard ones). Speed: training images/s and
batched predict images/s. tinycnn is measured at each ``--widths``.

    python benchmarks/backbones.py --run runs/eyes
    python benchmarks/backbones.py --run runs/c10 --names tinycnn resnet18 --widths 32 64 --epochs 30
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import _dev_arrays, _images_of, dev_path, read_dev  # noqa: E402
from pseudolabel.config.schema import SeedTrainConfig, load_config  # noqa: E402
from pseudolabel.core import runstate  # noqa: E402
from pseudolabel.core.metrics import classification_metrics, multiclass_metrics  # noqa: E402
from pseudolabel.data.images import Problems  # noqa: E402

NAMES = ("tinycnn", "yolov8-cls", "resnet10t", "resnet18", "resnet50", "mobilenetv3_small_100", "mobilenetv3_large_100",
         "efficientnet_b0", "regnetx_002", "ghostnet_100", "lcnet_100", "convnext_atto")  # fmt: skip


def dev_set(run_dir: Path, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, C, H, W) uint8 dev images, (N,) class indices, (N,) bool: left unclear by the run."""
    decision = {r["image"]: r["decision"] for r in runstate.read_predictions(run_dir)}
    dev = read_dev(dev_path(cfg), cfg.classes)
    x, y, names = _dev_arrays(run_dir, dev, cfg.hw, cfg.channels, _images_of(cfg))
    return x, y, np.array([decision.get(n) == runstate.UNCLEAR for n in names])


def measure(name: str, input_size: int, width: int, data, dev, cfg, epochs: int) -> dict:
    """Train one candidate and return its figures."""
    import torch

    from pseudolabel.config.schema import norm_stats
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.train.fixmatch import predict_probs
    from pseudolabel.train.supervised import fit_module

    torch.manual_seed(cfg.seed)
    net = create_backbone(name, num_classes=len(cfg.classes), in_chans=cfg.channels, image_size=cfg.hw,
                          input_size=input_size, width=width, norm=norm_stats(cfg))  # fmt: skip
    tc = SeedTrainConfig(epochs=epochs, batch_size=64, lr=2e-3, patience=epochs)
    fit = fit_module(net, data.x_lb, data.y_lb, data.x_val, data.y_val, tc, cfg.seed, name, False)
    x, y, unclear = dev
    xf = torch.from_numpy(x).float() / 255
    predict_probs(net, xf[:256])
    t = time.perf_counter()
    probs = predict_probs(net, xf.repeat(4, 1, 1, 1), batch_size=512)[: len(x)].numpy()
    ips = 4 * len(x) / (time.perf_counter() - t)
    m = multiclass_metrics(y, probs, cfg.classes)
    right = probs.argmax(1) == y
    return {"name": name if name != "tinycnn" else f"tinycnn w{width}", "input": input_size,
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "seconds": fit.seconds,
            "train_img_s": epochs * len(data.x_lb) / fit.seconds, "predict_img_s": ips, "dev_acc": m["accuracy"],
            "macro_f1": m["macro_f1"], "dev_eer": classification_metrics(y, probs[:, 1])["eer"] if probs.shape[1] == 2
            else float("nan"), "unclear_acc": right[unclear].mean() if unclear.any() else float("nan")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished `pseudolabel run` folder")
    ap.add_argument("--names", nargs="*", default=list(NAMES))
    ap.add_argument("--input-size", nargs="*", type=int, default=[32])
    ap.add_argument("--widths", nargs="*", type=int, default=[16], help="tinycnn's first-stage channels")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    from pseudolabel.stages.retrain import gather

    cfg = load_config(args.run / "config.yaml")
    data = gather(cfg, args.run, args.run / "no-journal.csv", Problems())
    dev = dev_set(args.run, cfg)
    print(f"{len(data.x_lb)} labeled training images, {args.epochs} epochs; dev {len(dev[1])} images "
          f"({int(dev[2].sum())} left unclear by the run)\n")  # fmt: skip
    print("| backbone | input px | params (M) | train s | train img/s | predict img/s | dev acc | macro F1 "
          "| dev EER | unclear dev acc |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.input_size:
        for name in args.names:
            for width in args.widths if name == "tinycnn" else [16]:
                try:
                    r = measure(name, size, width, data, dev, cfg, args.epochs)
                except Exception as exc:  # a timm model that cannot take this input size
                    print(f"| {name} | {size} | failed: {str(exc).splitlines()[0][:80]} | | | | | | | |", flush=True)
                    continue
                pct = lambda v: "–" if np.isnan(v) else f"{100 * v:.1f} %"  # noqa: E731
                print(f"| {r['name']} | {r['input']} | {r['params_m']:.2f} | {r['seconds']:.0f} | {r['train_img_s']:.0f} "
                      f"| {r['predict_img_s']:.0f} | {pct(r['dev_acc'])} | {pct(r['macro_f1'])} | {pct(r['dev_eer'])} "
                      f"| {pct(r['unclear_acc'])} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
