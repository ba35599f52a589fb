"""Seed models built from a name, all with the same interface.

>>> model = create_seed_model("resnet50", cfg)           # or "yolov8-cls"
>>> model.fit(x_train, y_train, x_val, y_val)            # (N, C, H, W) uint8, (N,) int
>>> probs = model.predict_proba(x_pool)                  # (N, K) probabilities
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from pseudolabel.config.schema import Config, SeedTrainConfig, norm_stats
from pseudolabel.models.backbones import create_backbone
from pseudolabel.train.fixmatch import predict_probs
from pseudolabel.train.supervised import fit_module


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
    """Build a seed model by name through the backbone registry: ``"resnet50"`` (timm) or
    ``"yolov8-cls"`` (ultralytics), with K = len(cfg.classes) outputs and cfg.channels inputs.

    Both are :class:`TorchSeed` objects (``train: finetune`` or ``staged``), or
    :class:`frozen.FrozenSeed` (``train: frozen``), with the same ``fit`` / ``predict_proba``.
    """
    if name not in SEED_MODELS:
        raise ValueError(f"unknown seed model {name!r}; choose from {', '.join(SEED_MODELS)}")
    torch.manual_seed(cfg.seed)
    tc = cfg.section(name)
    from pseudolabel.models.encoders import is_encoder_file

    encoder = None
    if is_encoder_file(tc.pretrained):
        if tc.train != "frozen":
            raise ValueError(f"{name}: pretrained {tc.pretrained} is an encoder file, which only embeds: set its "
                             "train: frozen (or --train frozen)")  # fmt: skip
        encoder = {"output": tc.encoder_output, "layout": tc.encoder_layout, "mean": tc.encoder_mean,
                   "std": tc.encoder_std}  # fmt: skip
    module = create_backbone(name, num_classes=cfg.num_classes, in_chans=cfg.channels, image_size=cfg.hw,
                             input_size=tc.input_size, variant=tc.variant, stem=tc.stem, pretrained=tc.pretrained,
                             norm=norm_stats(cfg), arch=tc.arch if name == "resnet50" else None,
                             encoder=encoder)  # fmt: skip
    if tc.train == "frozen":
        from pseudolabel.train.frozen import FrozenSeed

        return FrozenSeed(name, module, tc, cfg.seed, progress, cache=frozen_cache(cfg))
    return TorchSeed(name, module, tc, cfg.seed, progress, cfg.staged if tc.train == "staged" else None)


def frozen_cache(cfg: Config):
    """Where frozen encoders keep their embeddings: ``embeddings/`` in the pool cache (None: off)."""
    from pseudolabel.data.cache import cache_dir

    root = cache_dir(cfg.pool_cache)
    return root / "embeddings" if root is not None else None


class TorchSeed:
    """A seed model: supervised training on the seeds, then (if ``fixmatch_epochs`` > 0 and
    unlabeled images are given) FixMatch on the pool, starting from the supervised weights."""

    def __init__(self, name: str, module: nn.Module, tc: SeedTrainConfig, seed: int, progress: bool = True,
                 staged=None):
        self.name, self.module, self.tc, self.seed, self.progress = name, module, tc, seed, progress
        self.staged = staged  # a StagedConfig: fine-tune pretrained weights in two stages instead of fit_module
        self.history: list[dict] = []
        self.fit_seconds = 0.0

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            x_unlabeled: np.ndarray | None = None) -> None:
        """x_*: (N, C, H, W) uint8; y_*: (N,) class indices."""
        from pseudolabel.train.fixmatch import FixMatchConfig, fit_fixmatch

        if self.staged is not None:
            from pseudolabel.train.finetune import fit_staged

            res = fit_staged(self.module, x_train, y_train, x_val, y_val, self.staged, self.seed,
                             f"fine-tune {self.name} (staged)", self.progress)  # fmt: skip
        else:
            res = fit_module(self.module, x_train, y_train, x_val, y_val, self.tc, self.seed, f"train {self.name}",
                             self.progress)  # fmt: skip
        self.history, self.fit_seconds = res.history, res.seconds
        if self.tc.fixmatch_epochs and x_unlabeled is not None and len(x_unlabeled):
            fc = FixMatchConfig(epochs=self.tc.fixmatch_epochs, lr=self.tc.fixmatch_lr, patience=self.tc.fixmatch_epochs,
                                tau=self.tc.fixmatch_tau, ema=self.tc.fixmatch_ema, monitor=self.tc.fixmatch_monitor,
                                epoch_steps=self.tc.fixmatch_epoch_steps)
            fm = fit_fixmatch(self.module, x_train, y_train, x_unlabeled, x_val, y_val, fc, self.seed,
                              f"fixmatch {self.name}", self.progress)  # fmt: skip
            offset = len(self.history)
            self.history += [{**h, "epoch": h["epoch"] + offset} for h in fm.history]
            self.fit_seconds += fm.seconds

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 (a memmap is streamed) -> (N, K) probabilities."""
        return predict_probs(self.module, images, tta=self.tc.tta).numpy()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())
