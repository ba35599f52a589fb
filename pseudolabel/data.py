"""Loading the image pool and the seed labels.

Everything here reads; nothing writes. Problems with single files or single
labels are reported as one line each (see :class:`Problems`) and skipped, so a
run goes on wherever that is safe.
"""
from __future__ import annotations

import csv
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

    def index(self) -> dict[str, int]:
        """{name: row in images}, built once."""
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        return self._index


def list_images(root: Path) -> tuple[list[str], int]:
    """Image files below ``root`` (recursive, symlinked folders not followed).

    Returns (sorted relative names, number of non-image files skipped).
    """
    names, others, top = [], 0, os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(top):
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


def load_pool(root: str | Path, size: int | tuple[int, int], channels: int, problems: Problems, progress: bool = True,
              cache: Path | None = None, max_pixels: int | None = MAX_PIXELS) -> Pool:
    """Decode every image below ``root`` (unreadable files are reported and skipped), or reuse the
    uint8 memmap that ``cache`` holds for the same files (see :mod:`pseudolabel.cache`). A file whose
    name is not valid UTF-8 is skipped with a warning here, before any training: the run could not
    write its name."""
    from .cache import decode_cached, decoder
    from .config import image_hw

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
    return Pool(root=root, names=meta["names"], images=images, skipped_non_images=others)


# ----------------------------------------------------------------------------- seed labels


def _label_of(value: object, classes: tuple[str, ...]) -> int | None:
    """Map a class name (any case) or a class index ('0' .. 'K-1') to the index; None when unknown."""
    text = str(value).strip()
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    lowered = [c.lower() for c in classes]
    return lowered.index(text.lower()) if text.lower() in lowered else None


def _read_json(path: Path, classes: tuple[str, ...], problems: Problems) -> list[tuple[str, int]]:
    from . import annotations

    data = annotations.load_json(path)
    if annotations.is_labelstudio(data):
        return annotations.read_labelstudio(data, path, classes, problems, _label_of)
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected {{"<class>": [image, ...]}} or a Label Studio export, got '
                         f"{type(data).__name__}")
    pairs = []
    for key, names in data.items():
        label = _label_of(key, classes)
        if label is None:
            problems.add(f"{path}: unknown class {key!r} (known: {', '.join(classes)}); its images ignored")
            continue
        if not isinstance(names, list):
            problems.add(f"{path}: class {key!r} is not a list; ignored")
            continue
        pairs += [(str(n), label) for n in names]
    return pairs


def _read_csv(path: Path, classes: tuple[str, ...], problems: Problems) -> list[tuple[str, int]]:
    try:
        rows = list(csv.reader(path.read_bytes().decode("utf-8").splitlines(), strict=True))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: malformed CSV ({exc})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["image", "label"]:
        rows = rows[1:]
    pairs = []
    for lineno, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            problems.add(f"{path}:{lineno}: expected 'image,label', got {','.join(row)!r}; ignored")
            continue
        label = _label_of(row[1], classes)
        if label is None:
            problems.add(f"{path}:{lineno}: unknown label {row[1]!r} for {row[0]!r}; ignored")
            continue
        pairs.append((row[0].strip(), label))
    return pairs


def _read_folders(path: Path, classes: tuple[str, ...], problems: Problems) -> list[tuple[str, int]]:
    pairs = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name != "no_label"):  # CVAT's unlabeled
        label = _label_of(sub.name, classes)
        if label is None:
            problems.add(f"{sub}: folder is not a class (known: 0-{len(classes) - 1}, {', '.join(classes)}); ignored")
            continue
        names, _ = list_images(sub)
        pairs += [(Path(n).name, label) for n in names]
    return pairs


def read_seed_labels(path: str | Path, classes: tuple[str, ...], problems: Problems) -> list[tuple[str, int]]:
    """Raw (image name, label) pairs from JSON ``{"<class>": [...], ...}``, CSV ``image,label``,
    class folders ``<root>/<label>/*``, or an annotation tool's export (:mod:`pseudolabel.annotations`:
    CVAT ImageNet zip, CVAT for images XML, Label Studio JSON), told apart by content. Duplicates
    and conflicts are kept (see :func:`clean_seed_labels`)."""
    import zipfile

    from . import annotations

    path = Path(path)
    if path.is_dir():
        return _read_folders(path, classes, problems)
    if not path.is_file():
        raise ValueError(f"seed label file not found: {path}")
    if zipfile.is_zipfile(path):
        return annotations.read_imagenet_zip(path, classes, problems, _label_of)
    if annotations.is_cvat_xml(path):
        return annotations.read_cvat_xml(path, classes, problems, _label_of)
    with open(path, "rb") as f:
        first = f.read(64).lstrip()[:1]
    if path.suffix.lower() == ".json" or first in (b"[", b"{"):
        return _read_json(path, classes, problems)
    if path.suffix.lower() == ".csv":
        return _read_csv(path, classes, problems)
    raise ValueError(f"{path}: seed labels must be .json, .csv, a folder of class folders, a CVAT ImageNet zip, "
                     "CVAT XML or a Label Studio JSON export")


def clean_seed_labels(
    pairs: list[tuple[str, int]], pool_names: list[str], classes: tuple[str, ...], problems: Problems, source: str
) -> dict[str, int]:
    """Resolve raw pairs against the pool: an image under two classes is dropped, and so is
    a name that is not in the pool. Names match the pool's relative path, or its file name
    when that is unique. Returns {pool name: label}."""
    by_path = set(pool_names)
    by_base: dict[str, list[str]] = {}
    for n in pool_names:
        by_base.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    seen: dict[str, set[int]] = {}
    for name, label in pairs:
        resolved = name if name in by_path else None
        if resolved is None and len(by_base.get(name, [])) == 1:
            resolved = by_base[name][0]
        if resolved is None:
            problems.add(f"{source}: {name} is not in the images folder; dropped")
            continue
        seen.setdefault(resolved, set()).add(label)
    labels = {}
    for name, found in seen.items():
        if len(found) > 1:
            names = [repr(classes[c]) for c in sorted(found)]
            problems.add(f"{source}: {name} is labeled both {', '.join(names[:-1])} and {names[-1]}; dropped")
        else:
            labels[name] = found.pop()
    return dict(sorted(labels.items()))


def split_seeds(labels: dict[str, int], n_train: int, seed: int, num_classes: int = 2) -> tuple[list[str], list[str]]:
    """Stratified, seeded split of the seed labels into (train names, validation names).

    Each class gives train images in proportion to its share; at least one image per class
    stays for validation. Each of the ``num_classes`` classes needs two labels or more.
    """
    if len(labels) < 2:
        raise ValueError(f"need at least 2 seed labels, found {len(labels)}")
    present = list(range(num_classes))
    counts = {c: sum(1 for v in labels.values() if v == c) for c in present}
    for c, k in counts.items():
        if k < 2:
            raise ValueError(f"need at least 2 seed labels of class {c}, found {k}")
    n_train = min(n_train, len(labels) - len(present))
    rng = np.random.default_rng(seed)
    train: list[str] = []
    for c in present:
        names = sorted(n for n, v in labels.items() if v == c)
        rng.shuffle(names)
        k = int(round(n_train * counts[c] / len(labels)))
        train += names[: max(1, min(k, len(names) - 1))]
    val = sorted(set(labels) - set(train))
    return sorted(train), val
