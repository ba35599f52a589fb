"""Seed labels from the annotation tools people label in, detected by content (not by name):

- **CVAT "ImageNet 1.0"** export: a ``.zip`` (or folder) of class folders ``<label>/<image>``;
  CVAT's ``no_label/`` folder holds unlabeled images and is skipped;
- **CVAT "CVAT for images 1.1"** XML: ``<annotations><image name=...><tag label=.../></image>``;
- **Label Studio** JSON export of a choices task: ``[{"data": {"image": ...}, "annotations":
  [{"result": [{"type": "choices", "value": {"choices": [...]}}]}]}]``.

Each reader returns raw (image name, class index) pairs like :mod:`pseudolabel.data.images`'s own readers;
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
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "data" in data[0]


def cvat_tags(path: Path) -> tuple[list[tuple[str, str]], int]:
    """((image name, tag label) per ``<tag>``, images without a tag) from CVAT for images XML;
    a malformed file is a ValueError naming it."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise ValueError(f"{path}: malformed CVAT XML ({exc})") from None
    if root.tag != "annotations":
        raise ValueError(f"{path}: expected CVAT's <annotations> root element, got <{root.tag}>")
    pairs, untagged, unnamed = [], 0, []
    for image in root.iter("image"):
        name = image.get("name")
        if not name:
            unnamed.append(image.get("id"))
            continue
        tags = image.findall("tag")
        untagged += not tags
        pairs += [(PurePosixPath(name).name, tag.get("label", "")) for tag in tags]
    if unnamed:
        pairs.append(("", f"{len(unnamed)} <image> element(s) without a name attribute (id {unnamed[0]!r})"))
    return pairs, untagged


def read_cvat_xml(path: Path, classes: tuple[str, ...], problems, label_of) -> list[tuple[str, int]]:
    """(image name, class) per ``<image>`` with one ``<tag>``; an image with two tags gives both (a conflict)."""
    found, untagged = cvat_tags(path)
    pairs = []
    for name, tag in found:
        if not name:
            problems.add(f"{path}: {tag}; ignored")
            continue
        label = label_of(tag, classes)
        if label is None:
            problems.add(f"{path}: unknown label {tag!r} for {name!r}; ignored")
            continue
        pairs.append((name, label))
    if not pairs and not untagged and not found:
        raise ValueError(f"{path}: CVAT XML with no <image> elements")
    return pairs


def _ls_name(ref: str) -> str:
    """The image file name behind a Label Studio data reference (an upload, local file, URL or path)."""
    parsed = urllib.parse.urlparse(ref)
    query = urllib.parse.parse_qs(parsed.query)
    path = query["d"][0] if "d" in query else urllib.parse.unquote(parsed.path)
    name = PurePosixPath(path).name
    return _UPLOAD_PREFIX.sub("", name) if "/data/upload/" in parsed.path else name


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number")


def _want(value: object, kind: type, path: Path, where: str) -> object:
    """``value`` if it is of ``kind``, else ValueError naming the file, the field and what it holds."""
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        need = {dict: "an object", list: "a list", str: "a string"}[kind]
        raise ValueError(f"{path}: {where} must be {need}, got {_kind(value)}")
    return value


