"""Review-effort curve: what each reviewed image buys in final-model accuracy.

Plays a reviewer who answers the unclear queue in order, using ../shared/data/eyes/dev_labels.csv
and only queue images that have a dev label. After each number of answers it retrains the final
model on a linked copy of the run (the run itself is never touched) and scores it on the dev
labels: on all of them, and on those the reviewer did not answer (held out).

    python benchmarks/review_curve.py --run runs/eyes                  # 0, 50, 100, 200 and all answers
    python benchmarks/review_curve.py --run runs/eyes --points 0 100 --png curve.png

``--folds K`` asks a different question: how far can true labels take this final model at all?
For each of K folds of the dev images, the reviewer answers every dev image outside the fold,
wherever the vote put it (a vote decision is first moved back to unclear/ by hand, as a person
would), all answers train (``review_val_share`` 0), and the model is scored on the fold only,
next to the run's own final model (no review) on the same images:

    python benchmarks/review_curve.py --run runs/eyes --folds 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import _dev_arrays, read_dev  # noqa: E402
from pseudolabel.config.schema import load_config  # noqa: E402
from pseudolabel.core.metrics import classification_metrics  # noqa: E402
from pseudolabel.report.plots import review_curve_plot  # noqa: E402


def linked_copy(run_dir: Path, dest: Path):
    """Hard-link ``run_dir`` (all but its final model) to ``dest``; the review state of the copy."""
    from pseudolabel.review.state import ReviewState

    shutil.copytree(run_dir, dest, copy_function=os.link, ignore=shutil.ignore_patterns("final", ".final*", "journal.csv"))
    if (run_dir / "journal.csv").is_file():  # copied, never linked: the copy's answers must not reach the run's journal
        shutil.copy2(run_dir / "journal.csv", dest / "journal.csv")
    return ReviewState(dest, dest / "journal.csv")


def answered_copy(run_dir: Path, dest: Path, dev: dict[str, int], k: int) -> list[str]:
    """Link-copy ``run_dir`` to ``dest`` and answer the first ``k`` dev-labeled queue images there."""
    state = linked_copy(run_dir, dest)
    queue = [it["image"] for it in state.queue()["items"] if it["image"] in dev][:k]
    for image in queue:
        state.decide(image, str(dev[image]))
    return queue


def answer_all(run_dir: Path, dest: Path, truth: dict[str, int]) -> list[str]:
    """Link-copy ``run_dir`` to ``dest`` and answer every image of ``truth`` that is not a seed label there."""
    state = linked_copy(run_dir, dest)
    seeds = {r["image"] for r in state.rows if r["source"].startswith("seed")}
    where, answered = state.where(), []
    for image in sorted(set(truth) & set(where) - seeds):
        if where[image] != "unclear":  # a vote decision: moved back by hand, then answered on the page
            item = state.items[image]
            os.rename(dest / where[image] / item.file, dest / "unclear" / item.file)
        state.decide(image, str(truth[image]))
        answered.append(image)
    return answered


def taught_scores(run_dir: Path, answer, x: np.ndarray, quiet: bool, **overrides) -> tuple[list[str], np.ndarray]:
    """Let ``answer(copy)`` answer images in a linked copy of ``run_dir`` (it returns their names),
    retrain there with config ``overrides`` and score (N, C, H, W) ``x``: (answered, (N,) P(open))."""
    from pseudolabel.config.schema import with_overrides
    from pseudolabel.serve.predict import EyeStateClassifier
    from pseudolabel.stages.retrain import retrain

    with tempfile.TemporaryDirectory(dir=run_dir.parent) as tmp:
        copy = Path(tmp) / "run"
        answered = answer(copy)
        cfg = with_overrides(load_config(copy / "config.yaml"), **overrides)
        retrain(cfg, copy, copy / "journal.csv", progress=not quiet)
        return answered, EyeStateClassifier.load(copy).predict_array(x)


def fold_point(run_dir: Path, dev: dict[str, int], test: set[str], x_dev, y_dev, names: list[str],
               quiet: bool) -> dict:
    """Answer every dev image outside ``test``, retrain with all answers training, score on ``test``."""
    from pseudolabel.serve.predict import EyeStateClassifier

    held = np.array([n in test for n in names])
    before = EyeStateClassifier.load(run_dir).predict_array(x_dev[held])
    truth = {n: v for n, v in dev.items() if n not in test}
    answered, after = taught_scores(run_dir, lambda copy: answer_all(run_dir, copy, truth), x_dev[held], quiet,
                                    **{"retrain.review_val_share": 0.0})  # fmt: skip
    y = y_dev[held]
    return {"answers": len(answered), "test_n": int(held.sum()), "acc_before": float(np.mean((before >= 0.5) == y)),
            "eer_before": classification_metrics(y, before)["eer"], "acc": float(np.mean((after >= 0.5) == y)),
            "eer": classification_metrics(y, after)["eer"]}  # fmt: skip


def folds_table(run_dir: Path, dev: dict[str, int], folds: int, x_dev, y_dev, names: list[str]) -> None:
    """Print one row per fold and the mean: the run's final model against the one taught every other dev label."""
    from benchmarks.ceiling import fold_indices

    print("| fold | answered | scored | no review: acc / EER | all other dev labels: acc / EER |")
    print("|---|---|---|---|---|")
    rows = []
    for k, idx in enumerate(fold_indices(len(names), folds, 0)):
        r = fold_point(run_dir, dev, {names[i] for i in idx}, x_dev, y_dev, names, not sys.stderr.isatty())
        rows.append(r)
        print(f"| {k} | {r['answers']} | {r['test_n']} | {100 * r['acc_before']:.2f} % / {100 * r['eer_before']:.2f} % "
              f"| {100 * r['acc']:.2f} % / {100 * r['eer']:.2f} % |", flush=True)  # fmt: skip
    mean = {k: 100 * np.mean([r[k] for r in rows]) for k in ("acc_before", "eer_before", "acc", "eer")}
    print(f"| mean | | | {mean['acc_before']:.2f} % / {mean['eer_before']:.2f} % "
          f"| {mean['acc']:.2f} % / {mean['eer']:.2f} % |")


