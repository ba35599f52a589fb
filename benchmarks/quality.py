"""Quality benchmark for `pseudolabel run` on the eyes pool.

Reads ../shared/data/eyes/dev_labels.csv (true labels for 1,000 pool images). Only
benchmarks and tests may read it; the pipeline never does.

    python benchmarks/quality.py                 # run the eyes pipeline into runs/bench-quality, then score it
    python benchmarks/quality.py --run runs/eyes # score an existing run folder

Prints the precision of 0/ and 1/ (the share of dev-labeled images in the folder whose
true label matches it), the share of the pool left unclear, each seed model's dev
accuracy and EER, and the wall seconds of each stage.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudolabel.config import load_config, with_overrides  # noqa: E402
from pseudolabel.metrics import classification_metrics  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "eyes" / "dev_labels.csv"


def read_dev(path: Path = DEV) -> dict[str, int]:
    with open(path) as f:
        return {r["image"]: int(r["label"]) for r in csv.DictReader(f)}


def score_run(run_dir: Path, dev: dict[str, int]) -> dict:
    """Dev-label figures for a finished run folder."""
    with open(run_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    models = [k for k in rows[0] if k not in ("image", "file", "decision", "queue_rank", "source")]
    out: dict = {"pool": len(rows)}
    out["unclear"] = sum(r["decision"] == "unclear" for r in rows) / len(rows)
    for folder in ("0", "1"):
        truth = [dev[r["image"]] for r in rows if r["decision"] == folder and r["image"] in dev]
        out[f"precision_{folder}"] = float(np.mean([t == int(folder) for t in truth])) if truth else float("nan")
        out[f"n_dev_{folder}"] = len(truth)
    lab = [r for r in rows if r["image"] in dev]
    y = np.array([dev[r["image"]] for r in lab])
    for m in models:
        s = np.array([float(r[m]) for r in lab])
        met = classification_metrics(y, s)
        out[f"{m}_dev_acc"], out[f"{m}_dev_eer"] = met["accuracy"], met["eer"]
    out["seconds"] = json.loads((run_dir / "timings.json").read_text())
    return out


def print_table(res: dict) -> None:
    print("\n| figure | value | target |\n|---|---|---|")
    print(f"| precision of 0/ (closed) | {100 * res['precision_0']:.2f} % ({res['n_dev_0']} dev images) | >= 98.5 % |")
    print(f"| precision of 1/ (open) | {100 * res['precision_1']:.2f} % ({res['n_dev_1']} dev images) | >= 98.5 % |")
    print(f"| unclear share of the pool | {100 * res['unclear']:.1f} % | <= 20 % |")
    for k in [k for k in res if k.endswith("_dev_acc")]:
        name = k[: -len("_dev_acc")]
        print(f"| {name} dev accuracy / EER | {100 * res[k]:.1f} % / {100 * res[name + '_dev_eer']:.1f} % | |")
    for stage, sec in res["seconds"].items():
        target = "<= 300 s" if stage == "total" else ""
        print(f"| seconds: {stage} | {sec:.0f} | {target} |")


def sweep(run_dir: Path, dev: dict[str, int], margins_a=(0.3, 0.4, 0.45, 0.48, 0.49), margins_b=(0.0, 0.05, 0.1, 0.2, 0.3)):
    """Precision of 0/ and 1/ and the unclear share for other margins, from a run's scores (no retraining).
    Seed labels are not applied here, so figures differ slightly from the run's own folders."""
    from pseudolabel.vote import vote

    with open(run_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    models = [k for k in rows[0] if k not in ("image", "file", "decision", "queue_rank", "source")]
    a, b = (np.array([float(r[m]) for r in rows]) for m in models)
    lab = np.array([i for i, r in enumerate(rows) if r["image"] in dev])
    y = np.array([dev[rows[i]["image"]] for i in lab])
    print(f"\n| margin {models[0]} | margin {models[1]} | precision 0/ | precision 1/ | unclear |\n|---|---|---|---|---|")
    for ma in margins_a:
        for mb in margins_b:
            d = vote(a, b, margin=(ma, mb)).decision
            p0, p1 = (float(np.mean(y[d[lab] == c] == c)) for c in (0, 1))
            print(f"| {ma} | {mb} | {100 * p0:.2f} % | {100 * p1:.2f} % | {100 * np.mean(d == -1):.1f} % |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="score this existing run folder instead of running")
    ap.add_argument("--pipeline", default=str(ROOT / "pipelines" / "eyes.yaml"))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-quality")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--sweep", action="store_true", help="also print precision/unclear for other margins")
    args = ap.parse_args(argv)
    dev = read_dev()
    run_dir = args.run
    if run_dir is None:
        from pseudolabel.pipeline import run_pipeline

        shared = ROOT.parent / "shared" / "data" / "eyes"
        cfg = with_overrides(load_config(args.pipeline), images=str(shared / "images"),
                             labels=str(shared / "targets.json"), seed=args.seed)  # fmt: skip
        run_pipeline(cfg, args.out, overwrite=True, progress=sys.stderr.isatty())
        run_dir = args.out
    res = score_run(run_dir, dev)
    print_table(res)
    if args.sweep:
        sweep(run_dir, dev)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
