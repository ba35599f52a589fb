"""``pseudolabel export RUN``: the labeled set out to the trainers and tools people use.

- ``imagefolder``: ``DIR/<class name>/*``, what ``torchvision.datasets.ImageFolder`` reads;
- ``yolo``: ``DIR/train/<class>/*`` and ``DIR/val/<class>/*``, ultralytics' classify layout: a
  seeded split, stratified by class, whose validation part takes human-labeled images first;
- ``csv``: ``DIR/labels.csv`` with ``image,path,label,source,score,p_<class>...``;
- ``labelstudio``: ``DIR/tasks.json`` (Label Studio's import format, our label a prediction with its
  score), ``DIR/label_config.xml`` and the images under ``DIR/images/``.

Images are symbolic links to the run's files, or copies with ``copy`` (created exclusively: never
through an existing name). ``unclear/`` is never a class. Class names become folder names through
:func:`names.class_folders` only, so nothing is ever written outside ``DIR``. The export is built in
a hidden ``.DIR.partial`` beside ``DIR`` (created here, refused if something is already there) and
moved into place whole; an existing ``DIR``, or one inside the images folder or a run, is refused.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.core import runstate

FORMATS = ("imagefolder", "yolo", "csv", "labelstudio")
SOURCES = ("seed", "reviewed", "vote", "final")  # --include: who labeled an image
_KIND = {runstate.SEED_TRAIN: "seed", runstate.SEED_VAL: "seed", runstate.REVIEWED: "reviewed",
         runstate.HAND: "reviewed", runstate.VOTE: "vote", runstate.RESORTED: "final"}  # fmt: skip
HUMAN_FIRST = {runstate.SEED_VAL: 0, runstate.REVIEWED: 1, runstate.HAND: 1, runstate.SEED_TRAIN: 2}  # val order


@dataclass(frozen=True)
class Item:
    image: str  # the pool name
    path: Path  # the file in the run, now
    label: int  # class index
    kind: str  # runstate provenance (seed-train, seed-val, reviewed, hand, vote, final)
    probs: tuple[float, ...]  # (K,) the latest model's probabilities

    @property
    def source(self) -> str:
        return _KIND[self.kind]


def collect(run_dir: Path, journal: Path, include: tuple[str, ...] = SOURCES) -> tuple[list[Item], tuple[str, ...]]:
    """Every image in a class folder whose source is in ``include``, with the latest scores
    (the final model's after a re-sort, else the mean of the voters'). Returns (items, class names)."""
    from pseudolabel.stages.retrain import label_sources

    bad = set(include) - set(SOURCES)
    if bad or not include:
        raise ValueError(f"--include takes some of {', '.join(SOURCES)}; got {', '.join(sorted(bad)) or 'nothing'}")
    sources, state = label_sources(run_dir, journal, readonly=True)  # an export only reads the run
    models = state.models
    probs = (runstate.load_scores(run_dir, runstate.FINAL) if runstate.FINAL in models else
             np.mean([runstate.load_scores(run_dir, m) for m in models], axis=0))  # fmt: skip
    row = {r["image"]: i for i, r in enumerate(state.rows)}
    items = []
    for image, (folder, kind) in sorted(sources.items()):
        if folder == runstate.UNCLEAR or _KIND[kind] not in include:
            continue
        items.append(Item(image, run_dir / folder / state.items[image].file, state.info.decision_of(folder), kind,
                          tuple(float(x) for x in probs[row[image]])))  # fmt: skip
    return items, tuple(state.info.classes)


def val_split(items: list[Item], share: float, seed: int) -> set[str]:
    """Images for validation: ``share`` of each class (rounded, at least one where the class has
    two or more), human-labeled ones first (seed validation, reviewed, seed training), then the rest,
    each group in a seeded random order."""
    if not 0 <= share < 1:
        raise ValueError(f"--val-share must lie in [0, 1), got {share}")
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for c in sorted({it.label for it in items}):
        group = [it for it in items if it.label == c]
        n = int(round(share * len(group)))
        n = max(n, 1) if share > 0 and len(group) >= 2 else n
        keys = rng.random(len(group))
        order = sorted(range(len(group)), key=lambda i: (HUMAN_FIRST.get(group[i].kind, 3), keys[i]))
        val |= {group[i].image for i in order[:n]}
    return val


def _place(src: Path, dst: Path, copy: bool) -> None:
    """A new ``dst``: a symbolic link to ``src``, or an exclusive copy of it (never through an existing name)."""
    from pseudolabel.core.sort import copy_exclusive

    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        copy_exclusive(src.resolve(), dst)
    else:
        os.symlink(src.resolve(), dst)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def check_out(out: Path, run_dir: Path, images: Path | None) -> None:
    """Refuse an ``--out`` that exists, or lies inside the images folder, the run or any other run folder."""
    if os.path.lexists(out):
        raise ValueError(f"{out} already exists; choose another --out (an export never writes into a folder)")
    where = Path(os.path.realpath(out))
    if images is not None:
        runstate.check_apart(out, images, "--out")
    if _inside(where, Path(os.path.realpath(run_dir))):
        raise ValueError(f"--out {out} is inside the run {run_dir}; choose a folder outside it")
    for parent in where.parents:
        if (parent / runstate.RUN_JSON).is_file() and (parent / "predictions.csv").is_file():
            raise ValueError(f"--out {out} is inside the run {parent}; choose a folder outside it")


def csv_text(items: list[Item], classes: tuple[str, ...]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["image", "path", "label", "source", "score", *[f"p_{c}" for c in classes]])
    for it in items:
        w.writerow([it.image, str(it.path.resolve()), classes[it.label], it.source, f"{it.probs[it.label]:.6f}",
                    *[f"{p:.6f}" for p in it.probs]])  # fmt: skip
    return out.getvalue()


def labelstudio_tasks(items: list[Item], classes: tuple[str, ...], rel: dict[str, str]) -> list[dict]:
    """Label Studio import tasks: ``data.image`` a local-files URL (``rel``: image -> path under the
    document root), our label as a ``predictions`` entry (``model_version``, ``score``, one
    ``choices`` result from ``choice`` to ``image``)."""
    tasks = []
    for i, it in enumerate(items):
        tasks.append({
            "data": {"image": f"/data/local-files/?d={rel[it.image]}", "pseudolabel_image": it.image,
                     "pseudolabel_source": it.source},
            "predictions": [{"model_version": "pseudolabel", "score": round(it.probs[it.label], 6),
                             "result": [{"id": f"r{i}", "type": "choices", "from_name": "choice", "to_name": "image",
                                         "value": {"choices": [classes[it.label]]}}]}],
        })  # fmt: skip
    return tasks


def label_config(classes: tuple[str, ...]) -> str:
    """The Label Studio labeling config the tasks fit: an image and one single choice."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Image name="image" value="$image"/>\n  <Choices name="choice" toName="image" '
            f'choice="single" showInLine="true">\n{choices}\n  </Choices>\n</View>\n')


