"""What averaging final-model networks buys: train retrain members apart on one run, score each
member and their averages on dev_labels.csv.

    python benchmarks/members.py --run runs/eyes --scores runs/eyes/members.npz \\
        a=0 b=1000 yolo=0,backbone:yolov8-cls,pretrain_epochs:0

Each spec is NAME=SEED[,KEY:VALUE...] with retrain keys to override. A member trains exactly as
``pseudolabel retrain`` trains member k (:func:`pseudolabel.stages.retrain.train_member`; member k of
``retrain.members`` uses seed ``seed + 1000 k``) and is scored as ``retrain`` exports it, with the
test-time augmentation ``retrain.tta`` (pass ``tta:none`` in a spec to score it without). Dev scores
are kept in the ``--scores`` file, so later calls add members and every average is printed again;
``--keep DIR`` also saves each member's weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import _dev_arrays, read_dev  # noqa: E402

from pseudolabel.config.schema import RetrainConfig, load_config, with_overrides  # noqa: E402
from pseudolabel.core.metrics import classification_metrics  # noqa: E402


def parse_spec(spec: str) -> tuple[str, int, dict]:
    """"NAME=SEED[,KEY:VALUE...]" -> (name, seed, {"retrain.KEY": value typed as RetrainConfig's field})."""
    name, _, rest = spec.partition("=")
    seed, *pairs = rest.split(",")
    types = {f.name: type(f.default) for f in dataclasses.fields(RetrainConfig)}
    over = {}
    for pair in pairs:
        key, _, value = pair.partition(":")
        if key not in types:
            raise ValueError(f"{spec}: unknown retrain key {key!r}")
        over[f"retrain.{key}"] = types[key](value)
    return name, int(seed), over


def train_scores(run: Path, specs: list[str], x_dev: np.ndarray, progress: bool, keep: Path | None = None):
    """Train each spec's member on the run's merged set; yields (name, (N,) dev P(open)) as each finishes.
    ``keep``: also save each member's weights there as NAME.pt (a state dict), to score it again later."""
    import torch

    from pseudolabel.data.augment import to_float
    from pseudolabel.data.images import Problems
    from pseudolabel.stages.retrain import gather, train_member, with_tta
    from pseudolabel.train.fixmatch import predict_probs

    base = load_config(run / "config.yaml")
    data = gather(base, run, run / "bench-journal.csv", Problems(quiet=True))
    for spec in specs:
        name, seed, over = parse_spec(spec)
        t = time.perf_counter()
        cfg = with_overrides(base, **over)
        module, *_ = train_member(cfg, data, seed, progress)
        print(f"{name}: trained in {time.perf_counter() - t:.0f} s", flush=True)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            torch.save(module.state_dict(), keep / f"{name}.pt")
        yield name, predict_probs(with_tta(module, cfg.retrain.tta), to_float(torch.from_numpy(x_dev)))[:, 1].numpy()


def table(scores: dict[str, np.ndarray], y: np.ndarray, max_size: int) -> None:
    """Dev accuracy and EER of every member and of every average of up to ``max_size`` members."""
    print("\n| members averaged | dev accuracy | dev EER |\n|---|---|---|")
    names = sorted(scores)
    for size in range(1, min(max_size, len(names)) + 1):
        for combo in itertools.combinations(names, size):
            m = classification_metrics(y, np.mean([scores[n] for n in combo], axis=0))
            print(f"| {' + '.join(combo)} | {100 * m['accuracy']:.2f} % | {100 * m['eer']:.2f} % |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished run folder")
    ap.add_argument("--scores", type=Path, required=True, help="npz file of dev scores, read and extended")
    ap.add_argument("--max-size", type=int, default=3, help="largest average to print")
    ap.add_argument("--keep", type=Path, help="also save each member's weights in this folder as NAME.pt")
    ap.add_argument("specs", nargs="*", help="members to train: NAME=SEED[,KEY:VALUE...]")
    args = ap.parse_args(argv)
    cfg = load_config(args.run / "config.yaml")
    x_dev, y_dev, _ = _dev_arrays(args.run, read_dev(), cfg.image_size, cfg.channels)
    scores = {k: v for k, v in np.load(args.scores).items()} if args.scores.exists() else {}
    for name, s in train_scores(args.run, args.specs, x_dev, sys.stderr.isatty(), args.keep):
        scores[name] = s
        np.savez(args.scores, **scores)  # kept as each member finishes
    table(scores, y_dev, args.max_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
