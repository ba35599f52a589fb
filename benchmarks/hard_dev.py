"""Which dev images no final model gets right: pool the member scores that ``members.py`` stored.

    python benchmarks/hard_dev.py --png docs/hard_dev.png runs/seed0/*.npz runs/seed1/*.npz runs/seed2/*.npz

Every array in every ``--scores`` file of benchmarks/members.py is one member's (N,) dev P(open).
The files are grouped by the run folder they sit in. For each run it prints how the average of
all its members scores on dev_labels.csv, and how many dev images every one of them gets wrong.
Then it draws the dev images that every member of every run gets wrong, with their dev label and
the mean score (dev label, then P(open)), most confident mistake first.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import _dev_arrays, read_dev  # noqa: E402

from pseudolabel.config.schema import load_config  # noqa: E402
from pseudolabel.core.metrics import classification_metrics  # noqa: E402
from pseudolabel.report.plots import sample_grid  # noqa: E402


def always_wrong(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(M, N) P(open) of M members and (N,) labels 0/1 -> (N,) bool, True where every member is wrong at 0.5."""
    return ((scores >= 0.5) != y.astype(bool)).all(axis=0)


def run_scores(files: list[Path]) -> dict[Path, np.ndarray]:
    """npz files -> {run folder: (M, N) every member stored in that folder's files}."""
    out: dict[Path, list[np.ndarray]] = {}
    for f in files:
        with np.load(f) as d:
            out.setdefault(f.parent, []).extend(d[k] for k in d.files)
    return {run: np.stack(ms) for run, ms in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores", nargs="+", type=Path, help="npz files written by benchmarks/members.py --scores")
    ap.add_argument("--png", type=Path, help="draw the images every member of every run gets wrong here")
    args = ap.parse_args(argv)
    for f in args.scores:
        if not f.is_file():
            print(f"hard_dev: warning: no such scores file, skipped: {f}", file=sys.stderr)
    files = [f for f in args.scores if f.is_file()]
    if not files:
        raise SystemExit("hard_dev: error: none of the scores files exists")
    runs = run_scores(files)
    run = next(iter(runs))
    cfg = load_config(run / "config.yaml")
    x, y, names = _dev_arrays(run, read_dev(), cfg.image_size, cfg.channels)
    print("| run | members | average: dev accuracy | dev EER | wrong | wrong by every member |\n|---|---|---|---|---|---|")
    for r, s in runs.items():
        if s.shape[1] != len(y):
            raise SystemExit(f"hard_dev: error: {r} holds scores for {s.shape[1]} dev images, not {len(y)}")
        m = classification_metrics(y, s.mean(0))
        print(f"| {r} | {len(s)} | {100 * m['accuracy']:.2f} % | {100 * m['eer']:.2f} % | "
              f"{round((1 - m['accuracy']) * len(y))} | "
              f"{int(always_wrong(s, y).sum())} |")
    every = np.stack([always_wrong(s, y) for s in runs.values()]).all(0)
    mean = np.concatenate(list(runs.values())).mean(0)
    idx = np.where(every)[0]
    idx = idx[np.argsort(-np.abs(mean[idx] - 0.5), kind="stable")]
    print(f"\n{len(idx)} dev images are wrong for every member of all {len(runs)} runs "
          f"({int((y[idx] == 0).sum())} closed called open, {int((y[idx] == 1).sum())} open called closed).")
    if args.png:
        titles = [f"{Path(names[i]).stem} {'open' if y[i] else 'closed'}\nP(open) {mean[i]:.2f}" for i in idx]
        sample_grid(x[idx], titles, args.png, cols=7, scale=4)
        print(f"drawn: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
