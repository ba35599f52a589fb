"""Seed labels: JSON, CSV, class folders or an annotation tool's export, resolved against the pool and split."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pseudolabel.data.images import Problems, list_images


def _label_of(value: object, classes: tuple[str, ...]) -> int | None:
    """Map a class name (any case) or a class index ('0' .. 'K-1') to the index; None when unknown."""
    text = str(value).strip()
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    lowered = [c.lower() for c in classes]
    return lowered.index(text.lower()) if text.lower() in lowered else None


def _read_json(path: Path, classes: tuple[str, ...], problems: Problems) -> list[tuple[str, int]]:
    from pseudolabel.data import annotations

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
    class folders ``<root>/<label>/*``, or an annotation tool's export (:mod:`pseudolabel.data.annotations`:
    CVAT ImageNet zip, CVAT for images XML, Label Studio JSON), told apart by content. Duplicates
    and conflicts are kept (see :func:`clean_seed_labels`)."""
    import zipfile

    from pseudolabel.data import annotations

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
