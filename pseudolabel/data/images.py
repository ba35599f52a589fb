"""Loading the image pool and the seed labels.

Everything here reads; nothing writes. Problems with single files or single
labels are reported as one line each (see :class:`Problems`) and skipped, so a
run goes on wherever that is safe.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
MAX_PIXELS = 100_000_000  # the default of Config.max_pixels: a larger image (as decoded) is skipped
REDUCE_ABOVE = 16_000_000  # a decoded image with more pixels is first reduced by a whole factor (bounded memory)


_BREAKS = re.compile(r"\s*[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+\s*")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (each line break, with the spaces around it, becomes one space), at most
    ``limit`` characters."""
    flat = _BREAKS.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def shown(path) -> str:
    """A path as a message shows it: bytes a terminal would misread (a name that is not UTF-8,
    control characters) are escaped."""
    text = os.fspath(path)
    if text.isprintable() and not any(0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return text
    raw = os.fsencode(text).decode("utf-8", "backslashreplace")  # a byte that is not UTF-8 shows as \xe9
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in raw)


@dataclass
class Problems:
    """One-line messages about bad input, printed as they happen and kept for the report."""

    lines: list[str] = field(default_factory=list)
    quiet: bool = False

    def add(self, message: str) -> None:
        message = one_line(message, 1000)
        self.lines.append(message)
        if not self.quiet:
            print(f"warning: {message}", file=sys.stderr)


def list_images(root: Path) -> tuple[list[str], int]:
    """Image files below ``root`` (recursive, symlinked folders not followed; a folder pseudolabel made, such
    as a run left inside the images folder, is skipped whole).

    Returns (sorted relative names, number of non-image files skipped).
    """
    from pseudolabel.core.runstate import holds_ours

    names, others, top = [], 0, os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath != top and holds_ours(set(filenames)):  # a run (or final model) of ours: never images
            dirnames[:] = []
            continue
        dirnames.sort()
        rel = os.path.relpath(dirpath, top).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for fn in filenames:
            if fn.startswith("."):
                continue
            if os.path.splitext(fn)[1].lower() in IMAGE_EXTS:
                names.append(prefix + fn)
            else:
                others += 1
    return sorted(names), others


class TooLarge(ValueError):
    """An image with more pixels than ``max_pixels`` (as decoded, after JPEG's draft downscale)."""


def _open(path: Path | BinaryIO) -> Image.Image:
    """Image.open without Pillow's own decompression-bomb warning (it names no file): the pixel limit
    is ours (:class:`TooLarge`); Pillow still refuses images over twice its own limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def load_image(path: Path | BinaryIO, size: int | tuple[int, int], channels: int,
               max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode one image (a path or an open binary file) to a (C, H, W) uint8 array, ``size`` being
    one number (square) or (height, width). Any exception means a bad file; an image of more than
    ``max_pixels`` pixels as decoded (None: no limit) raises :class:`TooLarge`. Large images are decoded
    with bounded memory: JPEG's draft scale, then a whole-factor reduce before any conversion."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    with _open(path) as im:
        im.draft("L" if channels == 1 else "RGB", (w, h))  # cheap JPEG downscale for huge files
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise TooLarge(f"{im.width}x{im.height} pixels is more than max_pixels ({max_pixels:,})")
        if im.width * im.height > REDUCE_ABOVE:
            factor = min(im.width // (2 * w), im.height // (2 * h))
            if factor >= 2:
                im.load()
                im = im.reduce(factor)
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy when there is nothing to turn
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)  # 16-bit: the full range maps to 0..255, as 8-bit would
            scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
            im = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8))
        mode = "L" if channels == 1 else "RGB"
        if im.mode != mode:
            im = im.convert(mode)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def writable_name(name: str) -> bool:
    """Whether a pool name can be written into the run's files (predictions.csv, the journal, the page):
    valid UTF-8 (a name of other bytes comes back from the file system with surrogate escapes)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ----------------------------------------------------------------------------- seed labels


