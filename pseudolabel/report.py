"""The run report: a markdown page with a score scatter, sample grids and tables."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .sort import write_atomic
from .vote import UNCLEAR

_FOLDER_TITLES = {"0": "0/ (closed)", "1": "1/ (open)", "unclear": "unclear/ (queue order)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_plot(score_a: np.ndarray, score_b: np.ndarray, decision: np.ndarray, names: tuple[str, str],
                 margin: tuple[float, float], path: Path) -> None:
    """Model A's score against model B's, coloured by decision, with the margin box."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    for d, colour, label in ((0, "tab:blue", "0/ closed"), (1, "tab:orange", "1/ open"), (UNCLEAR, "tab:gray", "unclear")):
        m = decision == d
        ax.scatter(score_a[m], score_b[m], s=6, alpha=0.5, c=colour, label=f"{label} ({int(m.sum())})")
    for sign in (-1, 1):
        ax.axvline(0.5 + sign * margin[0], color="k", lw=0.6, ls="--")
        ax.axhline(0.5 + sign * margin[1], color="k", lw=0.6, ls="--")
    ax.set(xlabel=f"{names[0]} P(open)", ylabel=f"{names[1]} P(open)", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title="Seed model scores on the pool")
    ax.legend(loc="center left", fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sample_grid(images: np.ndarray, titles: list[str], path: Path, cols: int = 12, scale: int = 3) -> None:
    """A PNG grid of (N, C, H, W) uint8 images, upscaled with nearest-neighbour, one caption each."""
    plt = _plt()
    n = max(len(images), 1)
    rows = int(np.ceil(n / cols))
    h, w = (images.shape[-2], images.shape[-1]) if len(images) else (24, 24)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * w * scale / 72, rows * (h * scale + 14) / 72), dpi=72)
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


def _table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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


def review_curve_section(curve: str | None, run_dir: Path, n_unclear: int, problems) -> str:
    """The report's "What review buys" text; draws ``review_curve.png`` into ``run_dir``.
    A missing or unreadable curve file is an input problem, not a failed run."""
    import json

    if not curve:
        return "No measured curve for this pipeline (`review_curve` in its YAML)."
    try:
        data = json.loads(Path(curve).read_text())
        points = sorted(data["points"], key=lambda p: p["answers"])
        rows = [[p["answers"], f"{100 * p['dev_acc']:.2f} %", f"{100 * p['dev_eer']:.2f} %"] for p in points]
        review_curve_plot(points, run_dir / "review_curve.png")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.add(f"{curve}: cannot read the review curve ({exc}); the report shows none")
        return "The measured curve could not be read (see Input problems)."
    return "\n\n".join([
        f"Measured on this pipeline's benchmark ({data.get('source', curve)}): the final model's accuracy on the "
        "benchmark's true labels after a person answered the first N images of the unclear queue and `retrain` ran again. "
        f"`run` left {n_unclear} images in this run's queue.",
        _table(["reviewed", "final accuracy", "final EER"], rows), "![review curve](review_curve.png)"])


def _issues_section(issues: dict[str, str], folds: int) -> str:
    intro = (f"A small CNN was trained on the labeled images {folds} times, each time without one of {folds} folds, "
             "and scored the fold it did not see. cleanlab's `find_label_issues` flags the labels those out-of-fold "
             "scores contradict.")
    if not issues:
        return intro + " It flagged none."
    return "\n\n".join([
        intro + f" It flagged **{len(issues)}**; they are at the front of `unclear/` (ranks 1–{len(issues)}), marked "
        "on the review page. Until someone confirms them, `retrain` treats them as unlabeled.",
        _table(["image", "why"], [[k, v] for k, v in issues.items()]), "![flagged](samples_issues.png)"])


RESORT_TITLE = "## Re-sorted by the final model"
WHERE_TITLE = "## Where everything went"
ISSUES_TITLE = "## Likely label errors"
NOW_NOTE = "> **Now, after `pseudolabel resort`:**"


