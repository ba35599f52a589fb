"""The run report: ``report.md`` rendered from the JSON each stage writes, never patched in place.

- ``run_summary.json`` (``run``): folders, the vote, the label check, seed models, timings, problems;
- ``final/metrics.json`` (``retrain``): the final model's section;
- ``resort.json`` (``resort``): the re-sort section and a line at the top with the folders as they are now.
- ``audit.json`` (``review --audit``): each machine-filled folder's measured precision.

:func:`render` rebuilds the whole page from whichever of them exist; each stage calls it last.
The pictures (scatter, sample grids, curves, confusion) are drawn by the stage that has the data.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .runstate import UNCLEAR, write_atomic
from .study import eda_section, latent_section

RUN_SUMMARY = "run_summary.json"  # what `run` found, for the report


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def _issues_section(issues: dict[str, str], folds: int, check: dict | None = None) -> str:
    check = check or {}
    who = check.get("checker", "A small CNN")
    intro = (f"The checker ({who}) was trained on the labeled images {folds} times, each time without one of {folds} "
             "folds, and scored the fold it did not see. cleanlab's `find_label_issues` flags the labels those "
             "out-of-fold scores contradict; a person's seed label only when the checker also gives it at most "
             f"{check.get('seed_max_p', 0.05)}.")
    if check and not check.get("trusted", True):
        if check.get("checked"):
            return intro + (f" **It flagged nothing, because it is not trusted:** {check['why']}. A checker weaker "
                            "than the labels it checks would send correct labels back for review.")
        return f"The label check did not run: {check.get('why', '')}."
    if check.get("checked"):
        intro += (f" Its out-of-fold accuracy: {100 * check['accuracy']:.1f} % (chance "
                  f"{100 * check['baseline']:.0f} %).")
    if not issues:
        return intro + " It flagged none."
    return "\n\n".join([
        intro + f" It flagged **{len(issues)}**; they are at the front of `unclear/` (ranks 1–{len(issues)}), marked "
        "on the review page. Until someone confirms them, `retrain` treats them as unlabeled.",
        _table(["image", "why"], [[k, v] for k, v in issues.items()]), "![flagged](samples_issues.png)"])


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


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def render(run_dir: Path) -> Path:
    """Write ``run_dir/report.md`` from the stages' JSON (see the module docstring). Returns its path."""
    run_dir = Path(run_dir)
    s = _read(run_dir / RUN_SUMMARY)
    if s is None:
        raise ValueError(f"{run_dir}: no {RUN_SUMMARY}; it is not a run folder of this version")
    final, resorted = _read(run_dir / "final" / "metrics.json"), _read(run_dir / "resort.json")
    names = dict(zip(s["folders"], s["classes"]))
    counts, total = s["counts"], max(sum(s["counts"].values()), 1)
    rows = [[folder_title(k, names.get(k)), v, f"{100 * v / total:.1f} %"] for k, v in counts.items()]
    where = [WHERE_TITLE]
    if resorted:
        a = resorted["after"]
        where.append("> **Now, after `pseudolabel resort`:** " + ", ".join(f"`{k}/` {v}" for k, v in a.items())
                     + f" ({100 * a[UNCLEAR] / total:.1f} % unclear); see below. This section shows the seed models' vote.")
    parts = [
        f"# Run report: {s['pipeline']}",
        f"{total} pool images in {len(s['classes'])} classes, {s['n_seed']} seed labels ({s['n_train']} train, "
        f"{s['n_val']} validation). An image is decided when {s['rule']}.",
        *_weights_lines(s.get("weights")),
        *_untrusted_note(s), *where, _table(["folder", "images", "share"], rows),
        f"\nThe two models' top classes agree for **{100 * s['agreement']:.1f} %** of the pool; "
        f"{s['disagree']} images are disagreements and head the unclear queue.",
        "![scatter](scatter.png)",
        "Work through `unclear/` in file-name order (most useful first) and move each file into its class folder.",
        *(_final_section(final) if final else []),
        *(_resort_section(resorted, names) if resorted else []),
        *_audit_section(_read(run_dir / "audit.json"), names),
        ISSUES_TITLE, _issues_section(s.get("issues", {}), s.get("label_folds", 4), s.get("label_check")),
        "## What review buys", s.get("review_curve", ""),
        "## Samples", *[f"### {folder_title(k, names.get(k))}\n![{k}](samples_{k}.png)" for k in counts],
        *eda_section(_read(run_dir / "eda.json")),
        *_seed_section(s),
        "## Stage timings", _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in s["seconds"].items()]),
        "## Input problems", "\n".join(f"- {p}" for p in s.get("problems", [])) or "None.",
    ]
    path = run_dir / "report.md"
    write_atomic(path, "\n\n".join(parts) + "\n")
    return path


