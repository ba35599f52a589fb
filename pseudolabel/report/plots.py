"""The report's pictures (matplotlib, imported on first use)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pseudolabel.core.runstate import UNCLEAR


def _plt():
    from pseudolabel.core.home import pyplot

    return pyplot()


def folder_title(folder: str, name: str | None = None) -> str:
    """"0/ (closed)", "airplane/" or "unclear/"."""
    return f"{folder}/" if not name or name == folder else f"{folder}/ ({name})"


def score_caption(classes: tuple[str, ...], pa: np.ndarray, pb: np.ndarray) -> str:
    """A short caption of two models' (K,) probabilities: P(class 1) of each for K = 2 ("0.98/0.71"),
    else each top probability, with the class names where the models disagree."""
    if len(pa) == 2:
        return f"{pa[1]:.2f}/{pb[1]:.2f}"
    ca, cb = int(np.argmax(pa)), int(np.argmax(pb))
    if ca == cb:
        return f"{pa[ca]:.2f}/{pb[cb]:.2f}"
    return f"{classes[ca][:5]} {pa[ca]:.2f}/{classes[cb][:5]} {pb[cb]:.2f}"


def _colours(k: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def scatter_plot(a: np.ndarray, b: np.ndarray, decision: np.ndarray, names: tuple[str, str],
                 thresholds: tuple[float, float], classes: tuple[str, ...], path: Path) -> None:
    """Two models' (N, K) probabilities, coloured by decision, with the threshold lines: P(class 1)
    against P(class 1) for K = 2, each model's top probability against the other's for K > 2."""
    plt = _plt()
    k = a.shape[1]
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    x, y = (a[:, 1], b[:, 1]) if k == 2 else (a.max(1), b.max(1))
    groups = [(c, col, f"{classes[c]}") for c, col in zip(range(k), _colours(k))] + [(-1, "tab:gray", UNCLEAR)]
    if k == 2:
        groups = [(0, "tab:blue", classes[0]), (1, "tab:orange", classes[1]), (-1, "tab:gray", UNCLEAR)]
    for d, colour, label in groups:
        m = decision == d
        ax.scatter(x[m], y[m], s=6, alpha=0.5, color=colour, label=f"{label} ({int(m.sum())})")
    for t, line in ((thresholds[0], ax.axvline), (thresholds[1], ax.axhline)):
        line(t, color="k", lw=0.6, ls="--")
        if k == 2:
            line(1 - t, color="k", lw=0.6, ls="--")
    what = f"P({classes[1]})" if k == 2 else "top probability"
    ax.set(xlabel=f"{names[0]} {what}", ylabel=f"{names[1]} {what}", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title="Seed model scores on the pool")
    ax.legend(loc="center left", fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sample_grid(images: np.ndarray, titles: list[str], path: Path, cols: int = 12, scale: int = 3) -> None:
    """A PNG grid of (N, C, H, W) uint8 images, upscaled with nearest-neighbour, one caption each."""
    plt = _plt()
    n = max(len(images), 1)
    rows = int(np.ceil(n / cols))
    h, w = (images.shape[-2], images.shape[-1]) if len(images) else (24, 24)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * max(w * scale, 72) / 72, rows * (h * scale + 14) / 72), dpi=72)
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, img, title in zip(np.atleast_1d(axes).ravel(), images, titles):
        pic = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        ax.imshow(pic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def curves_plot(histories: dict[str, list[dict]], path: Path) -> None:
    """Training and validation loss per epoch for each seed model (and round)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for name, hist in histories.items():
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]
        line = ax.plot(ep, [h["train_loss"] for h in hist], label=f"{name} train")[0]
        ax.plot(ep, [h["val_loss"] for h in hist], ls="--", color=line.get_color(), label=f"{name} val")
    ax.set(xlabel="epoch", ylabel="loss", title="Seed model training")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confusion_plot(cm: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """The K x K confusion matrix (rows = true class) as a heat map with counts."""
    plt = _plt()
    m = np.asarray(cm)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * k, 1.0 + 0.5 * k), dpi=110)
    ax.imshow(m, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")  # fmt: skip
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def review_curve_plot(points: list[dict], png: Path) -> None:
    """Final-model dev accuracy against the number of reviewed images (from benchmarks/review_curve.py)."""
    plt = _plt()
    x = [p["answers"] for p in points]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax.plot(x, [100 * p["dev_acc"] for p in points], "o-", label="all dev images")
    ax.plot(x, [100 * p["held_out_acc"] for p in points], "s--", label="dev images not reviewed")
    ax.set(xlabel="unclear images reviewed (queue order)", ylabel="final model dev accuracy (%)", title="What review buys")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def resort_plot(probs: np.ndarray, accept: tuple[float, ...], classes: tuple[str, ...], png: Path,
                keep_agreed: float = 1.0) -> None:
    """Histogram of the final model's top probability per image (N, K) on a log-odds axis, with each
    class's acceptance threshold and, when ``keep_agreed`` < 1, the line a vote decision stays above."""
    plt = _plt()
    top = np.asarray(probs, dtype=np.float64).max(1)
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    ax.hist(_logit(top), bins=80, color="0.55")
    for t in sorted(set(accept)):
        who = [c for c, a in zip(classes, accept) if a == t]
        ax.axvline(_logit(t), ls="--", color="C1", lw=0.8, label=f"accept at {t:g}: {', '.join(who)[:40]}")
    if keep_agreed < 1.0:
        ax.axvline(_logit(keep_agreed), color="C2", ls=":", label=f"a vote decision stays at >= {keep_agreed:g}")
    ax.set(xlabel="final model: log-odds of its top probability", ylabel="images", yscale="log",
           title="Re-sort thresholds")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def final_plots(y: np.ndarray, probs: np.ndarray, classes: list[str], cm: list[list[int]],
                histories: list[list[dict]], out: Path) -> None:
    """For the final model on the validation images ((N,) true classes, (N, K) probabilities):
    confusion.png, hist.png (top probability, right and wrong; P(class 1) per true class for K = 2),
    roc.png for K = 2, and curves.png (losses and mask rate, one set of lines per member)."""
    plt = _plt()
    confusion_plot(cm, classes, out / "confusion.png", "Final model on the validation images")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    if probs.shape[1] == 2:
        _roc_plot(y, probs[:, 1], classes, out / "roc.png")
        for c, name in enumerate(classes):
            ax.hist(probs[y == c, 1], bins=np.linspace(0, 1, 26), alpha=0.6, label=f"true {name} ({int((y == c).sum())})")
        ax.set(xlabel=f"P({classes[1]})", ylabel="images", title="Scores per true class")
    else:
        right = probs.argmax(1) == y
        for m, label in ((right, "right"), (~right, "wrong")):
            ax.hist(probs[m].max(1), bins=np.linspace(0, 1, 26), alpha=0.6, label=f"{label} ({int(m.sum())})")
        ax.set(xlabel="top probability", ylabel="images", title="Top probability, right and wrong")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "hist.png")
    plt.close(fig)
    _curves(histories, out / "curves.png")


