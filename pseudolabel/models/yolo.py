"""YOLOv8-cls network from ultralytics. Every ultralytics quirk stays in this file:

- ``YOLO_OFFLINE=1`` and our own ``YOLO_CONFIG_DIR`` are set before ultralytics is imported (it would
  otherwise phone home, pip-install what it misses, and write settings into ``~/.config``);
- its default weights folder is ``weights/`` under the working folder (or the git root): ours is pinned
  to ``<our config dir>/weights`` in its settings, so pretrained ``yolov8{n,s,m}-cls.pt`` go there, through
  its own download helper; a weights folder the user's own ultralytics settings name is searched too;
- from scratch the network is built from ``yolov8{n,s,m}-cls.yaml``; pretrained, from the checkpoint's
  own module (ImageNet's 1,000 classes, 3 channels), whose head is then rebuilt for K classes with
  ultralytics' ``reshape_outputs`` and whose first convolution is summed over RGB for grey input (as timm
  adapts ``in_chans``); its inputs are [0, 1] with no mean or std (ultralytics' classify transforms);
- ultralytics rounds ``imgsz`` up to a multiple of 32, so inputs are resized to that size;
- in eval mode its Classify head returns ``(probs, logits)``; we always hand back logits;
- its own trainer (:func:`ultralytics_train`, for benchmarks and the export test) sets the process to
  one torch thread and deterministic kernels for good; we put both back;
- importing it replaces PIL's ``Image.open`` for the whole process with a wrapper that, on any file
  PIL cannot identify, tries to pip-install pi-heif (offline: ModuleNotFoundError). Any image read
  later in the same process (the Python API, ``benchmarks/quality.py``'s retrain after its run, the
  tests) then crashed on one bad file instead of skipping it with a one-line error. We put PIL's own back.

We train it with our own loop (:mod:`pseudolabel.models.backbones`), not ultralytics' trainer:
the trainer cannot do semi-supervised (FixMatch) training, and on the same 80 seed
labels it reached 73 % dev accuracy against 90 % for our loop with our augmentations.
So no staging folder and no ``*.cache`` files are written anywhere.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.core.home import cache_root, contain_matplotlib

_CONFIG_DIR = cache_root() / "ultralytics"


def _environment() -> None:
    """What ultralytics reads when it is first imported: offline, our config dir (never the user's
    ``~/.config/Ultralytics``), quiet, and matplotlib's files in our cache."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(_CONFIG_DIR)
    os.environ.setdefault("YOLO_VERBOSE", "False")
    contain_matplotlib()


_environment()  # at this module's import: no path through it can import ultralytics before


def _import_ultralytics() -> None:
    _environment()
    _CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    pil_open = Image.open
    import ultralytics  # noqa: F401  (only after the environment is set)
    from ultralytics.utils import patches

    Image.open = getattr(patches, "_image_open", pil_open)  # PIL's own, even if ultralytics came in earlier
    from ultralytics.utils import SETTINGS

    ours = str(_CONFIG_DIR / "weights")
    if SETTINGS.get("weights_dir") != ours:  # its default is relative to the working folder
        SETTINGS.update(weights_dir=ours)


def weights_dirs() -> list[Path]:
    """Where ``yolov8{n,s,m}-cls.pt`` are looked for: our ultralytics weights folder, then the one the
    user's own ultralytics settings name (read, never written), if any."""
    import json

    _import_ultralytics()
    from ultralytics.utils import SETTINGS

    dirs = [Path(SETTINGS["weights_dir"])]
    home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "Ultralytics" / "settings.json"
    try:
        theirs = Path(json.loads(home.read_text()).get("weights_dir", ""))
        if theirs.is_absolute() and theirs not in dirs:
            dirs.append(theirs)
    except (OSError, ValueError, AttributeError):
        pass
    return dirs


