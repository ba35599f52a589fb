"""Review server load: C clients make N decisions each over HTTP, undoing their last action a third
of the time, against a generated run; prints p50/p95/max latency per request and checks that
nothing was lost (each image's journaled decision is the last one its client was told, and the
folders agree with the journal).

    python benchmarks/review_load.py                # 4 clients x 1,000 decisions, 6,000 generated images
    python benchmarks/review_load.py --clients 8 --decisions 500
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudolabel.core import (
    runstate,  # noqa: E402
    sort,
)
from pseudolabel.review.server import make_server  # noqa: E402
from pseudolabel.review.state import ReviewState  # noqa: E402


def make_run(root: Path, n: int, images: Path | None = None) -> Path:
    """A run of ``n`` generated 8x8 PNGs (or of every file in ``images``), every one in unclear/
    (fake scores, no training)."""
    from PIL import Image

    run, rng = root / "run", np.random.default_rng(0)
    if images is None:
        images = root / "images"
        images.mkdir(parents=True)
        names = [f"img{i:06d}.png" for i in range(n)]
        for name in names:
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(images / name)
    else:
        names = sorted(os.listdir(images))
        n = len(names)
    decision, rank = np.full(n, -1), np.arange(1, n + 1)
    folders = ("0", "1")
    placements = sort.plan(names, decision, rank, folders)
    sort.materialize(placements, images, run, folders)
    rows = [{"image": p.image, "file": f"{p.folder}/{p.file}", "decision": p.folder, "queue_rank": rank[i],
             "source": "vote", "issue": ""} for i, p in enumerate(placements)]  # fmt: skip
    (run / "predictions.csv").write_text(runstate.predictions_text(rows))
    p = rng.random(n)
    for model in ("yolov8-cls", "resnet50"):
        runstate.save_scores(run, model, np.stack([1 - p, p], 1))
    runstate.RunInfo("load", ("closed", "open"), folders, ("yolov8-cls", "resnet50"), runstate.JOURNAL).save(run)
    return run


def post(url: str, path: str, body: dict, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "X-Pseudolabel-Token": token, "Origin": url})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def client(url: str, token: str, mine: list[str], n: int, seed: int, out: dict) -> None:
    """``n`` decisions on the client's own images; a third of the time it undoes its last action first."""
    rng, todo, done, told, lat, errors = random.Random(seed), list(mine), [], {}, [], []
    decided = 0
    while decided < n:
        t = time.perf_counter()
        if done and rng.random() < 1 / 3:
            action, image = done.pop()
            status, answer = post(url, "/api/undo", {"action": action}, token)
            told.pop(image, None)
            todo.append(image)
        else:
            image, label = todo.pop(rng.randrange(len(todo))), rng.choice(["0", "1", "unsure"])
            status, answer = post(url, "/api/decide", {"image": image, "label": label}, token)
            done.append((answer.get("action"), image))
            told[image] = label
            decided += 1
        lat.append(time.perf_counter() - t)
        if status != 200:
            errors.append(answer)
    out.update(told=told, latencies=lat, errors=errors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--decisions", type=int, default=1000, help="decisions per client (undos come on top)")
    ap.add_argument("--images", type=int, default=6000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args.images)
        state = ReviewState(run, run / runstate.JOURNAL)
        server = make_server(state)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        names = sorted(state.items)
        outs = [{} for _ in range(args.clients)]
        threads = [threading.Thread(target=client, args=(url, server.token, names[k :: args.clients], args.decisions,
                                                         k, outs[k])) for k in range(args.clients)]  # fmt: skip
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        lat = np.array([x for o in outs for x in o["latencies"]]) * 1000
        told = {i: label for o in outs for i, label in o["told"].items()}
        standing = {i: r["label"] for i, r in state.journal.last_decisions().items()}
        problems = state.status()["problems"]
        server.shutdown()
    errors = sum(len(o["errors"]) for o in outs)
    print(f"{args.clients} clients x {args.decisions} decisions (+ undos) on {args.images} images: {len(lat)} requests "
          f"in {wall:.1f} s\n")  # fmt: skip
    print("| requests | p50 ms | p95 ms | max ms | errors | lost or wrong decisions | journal/folder disagreements |")
    print("|---|---|---|---|---|---|---|")
    wrong = sum(standing.get(i) != label for i, label in told.items()) + len(set(standing) - set(told))
    print(f"| {len(lat)} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 95):.1f} | {lat.max():.1f} | {errors} "
          f"| {wrong} | {len(problems)} |")  # fmt: skip
    return 1 if errors or wrong or problems else 0


if __name__ == "__main__":
    sys.exit(main())
