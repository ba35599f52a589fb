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


@pytest.fixture
def small_pool(eyes: Path, tmp_path: Path) -> Path:
    """A private copy of the first 300 real crops (all seed-labeled images are among them)."""
    dst = tmp_path / "images"
    dst.mkdir()
    for name in sorted(os.listdir(eyes / "images"))[:300]:
        shutil.copy2(eyes / "images" / name, dst / name)
    return dst


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file below root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out