def download(name: str) -> Path:
    """``yolov8{n,s,m}-cls.pt`` (any ultralytics asset name) through ultralytics' own download helper,
    into our ultralytics weights folder. Returns the file."""
    from ultralytics.utils.downloads import attempt_download_asset

    target = weights_dirs()[0] / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = Path(attempt_download_asset(target))
    except Exception as exc:  # noqa: BLE001 -- its helper raises ConnectionError and others: one line
        raise ValueError(f"cannot download {name} ({' '.join(str(exc).split())[:200]})") from None
    load_cls_checkpoint(got)  # a safe checkpoint, or refused now
    from pseudolabel.models.safeload import sha256_of

    sidecar = got.with_name(got.name + ".sha256")
    if not sidecar.exists():
        sidecar.write_text(sha256_of(got) + "\n")  # what later loads are checked against
    return got


def checked(path: Path) -> str:
    """The sha256 of a checkpoint in a weights folder, checked against the ``.sha256`` beside it that
    :func:`download` wrote when it fetched the file (ultralytics publishes no checksums to check it at
    the source). A file that changed since is refused."""
    from pseudolabel.models.safeload import BadWeights, sha256_of

    digest = sha256_of(path)
    sidecar = path.with_name(path.name + ".sha256")
    try:
        pinned = sidecar.read_text().split()[0] if sidecar.is_file() else None
    except (OSError, IndexError, UnicodeDecodeError):
        pinned = None
    if pinned is not None and pinned != digest:
        raise BadWeights(f"{path}: its sha256 is {digest[:12]}..., not the {pinned[:12]}... it had when it was "
                         "fetched (damaged or replaced); delete it and run `pseudolabel weights fetch` again")
    return digest


def yolo_imgsz(size: int | tuple[int, int]) -> tuple[int, int]:
    """ultralytics rounds imgsz up to a multiple of 32: (height, width)."""
    h, w = (size, size) if isinstance(size, int) else size
    return max(32, math.ceil(h / 32) * 32), max(32, math.ceil(w / 32) * 32)


class YoloCls(nn.Module):
    """ultralytics ClassificationModel with inputs resized to ``imgsz``, channels-last layout
    (28 % faster training on this CPU) and logits out in every mode."""

    def __init__(self, net: nn.Module, imgsz: tuple[int, int]):
        super().__init__()
        self.net, self.imgsz = net.to(memory_format=torch.channels_last), tuple(imgsz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.imgsz:
            x = F.interpolate(x, size=self.imgsz, mode="bilinear", align_corners=False)
        out = self.net(x.contiguous(memory_format=torch.channels_last))
        return out[1] if isinstance(out, (tuple, list)) else out


def build_yolo_cls(variant: str, channels: int, image_size: int | tuple[int, int], num_classes: int = 2) -> YoloCls:
    """YOLOv8-cls (``variant`` n, s or m) from its yaml, randomly initialised, ``channels`` inputs,
    ``num_classes`` outputs, inputs resized to ``image_size`` ((height, width)) rounded up to 32."""
    if variant not in ("n", "s", "m"):
        raise ValueError(f"yolo variant must be n, s or m, got {variant!r}")
    _import_ultralytics()
    from ultralytics.nn.tasks import ClassificationModel

    net = ClassificationModel(f"yolov8{variant}-cls.yaml", ch=channels, nc=num_classes, verbose=False)
    return YoloCls(net, yolo_imgsz(image_size))


# What an ultralytics classification checkpoint may hold, in one place: its modules' classes (nn.Module
# subclasses under these packages) and these plain data types. Nothing else is ever built from a file.
CHECKPOINT_MODULES = ("ultralytics.nn.", "torch.nn.modules.")
CHECKPOINT_DATA = ("collections.OrderedDict", "builtins.set", "ultralytics.utils.IterableSimpleNamespace",
                   "types.SimpleNamespace", "numpy.dtype", "numpy.core.multiarray.scalar",
                   "numpy._core.multiarray.scalar", "numpy.dtypes.Float64DType", "numpy.dtypes.Float32DType")


def checkpoint_class(name: str):
    """The class a checkpoint global ``module.Name`` stands for, if such a checkpoint may hold it, else None.
    Only modules of ultralytics' and torch's own packages are imported to find out."""
    import importlib

    module, _, attr = name.rpartition(".")
    is_module = module.startswith(CHECKPOINT_MODULES)
    if not (is_module or name in CHECKPOINT_DATA):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    if is_module and not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        return None
    return obj


def load_cls_checkpoint(path: Path) -> nn.Module:
    """The ClassificationModel in an ultralytics checkpoint (its ``model``, or ``ema``), in float32, read
    with ``weights_only=True`` and only the classes :func:`checkpoint_class` allows: a file that names
    anything else is refused before anything is built (a BadWeights naming it), so no code runs."""
    from pseudolabel.models.safeload import BadWeights, checkpoint

    _import_ultralytics()  # before the file's classes are imported: our settings, never the user's
    from ultralytics.nn.tasks import ClassificationModel

    ckpt = checkpoint(Path(path), checkpoint_class)
    net = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if not isinstance(net, ClassificationModel):
        raise BadWeights(f"{path}: not an ultralytics classification checkpoint (it holds {type(net).__name__})")
    return net.float()


def adapt_first_conv(net: nn.Module, channels: int) -> None:
    """Make the first convolution take ``channels`` inputs: for 1 from 3 its weights are summed over RGB,
    as timm's ``adapt_input_conv`` does for a grey image (the same response to grey as to its RGB copy)."""
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == channels:
        return
    if conv.in_channels != 3 or channels != 1:
        raise ValueError(f"cannot adapt a {conv.in_channels}-channel first layer to {channels} channel(s)")
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight.sum(1, keepdim=True))
    conv.in_channels = 1


