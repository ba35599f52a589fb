"""Put pool images into the run's class folders. The only step that touches files.

Originals are never moved or changed: each run folder entry is a hard link
(same bytes, no extra space) or, where linking is impossible, a copy.
Unclear files carry their queue rank as a name prefix (``00001_name.jpg``) so a
file manager shows them most useful first.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vote import UNCLEAR

FOLDERS = ("0", "1", "unclear")
PREDICTION_FIELDS = ("image", "file", "decision", "queue_rank", "source", "issue")  # predictions.csv, besides scores


def model_columns(header: list[str]) -> list[str]:
    """The model-score columns of a predictions.csv header (every column that is not a fixed field)."""
    return [k for k in header if k not in PREDICTION_FIELDS]


def folder_of(decision: int) -> str:
    return "unclear" if decision == UNCLEAR else str(int(decision))


def file_name(image: str, decision: int, rank: int) -> str:
    """Name of the image inside its run folder: nested paths are flattened with '__';
    unclear images get their 1-based queue rank as a 5-digit prefix."""
    flat = image.replace("/", "__")
    return f"{rank:05d}_{flat}" if decision == UNCLEAR else flat


@dataclass(frozen=True)
class Placement:
    image: str  # name relative to the images folder
    folder: str  # "0", "1" or "unclear"
    file: str  # file name inside that folder


def plan(images: list[str], decision: np.ndarray, rank: np.ndarray) -> list[Placement]:
    """Where each image goes. images: (N,) names; decision, rank: (N,) from :func:`vote`."""
    return [
        Placement(img, folder_of(int(d)), file_name(img, int(d), int(r)))
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


def materialize(placements: list[Placement], images_root: Path, run_dir: Path) -> dict[str, int]:
    """Create ``run_dir/{0,1,unclear}/`` and fill them. Returns how many were linked and copied."""
    for f in FOLDERS:
        (run_dir / f).mkdir(parents=True, exist_ok=True)
    counts = {"link": 0, "copy": 0}
    for p in placements:
        counts[link_or_copy(images_root / p.image, run_dir / p.folder / p.file)] += 1
    return counts
