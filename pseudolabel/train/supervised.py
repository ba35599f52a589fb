"""Supervised training of a network on labeled images: augmentation, AdamW with one-cycle decay, early stopping."""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.config.schema import SeedTrainConfig
from pseudolabel.core.device import current
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.data.augment import seed_augment
from pseudolabel.data.stream import to_device
from pseudolabel.models.layers import logits_of
from pseudolabel.train.fixmatch import FitResult, evaluate


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
    device = current()
    module.to(device.torch)
    gen = device.generator(seed)
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x_train)).to(device.torch), torch.from_numpy(y_train).long().to(device.torch)
    xv, yv = to_device(torch.from_numpy(x_val), device), torch.from_numpy(y_val).long()
    scaler = device.scaler()
    opt = torch.optim.AdamW(module.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(xt) / tc.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr, total_steps=tc.epochs * steps_per_epoch, pct_start=0.15)
    res, best_state, start = FitResult(), None, time.perf_counter()
    bar = progress_bar(progress, total=tc.epochs * steps_per_epoch, desc=desc, unit="step")
    for epoch in range(tc.epochs):
        module.train()
        perm = torch.randperm(len(xt), generator=gen, device=device.torch)
        losses = []
        for i in range(0, len(xt), tc.batch_size):
            idx = perm[i : i + tc.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            with device.autocast():
                logits = logits_of(module(seed_augment(xt[idx].float().div_(255.0), gen))).float()  # uint8 until here
            loss = F.cross_entropy(logits, yt[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
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
