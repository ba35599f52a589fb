"""Staged fine-tuning from pretrained weights (``finetune: staged``), the recipe of shared/seeds/003:

1. **head**: for ``head_epochs`` only the classifier layer learns; the backbone is frozen, and its
   BatchNorm layers keep their pretrained statistics (eval mode);
2. **everything**: the backbone is unfrozen, BatchNorm included.

SGD with momentum and two parameter groups (backbone ``backbone_lr``, head ``head_lr``),
ReduceLROnPlateau on the validation loss and early stopping with ``min_delta``; the best epoch's
weights are kept. Every number is in :class:`config.StagedConfig`.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.config.schema import StagedConfig
from pseudolabel.core.device import current
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.data.augment import seed_augment
from pseudolabel.data.stream import to_device
from pseudolabel.models.layers import last_linear, logits_of
from pseudolabel.train.fixmatch import FitResult, evaluate

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def param_groups(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone parameters, head parameters): the head is the last linear layer."""
    head = list(last_linear(module).parameters())
    ids = {id(p) for p in head}
    return [p for p in module.parameters() if id(p) not in ids], head


def set_stage(module: nn.Module, stage: int) -> None:
    """Train mode for ``stage`` 1 (only the head learns; backbone frozen, its BatchNorm statistics
    too) or 2 (everything learns)."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    backbone, head = param_groups(module)
    module.train()
    for p in backbone:
        p.requires_grad_(stage == 2)
    for p in head:
        p.requires_grad_(True)
    if stage == 1:
        head_modules = {id(m) for m in last_linear(module).modules()}
        for m in module.modules():
            if isinstance(m, BATCHNORMS) and id(m) not in head_modules:
                m.eval()


def fit_staged(module: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
               sc: StagedConfig, seed: int, desc: str = "fine-tune (staged)", progress: bool = True,
               on_epoch=None) -> FitResult:
    """Fine-tune ``module`` in two stages on (N, C, H, W) uint8 ``x_train`` with (N,) classes ``y_train``,
    validated on ``x_val``/``y_val``. ``on_epoch(row, module)`` is called after each epoch. Returns
    a :class:`FitResult`; the best epoch's weights are loaded into ``module``."""
    device = current()
    module.to(device.torch)
    gen = device.generator(seed)
    torch.manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x_train)).to(device.torch)
    yt = torch.from_numpy(np.asarray(y_train)).long().to(device.torch)
    xv, yv = to_device(torch.from_numpy(np.ascontiguousarray(x_val)), device), torch.from_numpy(np.asarray(y_val)).long()
    backbone, head = param_groups(module)
    opt = torch.optim.SGD([{"params": backbone, "lr": sc.backbone_lr}, {"params": head, "lr": sc.head_lr}],
                          momentum=sc.momentum, weight_decay=sc.weight_decay)  # fmt: skip
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=sc.plateau_factor,
                                                         patience=sc.plateau_patience)  # fmt: skip
    res, best_state, start, since = FitResult(), None, time.perf_counter(), 0
    steps = math.ceil(len(xt) / sc.batch_size)
    bar = progress_bar(progress, total=sc.epochs * steps, desc=desc, unit="step")
    for epoch in range(sc.epochs):
        stage = 1 if epoch < sc.head_epochs else 2
        set_stage(module, stage)
        perm, losses = torch.randperm(len(xt), generator=gen, device=device.torch), []
        for i in range(0, len(xt), sc.batch_size):
            idx = perm[i : i + sc.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            with device.autocast():
                logits = logits_of(module(seed_augment(xt[idx].float().div_(255.0), gen))).float()
            loss = F.cross_entropy(logits, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(1)
        val_loss, val_acc = evaluate(module, xv, yv)
        row = {"epoch": epoch, "stage": stage, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": val_loss, "val_acc": val_acc, "lr_backbone": opt.param_groups[0]["lr"],
               "lr_head": opt.param_groups[1]["lr"]}  # fmt: skip
        res.history.append(row)
        if on_epoch is not None:
            on_epoch(row, module)
        plateau.step(val_loss)
        if val_loss < res.best_val_loss - sc.min_delta:
            res.best_val_loss, res.best_epoch, since = val_loss, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            since += 1
            if since >= sc.stop_patience:
                break
    bar.close()
    for p in module.parameters():
        p.requires_grad_(True)
    if best_state is not None:
        module.load_state_dict(best_state)
    res.seconds = time.perf_counter() - start
    return res