WHERE_TITLE = "## Where everything went"
ISSUES_TITLE = "## Likely label errors"
FINAL_TITLE = "## Final model"
RESORT_TITLE = "## Re-sorted by the final model"
AUDIT_TITLE = "## Audit: the machine-made folders, checked by a person"


def _untrusted_note(s: dict) -> list[str]:
    """A warning when a seed model was no better than chance, or the vote rule was wrong too often on
    held-out seed labels, so that the vote decided nothing."""
    if s.get("trusted", True):
        return []
    p = s.get("vote_precision") or {}
    if all(c["p"] <= s["vote_alpha"] for c in s["chance"].values()) and p.get("decided"):
        return [f"> **The vote decided nothing:** applied to held-out seed labels, it would decide {p['decided']} "
                f"and be right on {p['right']} ({100 * p['right'] / p['decided']:.0f} %), below `vote_min_precision` "
                f"{p['min']}. Its folders would hold too many wrong labels, so every pool image is in `unclear/`. "
                "More seed labels, better pretrained weights or a higher `threshold` would help."]
    weak = [f"{m} got {c['correct']} of {c['n']} held-out seed labels right ({c.get('how', 'validation split')}), "
            f"where always naming the most common class gets {100 * c['baseline']:.0f} % (p = {c['p']:.2g})"
            for m, c in s["chance"].items() if c["p"] > s["vote_alpha"]]  # fmt: skip
    return [f"> **The vote decided nothing:** {'; '.join(weak)}. A model no better than chance (one-sided binomial "
            f"test at `vote_alpha` {s['vote_alpha']}) makes the two models' agreement meaningless, so every pool "
            "image is in `unclear/` and only the seed labels fill the class folders. More seed labels, pretrained "
            "weights (`--pretrained`) or a stronger second model would help."]


def _weights_lines(weights: dict | None) -> list[str]:
    """One line per model on the weights it started from (run.json has the full record)."""
    if not weights:
        return []
    return ["Weights: " + "; ".join(f"**{m}** {w}" for m, w in weights.items()) + "."]


def _seed_section(s: dict) -> list[str]:
    m = s.get("metrics", {})
    binary = len(s["classes"]) == 2
    head = ["model", "accuracy", *(["precision", "recall", "F1", "EER", "ROC AUC"] if binary else
                                   ["top-2", "macro precision", "macro recall", "macro F1"]), "params", "train s"]
    keys = ["precision", "recall", "f1", "eer", "roc_auc"] if binary else ["top2_accuracy", "macro_precision",
                                                                           "macro_recall", "macro_f1"]
    rows = [[name, v["accuracy"], *[v[k] for k in keys], f"{v['parameters'] / 1e6:.2f} M", f"{v['train_seconds']:.0f}"]
            for name, v in m.items()]  # fmt: skip
    return [
        "## Seed models on the validation split",
        f"The validation split has only {s['n_val']} images, so these figures are rough. "
        f"{s['models'][0]} learned from the seeds and then the whole pool (FixMatch); {s['models'][1]} "
        f"from the seeds plus {s['n_student']} pool images the first scored confidently.",
        _table(head, rows), "\n![training curves](curves.png)"]


