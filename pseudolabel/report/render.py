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

from pseudolabel.core.runstate import UNCLEAR, write_atomic
from pseudolabel.report.plots import folder_title, review_curve_plot
from pseudolabel.report.study import eda_section, latent_section

RUN_SUMMARY = "run_summary.json"  # what `run` found, for the report


def _table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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
    from pseudolabel.report.audit import describe

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