def write(items: list[Item], classes: tuple[str, ...], fmt: str, out: Path, *, val_share: float = 0.1,
          copy: bool = False, seed: int = 0) -> dict:
    """Write the export of ``items`` in ``fmt`` to ``out`` (refused when it exists). Returns the summary
    {"format", "out", "classes": {name: n}, "sources": {source: n}, "val": n}."""
    from pseudolabel.core.names import class_folders

    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if os.path.lexists(out):
        raise ValueError(f"{out} already exists; choose another --out (an export never writes into a folder)")
    if not items:
        raise ValueError("nothing to export: no image in a class folder has the included sources")
    folders = class_folders(classes)  # the one way a class name becomes a folder name
    tmp = out.with_name(f".{out.name}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.mkdir()  # ours from here on: an existing one (another export's, or the user's) is never removed
    except FileExistsError:
        raise ValueError(f"{tmp} exists (an interrupted export, or not ours); remove it or choose another --out") \
            from None
    val = val_split(items, val_share, seed) if fmt == "yolo" else set()
    try:
        rel = {}
        for it in items:
            if fmt == "imagefolder":
                rel[it.image] = f"{folders[it.label]}/{it.path.name}"
            elif fmt == "yolo":
                rel[it.image] = f"{'val' if it.image in val else 'train'}/{folders[it.label]}/{it.path.name}"
            elif fmt == "labelstudio":
                rel[it.image] = f"images/{folders[it.label]}/{it.path.name}"
            if it.image in rel:
                _place(it.path, tmp / rel[it.image], copy)
        if fmt == "csv":
            runstate.write_atomic(tmp / "labels.csv", csv_text(items, classes))
        if fmt == "labelstudio":
            runstate.write_atomic(tmp / "tasks.json", json.dumps(labelstudio_tasks(items, classes, rel), indent=1))
            runstate.write_atomic(tmp / "label_config.xml", label_config(classes))
        if os.path.lexists(out):  # appeared meanwhile: rename would replace an empty folder
            raise ValueError(f"{out} appeared while the export was written; nothing was put there")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"format": fmt, "out": str(out), "val": len(val),
            "classes": {c: sum(it.label == k for it in items) for k, c in enumerate(classes)},
            "sources": {s: sum(it.source == s for it in items) for s in SOURCES}}  # fmt: skip


def summary_lines(s: dict) -> list[str]:
    """What an export holds, per class and per source, in a few lines."""
    lines = [f"exported {sum(s['classes'].values())} images ({s['format']}) to {s['out']}"]
    lines += [f"  {c}: {n}" for c, n in s["classes"].items()]
    lines.append("  by source: " + ", ".join(f"{k} {v}" for k, v in s["sources"].items()))
    if s["format"] == "yolo":
        lines.append(f"  validation: {s['val']} images (human-labeled first), training: "
                     f"{sum(s['classes'].values()) - s['val']}")  # fmt: skip
    if s["format"] == "labelstudio":
        lines.append(f"  Label Studio: set LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
                     f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={s['out']}, create a project with label_config.xml, "
                     "then import tasks.json")  # fmt: skip
    return lines
