"""``pseudolabel compare RUN``: backbones trained alike on a run's labeled set and validated on its
validation images, as the two-model write-up (shared/seeds/001) chose its models from a table of seven.

Every backbone gets the same budget (``compare.epochs`` supervised passes, AdamW one-cycle) on the
images now in class folders, and is validated on the seed validation split plus the held-out share
of the reviewed images (never dev labels). Writes ``RUN/compare.csv`` and ``RUN/compare.md``.
"""
from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import numpy as np
import torch

from pseudolabel.config.schema import Config, SeedTrainConfig, norm_stats
from pseudolabel.core.metrics import model_metrics
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.core.runstate import write_atomic
from pseudolabel.data.images import Problems
from pseudolabel.models.backbones import create_backbone
from pseudolabel.train.fixmatch import predict_probs
from pseudolabel.train.supervised import fit_module

COLUMNS = ("backbone", "precision", "recall", "EER", "macro F1", "accuracy", "params (M)", "train s",
           "CPU ms/image")  # fmt: skip
_YOLO = re.compile(r"^yolov8([nsmlx])-cls$")


def build(name: str, cfg: Config) -> torch.nn.Module:
    """A backbone by compare's name: ``yolov8<size>-cls`` (through yolo.py) or a registry or timm name."""
    m = _YOLO.match(name)
    kind, variant = ("yolov8-cls", m.group(1)) if m else (name, "n")
    return create_backbone(kind, num_classes=cfg.num_classes, in_chans=cfg.channels, image_size=cfg.hw,
                           input_size=cfg.compare.input_size, variant=variant, norm=norm_stats(cfg),
                           pretrained=cfg.compare.pretrained)  # fmt: skip


def cpu_latency_ms(module: torch.nn.Module, x: np.ndarray, batch: int) -> float:
    """Milliseconds per image of ``module`` on the CPU, batches of ``batch`` (best of three passes over ``x``)."""
    from pseudolabel.core.device import resolve

    cpu = resolve("cpu")
    x = np.asarray(x[: max(batch, min(len(x), 4 * batch))])
    predict_probs(module, x[:batch], batch_size=batch, device=cpu)  # warm
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        predict_probs(module, x, batch_size=batch, device=cpu)
        best = min(best, (time.perf_counter() - t) / len(x))
    return 1000 * best


def one(name: str, cfg: Config, data, seed: int, progress: bool) -> dict:
    """Train and validate one backbone; returns its table row (a dict keyed by :data:`COLUMNS`)."""
    cc = cfg.compare
    torch.manual_seed(seed)
    module = build(name, cfg)
    tc = SeedTrainConfig(epochs=cc.epochs, batch_size=cc.batch_size, lr=cc.lr, patience=cc.epochs)
    t = time.perf_counter()
    fit_module(module, data.x_lb, data.y_lb, data.x_val, data.y_val, tc, seed, f"compare {name}", progress)
    seconds = time.perf_counter() - t
    m = model_metrics(data.y_val, predict_probs(module, data.x_val).numpy().astype(np.float64), cfg.classes)
    return {"backbone": name, "precision": m["precision"], "recall": m["recall"], "EER": m.get("eer"),
            "macro F1": m["macro_f1"], "accuracy": m["accuracy"],
            "params (M)": sum(p.numel() for p in module.parameters()) / 1e6, "train s": seconds,
            "CPU ms/image": cpu_latency_ms(module, data.x_val, cc.latency_batch)}  # fmt: skip


def compare(cfg: Config, run_dir: Path, journal: Path, backbones: tuple[str, ...] | None = None,
            progress: bool = True) -> tuple[list[dict], dict]:
    """Every backbone in ``backbones`` (default ``compare.backbones``) on the run's merged set.
    Returns (rows, the merged set's counts) and writes compare.csv and compare.md into ``run_dir``."""
    from pseudolabel.stages.retrain import gather

    names = tuple(backbones or cfg.compare.backbones)
    for name in names:  # a bad name fails before anything trains
        build(name, cfg)
    data = gather(cfg, run_dir, journal, Problems(), progress)
    rows = [one(name, cfg, data, cfg.seed, progress) for name in progress_bar(progress and len(names) > 1, names,
                                                                                desc="backbones", unit="model")]
    write_atomic(run_dir / "compare.csv", to_csv(rows))
    write_atomic(run_dir / "compare.md", to_markdown(rows, data.counts, cfg))
    return rows, data.counts


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key in ("precision", "recall", "EER", "macro F1", "accuracy"):
        return f"{v:.3f}"
    return f"{v:.2f}" if key in ("params (M)", "CPU ms/image") else f"{v:.0f}" if key == "train s" else str(v)


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r[k] is None else r[k]) for k in COLUMNS} for r in rows)
    return out.getvalue()


def to_markdown(rows: list[dict], counts: dict, cfg: Config) -> str:
    """Seed 001's table (backbone, precision, recall, EER, params) first, then accuracy, macro F1,
    training seconds and CPU latency; and a line on how few images it rests on."""
    binary = cfg.num_classes == 2
    cols = [c for c in COLUMNS if binary or c != "EER"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(c, r[c]) for c in cols) + " |" for r in rows]
    n_val = counts["validation"]
    what = "precision and recall of class 1 (" + cfg.classes[1] + ") at 0.5" if binary else "macro precision and recall"
    note = (f"Trained on {counts['labeled']} labeled images for {cfg.compare.epochs} epochs each; validated on "
            f"**{n_val} images** (seed validation split plus held-out reviewed images), so a difference of "
            f"one image is {100 / max(n_val, 1):.1f} points of accuracy. {what.capitalize()}; CPU latency with batches "
            f"of {cfg.compare.latency_batch}.")  # fmt: skip
    return "\n".join(lines) + "\n\n" + note + "\n"
