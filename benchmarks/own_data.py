"""A new user's own small data set, end to end: three CIFAR-10 classes, 10 seed labels a class, a few hundred
photos, taken through `init` (offline: it picks the real weights it can load), `run`, `retrain` and `resort`
exactly as the README says, then scored against the true labels of ``dev_labels.csv``.

    python benchmarks/own_data.py                          # airplane, automobile, bird into /tmp/own-data
    python benchmarks/own_data.py --classes cat,dog,frog --work /tmp/own2

Prints the folders' precision (macro) and the unclear share after `run` and after `resort`, and the final
model's accuracy, on the dev-labeled photos (the seed photos are not scored).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10"


def read(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {r["image"]: r["label"] for r in csv.DictReader(f)}


def cli(*args: str, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pseudolabel.cli", *args, "--quiet"] if args[0] in ("run", "retrain") else
                   [sys.executable, "-m", "pseudolabel.cli", *args], cwd=cwd, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    return time.perf_counter() - t


def folders(run: Path, truth: dict[str, str], classes: list[str]) -> tuple[float, float, dict]:
    """(macro precision of the class folders on dev photos, unclear share of the pool, per-class precision)."""
    from pseudolabel.core import runstate

    rows = runstate.read_predictions(run)
    state = {r["image"]: r["decision"] for r in rows}
    for f in [*classes, "unclear"]:  # where each image is now (resort moves files and rewrites the record)
        for p in (run / f).iterdir() if (run / f).is_dir() else ():
            name = next((r["image"] for r in rows if r["file"].endswith("/" + p.name)), None)
            if name:
                state[name] = f
    prec = {}
    for c in classes:
        got = [n for n, f in state.items() if f == c and n in truth]
        prec[c] = float(np.mean([truth[n] == c for n in got])) if got else float("nan")
    return float(np.nanmean(list(prec.values()))), sum(f == "unclear" for f in state.values()) / len(state), prec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", default="airplane,automobile,bird")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--work", default="/tmp/own-data")
    args = ap.parse_args()
    classes = args.classes.split(",")
    seeds, dev = read(DATA / "seed_labels.csv"), read(DATA / "dev_labels.csv")
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "photos").mkdir(parents=True)
    chosen = [n for c in classes for n in [n for n, v in seeds.items() if v == c][: args.per_class]]
    truth = {n: v for n, v in dev.items() if v in classes}
    for n in [*chosen, *truth]:
        shutil.copy(DATA / "images" / n, work / "photos" / n)
    (work / "labels.csv").write_text("image,label\n" + "".join(f"{n},{seeds[n]}\n" for n in chosen))
    t = {"init": cli("init", "photos", "--labels", "labels.csv", "--name", "mine", cwd=work)}
    t["run"] = cli("run", "pipelines/mine.yaml", "--out", "runs/mine", cwd=work)
    p_run, u_run, per_run = folders(work / "runs/mine", truth, classes)
    t["retrain"] = cli("retrain", "runs/mine", cwd=work)
    t["resort"] = cli("resort", "runs/mine", cwd=work)
    p_res, u_res, per_res = folders(work / "runs/mine", truth, classes)
    sys.path.insert(0, str(ROOT))
    from pseudolabel import Classifier

    clf = Classifier.load(work / "runs/mine")
    names = sorted(truth)
    probs = clf.probs_array(clf.load_images([work / "photos" / n for n in names]))
    acc = float(np.mean([clf.classes[k] == truth[n] for n, k in zip(names, probs.argmax(1))]))
    import yaml

    cfg = yaml.safe_load((work / "pipelines/mine.yaml").read_text())
    print(f"\n{len(classes)} classes ({', '.join(classes)}), {args.per_class} seed labels a class, "
          f"{len(chosen) + len(truth)} photos, {len(truth)} scored")  # fmt: skip
    print(f"init chose: yolo {cfg['yolo']['pretrained']}, resnet50 {cfg['resnet50']['pretrained']}, "
          f"retrain {cfg['retrain'].get('backbone')} {cfg['retrain'].get('pretrained')}")  # fmt: skip
    print(f"{'':<22}{'macro precision':>16}{'unclear':>10}")
    print(f"{'after run':<22}{p_run:>16.3f}{u_run:>10.3f}   {per_run}")
    print(f"{'after resort':<22}{p_res:>16.3f}{u_res:>10.3f}   {per_res}")
    print(f"final model accuracy: {acc:.3f}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))


if __name__ == "__main__":
    main()