def pretrained_yolo_cls(path: Path, channels: int, image_size: int | tuple[int, int], num_classes: int) -> YoloCls:
    """YOLOv8-cls from an ultralytics checkpoint: head rebuilt for ``num_classes`` (``reshape_outputs``),
    first layer adapted to ``channels``, inputs resized to ``image_size`` rounded up to 32."""
    net = load_cls_checkpoint(Path(path))  # sets ultralytics' environment before its first import
    from ultralytics.nn.tasks import ClassificationModel

    ClassificationModel.reshape_outputs(net, num_classes)
    adapt_first_conv(net, channels)
    for p in net.parameters():
        p.requires_grad_(True)  # checkpoints are saved with frozen parameters
    return YoloCls(net, yolo_imgsz(image_size))


def ultralytics_train(data: Path, *, epochs: int, imgsz: int, project: Path, seed: int = 0, batch: int = 16,
                      workers: int = 2, device: str = "cpu"):
    """ultralytics' own trainer, ``YOLO('yolov8n-cls.yaml').train(...)``, on an ImageFolder-style
    ``data`` folder (``train/<class>/``, ``val/<class>/``), offline, from the yaml (no ``.pt``).
    Its ``*.cache`` files land next to ``data``, so pass a staging copy; its outputs go to ``project``.
    Returns the trained ``YOLO`` object (what benchmarks and the export test score with)."""
    _import_ultralytics()
    from ultralytics import YOLO

    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    deterministic = torch.are_deterministic_algorithms_enabled()
    model = YOLO("yolov8n-cls.yaml", task="classify")
    try:
        model.train(data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, workers=workers, device=device,
                    project=str(project), name="train", exist_ok=True, seed=seed, deterministic=True, plots=False,
                    verbose=False, amp=False, val=True)  # fmt: skip
    finally:  # its trainer leaves the process at one torch thread (OMP_NUM_THREADS=1) and deterministic kernels
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    return model


def ultralytics_probs(model, paths: list[Path], imgsz: int, batch: int = 256) -> "list":
    """(N, K) class probabilities from a :func:`ultralytics_train` model for image files, in
    ``model.names`` order (the class folder names, sorted)."""
    import numpy as np

    out = []
    for i in range(0, len(paths), batch):
        res = model.predict([str(p) for p in paths[i : i + batch]], imgsz=imgsz, verbose=False, device="cpu")
        out += [r.probs.data.cpu().numpy() for r in res]
    return np.stack(out)