def _note_resort_up_top(text: str, after: dict, total: int) -> str:
    """The report's first section shows the seed models' vote; after a re-sort, one line under its
    title gives the folders as they are now (replacing the line of an earlier re-sort)."""
    text = re.sub(r"\n\n" + re.escape(NOW_NOTE) + r"[^\n]*", "", text)
    note = (f"{NOW_NOTE} `0/` {after['0']}, `1/` {after['1']}, `unclear/` {after['unclear']} "
            f"({100 * after['unclear'] / total:.1f} %); see below. This section shows the seed models' vote.")
    return text.replace(WHERE_TITLE + "\n", f"{WHERE_TITLE}\n\n{note}\n", 1)


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def resort_plot(scores: np.ndarray, closed_below: float, open_above: float, png: Path, keep_agreed: float = 1.0
                ) -> None:
    """Histogram of the final model's (N,) P(open) on a log-odds axis, with the two re-sort thresholds
    and, when ``keep_agreed`` < 1, where a vote decision the final model agrees with stays."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    ax.hist(_logit(np.asarray(scores, dtype=np.float64)), bins=80, color="0.55")
    ax.axvline(_logit(closed_below), color="C0", ls="--", label=f"0/ at P(open) <= {closed_below:g}")
    ax.axvline(_logit(open_above), color="C1", ls="--", label=f"1/ at P(open) >= {open_above:g}")
    if keep_agreed < 1.0:
        ax.axvspan(_logit(1.0 - keep_agreed), _logit(keep_agreed), color="C2", alpha=0.08, lw=0,
                   label=f"{1 - keep_agreed:g} < P(open) < {keep_agreed:g}: no vote decision is kept")  # fmt: skip
    ax.set(xlabel="final model: log-odds of open", ylabel="images", yscale="log", title="Re-sort thresholds")
    ax.legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def write_resort_section(report_md: Path, summary: dict) -> None:
    """Put (or replace) the re-sort section in ``report.md``, before the label errors."""
    b, a = summary["before"], summary["after"]
    total = max(sum(a.values()), 1)
    rows = [[f"{k}/", b[k], a[k], f"{100 * a[k] / total:.1f} %"] for k in ("0", "1", "unclear")]
    moved = ", ".join(f"{v} from {k.split('->')[0]}/ to {k.split('->')[1]}/" for k, v in summary["moved"].items()
                      if v) or "nothing"  # fmt: skip
    keep = summary.get("keep_agreed", 1.0)
    agreed = (f"An image still where the seed models' vote put it stayed there when the final model agreed at >= "
              f"{keep:g} ({summary['kept_agreed']} images). " if keep < 1.0 else "")  # fmt: skip
    flags = (f"Of the vote decisions the label check flagged, the final model settled {summary['settled_flags']} (it "
             f"never trained on their labels); {summary['flags_left']} flagged images stay first in the queue. Seed "
             "labels, reviewed images and hand moves were left where they were. ")  # fmt: skip
    section = "\n\n".join([
        RESORT_TITLE,
        f"`pseudolabel resort` let the final model re-decide the {summary['movable']} images only machines had placed: "
        f"`0/` at P(open) <= {summary['closed_below']:g}, `1/` at >= {summary['open_above']:g}, `unclear/` otherwise. "
        f"{agreed}{flags}Moved: {moved}.",
        _table(["folder", "before", "after", "share after"], rows), "![final scores](resort.png)"])
    text = _put_section(report_md.read_text() if report_md.is_file() else "", RESORT_TITLE, section)
    write_atomic(report_md, _note_resort_up_top(text, a, total))


def _put_section(text: str, title: str, section: str, before: tuple[str, ...] = (ISSUES_TITLE,)) -> str:
    """``text`` with ``section`` (which starts with ``title``) in place of an earlier one, or put
    just before the first of the ``before`` sections the text has, or at the end."""
    if title in text:
        head, _, rest = text.partition(title)
        nxt = rest.find("\n## ")
        text = head.rstrip("\n") + ("\n\n" + rest[nxt + 1 :] if nxt >= 0 else "\n")
    for anchor in before:
        if anchor in text:
            head, _, rest = text.partition(anchor)
            return f"{head}{section}\n\n{anchor}{rest}"
    return text.rstrip("\n") + "\n\n" + section + "\n"


FINAL_TITLE = "## Final model"


def write_final_section(report_md: Path, m: dict) -> None:
    """Put (or replace) the final model's section in ``report.md`` (``m``: final/metrics.json's content),
    before the re-sort section or, without one, before the label errors."""
    c, a, n = m["counts"], m["at_0.5"], len(m["members"])
    name = m["backbone"] if n == 1 else f"{n} x {m['backbone']}"
    cached = sum(bool(x.get("pretrain_cached")) for x in m["members"])
    rows = [
        ["learned from", f"{c['labeled']} labeled images (seed {c['seed-train']}, reviewed {c['reviewed']}, "
                         f"placed by machines {c['vote']}) and {c['unlabeled']} unlabeled"],
        ["network", f"{name}, {m['parameters'] / 1e6:.2f} M parameters, test-time views: {m['tta']}"],
        ["validation", f"{m['n']} images: accuracy {a['accuracy']:.3f}, EER {m['eer']:.3f}, ROC AUC {m['roc_auc']:.3f}"],
        ["seconds", f"{m['seconds']:.0f} (SimCLR {m['pretrain_seconds']:.0f}" + (f", {cached} of {n} from the cache"
                    if cached else "") + f"; warm-up and FixMatch {m['train_seconds']:.0f})"],
    ]  # fmt: skip
    section = "\n\n".join([
        FINAL_TITLE,
        "`pseudolabel retrain` trained the final model; it is in `final/` (`model.ts`, `model.onnx`). It is validated "
        f"on the {c['seed-val']} seed labels held out plus half of the reviewed images ({m['n']} in all), so read "
        "those figures with care until you have reviewed more. `pseudolabel resort` lets this model shrink `unclear/`.",
        _table(["final model", ""], rows), "![training curves](final/curves.png) ![validation scores](final/hist.png)"])
    text = report_md.read_text() if report_md.is_file() else ""
    write_atomic(report_md, _put_section(text, FINAL_TITLE, section, before=(RESORT_TITLE, ISSUES_TITLE)))


def write_report(run_dir: Path, summary: dict, metrics: dict, problems: list[str]) -> Path:
    """Write ``report.md`` next to the PNGs already in ``run_dir``. Returns its path."""
    counts, total = summary["counts"], sum(summary["counts"].values())
    rows = [[_FOLDER_TITLES[k], v, f"{100 * v / max(total, 1):.1f} %"] for k, v in counts.items()]
    metric_rows = [
        [name, m["accuracy"], m["precision"], m["recall"], m["f1"], m["eer"], m["roc_auc"],
         f"{m['parameters'] / 1e6:.2f} M", f"{m['train_seconds']:.0f}"]
        for name, m in metrics.items()
    ]  # fmt: skip
    parts = [
        f"# Run report: {summary['pipeline']}",
        f"{total} pool images, {summary['n_seed']} seed labels ({summary['n_train']} train, {summary['n_val']} validation). "
        f"An image is decided when {summary['rule']}.",
        WHERE_TITLE,
        _table(["folder", "images", "share"], rows),
        f"\nThe two models agree on the side of 0.5 for **{100 * summary['agreement']:.1f} %** of the pool; "
        f"{summary['disagree']} images are disagreements and head the unclear queue.",
        "![scatter](scatter.png)",
        "Work through `unclear/` in file-name order (most useful first) and move each file into `0/` or `1/`.",
        ISSUES_TITLE,
        _issues_section(summary.get("issues", {}), summary.get("label_folds", 4)),
        "## What review buys",
        summary.get("review_curve", ""),
        "## Samples",
        *[f"### {_FOLDER_TITLES[k]}\n![{k}](samples_{k}.png)" for k in ("0", "1", "unclear")],
        "## Seed models on the validation split",
        f"The validation split has only {summary['n_val']} images, so these figures are rough. "
        f"{summary['models'][0]} learned from the seeds and then the whole pool (FixMatch); {summary['models'][1]} "
        f"from the seeds plus {summary['n_student']} pool images the first scored confidently.",
        _table(["model", "accuracy", "precision", "recall", "F1", "EER", "ROC AUC", "params", "train s"], metric_rows),
        "\n![training curves](curves.png)",
        "## Stage timings",
        _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in summary["seconds"].items()]),
        "## Input problems",
        "\n".join(f"- {p}" for p in problems) if problems else "None.",
    ]
    path = run_dir / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def final_plots(y: np.ndarray, score: np.ndarray, histories: list[list[dict]], out: Path) -> None:
    """roc.png, hist.png (scores per true class) and curves.png (losses and mask rate, one set of
    lines per ensemble member's FixMatch history) for the final model."""
    from .metrics import eer, roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(y, score)
    e, thr = eer(y, score)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(fpr, tpr, lw=1.5)
    ax.plot([0, 1], [0, 1], ls=":", c="gray")
    ax.plot([e], [1 - e], "o", label=f"EER {100 * e:.1f} % at {thr:.2f}")
    ax.set(xlabel="false open rate", ylabel="true open rate", title="ROC on the validation images")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for c, name in ((0, "closed"), (1, "open")):
        ax.hist(score[y == c], bins=np.linspace(0, 1, 26), alpha=0.6, label=f"true {name} ({int((y == c).sum())})")
    ax.set(xlabel="P(open)", ylabel="images", title="Scores per true class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "hist.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for k, history in enumerate(histories):
        ep, tag = [h["epoch"] for h in history], f" (member {k + 1})" if len(histories) > 1 else ""
        ax.plot(ep, [h["train_loss"] for h in history], c="C0", alpha=1 / (k + 1), label="train loss" + tag)
        ax.plot(ep, [h["val_loss"] for h in history], c="C1", alpha=1 / (k + 1), label="validation loss" + tag)
        ax.plot(ep, [h["mask_rate"] for h in history], c="C2", alpha=1 / (k + 1), ls="--",
                label="mask rate (unlabeled above τ)" + tag)  # fmt: skip
    ax.set(xlabel="epoch", title="FixMatch training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    plt.close(fig)
