"""Put pool images into the run's class folders, and move them there for a re-sort.

Originals are never moved or changed: each run folder entry is a hard link
(same bytes, no extra space) or, where linking is impossible, a copy. A re-sort
(:func:`move_within`) moves only those entries, within the run, plan first.
Unclear files carry their queue rank as a name prefix (``00001_name.jpg``) so a
file manager shows them most useful first.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .runstate import UNCLEAR, fsync_dir, write_atomic

PENDING = "resort-plan.json"  # a re-sort's moves and its new predictions.csv, written before any file moves


def rank_width(queue: int) -> int:
    """Digits of the rank prefix for a queue of ``queue`` images: 5, or more so that names sort in
    queue order (a 100,000-image queue gets 6)."""
    return max(5, len(str(max(int(queue), 0))))


def file_name(image: str, decision: int, rank: int, width: int = 5) -> str:
    """Name of the image inside its run folder: nested paths are flattened with '__';
    unclear images get their 1-based queue rank as a ``width``-digit prefix (see :func:`rank_width`)."""
    flat = image.replace("/", "__")
    return f"{rank:0{width}d}_{flat}" if decision < 0 else flat


@dataclass(frozen=True)
class Placement:
    image: str  # name relative to the images folder
    folder: str  # a class folder or "unclear"
    file: str  # file name inside that folder


def plan(images: list[str], decision: np.ndarray, rank: np.ndarray, folders: tuple[str, ...]) -> list[Placement]:
    """Where each image goes. images: (N,) names; decision, rank: (N,) from :func:`vote`;
    folders: the K class folder names in class order."""
    width = rank_width(int(np.max(rank, initial=0)))
    return [
        Placement(img, UNCLEAR if d < 0 else folders[int(d)], file_name(img, int(d), int(r), width))
        for img, d, r in zip(images, decision, rank)
    ]


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst``; copy (keeping the mtime) if linking fails. Returns 'link' or 'copy'."""
    try:
        os.link(src, dst)
        return "link"
    except OSError:
        try:
            shutil.copy2(src, dst)
        except OSError as exc:  # name the file we failed to write, not the original we read
            raise OSError(exc.errno, exc.strerror, str(dst)) from None
        return "copy"


def materialize(placements: list[Placement], images_root: Path, run_dir: Path, folders: tuple[str, ...]
                ) -> dict[str, int]:
    """Create ``run_dir/<folder>/`` for every class folder and unclear/, and fill them.
    Returns how many were linked and copied."""
    for f in (*folders, UNCLEAR):
        (run_dir / f).mkdir(parents=True, exist_ok=True)
    counts = {"link": 0, "copy": 0}
    for p in placements:
        counts[link_or_copy(images_root / p.image, run_dir / p.folder / p.file)] += 1
    return counts


def move_within(run_dir: Path, moves: list[tuple[str, str]], predictions: str) -> int:
    """Move files inside ``run_dir`` and then replace its predictions.csv, surviving a crash.

    moves: (source, target) paths relative to ``run_dir``, such as ``("unclear/00007_a.jpg", "0/a.jpg")``.
    The plan is written first (atomically), so :func:`finish_pending` completes it after an interruption.
    Returns how many files moved."""
    write_atomic(run_dir / PENDING, json.dumps({"moves": moves, "predictions": predictions}))
    return finish_pending(run_dir)


def finish_pending(run_dir: Path) -> int:
    """Carry out a plan left by :func:`move_within`, if any: every move not yet made, then predictions.csv,
    then the plan is removed. Safe to repeat. Returns how many files moved."""
    plan_path = Path(run_dir) / PENDING
    if not plan_path.is_file():
        return 0
    plan = json.loads(plan_path.read_text())
    done, touched = 0, set()
    for src, dst in plan["moves"]:
        s, d = run_dir / src, run_dir / dst
        if s.exists() and d.exists():
            raise ValueError(f"{d} already exists; cannot move {s} there (see {plan_path})")
        if s.exists():
            os.rename(s, d)
            done += 1
        touched.add(d.parent)
    for f in touched:
        fsync_dir(f)
    write_atomic(run_dir / "predictions.csv", plan["predictions"])
    plan_path.unlink()
    fsync_dir(run_dir)
    return done