def _roc_plot(y: np.ndarray, score: np.ndarray, classes: list[str], path: Path) -> None:
    from pseudolabel.core.metrics import eer, roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(y, score)
    e, thr = eer(y, score)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(fpr, tpr, lw=1.5)
    ax.plot([0, 1], [0, 1], ls=":", c="gray")
    ax.plot([e], [1 - e], "o", label=f"EER {100 * e:.1f} % at {thr:.2f}")
    ax.set(xlabel=f"false {classes[1]} rate", ylabel=f"true {classes[1]} rate", title="ROC on the validation images")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _curves(histories: list[list[dict]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for k, history in enumerate(histories):
        ep, tag = [h["epoch"] for h in history], f" (member {k + 1})" if len(histories) > 1 else ""
        ax.plot(ep, [h["train_loss"] for h in history], c="C0", alpha=1 / (k + 1), label="train loss" + tag)
        ax.plot(ep, [h["val_loss"] for h in history], c="C1", alpha=1 / (k + 1), label="validation loss" + tag)
        if "mask_rate" in history[0]:  # a linear probe has none
            ax.plot(ep, [h["mask_rate"] for h in history], c="C2", alpha=1 / (k + 1), ls="--",
                    label="mask rate (unlabeled above τ)" + tag)  # fmt: skip
    ax.set(xlabel="epoch", title="FixMatch training" if "mask_rate" in histories[0][0] else "linear probe")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
