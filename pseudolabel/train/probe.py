"""The linear probe (``retrain --probe``): a frozen pretrained encoder plus one linear layer trained on
the labeled set, the eye-state write-up's stage II (shared/seeds/000): a sigmoid neuron for K = 2,
a softmax layer for K classes.

The encoder runs once, in eval mode, to give (N, D) embeddings; only the last linear layer learns.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.core.device import current
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.data.stream import batches
from pseudolabel.models.layers import SigmoidNeuron, _parent_of_last_linear, embedding_tap
from pseudolabel.train.fixmatch import FitResult


@torch.no_grad()
def embed(module: nn.Module, images: np.ndarray, batch_size: int = 512, progress: bool = False,
          desc: str = "embedding") -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, D) float32 inputs of ``module``'s last linear layer, in eval mode, on the CPU."""
    device = current()
    module.to(device.torch).eval()
    out = []
    with embedding_tap(module) as tap, progress_bar(progress, total=len(images), desc=desc, unit="img") as bar:
        for x in batches(images, batch_size, device=device):
            module(x)
            out.append(tap[0].float().cpu())
            bar.update(len(x))
    return torch.cat(out) if out else torch.zeros(0, 0)


def new_head(module: nn.Module, num_classes: int) -> nn.Module:
    """Replace ``module``'s last linear layer by a fresh one (a :class:`SigmoidNeuron` for K = 2); returns it."""
    parent, name = _parent_of_last_linear(module)
    old = getattr(parent, name)
    dev = old.weight.device
    head = SigmoidNeuron(old.in_features, device=dev) if num_classes == 2 else nn.Linear(old.in_features,
                                                                                         num_classes, device=dev)
    setattr(parent, name, head)
    return head


def fit_probe(module: nn.Module, x_lb: np.ndarray, y_lb: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
              num_classes: int, epochs: int, lr: float, weight_decay: float, seed: int = 0,
              w_lb: np.ndarray | None = None, progress: bool = True) -> FitResult:
    """Freeze ``module`` and train a new last linear layer (see :func:`new_head`) on the (N, C, H, W)
    uint8 labeled images ``x_lb`` with (N,) classes ``y_lb`` (weights ``w_lb``): ``epochs`` full-batch
    AdamW steps on their embeddings. The encoder's weights and buffers do not change."""
    torch.manual_seed(seed)
    device = current()
    for p in module.parameters():
        p.requires_grad_(False)
    head = new_head(module, num_classes).to(device.torch)
    h_lb, h_val = embed(module, x_lb).to(device.torch), embed(module, x_val).to(device.torch)
    mean, std = h_lb.mean(0), h_lb.std(0).clamp_min(1e-6)  # standardised for the optimiser, folded back below
    y = torch.as_tensor(np.asarray(y_lb), device=device.torch, dtype=torch.long)
    yv = torch.as_tensor(np.asarray(y_val), device=device.torch, dtype=torch.long)
    w = torch.as_tensor(np.ones(len(y_lb)) if w_lb is None else np.asarray(w_lb), device=device.torch,
                        dtype=torch.float32)  # fmt: skip
    lin = nn.Linear(h_lb.shape[1], 1 if num_classes == 2 else num_classes, device=device.torch)
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=weight_decay)

    def logits(h: torch.Tensor) -> torch.Tensor:
        z = lin((h - mean) / std)
        return torch.cat([torch.zeros_like(z), z], 1) if num_classes == 2 else z

    res, start = FitResult(), time.perf_counter()
    for epoch in progress_bar(progress, range(epochs), desc="linear probe", unit="step"):
        with torch.enable_grad():
            loss = (F.cross_entropy(logits(h_lb), y, reduction="none") * w).sum() / w.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            zv = logits(h_val)
            row = {"epoch": epoch, "train_loss": loss.item(), "val_loss": F.cross_entropy(zv, yv).item(),
                   "val_acc": (zv.argmax(1) == yv).float().mean().item()}  # fmt: skip
        res.history.append(row)
    with torch.no_grad():  # fold the standardisation into the exported layer: W (h - m) / s + b
        weight = lin.weight / std
        bias = lin.bias - (weight * mean).sum(1)
        target = head.neuron if num_classes == 2 else head
        target.weight.copy_(weight)
        target.bias.copy_(bias)
    res.best_epoch, res.seconds = epochs - 1, time.perf_counter() - start
    res.best_val_loss = res.history[-1]["val_loss"] if res.history else float("inf")
    return res
