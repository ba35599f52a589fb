"""How cost grows with the pool: synthetic pools of 4 k, 40 k and 400 k images made from the eyes crops.

Each pool image is a real crop, randomly flipped, shifted by up to 2 pixels and contrast-scaled
(0.8-1.2), saved as its own PNG, so every file is distinct. For each pool it prints:
- the pool cache build (decode into the uint8 memmap) and its reuse, in seconds;
- scoring as in `run` (the pool memmap streamed through a model): images/s and peak RSS;
- `pseudolabel predict --csv` on the folder (tta none), twice: the first decodes the files into the
  pool cache, the second scores from it: images/s and peak RSS of each;
- a FixMatch retrain step on that pool: seconds per step (the best of three 40-step runs);
- the review server with the whole pool in unclear/: p50/p95 of queue reads and decisions;
- `predict --engine ray` with 1 and 2 Ray Data actors (reading and decoding the files themselves,
  no cache), each run three times, alternating, best kept: images/s, the driver's peak RSS and the
  largest Ray worker's (a local Ray on this machine; its start-up and Ray Data's are not counted;
  the scoring actors' start-up is).
Each measurement that reports memory runs in its own process.

    python benchmarks/scale.py                       # 4k, 40k, 400k; ~1.6 GB of disk at 400 k
    python benchmarks/scale.py --sizes 4000,40000 --keep /tmp/scale
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from multiprocessing import Pool as Workers
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EYES = ROOT.parent / "shared" / "data" / "eyes" / "images"


def _make_chunk(args: tuple) -> int:
    from PIL import Image

    out, start, stop, crops = args
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        x = crops[i % len(crops)].astype(np.float32)
        if rng.random() < 0.5:
            x = x[:, ::-1]
        x = np.roll(x, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
        x = (x - x.mean()) * rng.uniform(0.8, 1.2) + x.mean()
        Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8)).save(out / f"s{i:07d}.png")
    return stop - start


def make_pool(out: Path, n: int) -> float:
    """``n`` distinct synthetic crops in ``out``; returns the seconds it took."""
    from pseudolabel.data.images import load_image

    start = time.perf_counter()
    out.mkdir(parents=True)
    crops = [load_image(EYES / f, 24, 1)[0] for f in sorted(os.listdir(EYES))]
    step = 20_000
    with Workers(2) as w:
        w.map(_make_chunk, [(out, i, min(i + step, n), crops) for i in range(0, n, step)])
    return time.perf_counter() - start


def child(code: str) -> dict:
    """Run ``code`` (which prints one JSON line) in a fresh interpreter; adds its peak RSS in MB."""
    wrapper = ("import json, resource, subprocess, sys\n"
               "p = subprocess.run([sys.executable, '-c', sys.argv[1]], capture_output=True, text=True)\n"
               "if p.returncode: sys.exit(p.stderr)\n"
               "out = json.loads(p.stdout.strip().splitlines()[-1])\n"
               "out['rss_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
               "print(json.dumps(out))\n")  # fmt: skip
    p = subprocess.run([sys.executable, "-c", wrapper, code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


CACHE = """
import json, time
from pathlib import Path
from pseudolabel.data.images import Problems
from pseudolabel.data.pool import load_pool
t = time.perf_counter(); p = load_pool({pool!r}, 24, 1, Problems(quiet=True), False, cache=Path({cache!r}))
print(json.dumps({{"seconds": time.perf_counter() - t, "n": len(p.names)}}))
"""

SCORE = """
import json, time, torch
from pathlib import Path
from pseudolabel.data.images import Problems
from pseudolabel.data.pool import load_pool
from pseudolabel.train.fixmatch import predict_probs
from pseudolabel.models.backbones import create_backbone
torch.manual_seed(0)
p = load_pool({pool!r}, 24, 1, Problems(quiet=True), False, cache=Path({cache!r}))
net = create_backbone("tinycnn", num_classes=2, in_chans=1, image_size=24)
t = time.perf_counter(); probs = predict_probs(net, p.images, batch_size=512)
print(json.dumps({{"seconds": time.perf_counter() - t, "n": len(probs)}}))
"""

PREDICT = """
import json, os, subprocess, sys, time
import torch
os.environ["PSEUDOLABEL_CACHE"] = {pcache!r}
from pseudolabel.cli.main import main
from pseudolabel.serve import predict
t = time.perf_counter()  # interpreter and torch start-up excluded
assert main(["predict", {pool!r}, "--model", {model!r}, "--csv", {csv!r}]) == 0
print(json.dumps({{"seconds": time.perf_counter() - t}}))
"""

RAY_PREDICT = """
import json, os, threading, time
os.environ["PSEUDOLABEL_CACHE"] = ""
from pseudolabel.engines import ray as ray_engine
from pseudolabel.config.schema import RayConfig
from pseudolabel.cli.main import main
ray_engine.init(RayConfig())  # a local Ray on this machine; its start-up is not counted,
import ray  # nor Ray Data's own (its stats, autoscaling and location actors start with the first dataset)
ray.data.range(8).map_batches(lambda b: b).materialize()
workers, done = {{}}, threading.Event()
def poll():  # peak RSS of the Ray worker processes (ray::... in their command line)
    while not done.is_set():
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and open(f"/proc/{{pid}}/cmdline", "rb").read().startswith(b"ray::"):
                    rss = [int(l.split()[1]) for l in open(f"/proc/{{pid}}/status") if l.startswith("VmRSS")][0]
                    workers[pid] = max(workers.get(pid, 0), rss / 1024)
            except (OSError, IndexError):
                pass
        time.sleep(0.2)
