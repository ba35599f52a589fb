"""The vote's gate with few labels: does it pass a good model from 10 labels a class?

The gate (`vote_alpha`) asks whether each seed model beats always naming the most common class, by a
one-sided binomial test on seed labels it did not train on. Before issue 48 that was the validation
split alone (6 images with 30 labels); now frozen seed models are judged out of fold on every seed
label. This prints, for each data set:

- the old gate: the 6-image validation split of `n_train: 24`;
- the new gate: out of fold (5 folds) over all 30 seed labels;

for a frozen resnet50 and yolov8n-cls with fabricated (random) ImageNet-layout weights, on
- the generated colour set of tests/conftest.py (3 classes, 40 images a class, 10 labels a class),
- a 3-class subset of the CIFAR-10 pool (airplane, automobile, bird), 10 seed labels a class from
  shared/data/cifar10/seed_labels.csv;

and the power of the test itself: the p-value of a model right on two of three, by labels a class.

    python benchmarks/gate.py
"""
from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def binomial_p(n: int, correct: int, base: float) -> float:
    return sum(math.comb(n, i) * base**i * (1 - base) ** (n - i) for i in range(correct, n + 1))


def arrays(kind: str, tmp: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 3, 32, 32) images and (N,) labels of the 30 seed images, and the class names."""
    from pseudolabel.data.images import load_image

    if kind == "colours":
        from tests.conftest import COLORS, make_color_data

        truth = make_color_data(tmp / "colours", n_per_class=40)
        chosen = [n for c in COLORS for n in [k for k, v in sorted(truth.items()) if v == c][:10]]
        x = np.stack([load_image(tmp / "colours" / n, 32, 3) for n in chosen])
        return x, np.array([list(COLORS).index(truth[n]) for n in chosen]), list(COLORS)
    classes = ["airplane", "automobile", "bird"]
    root = ROOT.parent / "shared" / "data" / "cifar10"
    with open(root / "seed_labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in classes]
    chosen = [r for c in classes for r in [r for r in rows if r["label"] == c][:10]]
    x = np.stack([load_image(root / "images" / r["image"], 32, 3) for r in chosen])
    return x, np.array([classes.index(r["label"]) for r in chosen]), classes


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pseudolabel-gate-"))
    os.environ.update(HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(tmp / "xdg"),
                      PSEUDOLABEL_OFFLINE="1", PSEUDOLABEL_CACHE=str(tmp / "pools"))  # before any hub import
    from tests.conftest import fabricate_timm, fabricate_yolo

    fabricate_timm(tmp / "hf", "resnet50", "a1_in1k")
    fabricate_yolo(tmp / "xdg" / "pseudolabel" / "ultralytics" / "weights")
    from pseudolabel.config.schema import Config, with_overrides
    from pseudolabel.core.vote import chance_test
    from pseudolabel.data.labels import split_seeds
    from pseudolabel.train.seeds import create_seed_model

    print(f"{'data':<22}{'model':<12}{'old gate: 6 val':>18}{'new gate: 30 out of fold':>28}")
    for kind in ("colours", "cifar10 3 classes"):
        x, y, classes = arrays(kind.split()[0], tmp)
        cfg = with_overrides(Config(), classes=tuple(classes), channels=3, image_size=32, n_train=24,
                             **{"resnet50.pretrained": "imagenet", "resnet50.train": "frozen",
                                "yolo.pretrained": "imagenet", "yolo.train": "frozen"})  # fmt: skip
        names = [str(i) for i in range(len(y))]
        train, val = split_seeds(dict(zip(names, y.tolist())), 24, 0, 3)
        tr, va = np.array([int(n) for n in train]), np.array([int(n) for n in val])
        for model in ("yolov8-cls", "resnet50"):
            m = create_seed_model(model, cfg, progress=False)
            m.fit(x[tr], y[tr], x[va], y[va])
            old = chance_test(y[va], m.predict_proba(x[va]))
            new = chance_test(y, m.oof_probs(x, y, 5, 0))
            print(f"{kind:<22}{model:<12}{old['correct']:>6} of {old['n']}, p {old['p']:<6.2g}"
                  f"{new['correct']:>12} of {new['n']}, p {new['p']:.2g}", flush=True)
    print("\nthe test's power: a model right on 2 of 3 (3 classes), judged on every seed label out of fold")
    print(f"{'labels a class':>15}{'right':>8}{'p':>10}{'passes at 0.05':>16}")
    for m in (2, 3, 4, 5, 10):
        n = 3 * m
        right = math.ceil(2 * n / 3)
        p = binomial_p(n, right, 1 / 3)
        print(f"{m:>15}{f'{right}/{n}':>8}{p:>10.3g}{'yes' if p <= 0.05 else 'no':>16}")


if __name__ == "__main__":
    main()
