"""Shared fixtures: real eye crops from ../shared/data/eyes (never copied into the repo)."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EYES = Path(os.environ.get("PSEUDOLABEL_EYES", ROOT.parent / "shared" / "data" / "eyes"))


@pytest.fixture(scope="session")
def eyes() -> Path:
    """The real eyes data folder. Missing data is an error, not a skip."""
    if not (EYES / "images").is_dir():
        pytest.fail(f"real test data not found at {EYES} (set PSEUDOLABEL_EYES)")
    return EYES


def copy_crops(eyes: Path, dst: Path, n: int = 300) -> Path:
    """A private copy of the first ``n`` real crops in ``dst`` (all seed-labeled images are among the first 300)."""
    dst.mkdir()
    for name in sorted(os.listdir(eyes / "images"))[:n]:
        shutil.copy2(eyes / "images" / name, dst / name)
    return dst


@pytest.fixture
def small_pool(eyes: Path, tmp_path: Path) -> Path:
    """A private copy of the first 300 real crops."""
    return copy_crops(eyes, tmp_path / "images")


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file below root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def make_run(tmp_path: Path, eyes_dir: Path, n: int = 60, seed: int = 0) -> Path:
    """A run folder over n real crops with fixed fake scores (no training): the real vote and
    sort code place the files; predictions.csv and config.yaml look like `pseudolabel run`'s."""
    import csv

    import numpy as np
    import yaml

    from pseudolabel import sort
    from pseudolabel.vote import vote

    images = tmp_path / "images"
    images.mkdir()
    names = sorted(os.listdir(eyes_dir / "images"))[:n]
    for name in names:
        shutil.copy2(eyes_dir / "images" / name, images / name)
    rng = np.random.default_rng(seed)
    a, b = rng.random(n), rng.random(n)
    v = vote(a, b, margin=0.3)
    run = tmp_path / "run"
    placements = sort.plan(names, v.decision, v.rank)
    sort.materialize(placements, images, run)
    with open(run / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "file", "yolov8-cls", "resnet50", "decision", "queue_rank", "source"])
        for i, p in enumerate(placements):
            w.writerow([p.image, f"{p.folder}/{p.file}", f"{a[i]:.6f}", f"{b[i]:.6f}", p.folder,
                        v.rank[i] if p.folder == "unclear" else "", "vote"])  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "eyes-test", "classes": ["closed", "open"]}))
    return run


def mark_issue(run: Path, note: str) -> str:
    """Give the first queue image of ``run`` the label check's ``note`` (an ``issue`` column in
    predictions.csv, as `pseudolabel run` writes it). Returns that image's name."""
    import csv

    path = run / "predictions.csv"
    rows = list(csv.DictReader(open(path)))
    first = min((r for r in rows if r["queue_rank"]), key=lambda r: int(r["queue_rank"]))["image"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], "issue"])
        w.writeheader()
        w.writerows({**r, "issue": note if r["image"] == first else ""} for r in rows)
    return first


@pytest.fixture
def fake_run(eyes: Path, tmp_path: Path) -> Path:
    return make_run(tmp_path, eyes)