threading.Thread(target=poll, daemon=True).start()
t = time.perf_counter()
assert main(["predict", {pool!r}, "--model", {model!r}, "--csv", {csv!r}, "--engine", "ray",
             "--workers", "{workers}", "--no-cache"]) == 0
seconds = time.perf_counter() - t
done.set()
print(json.dumps({{"seconds": seconds, "worker_rss_mb": max(workers.values(), default=0)}}))
"""

STEP = """
import json, time, numpy as np, torch
from pathlib import Path
from pseudolabel.data.images import Problems
from pseudolabel.data.pool import load_pool
from pseudolabel.train.fixmatch import FixMatchConfig, fit_fixmatch
from pseudolabel.models.backbones import create_backbone
p = load_pool({pool!r}, 24, 1, Problems(quiet=True), False, cache=Path({cache!r}))
x = p.images
lb = np.asarray(x[:100]); y = np.arange(100) % 2
net = create_backbone("tinycnn", num_classes=2, in_chans=1, image_size=24)
fc = FixMatchConfig(epochs=1, epoch_steps=5, batch_size=32, mu=4)
fit_fixmatch(net, lb, y, x, lb[:20], y[:20], fc, progress=False)  # warm
fc = FixMatchConfig(epochs=1, epoch_steps=40, batch_size=32, mu=4)
best = min(fit_fixmatch(net, lb, y, x, lb[:20], y[:20], fc, progress=False).seconds for _ in range(3))  # 40 steps, 3 times
print(json.dumps({{"s_per_step": best / 40}}))
"""


def export_untrained(out: Path) -> Path:
    """A tinycnn with the eyes preprocessing and tta none, exported as `retrain` exports."""
    import torch

    from pseudolabel.config.schema import Config
    from pseudolabel.models.backbones import create_backbone
    from pseudolabel.serve.predict import export_model

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    export_model(create_backbone("tinycnn", num_classes=2, in_chans=1, image_size=24), Config(), out)
    return out


def review_latency(pool: Path, root: Path, requests: int = 200) -> dict:
    """p50/p95 (ms) of queue reads and decisions with the whole pool in unclear/."""
    from benchmarks.review_load import make_run
    from pseudolabel.review.server import make_server
    from pseudolabel.review.state import ReviewState

    run = make_run(root, 0, images=pool)
    start = time.perf_counter()
    state = ReviewState(run, run / "journal.csv")
    server = make_server(state, port=0)
    load_s = time.perf_counter() - start
    url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    names = sorted(state.items)[: requests // 2]
    times: dict[str, list[float]] = {"queue": [], "decide": []}
    for i in range(requests):
        t = time.perf_counter()
        if i % 2 == 0:
            with urllib.request.urlopen(url + "/api/queue?order=rank&limit=500", timeout=60) as r:
                r.read()
            times["queue"].append(time.perf_counter() - t)
        else:
            body = json.dumps({"image": names[i // 2], "label": "1"}).encode()
            req = urllib.request.Request(url + "/api/decide", data=body, method="POST", headers={
                "Content-Type": "application/json", "X-Pseudolabel-Token": server.token, "Origin": url})  # fmt: skip
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            times["decide"].append(time.perf_counter() - t)
    server.shutdown()
    all_ms = np.array(times["queue"] + times["decide"]) * 1000
    return {"open_s": load_s, "p50_ms": float(np.percentile(all_ms, 50)), "p95_ms": float(np.percentile(all_ms, 95)),
            "queue_p95_ms": float(np.percentile(np.array(times["queue"]) * 1000, 95)),
            "decide_p95_ms": float(np.percentile(np.array(times["decide"]) * 1000, 95))}  # fmt: skip


def measure(n: int, root: Path, model: Path, ray: bool = True) -> dict:
    pool, cache = root / f"pool{n}", root / f"cache{n}"
    row = {"n": n, "make_s": make_pool(pool, n)}
    row["disk_mb"] = sum(e.stat().st_blocks * 512 for e in os.scandir(pool)) / 2**20
    row["cache_build_s"] = child(CACHE.format(pool=str(pool), cache=str(cache)))["seconds"]
    row["cache_reuse_s"] = child(CACHE.format(pool=str(pool), cache=str(cache)))["seconds"]
    s = child(SCORE.format(pool=str(pool), cache=str(cache)))
    row.update(score_ips=n / s["seconds"], score_rss_mb=s["rss_mb"])
    # before the Ray rows: a local Ray shutting down in the background would slow the steps
    row["retrain_s_per_step"] = child(STEP.format(pool=str(pool), cache=str(cache)))["s_per_step"]
    for key in ("predict_cold", "predict"):  # the first decodes into the cache, the second reads it
        p = child(PREDICT.format(pool=str(pool), model=str(model), csv=str(root / f"pred{n}.csv"),
                                 pcache=str(root / f"pcache{n}")))  # fmt: skip
        row.update({f"{key}_ips": n / p["seconds"], f"{key}_rss_mb": p["rss_mb"]})
    shutil.rmtree(root / f"pcache{n}", ignore_errors=True)
    if ray:
        for w in (1, 2, 1, 2, 1, 2):  # Ray Data actors read, decode and score the files (no cache); best of three
            r = child(RAY_PREDICT.format(pool=str(pool), model=str(model), csv=str(root / f"pred{n}.csv"), workers=w))
            if n / r["seconds"] > row.get(f"ray{w}_ips", 0):
                row.update({f"ray{w}_ips": n / r["seconds"], f"ray{w}_rss_mb": r["rss_mb"],
                            f"ray{w}_worker_rss_mb": r["worker_rss_mb"]})  # fmt: skip
        row["ray_speedup"] = row["ray2_ips"] / row["ray1_ips"]
    row.update({f"review_{k}": v for k, v in review_latency(pool, root / f"review{n}").items()})
    shutil.rmtree(root / f"review{n}", ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4000,40000,400000", help="pool sizes, comma-separated")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    args = ap.parse_args(argv)
    os.environ["PSEUDOLABEL_CACHE"] = ""  # every cache here is explicit
    root = Path(args.keep or tempfile.mkdtemp(prefix="pseudolabel-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    model = export_untrained(root / "model")
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(measure(n, root, model, ray=not args.no_ray))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            for d in (root / f"pool{n}", root / f"cache{n}"):
                if not args.keep:
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    cols = [("n", "pool", "{:,}"), ("disk_mb", "disk MB", "{:.0f}"), ("cache_build_s", "cache build s", "{:.1f}"),
            ("cache_reuse_s", "cache reuse s", "{:.2f}"), ("score_ips", "run scoring img/s", "{:,.0f}"),
            ("score_rss_mb", "scoring RSS MB", "{:.0f}"), ("predict_cold_ips", "predict 1st img/s", "{:,.0f}"),
            ("predict_cold_rss_mb", "predict 1st RSS MB", "{:.0f}"), ("predict_ips", "predict again img/s", "{:,.0f}"),
            ("predict_rss_mb", "predict RSS MB", "{:.0f}"), ("retrain_s_per_step", "retrain s/step", "{:.3f}"),
            ("review_open_s", "review open s", "{:.1f}"), ("review_p95_ms", "review p95 ms", "{:.1f}")]  # fmt: skip
    if not args.no_ray:
        cols += [("ray1_ips", "Ray 1 worker img/s", "{:,.0f}"), ("ray2_ips", "Ray 2 workers img/s", "{:,.0f}"),
                 ("ray_speedup", "Ray 2 / 1", "{:.2f}x"),
                 ("ray2_rss_mb", "Ray driver RSS MB", "{:.0f}"), ("ray2_worker_rss_mb", "Ray worker RSS MB", "{:.0f}")]
    cols = [c for c in cols if all(c[0] in r for r in rows)]
    print("| " + " | ".join(c[1] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt.format(r[k]) for k, _, fmt in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
