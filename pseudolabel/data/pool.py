"""The image pool: every image below a folder, decoded once (or read back from the pool cache)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pseudolabel.data.images import MAX_PIXELS, Problems, list_images, shown, writable_name


@dataclass
class Pool:
    """The unlabeled images, decoded once.

    names: (N,) image names relative to ``root`` (posix style), sorted.
    images: (N, C, H, W) uint8 array.
    """

    root: Path
    names: list[str]
    images: np.ndarray
    skipped_non_images: int = 0
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)
    stats: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, 3) int64: see signatures

    def changed(self) -> tuple[list[int], list[int]]:
        """(rows whose file changed since it was read, rows whose file is gone): by size, mtime and inode
        against :attr:`stats` (a run checks them before it links images into its folders)."""
        if self.stats is None:
            return [], []
        now = signatures(self.root, self.names)
        gone = np.flatnonzero(now[:, 0] < 0)
        moved = np.flatnonzero((now != self.stats).any(1) & (now[:, 0] >= 0))
        return moved.tolist(), gone.tolist()

    def index(self) -> dict[str, int]:
        """{name: row in images}, built once."""
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        return self._index


def load_pool(root: str | Path, size: int | tuple[int, int], channels: int, problems: Problems, progress: bool = True,
              cache: Path | None = None, max_pixels: int | None = MAX_PIXELS) -> Pool:
    """Decode every image below ``root`` (unreadable files are reported and skipped), or reuse the
    uint8 memmap that ``cache`` holds for the same files (see :mod:`pseudolabel.data.cache`). A file whose
    name is not valid UTF-8 is skipped with a warning here, before any training: the run could not
    write its name."""
    from pseudolabel.config.values import image_hw
    from pseudolabel.data.cache import decode_cached, decoder

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"images folder not found: {root}")
    names, others = list_images(root)
    if others:
        problems.add(f"{root}: skipped {others} non-image file(s)")
    for n in [n for n in names if not writable_name(n)]:
        problems.add(f"{shown(root / n)}: the file name is not valid UTF-8; skipped (rename it to include it)")
    names = [n for n in names if writable_name(n)]
    hw = image_hw(size)
    top = os.fspath(root)
    files = [(n, os.path.join(top, n)) for n in names]  # strings: a Path per image would cost far more memory
    images, meta = decode_cached(files, hw, channels, cache, decoder(hw, channels, max_pixels), progress,
                                 "loading images", dedupe=True)  # fmt: skip
    for name, reason in meta["skipped"]:
        if reason.startswith("Duplicate: "):
            first = reason.removeprefix("Duplicate: same bytes as ")
            problems.add(f"{shown(root / name)}: same bytes as {shown(first)}; scored once, as {shown(first)}")
        else:
            problems.add(f"{shown(root / name)}: cannot read image ({reason}); skipped")
    if not meta["names"]:
        raise ValueError(f"no readable images in {root}")
    return Pool(root=root, names=meta["names"], images=images, skipped_non_images=others,
                stats=signatures(root, meta["names"]))


def signatures(root: Path, names: list[str]) -> np.ndarray:
    """(N, 3) int64: size, mtime (ns) and inode of each image file (symbolic links followed); -1s for a
    file that is gone."""
    out = np.full((len(names), 3), -1, np.int64)
    top = os.fspath(root)
    for i, n in enumerate(names):
        try:
            st = os.stat(os.path.join(top, n))
        except OSError:
            continue
        out[i] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out
