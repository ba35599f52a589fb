"""``pseudolabel init IMAGES [--labels FILE] [--name NAME]``: a pipeline for a new folder of images.

It looks at the folder (how many images, their most common size, colour or grey) and at the labels
(which classes, how many labels), and writes ``pipelines/NAME.yaml`` with every key commented for
that data, budgets scaled to its size. It never overwrites a pipeline.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from datetime import date
from pathlib import Path

from .annotations import class_names
from .data import IMAGE_EXTS, Problems, list_images, read_seed_labels

MAX_SIDE = 96  # a larger most-common size is resized to this on the longer side: CPU training stays practical
SAMPLE = 300  # images opened to measure size and colour (spread over the folder)


def inspect_images(folder: Path) -> dict:
    """{"n", "size": (h, w) most common, "share": of the sample at that size, "channels": 1 or 3, "others"}."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"images folder not found: {folder}")
    names, others = list_images(folder)
    if not names:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    step = max(1, len(names) // SAMPLE)
    sizes, modes = Counter(), Counter()
    for name in names[::step][:SAMPLE]:
        try:
            with Image.open(folder / name) as im:
                sizes[(im.height, im.width)] += 1
                modes["grey" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "colour"] += 1
        except OSError:
            continue
    if not sizes:
        raise ValueError(f"{folder}: none of the sampled images could be read")
    (size, count), = sizes.most_common(1)
    return {"n": len(names), "size": size, "share": count / sum(sizes.values()),
            "channels": 1 if modes["grey"] > modes["colour"] else 3, "others": others}  # fmt: skip


def _classes(labels: Path) -> list[str]:
    import zipfile
    from xml.etree.ElementTree import ParseError

    try:
        found = class_names(labels)
    except (OSError, ValueError, zipfile.BadZipFile, ParseError) as exc:
        raise ValueError(f"{labels}: cannot read its classes ({exc.__class__.__name__}: {exc})") from None
    if len(found) < 2:
        raise ValueError(f"{labels}: found {len(found)} class(es) ({', '.join(found) or 'none'}); need two or more")
    if all(c.isdigit() for c in found):
        return [str(i) for i in range(max(int(c) for c in found) + 1)]
    return sorted(found)


def _target_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = size
    scale = min(1.0, MAX_SIDE / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


def pipeline_text(name: str, images: Path, labels: Path | None, info: dict, classes: list[str], n_labels: int) -> str:
    """The YAML of a pipeline for this data, every key with a comment about it."""
    n, (h, w), k = info["n"], info["size"], len(classes)
    th, tw = _target_size((h, w))
    size = f"{th}" if th == tw else f"[{th}, {tw}]"
    digits = all(c.isdigit() for c in classes)
    colour = "colour (RGB)" if info["channels"] == 3 else "grey"
    n_train = max(k, int(round(0.8 * n_labels)))
    pass_128, pass_256, pass_fm = (max(1, math.ceil(n / b)) for b in (128, 256, 32 * 5))
    resized = "as they are" if (th, tw) == (h, w) else f"resized from {w}x{h} (width x height) to keep training fast"
    cls = ", ".join(classes)
    lines = [
        f"# pipelines/{name}.yaml, written by `pseudolabel init` on {date.today().isoformat()} for {images}:",
        f"# {n:,} images, {100 * info['share']:.0f} % of those sampled {w}x{h} (width x height), {colour};",
        f"# {n_labels} seed labels in {k} classes ({cls}). Every key is explained in pseudolabel/config.py.",
        f"name: {name}  # the run's name in its report",
        f"images: {images}  # the unlabeled images (read only: nothing in it is moved or changed)",
        f"labels: {labels}  # the seed labels: a few per class",
        f"classes: [{cls}]  # the {k} classes, in the order the models output them"
        + (" (labels given as indices)" if digits else ""),
        f"folder_names: {'index' if digits else 'name'}  # run folders named "
        + ("0/, 1/, ... by class index" if digits else f"{classes[0]}/, {classes[1]}/, ... (the ImageFolder layout)"),
        f"image_size: {size}  # every image is decoded to this (height, width): {resized}",
        f"channels: {info['channels']}  # {colour} input",
        "normalize: pool  # per-channel mean and std, measured on these images by `run`",
        f"n_train: {n_train}  # seed labels that train the seed models; the other {max(0, n_labels - n_train)} "
        "validate them",
        "seed: 0  # every random choice (splits, initialisation, batches) follows it",
        f"threshold: {'[0.98, 0.55]' if k == 2 else '[0.9, 0.5]'}  # decided when both seed models' top class "
        "agrees with at least this confidence (yolov8-cls, resnet50); lower gives fewer unclear images",
        "models: [yolov8-cls, resnet50]  # the two voters; the first learns from the whole pool and teaches the second",
        "vote_alpha: 0.05  # a seed model no better than chance on the validation labels (binomial test) stops "
        "the vote: everything goes to unclear/",
        "teacher_conf: 0.8  # resnet50 also learns from pool images yolov8-cls scores at least this confidently",
        f"student_max: {min(3000, n)}  # ...at most this many of them",
        "yolo:  # the first seed model, YOLOv8-cls",
        "  epochs: 60  # supervised passes over the seed labels first",
        "  batch_size: 16  # seed images per step",
        "  lr: 0.002  # AdamW peak learning rate",
        "  patience: 60  # stop after this many epochs without a lower validation loss",
        "  fixmatch_epochs: 28  # then FixMatch epochs over the unlabeled images",
        f"  fixmatch_epoch_steps: {pass_128}  # steps per FixMatch epoch: one pass over these {n:,} images at 128 a step",
        "resnet50:  # the second seed model, timm's ResNet50",
        "  epochs: 4  # passes over the seeds plus yolov8-cls's confident pool images",
        "  batch_size: 64  # images per step",
        "  lr: 0.003  # AdamW peak learning rate",
        "  patience: 4  # stop after this many epochs without a lower validation loss",
        "retrain:  # the final model (`pseudolabel retrain`): SimCLR, a warm-up, then FixMatch on the merged set",
        f"  width: {16 if info['channels'] == 1 and k == 2 else 32}  # tinycnn channels of its first stage "
        "(then 2x and 4x)",
        "  members: 1  # networks trained apart and averaged; each adds a full training",
        "  pretrain_epochs: 30  # SimCLR epochs on the unlabeled images before any label",
        f"  pretrain_epoch_steps: {pass_256}  # ...of this many steps: one pass at 256 images a step",
        "  epochs: 50  # FixMatch epochs",
        f"  epoch_steps: {pass_fm}  # ...of this many steps: one pass at 32 labeled + 128 unlabeled a step",
        "resort:  # `pseudolabel resort`: the final model re-decides what only machines placed",
        "  accept: 0.95  # into a class folder when the final model's top class has at least this probability",
        "  keep_agreed: 0.9  # a vote decision stays when the final model gives its class at least this",
    ]
    return "\n".join(lines) + "\n"


def init_pipeline(images: Path, labels: Path | None, name: str, out_dir: Path = Path("pipelines")) -> tuple[Path, str]:
    """Write ``out_dir/NAME.yaml`` for ``images`` and ``labels``; refused when it exists. Returns
    (its path, the next command to run)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ValueError(f"--name must be letters, digits, '_', '-' or '.', got {name!r}")
    path = Path(out_dir) / f"{name}.yaml"
    if path.exists():
        raise ValueError(f"{path} already exists; choose another --name (init never overwrites a pipeline)")
    if labels is None:
        raise ValueError("--labels FILE is needed: init reads the classes from it (a few labels per class)")
    if not Path(labels).exists():
        raise ValueError(f"seed label file not found: {labels}")
    info = inspect_images(Path(images))
    classes = _classes(Path(labels))
    problems = Problems(quiet=True)
    n_labels = len(read_seed_labels(labels, tuple(classes), problems))
    if n_labels < 2 * len(classes):
        raise ValueError(f"{labels}: {n_labels} usable labels for {len(classes)} classes; give at least two per class")
    text = pipeline_text(name, Path(images), Path(labels), info, classes, n_labels)
    from .config import load_config

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    try:
        load_config(tmp)  # what init writes must load
    except ValueError:
        tmp.unlink()
        raise
    os.link(tmp, path)  # fails, rather than overwrites, if the pipeline appeared meanwhile
    tmp.unlink()
    return path, f"pseudolabel run {path}"
