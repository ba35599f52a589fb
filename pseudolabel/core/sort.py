"""Put pool images into the run's class folders, and move them there for a re-sort.

Originals are never moved or changed: each run folder entry is a hard link to the
file (a symbolic link in the pool is resolved first: the run never holds a link that
could dangle) or, where linking is impossible, a copy made with exclusive creation, so
nothing is ever written through an existing name. A re-sort (:func:`move_within`)
moves only those entries, within the run, plan first, and never onto an existing name.

Names: nested paths are flattened (``sub/x.png`` -> ``sub__x.png``), unclear files carry
their queue rank as a prefix (``00001_name.jpg``) so a file manager shows them most
useful first. No two images of a run ever share a file name, in any folder, compared
without case: a clash (``sub/x.png`` beside ``sub__x.png``, ``A.png`` beside ``a.png``, a
pool file named like a queue file) gives every image in it a short hash of its pool
path (``sub__x~1a2b3c4d.png``). predictions.csv records each image's file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.core.names import name_key
from pseudolabel.core.runstate import UNCLEAR, fsync_dir, rename_noreplace, write_atomic

PENDING = "resort-plan.json"  # a re-sort's moves and its new predictions.csv, written before any file moves


def rank_width(queue: int) -> int:
    """Digits of the rank prefix for a queue of ``queue`` images: 5, or more so that names sort in
    queue order (a 100,000-image queue gets 6)."""
    return max(5, len(str(max(int(queue), 0))))


MAX_FLAT = 200  # bytes: a longer flattened name is shortened with a hash (file systems allow 255 per name)


def _digest(image: str, n: int) -> str:
    return hashlib.sha1(image.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def flat_name(image: str) -> str:
    """``image`` (a path relative to the images folder) as one file name: '/' becomes '__'; a name
    longer than :data:`MAX_FLAT` bytes keeps its start and extension around a hash of the path."""
    flat = image.replace("/", "__")
    if len(flat.encode("utf-8", "surrogateescape")) <= MAX_FLAT:
        return flat
    stem, ext = os.path.splitext(flat)
    ext = ext if len(ext.encode("utf-8", "surrogateescape")) <= 16 else ""
    start = stem.encode("utf-8", "surrogateescape")[:120].decode("utf-8", "ignore")
    return f"{start}~{_digest(image, 16)}{ext}"


def file_name(image: str, decision: int, rank: int, width: int = 5) -> str:
    """Name of the image inside its run folder (before any clash is settled, see :func:`unique_names`):
    :func:`flat_name`; unclear images get their 1-based queue rank as a ``width``-digit prefix
    (see :func:`rank_width`)."""
    flat = flat_name(image)
    return f"{rank:0{width}d}_{flat}" if decision < 0 else flat


def _hashed(image: str, name: str, n: int) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem}~{_digest(image, n)}{ext}"


def unique_names(images: list[str], names: list[str], taken: set[str] = frozenset()) -> list[str]:
    """``names`` (one per image) with every clash settled: names equal to another's, or to a
    :func:`name_key` in ``taken`` (files that stay where they are), compared by :func:`name_key`,
    get a hash of their image's pool path, longer until none is left. Deterministic."""
    out = list(names)
    for n in (8, 16, 40):
        counts = Counter(name_key(x) for x in out)
        clash = [i for i, x in enumerate(out) if counts[name_key(x)] > 1 or name_key(x) in taken]
        if not clash:
            return out
        for i in clash:
            out[i] = _hashed(images[i], names[i], n)
    counts = Counter(name_key(x) for x in out)
    bad = [x for x in out if counts[name_key(x)] > 1 or name_key(x) in taken]
    if bad:
        raise ValueError(f"cannot give {bad[0]!r} a name of its own in the run")
    return out


@dataclass(frozen=True)
class Placement:
    image: str  # name relative to the images folder
    folder: str  # a class folder or "unclear"
    file: str  # file name inside that folder


def plan(images: list[str], decision: np.ndarray, rank: np.ndarray, folders: tuple[str, ...]) -> list[Placement]:
    """Where each image goes. images: (N,) names; decision, rank: (N,) from :func:`vote`;
    folders: the K class folder names in class order. No two placements share a file name (see
    :func:`unique_names`), whatever folder they are in: files move between folders by name."""
    width = rank_width(int(np.max(rank, initial=0)))
    names = unique_names(images, [file_name(img, int(d), int(r), width) for img, d, r in zip(images, decision, rank)])
    return [Placement(img, UNCLEAR if d < 0 else folders[int(d)], f) for img, d, f in zip(images, decision, names)]


LINK_FALLBACK = (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EACCES)  # then copy


def copy_exclusive(src: Path, dst: Path) -> None:
    """Copy ``src``'s bytes and times to a new file ``dst``, created with O_EXCL: never through an existing
    name. A failed copy leaves no ``dst``."""
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            with os.fdopen(fd, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            shutil.copystat(src, dst)
        except BaseException:
            os.unlink(dst)
            raise


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` (a symbolic link resolved first) to the new name ``dst``; copy it (keeping the
    mtime) where the file system cannot link. Never writes through an existing ``dst``: that is an
    error. Returns 'link' or 'copy'."""
    real = os.path.realpath(src)  # os.link would link the symbolic link itself, which may dangle in the run
    try:
        os.link(real, dst, follow_symlinks=False)
        return "link"
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise OSError(exc.errno, f"{exc.strerror} (a run never writes onto an existing name)", str(dst)) from None
        if exc.errno not in LINK_FALLBACK:
            raise
    try:
        copy_exclusive(Path(real), dst)
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
            rename_noreplace(s, d)
            done += 1
        touched.add(d.parent)
    for f in touched:
        fsync_dir(f)
    write_atomic(run_dir / "predictions.csv", plan["predictions"])
    plan_path.unlink()
    fsync_dir(run_dir)
    return done
