"""Review-effort curve: what each reviewed image buys in final-model accuracy.

Plays a reviewer who answers the unclear queue in order, using ../shared/data/eyes/dev_labels.csv
and only queue images that have a dev label. After each number of answers it retrains the final
model on a linked copy of the run (the run itself is never touched) and scores it on the dev
labels: on all of them, and on those the reviewer did not answer (held out).

    python benchmarks/review_curve.py --run runs/eyes                  # 0, 50, 100, 200 and all answers
    python benchmarks/review_curve.py --run runs/eyes --points 0 100 --png curve.png
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
from pseudolabel.config import load_config  # noqa: E402
from pseudolabel.metrics import classification_metrics  # noqa: E402
from pseudolabel.report import review_curve_plot  # noqa: E402


def answered_copy(run_dir: Path, dest: Path, dev: dict[str, int], k: int) -> list[str]:
    """Link-copy ``run_dir`` to ``dest`` and answer the first ``k`` dev-labeled queue images there."""
    from pseudolabel.review import ReviewState

    shutil.copytree(run_dir, dest, copy_function=os.link, ignore=shutil.ignore_patterns("final", ".final*"))
    state = ReviewState(dest, dest / "journal.csv")
    queue = [it["image"] for it in state.queue()["items"] if it["image"] in dev][:k]
    for image in queue:
        state.decide(image, str(dev[image]))
    return queue


def point(run_dir: Path, dev: dict[str, int], k: int, x_dev, y_dev, names: list[str], quiet: bool) -> dict:
    from pseudolabel.predict import EyeStateClassifier
    from pseudolabel.retrain import retrain

    with tempfile.TemporaryDirectory(dir=run_dir.parent) as tmp:
        copy = Path(tmp) / "run"
        answered = set(answered_copy(run_dir, copy, dev, k))
        retrain(load_config(copy / "config.yaml"), copy, copy / "journal.csv", progress=not quiet)
        score = EyeStateClassifier.load(copy).predict_array(x_dev)
    held = np.array([n not in answered for n in names])
    right = (score >= 0.5) == y_dev
    return {"answers": len(answered), "dev_acc": right.mean(), "dev_eer": classification_metrics(y_dev, score)["eer"],
            "held_out_acc": right[held].mean(), "held_out_n": int(held.sum())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished `pseudolabel run` folder (left untouched)")
    ap.add_argument("--points", nargs="*", default=["0", "50", "100", "200", "all"])
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "review_curve.png")
    args = ap.parse_args(argv)
    dev = read_dev()
    cfg = load_config(args.run / "config.yaml")
    x_dev, y_dev, names = _dev_arrays(args.run, dev, cfg.image_size, cfg.channels)
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
