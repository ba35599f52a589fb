"""Seed models built from a name, all with the same interface.

>>> model = create_seed_model("resnet50", cfg)           # or "yolov8-cls"
>>> model.fit(x_train, y_train, x_val, y_val)            # (N, C, H, W) uint8, (N,) int
>>> probs = model.predict_proba(x_pool)                  # (N, 2) probabilities, column 1 = P(open)

The ultralytics specifics live in :mod:`pseudolabel.yolo`; the timm ones here.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import seed_augment, to_float, tta_views
from .fixmatch import FitResult, evaluate, logits_of, predict_probs
from .config import BACKBONE_HELP, Config, SeedTrainConfig
from .progress import bar as progress_bar


class SeedModel(Protocol):
    name: str
    history: list[dict]
    fit_seconds: float

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            x_unlabeled: np.ndarray | None = None) -> None: ...

    def predict_proba(self, images: np.ndarray) -> np.ndarray: ...

    def num_parameters(self) -> int: ...


SEED_MODELS = ("resnet50", "yolov8-cls")


def create_seed_model(name: str, cfg: Config, progress: bool = True) -> SeedModel:
    """Build a seed model by name: ``"resnet50"`` (timm) or ``"yolov8-cls"`` (ultralytics).

    Both are :class:`TorchSeed` objects with the same ``fit`` / ``predict_proba``.
    """
    torch.manual_seed(cfg.seed)
    if name == "resnet50":
        tc = cfg.resnet50
        module = build_resnet50(cfg.channels, tc.stem, cfg.image_size, tc.input_size, cfg.pretrained)
    elif name == "yolov8-cls":
        from .yolo import build_yolo_cls

        tc = cfg.yolo
        module = build_yolo_cls(tc.variant, cfg.channels, cfg.image_size)
    else:
        raise ValueError(f"unknown seed model {name!r}; choose from {', '.join(SEED_MODELS)}")
    return TorchSeed(name, module, tc, cfg.seed, progress)


# ----------------------------------------------------------------------------- torch training loop


def fit_module(
    module: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    tc: SeedTrainConfig,
    seed: int,
    desc: str,
    progress: bool = True,
) -> FitResult:
    """Supervised training with augmentation, AdamW + cosine decay and early stopping on
    validation loss; the best weights are restored into ``module``.

    x_*: (N, C, H, W) uint8; y_*: (N,) int labels.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt, yt = to_float(torch.from_numpy(x_train)), torch.from_numpy(y_train).long()
    xv, yv = to_float(torch.from_numpy(x_val)), torch.from_numpy(y_val).long()
    opt = torch.optim.AdamW(module.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(xt) / tc.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr, total_steps=tc.epochs * steps_per_epoch, pct_start=0.15)
    res, best_state, start = FitResult(), None, time.perf_counter()
    bar = progress_bar(progress, total=tc.epochs * steps_per_epoch, desc=desc, unit="step")
    for epoch in range(tc.epochs):
        module.train()
        perm = torch.randperm(len(xt), generator=gen)
        losses = []
        for i in range(0, len(xt), tc.batch_size):
            idx = perm[i : i + tc.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            loss = F.cross_entropy(logits_of(module(seed_augment(xt[idx], gen))), yt[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
        val_loss, val_acc = evaluate(module, xv, yv)
        res.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_acc": val_acc})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.2f}",
                        refresh=False)
        if val_loss < res.best_val_loss - 1e-4:
            res.best_val_loss, res.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(module.state_dict())
        elif epoch - res.best_epoch >= tc.patience:
            break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    res.seconds = time.perf_counter() - start
    return res


# ----------------------------------------------------------------------------- resnet50 (timm)


class _Resize(nn.Module):
    """Resize the input to ``size`` (if needed) and run ``body`` in channels-last layout (faster on CPU)."""

    def __init__(self, body: nn.Module, size: int):
        super().__init__()
        self.body, self.size = body.to(memory_format=torch.channels_last), size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.body(x.contiguous(memory_format=torch.channels_last))


def build_resnet50(
    channels: int, stem: str, image_size: int, input_size: int = 32, pretrained: str | None = None
) -> nn.Module:
    """timm ResNet50 with ``channels`` inputs and 2 outputs, adapted to tiny inputs.

    stem="stride1": 3x3 stride-1 first conv and no max-pool, at the image size;
    stem="upsample": the stock network on the input upsampled to ``input_size``.
    ``pretrained`` is a local weights file (loaded through timm's pretrained_cfg_overlay).
    """
    import timm

    kwargs = {}
    if pretrained:
        if not Path(pretrained).is_file():
            raise ValueError(f"pretrained weights file not found: {pretrained}")
        kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained)))
    net = timm.create_model("resnet50", num_classes=2, in_chans=channels, **kwargs)
    if stem == "stride1":
        net.conv1 = nn.Conv2d(channels, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        return _Resize(net, image_size)
    return _Resize(net, max(input_size, image_size))


def _conv_pair(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]  # fmt: skip


class TinyCNN(nn.Module):
    """A VGG-style network for tiny crops at their own size: three stages of two 3x3 convolutions
    (``width``, 2x, 4x channels), each halving the resolution, then average pooling and a linear
    layer. (N, C, H, W) in [0, 1] -> (N, 2) logits. 72 k parameters at width 16."""

    def __init__(self, channels: int, width: int = 16, dropout: float = 0.2):
        super().__init__()
        w = width
        self.features = nn.Sequential(*_conv_pair(channels, w), nn.MaxPool2d(2), *_conv_pair(w, 2 * w),
                                      nn.MaxPool2d(2), *_conv_pair(2 * w, 4 * w), nn.MaxPool2d(2))  # fmt: skip
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, 2))

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
    probabilities over :func:`~pseudolabel.augment.tta_views` (one batched forward pass), so a softmax
    on top gives the mean probabilities, as with :class:`Ensemble`. Traces into TorchScript and ONNX."""

    def __init__(self, module: nn.Module, mode: str):
        super().__init__()
        tta_views(torch.zeros(1, 1, 4, 4), mode)  # a bad mode fails here, not at the first prediction
        self.module, self.mode = module, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = logits_of(self.module(tta_views(x, self.mode))).softmax(1)
        return probs.view(-1, *x.shape[:1], probs.shape[1]).mean(0).clamp_min(1e-12).log()


def build_backbone(name: str, channels: int, image_size: int, input_size: int = 32, variant: str = "n") -> nn.Module:
    """"tinycnn" (at the image size), "yolov8-cls" (ultralytics' rounded ``input_size``) or any timm
    model name (resized to ``input_size``), with ``channels`` inputs and 2 outputs."""
    if name == "tinycnn":  # channels-last via _Resize (no resize): ~30 % faster training steps here (measured)
        return _Resize(TinyCNN(channels), image_size)
    if name == "yolov8-cls":
        from .yolo import build_yolo_cls

        return build_yolo_cls(variant, channels, max(image_size, input_size))
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: use {BACKBONE_HELP}")
    return _Resize(timm.create_model(name, num_classes=2, in_chans=channels), max(input_size, image_size))


class TorchSeed:
    """A seed model: supervised training on the seeds, then (if ``fixmatch_epochs`` > 0 and
    unlabeled images are given) FixMatch on the pool, starting from the supervised weights."""

    def __init__(self, name: str, module: nn.Module, tc: SeedTrainConfig, seed: int, progress: bool = True):
        self.name, self.module, self.tc, self.seed, self.progress = name, module, tc, seed, progress
        self.history: list[dict] = []
        self.fit_seconds = 0.0

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            x_unlabeled: np.ndarray | None = None) -> None:
        """x_*: (N, C, H, W) uint8; y_*: (N,) labels in {0, 1}."""
        from .fixmatch import FixMatchConfig, fit_fixmatch

        res = fit_module(self.module, x_train, y_train, x_val, y_val, self.tc, self.seed, f"train {self.name}",
                         self.progress)  # fmt: skip
        self.history, self.fit_seconds = res.history, res.seconds
        if self.tc.fixmatch_epochs and x_unlabeled is not None and len(x_unlabeled):
            fc = FixMatchConfig(epochs=self.tc.fixmatch_epochs, lr=self.tc.fixmatch_lr, patience=self.tc.fixmatch_epochs)
            fm = fit_fixmatch(self.module, x_train, y_train, x_unlabeled, x_val, y_val, fc, self.seed,
                              f"fixmatch {self.name}", self.progress)  # fmt: skip
            offset = len(self.history)
            self.history += [{**h, "epoch": h["epoch"] + offset} for h in fm.history]
            self.fit_seconds += fm.seconds

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, 2) probabilities."""
        x = to_float(torch.from_numpy(images))
        return predict_probs(self.module, x, tta=self.tc.tta).numpy()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())
