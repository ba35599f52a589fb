"""SimCLR: self-supervised pretraining on the pool (two strong views of a crop land close together)."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.core.device import current
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.data.augment import strong_augment
from pseudolabel.data.stream import to_device
from pseudolabel.models.layers import embedding_tap, last_linear
from pseudolabel.train.common import pretrain_batches


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's contrastive loss. z1, z2: (N, D) embeddings of two views of the same N images
    (row i of z1 and of z2 are a positive pair; the other 2N - 2 rows are negatives). Scalar."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if z1.shape != z2.shape or z1.ndim != 2 or len(z1) < 2:
        raise ValueError(f"need two (N >= 2, D) embeddings of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = (z @ z.t() / temperature).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(n, device=z.device)])
    return F.cross_entropy(sim, target)


def pretrain_simclr(module: nn.Module, x_pool: np.ndarray, *, epochs: int, batch_size: int = 256,
                    temperature: float = 0.2, lr: float = 2e-3, seed: int = 0, progress: bool = True,
                    epoch_steps: int = 15, workers: int = 0) -> list[dict]:
    """Train ``module``'s layers up to its last linear layer with SimCLR on (N, C, H, W) uint8 images
    (a memmap is streamed): ``epochs`` x ``epoch_steps`` steps, batches drawn at random from the pool.

    Returns one row per epoch: {"epoch", "loss", "seconds"}. The last linear layer is untouched."""
    if len(x_pool) < 2 * batch_size:
        batch_size = max(2, len(x_pool) // 2)
    device = current()
    module.to(device.torch)
    g = device.generator(seed)
    torch.manual_seed(seed)
    final = last_linear(module)
    dim = final.in_features
    d = device.torch
    head = nn.Sequential(nn.Linear(dim, 2 * dim, device=d), nn.ReLU(inplace=True), nn.Linear(2 * dim, dim, device=d))
    skip = {id(p) for p in final.parameters()}
    params = [p for p in module.parameters() if id(p) not in skip]
    opt = torch.optim.AdamW(params + list(head.parameters()), lr=lr, weight_decay=1e-4)
    steps = epoch_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps, pct_start=0.05)
    scaler = device.scaler()
    history, start = [], time.perf_counter()
    bar = progress_bar(progress, total=epochs * steps, desc="pretrain (SimCLR)", unit="step")
    pool = pretrain_batches(module, x_pool, batch_size, epochs * steps, seed, workers, device)
    with embedding_tap(module) as tap:
        for epoch in range(epochs):
            total = torch.zeros((), device=device.torch)
            for _ in range(steps):
                b = to_device(next(pool)[0], device)
                with device.autocast():
                    module(torch.cat([strong_augment(b, g=g), strong_augment(b, g=g)]))
                    z = head(tap[0]).float()
                loss = nt_xent(z[: len(b)], z[len(b) :], temperature)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                total += loss.detach() / steps
                bar.update(1)
            history.append({"epoch": epoch, "loss": total.item(), "seconds": time.perf_counter() - start})
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", refresh=False)
            if not math.isfinite(history[-1]["loss"]):
                raise ValueError(f"SimCLR loss is {history[-1]['loss']} at epoch {epoch}: lower lr (now {lr})")
    bar.close()
    return history