def point(run_dir: Path, dev: dict[str, int], k: int, x_dev, y_dev, names: list[str], quiet: bool) -> dict:
    answered, score = taught_scores(run_dir, lambda copy: answered_copy(run_dir, copy, dev, k), x_dev, quiet)
    answered = set(answered)
    held = np.array([n not in answered for n in names])
    right = (score >= 0.5) == y_dev
    return {"answers": len(answered), "dev_acc": right.mean(), "dev_eer": classification_metrics(y_dev, score)["eer"],
            "held_out_acc": right[held].mean(), "held_out_n": int(held.sum())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished `pseudolabel run` folder (left untouched)")
    ap.add_argument("--points", nargs="*", default=["0", "50", "100", "200", "all"])
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "review_curve.png")
    ap.add_argument("--folds", type=int, help="instead of the curve: answer all dev labels but one fold's, K times")
    args = ap.parse_args(argv)
    dev = read_dev()
    cfg = load_config(args.run / "config.yaml")
    x_dev, y_dev, names = _dev_arrays(args.run, dev, cfg.image_size, cfg.channels)
    if args.folds:
        folds_table(args.run, dev, args.folds, x_dev, y_dev, names)
        return 0
    rows = []
    print("| reviewed | dev accuracy | dev EER | accuracy on dev images not reviewed |\n|---|---|---|---|", flush=True)
    for p in args.points:
        r = point(args.run, dev, 10**9 if p == "all" else int(p), x_dev, y_dev, names, not sys.stderr.isatty())
        rows.append(r)
        print(f"| {r['answers']} | {100 * r['dev_acc']:.2f} % | {100 * r['dev_eer']:.2f} % "
              f"| {100 * r['held_out_acc']:.2f} % ({r['held_out_n']}) |", flush=True)  # fmt: skip
    review_curve_plot(rows, args.png)
    points = [{k: float(v) if isinstance(v, np.floating) else v for k, v in r.items()} for r in rows]
    args.png.with_suffix(".json").write_text(json.dumps({"source": f"benchmarks/review_curve.py --run {args.run}",
                                                         "points": points}, indent=2))  # the run report shows it
    print(f"\ncurve: {args.png} and {args.png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
