"""Label-count benchmark: what the final backbone reaches when trained on N *true* labels.

Puts the pipeline's figure (about 80 seed labels plus the unlabeled pool) next to plain
supervised training on N images of ../shared/data/eyes/dev_labels.csv, scored by k-fold
cross-validation on the held-out dev images. Only a benchmark may read the dev labels.

    python benchmarks/ceiling.py                          # N = 80 160 320 640, 3 folds
    python benchmarks/ceiling.py --sizes 80 800 --folds 5 --plot docs/label_count.png

Prints mean ± std accuracy per N; ``--plot`` draws the curve and ``--pipeline`` adds the
pipeline's own measured accuracy as a horizontal line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import DEV, _dev_arrays, read_dev  # noqa: E402


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint test index arrays covering range(n), shuffled with ``seed``."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and {n}, got {folds}")
    return np.array_split(np.random.default_rng(seed).permutation(n), folds)


def supervised_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *, backbone: str,
                        steps: int, seed: int, batch_size: int = 32) -> float:
    """Train ``backbone`` for about ``steps`` optimizer steps on x[train] (N, C, H, W) uint8 with labels
    y[train], whatever N is; return the accuracy at 0.5 on x[test]."""
    import torch

    from pseudolabel.config.schema import SeedTrainConfig
    from pseudolabel.data.augment import to_float
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.train.fixmatch import predict_probs
    from pseudolabel.train.supervised import fit_module

    torch.manual_seed(seed)
    net = create_backbone(backbone, num_classes=int(y.max()) + 1, in_chans=x.shape[1], image_size=tuple(x.shape[-2:]))
    epochs = max(1, -(-steps * batch_size // len(train)))
    val = train[: max(8, len(train) // 10)]  # a training subset: no early stop (patience = epochs)
    fit_module(net, x[train], y[train], x[val], y[val], SeedTrainConfig(epochs=epochs, batch_size=batch_size,
               lr=2e-3, patience=epochs), seed, "ceiling", False)  # fmt: skip
    p = predict_probs(net, to_float(torch.from_numpy(x[test])))[:, 1].numpy()
    return float(np.mean((p >= 0.5) == y[test]))


def label_curve(x: np.ndarray, y: np.ndarray, sizes: list[int], folds: int, backbone: str, steps: int,
                seed: int = 0) -> dict[int, list[float]]:
    """{N: per-fold accuracies}, training on the first N of each fold's shuffled training part."""
    from tqdm import tqdm

    tests = fold_indices(len(y), folds, seed)
    out: dict[int, list[float]] = {n: [] for n in sizes}
    with tqdm(total=len(sizes) * folds, desc="label count", unit="fit") as bar:
        for k, test in enumerate(tests):
            rest = np.random.default_rng(seed + k).permutation(np.setdiff1d(np.arange(len(y)), test))
            for n in sizes:
                if n > len(rest):
                    raise ValueError(f"size {n} is more than the {len(rest)} training images of a fold")
                out[n].append(supervised_accuracy(x, y, rest[:n], test, backbone=backbone, steps=steps, seed=k))
                bar.update(1)
    return out


def plot(curve: dict[int, list[float]], path: Path, pipeline: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(curve)
    mean, std = np.array([np.mean(curve[n]) for n in ns]) * 100, np.array([np.std(curve[n]) for n in ns]) * 100
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(ns, mean, yerr=std, marker="o", capsize=3, label="supervised on N true labels")
    if pipeline is not None:
        ax.axhline(100 * pipeline, color="C2", ls="--", label="pseudolabel: ~80 seed labels + pool")
    ax.set(xscale="log", xticks=ns, xticklabels=[str(n) for n in ns], xlabel="true labels (N)",
           ylabel="dev accuracy (%)", title="What labels buy the final backbone")  # fmt: skip
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[80, 160, 320, 640], help="labeled-set sizes N")
    ap.add_argument("--folds", type=int, default=3, help="cross-validation folds over the dev labels")
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps per fit (batch 32), whatever N is")
    ap.add_argument("--backbone", default="yolov8-cls", help="the final model's backbone")
    ap.add_argument("--plot", type=Path, help="write the curve as a PNG here")
    ap.add_argument("--pipeline", type=float, help="the pipeline's measured dev accuracy (0-1), drawn as a line")
    args = ap.parse_args(argv)
    x, y, _ = _dev_arrays(ROOT, read_dev(DEV), 24, 1)
    curve = label_curve(x, y, args.sizes, args.folds, args.backbone, args.steps)
    print(f"\n{args.backbone}, {args.steps} steps, {args.folds}-fold CV on {len(y)} dev labels\n")
    print("| true labels N | dev accuracy | per fold |\n|---|---|---|")
    for n, accs in curve.items():
        print(f"| {n} | {100 * np.mean(accs):.2f} ± {100 * np.std(accs):.2f} % | "
              f"{', '.join(f'{100 * a:.1f}' for a in accs)} |")  # fmt: skip
    if args.plot:
        plot(curve, args.plot, args.pipeline)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