def labelstudio_choices(data: list, path: Path) -> tuple[list[tuple[str, str]], int]:
    """((image name, choice text) per task that has one, tasks without a choices annotation) from a
    Label Studio export, every field's type checked: a wrong type is a ValueError naming the file, the
    task and the field. Each task: the latest annotation that was not cancelled, its first choice."""
    pairs, empty = [], 0
    for i, task in enumerate(data):
        task = _want(task, dict, path, f"task {i}")
        tid = task.get("id", i)
        fields = _want(task.get("data"), dict, path, f"task {tid}: 'data'")
        refs = [v for v in fields.values() if isinstance(v, str)]
        if not refs:
            raise ValueError(f"{path}: task {tid} has no image reference in 'data'")
        key = "annotations" if "annotations" in task else "completions"
        annotations = _want(task.get(key) or [], list, path, f"task {tid}: {key!r}")
        kept = [_want(a, dict, path, f"task {tid}: {key}[{j}]") for j, a in enumerate(annotations)]
        kept = [a for a in kept if not a.get("was_cancelled")]
        choices = []
        for j, r in enumerate(_want(kept[-1].get("result") or [], list, path, f"task {tid}: 'result'") if kept else []):
            r = _want(r, dict, path, f"task {tid}: result[{j}]")
            if r.get("type") != "choices":
                continue
            value = _want(r.get("value"), dict, path, f"task {tid}: result[{j}].value")
            picked = _want(value.get("choices") or [], list, path, f"task {tid}: result[{j}].value.choices")
            choices += [_want(c, str, path, f"task {tid}: result[{j}].value.choices[{m}]") for m, c in enumerate(picked)]
        if not choices:
            empty += 1
            continue
        pairs.append((_ls_name(refs[0]), choices[0]))
    return pairs, empty


def read_labelstudio(data: list, path: Path, classes: tuple[str, ...], problems, label_of) -> list[tuple[str, int]]:
    """(image name, class) per task: the latest annotation that was not cancelled, its first choice."""
    found, empty = labelstudio_choices(data, path)
    pairs = []
    for name, value in found:
        label = label_of(value, classes)
        if label is None:
            problems.add(f"{path}: unknown label {value!r} for {name!r}; ignored")
            continue
        pairs.append((name, label))
    if empty:
        problems.add(f"{path}: {empty} task(s) without a choices annotation; ignored")
    return pairs


MAX_DEPTH = 32  # a labels JSON nested deeper than this is refused (no export of ours needs more than 8)
MAX_JSON_BYTES = 512 << 20  # and so is one larger than this


def load_json(path: Path) -> object:
    """A labels file's JSON, refused with one line naming the file when it is malformed, not UTF-8,
    larger than :data:`MAX_JSON_BYTES` or nested deeper than :data:`MAX_DEPTH`."""
    import json

    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes is more than a labels file may hold")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested more than {MAX_DEPTH} levels deep") from None
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{path}: JSON nested more than {MAX_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack += [(c, depth + 1) for c in children if isinstance(c, (dict, list))]
    return data


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
    folders, our JSON or CSV, CVAT's zip or XML, or a Label Studio export. Read by the same checked
    readers as the labels themselves."""
    import csv

    path = Path(path)
    seen: dict[str, None] = {}
    if path.is_dir():
        return [p.name for p in sorted(path.iterdir()) if p.is_dir() and p.name != NO_LABEL]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                parts = PurePosixPath(n).parts
                if len(parts) >= 2 and not n.endswith("/") and parts[-2] != NO_LABEL:
                    seen[parts[-2]] = None
        return list(seen)
    if is_cvat_xml(path):
        return list(dict.fromkeys(tag for name, tag in cvat_tags(path)[0] if name and tag))
    with open(path, "rb") as f:
        first = f.read(64).lstrip()[:1]
    if path.suffix.lower() == ".json" or first in (b"[", b"{"):
        data = load_json(path)
        if isinstance(data, dict):
            return [str(k) for k in data]
        if is_labelstudio(data):
            return list(dict.fromkeys(choice for _, choice in labelstudio_choices(data, path)[0]))
        raise ValueError(f'{path}: expected {{"<class>": [image, ...]}} or a Label Studio export, got {_kind(data)}')
    try:
        rows = list(csv.reader(path.read_bytes().decode("utf-8").splitlines(), strict=True))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: malformed CSV ({exc})") from None
    start = 1 if rows and rows[0][:2] and rows[0][1].strip().lower() in ("label", "class") else 0
    for row in rows[start:]:
        if len(row) >= 2 and row[1].strip():
            seen[row[1].strip()] = None
    return list(seen)
