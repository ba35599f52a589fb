"""Seed labels from the annotation tools people label in, detected by content (not by name):

- **CVAT "ImageNet 1.0"** export: a ``.zip`` (or folder) of class folders ``<label>/<image>``;
  CVAT's ``no_label/`` folder holds unlabeled images and is skipped;
- **CVAT "CVAT for images 1.1"** XML: ``<annotations><image name=...><tag label=.../></image>``;
- **Label Studio** JSON export of a choices task: ``[{"data": {"image": ...}, "annotations":
  [{"result": [{"type": "choices", "value": {"choices": [...]}}]}]}]``.

Each reader returns raw (image name, class index) pairs like :mod:`pseudolabel.data`'s own readers;
problems with single entries are one line each, a malformed file is a ``ValueError`` naming it.
"""
from __future__ import annotations

import re
import urllib.parse
import zipfile
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

NO_LABEL = "no_label"  # CVAT's ImageNet export puts images without a tag here
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames an uploaded a.jpg to 1a2b3c4d-a.jpg


def is_cvat_xml(path: Path) -> bool:
    """Whether ``path`` is XML whose root element is CVAT's ``<annotations>``."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048).lstrip()
    except OSError:
        return False
    return head.startswith(b"<") and b"<annotations" in head


def is_labelstudio(data: object) -> bool:
    """Whether parsed JSON ``data`` is a Label Studio export: a list of tasks with ``data``."""
    return isinstance(data, list) and bool(data) and all(isinstance(t, dict) and "data" in t for t in data[:20])


def read_cvat_xml(path: Path, classes: tuple[str, ...], problems, label_of) -> list[tuple[str, int]]:
    """(image name, class) per ``<image>`` with one ``<tag>``; an image with two tags gives both (a conflict)."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise ValueError(f"{path}: malformed CVAT XML ({exc})") from None
    if root.tag != "annotations":
        raise ValueError(f"{path}: expected CVAT's <annotations> root element, got <{root.tag}>")
    pairs, untagged = [], 0
    for image in root.iter("image"):
        name = image.get("name")
        if not name:
            problems.add(f"{path}: an <image> without a name attribute (id {image.get('id')!r}); ignored")
            continue
        tags = image.findall("tag")
        untagged += not tags
        for tag in tags:
            label = label_of(tag.get("label", ""), classes)
            if label is None:
                problems.add(f"{path}: unknown label {tag.get('label')!r} for {name!r}; ignored")
                continue
            pairs.append((PurePosixPath(name).name, label))
    if not pairs and not untagged:
        raise ValueError(f"{path}: CVAT XML with no <image> elements")
    return pairs


def _ls_name(ref: str) -> str:
    """The image file name behind a Label Studio data reference (an upload, local file, URL or path)."""
    parsed = urllib.parse.urlparse(ref)
    query = urllib.parse.parse_qs(parsed.query)
    path = query["d"][0] if "d" in query else urllib.parse.unquote(parsed.path)
    name = PurePosixPath(path).name
    return _UPLOAD_PREFIX.sub("", name) if "/data/upload/" in parsed.path else name


def read_labelstudio(data: list, path: Path, classes: tuple[str, ...], problems, label_of) -> list[tuple[str, int]]:
    """(image name, class) per task: the latest annotation that was not cancelled, its first choice."""
    pairs, empty = [], 0
    for i, task in enumerate(data):
        refs = [v for v in task["data"].values() if isinstance(v, str)] if isinstance(task["data"], dict) else []
        if not refs:
            raise ValueError(f"{path}: task {i} ({task.get('id', '?')}) has no image reference in 'data'")
        kept = [a for a in task.get("annotations", task.get("completions", [])) or []
                if isinstance(a, dict) and not a.get("was_cancelled")]  # fmt: skip
        choices = [r["value"]["choices"] for a in kept[-1:] for r in a.get("result", [])
                   if isinstance(r, dict) and r.get("type") == "choices" and r.get("value", {}).get("choices")]
        if not choices:
            empty += 1
            continue
        name, value = _ls_name(refs[0]), str(choices[0][0])
        label = label_of(value, classes)
        if label is None:
            problems.add(f"{path}: unknown label {value!r} for {name!r} (task {task.get('id', i)}); ignored")
            continue
        pairs.append((name, label))
    if empty:
        problems.add(f"{path}: {empty} task(s) without a choices annotation; ignored")
    return pairs


def read_imagenet_zip(path: Path, classes: tuple[str, ...], problems, label_of) -> list[tuple[str, int]]:
    """(image name, class) per ``<label>/<image>`` entry of a CVAT ImageNet 1.0 zip."""
    try:
        with zipfile.ZipFile(path) as z:
            entries = [PurePosixPath(n) for n in z.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a readable zip ({exc})") from None
    pairs, unknown = [], set()
    for entry in entries:
        if len(entry.parts) < 2 or entry.parent.name == NO_LABEL:
            continue
        label = label_of(entry.parent.name, classes)
        if label is None:
            unknown.add(entry.parent.name)
            continue
        pairs.append((entry.name, label))
    for folder in sorted(unknown):
        problems.add(f"{path}: folder {folder!r} is not a class (known: {', '.join(classes)}); ignored")
    if not pairs and not unknown:
        raise ValueError(f"{path}: zip holds no <class>/<image> entries (a CVAT ImageNet 1.0 export has them)")
    return pairs


def class_names(path: Path) -> list[str]:
    """The class names a labels file uses, in first-seen order (for ``pseudolabel init``): class
    folders, our JSON or CSV, CVAT's zip or XML, or a Label Studio export."""
    import csv
    import json

    path = Path(path)
    seen: dict[str, None] = {}
    if path.is_dir():
        return [p.name for p in sorted(path.iterdir()) if p.is_dir() and p.name != NO_LABEL]
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                parts = PurePosixPath(n).parts
                if len(parts) >= 2 and not n.endswith("/") and parts[-2] != NO_LABEL:
                    seen[parts[-2]] = None
        return list(seen)
    if is_cvat_xml(path):
        root = ElementTree.parse(path).getroot()
        return list(dict.fromkeys(t.get("label", "") for t in root.iter("tag") if t.get("label")))
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return [str(k) for k in data]
        if is_labelstudio(data):
            for task in data:
                for a in task.get("annotations", []) or []:
                    for r in a.get("result", []):
                        for c in r.get("value", {}).get("choices", []) if isinstance(r, dict) else []:
                            seen[str(c)] = None
            return list(seen)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    start = 1 if rows and rows[0][:2] and rows[0][1].strip().lower() in ("label", "class") else 0
    for row in rows[start:]:
        if len(row) >= 2 and row[1].strip():
            seen[row[1].strip()] = None
    return list(seen)