def _final_section(m: dict) -> list[str]:
    """The final model's section, from ``final/metrics.json``."""
    c, n = m["counts"], len(m["members"])
    name = m["backbone"] if n == 1 else f"{n} x {m['backbone']}"
    cached = sum(bool(x.get("pretrain_cached")) for x in m["members"])
    figures = f"accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}"
    figures += f", EER {m['eer']:.3f}, ROC AUC {m['roc_auc']:.3f}" if "eer" in m else f", top-2 {m['top2_accuracy']:.3f}"
    rows = [
        ["learned from", f"{c['labeled']} labeled images (seed {c['seed-train']}, reviewed {c['reviewed']}, "
                         f"placed by machines {c['vote']}) and {c['unlabeled']} unlabeled"],
        ["network", f"{name}, {m['parameters'] / 1e6:.2f} M parameters, test-time views: {m['tta']}"],
        ["validation", f"{m['n']} images: {figures}"],
        ["seconds", f"{m['seconds']:.0f} ({PRETRAIN_NAMES[m.get('pretrain', 'simclr')]} {m['pretrain_seconds']:.0f}"
                    + (f", {cached} of {n} from the cache" if cached else "")
                    + f"; {'linear probe' if m.get('probe') else 'warm-up and FixMatch'} {m['train_seconds']:.0f})"],
    ]  # fmt: skip
    return [
        FINAL_TITLE,
        "`pseudolabel retrain` trained the final model; it is in `final/` (`model.ts`, `model.onnx`). It is validated "
        f"on the {c['seed-val']} seed labels held out plus half of the reviewed images ({m['n']} in all), so read "
        "those figures with care until you have reviewed more. `pseudolabel resort` lets this model shrink `unclear/`.",
        _table(["final model", ""], rows),
        "![training curves](final/curves.png) ![validation scores](final/hist.png) ![confusion](final/confusion.png)",
        *latent_section(m.get("latent"))]


PRETRAIN_NAMES = {"simclr": "SimCLR", "vae": "VAE", "none": "no pretraining"}  # how metrics' "pretrain" reads


def _audit_section(a: dict | None, names: dict[str, str]) -> list[str]:
    """audit.json (``pseudolabel review --audit``): each machine-filled folder's precision, measured."""
    if not a:
        return []
    from .audit import describe

    rows = [[folder_title(f, names.get(f)), v["audited"], v["right"],
             f"{100 * v['precision']:.1f} %" if v["audited"] else "–",
             f"{100 * v['low']:.1f}–{100 * v['high']:.1f} %" if v["audited"] else "–"] for f, v in a["folders"].items()]
    lines = [describe(f, v) for f, v in a["folders"].items() if v["audited"]]
    return [AUDIT_TITLE, f"A person gave their own class to {sum(v['audited'] for v in a['folders'].values())} of "
            f"{a['sampled']} images drawn at random (seed {a['seed']}) from the folders the machines filled, without "
            "seeing any score or folder. Precision with its 95 % Wilson interval:",
            _table(["folder", "audited", "right", "precision", "95 % interval"], rows), *(["; ".join(lines)] if lines else [])]


def _resort_section(r: dict, names: dict[str, str]) -> list[str]:
    b, a = r["before"], r["after"]
    total = max(sum(a.values()), 1)
    rows = [[folder_title(k, names.get(k)), b[k], a[k], f"{100 * a[k] / total:.1f} %"] for k in a]
    moved = ", ".join(f"{v} from {k.split('->')[0]}/ to {k.split('->')[1]}/" for k, v in r["moved"].items()
                      if v) or "nothing"  # fmt: skip
    keep = r.get("keep_agreed", 1.0)
    agreed = (f"An image still where the seed models' vote put it stayed there when the final model gave its class at "
              f"least {keep:g} ({r['kept_agreed']} images). " if keep < 1.0 else "")  # fmt: skip
    flags = (f"Of the vote decisions the label check flagged, the final model settled {r['settled_flags']} (it "
             f"never trained on their labels); {r['flags_left']} flagged images stay first in the queue. Seed "
             "labels, reviewed images and hand moves were left where they were. ")  # fmt: skip
    accept = ", ".join(f"{names.get(f, f)} >= {t:g}" for f, t in zip(names, r["accept"]))
    return [
        RESORT_TITLE,
        f"`pseudolabel resort` let the final model re-decide the {r['movable']} images only machines had placed: "
        f"into its top class's folder when that class's probability reaches its threshold ({accept}), `unclear/` "
        f"otherwise. {agreed}{flags}Moved: {moved}.",
        _table(["folder", "before", "after", "share after"], rows), "![final scores](resort.png)"]


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
    from .metrics import eer, roc_curve

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
