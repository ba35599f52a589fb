"""FixMatch (Sohn et al. 2020) for any classifier module, after USB's fixmatch.py.

Pure pieces (:func:`confidence_mask`, :func:`pseudo_label`, :func:`fixmatch_loss`)
plus one training loop, :func:`fit_fixmatch`, with EMA weights and early stopping.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.config.values import MONITORS
from pseudolabel.core.device import Device, current
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.data.augment import strong_augment, weak_augment
from pseudolabel.data.stream import CyclingBatches, batches, loader, to_device
from pseudolabel.models.layers import logits_of


def confidence_mask(probs: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """(N, K) probabilities -> (N,) bool, True where the top probability is >= tau.

    tau: one threshold, or a (K,) tensor of class-wise thresholds (applied to the top class).
    """
    t = torch.as_tensor(tau, dtype=probs.dtype, device=probs.device)
    if t.numel() not in (1, probs.shape[1]) or bool((t < 0).any() or (t > 1).any()):
        raise ValueError(f"tau must be in [0, 1], one value or one per class, got {tau!r}")
    conf, pred = probs.max(dim=1)
    return conf >= (t[pred] if t.numel() > 1 else t)


def pseudo_label(probs: torch.Tensor, tau: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) probabilities of the weak view -> ((N,) hard labels, (N,) float mask of confident rows)."""
    return probs.argmax(dim=1), confidence_mask(probs, tau).float()


def flexmatch_thresholds(selected: torch.Tensor, num_classes: int, tau: float) -> torch.Tensor:
    """FlexMatch's class-wise thresholds (Zhang et al. 2021) with threshold warm-up.

    selected: (U,) long, the class each unlabeled image was last confidently (> tau) predicted
    as, or -1 if never. A class that is learned less gets a lower threshold:
    beta_c = sigma_c / max(max_k sigma_k, #never), tau_c = tau * beta_c / (2 - beta_c).
    Returns (K,) thresholds.
    """
    counts = torch.bincount(selected[selected >= 0], minlength=num_classes).float()
    denom = torch.maximum(counts.max(), (selected < 0).sum().float()).clamp_min(1.0)
    beta = counts / denom
    return tau * beta / (2 - beta)


def fixmatch_loss(logits_lb: torch.Tensor, y_lb: torch.Tensor, logits_s: torch.Tensor, probs_w: torch.Tensor,
                  tau: float | torch.Tensor, lambda_u: float = 1.0, w_lb: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, dict]:
    """Supervised cross-entropy on (B, K) labeled logits plus lambda_u times the masked
    cross-entropy of the (uB, K) strong-view logits against the weak view's pseudo-labels.

    w_lb: optional (B,) per-example weights for the labeled term.
    Returns (loss, {"sup": ..., "unsup": ..., "mask": share of confident unlabeled rows}).
    """
    ce = F.cross_entropy(logits_lb, y_lb, reduction="none")
    sup = (ce * w_lb).sum() / w_lb.sum().clamp_min(1e-8) if w_lb is not None else ce.mean()
    labels, mask = pseudo_label(probs_w, tau)
    unsup = (F.cross_entropy(logits_s, labels, reduction="none") * mask).mean() if len(logits_s) else sup * 0
    loss = sup + lambda_u * unsup
    return loss, {"sup": sup.item(), "unsup": unsup.item(), "mask": mask.mean().item() if len(mask) else 0.0}


class EMA:
    """Exponential moving average of a module's weights. Buffers (batch-norm statistics) are
    copied from the live module, or averaged too when ``average_buffers`` (timm's ModelEmaV2)."""

    def __init__(self, module: nn.Module, decay: float, average_buffers: bool = False):
        self.decay, self.average_buffers = decay, average_buffers
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for e, p in zip(self.module.parameters(), module.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        for e, b in zip(self.module.buffers(), module.buffers()):
            if self.average_buffers and e.is_floating_point():
                e.mul_(self.decay).add_(b, alpha=1 - self.decay)
            else:
                e.copy_(b)


@dataclass(frozen=True)
class FixMatchConfig:
    epochs: int = 12  # validations; the budget is epochs x epoch_steps optimiser steps, whatever the pool's size
    epoch_steps: int = 32  # optimiser steps between two validations (an "epoch")
    workers: int = 0  # DataLoader processes reading unlabeled batches ahead (0 = in this process)
    batch_size: int = 32  # labeled images per step
    mu: int = 4  # unlabeled images per labeled image in a step
    tau: float = 0.95  # confidence threshold on the weak view
    lambda_u: float = 1.0  # weight of the unlabeled loss
    lr: float = 0.03  # SGD learning rate, cosine-decayed to 0
    weight_decay: float = 5e-4  # L2 penalty
    ema: float = 0.99  # EMA decay of the weights that are evaluated and kept
    ema_buffers: str = "copy"  # batch-norm statistics of the EMA model: "copy" the live ones or "average" them
    patience: int = 6  # stop after this many epochs without a better validation score
    threshold: str = "fixed"  # "fixed" (tau) or "flexmatch" (class-wise dynamic thresholds)
    monitor: str = "loss"  # the kept epoch: the "last", the lowest validation "loss" or the latest top "accuracy"
    weak_shift: str = "bilinear"  # the weak view's shift: sub-pixel "bilinear" resampling or whole-pixel "crop"
    # (the seed models in `run` keep bilinear; retrain passes retrain.weak_shift, crop by default)


@dataclass
class FitResult:
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    val_probs: object = None  # (n_val, K) held-out probabilities when the kept model has also learned the validation set


def improved(row: dict, best: dict | None, monitor: str) -> bool:
    """Whether epoch ``row`` ({"val_loss", "val_acc", ...}) should replace the kept epoch ``best``.

    "last": always, so the final epoch is kept and training never stops early. "loss": a lower
    validation loss. "accuracy": a validation accuracy at least as high (ties go to the later epoch).
    On a few dozen validation images both signals are noise (measured): the loss rises as the model
    grows sure of itself, and one hard reviewed image flips the accuracy, stopping training early."""
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
    if best is None or monitor == "last":
        return True
    if monitor == "loss":
        return row["val_loss"] < best["val_loss"] - 1e-4
    return row["val_acc"] >= best["val_acc"]


@torch.inference_mode()
def predict_probs(module: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512, tta: bool = False,
                  device: Device | None = None) -> torch.Tensor:
    """(N, C, H, W) images -> (N, K) softmax probabilities, on the CPU; ``tta`` averages in the flipped view.

    x: a uint8 array (a pool memmap: streamed in batches, made float only on the device) or a
    float tensor in [0, 1]. The module runs on ``device`` (this process's device by default)."""
    device = device or current()
    module.eval().to(device.torch)
    if isinstance(x, np.ndarray):
        views = batches(x, batch_size, device=device)
    else:
        views = (x[i : i + batch_size].to(device.torch) for i in range(0, len(x), batch_size))
    out, at = None, 0  # filled in place: no per-batch result stays behind to fragment the heap
    with device.autocast():
        for xb in views:
            p = logits_of(module(xb)).float().softmax(1)
            if tta:
                p = (p + logits_of(module(xb.flip(-1))).float().softmax(1)) / 2
            if out is None:
                out = torch.empty((len(x), p.shape[1]), dtype=torch.float32, device="cpu")
            out[at : at + len(p)] = p
            at += len(p)
    return out if out is not None else torch.empty(0, 2)


def evaluate(module: nn.Module, xv: torch.Tensor, yv: torch.Tensor) -> tuple[float, float]:
    """(loss, accuracy) of ``module`` on (N, C, H, W) float images with (N,) labels."""
    pv, yv = predict_probs(module, xv), yv.cpu()
    return F.nll_loss(pv.clamp_min(1e-7).log(), yv).item(), (pv.argmax(1) == yv).float().mean().item()


def _step(module: nn.Module, fc: FixMatchConfig, labeled: tuple, x_u: torch.Tensor, g: torch.Generator,
          selected: torch.Tensor, ui: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The loss of one FixMatch step. labeled: ((B, C, H, W) images, (B,) labels, (B,) weights or None);
    x_u: (uB, C, H, W) unlabeled images, ``ui`` their indices into ``selected`` (FlexMatch's status).
    Every tensor made here is made on the images' device."""
    x_l, y_l, w_l = labeled
    module.train()
    with torch.no_grad():  # train mode: batch statistics, as in the step itself
        probs_w = logits_of(module(weak_augment(x_u, g, fc.weak_shift))).float().softmax(1)
    tau = fc.tau
    if fc.threshold == "flexmatch":
        conf, pred = probs_w.max(1)
        sure = conf > fc.tau
        selected[ui[sure]] = pred[sure]
        tau = flexmatch_thresholds(selected, probs_w.shape[1], fc.tau)
    logits = logits_of(module(torch.cat([weak_augment(x_l, g, fc.weak_shift),
                                         strong_augment(x_u, g=g, shift=fc.weak_shift)]))).float()
    return fixmatch_loss(logits[: len(x_l)], y_l, logits[len(x_l) :], probs_w, tau, fc.lambda_u, w_l)


def fit_fixmatch(module: nn.Module, x_lb: np.ndarray, y_lb: np.ndarray, x_ulb: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, fc: FixMatchConfig, seed: int = 0, desc: str = "fixmatch", progress: bool = True,
                 w_lb: np.ndarray | None = None, on_epoch=None, device: Device | None = None,
                 net: nn.Module | None = None) -> FitResult:
    """Train ``module`` with FixMatch on ``device``; the kept EMA weights (see ``fc.monitor``) are loaded into it.

    x_lb: (B, C, H, W) uint8 labeled, y_lb: (B,) int; x_ulb: (U, C, H, W) uint8 unlabeled (a memmap is
    streamed, never made float as a whole); x_val/y_val: validation split; w_lb: optional (B,) weights;
    on_epoch: optional callback(history_row, ema_module) after each "epoch" of ``fc.epoch_steps`` steps;
    net: what the training steps run through, e.g. ``module`` inside DistributedDataParallel (Ray Train).
    """
    for name, value, allowed in (("threshold", fc.threshold, ("fixed", "flexmatch")), ("monitor", fc.monitor, MONITORS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    device = device or current()
    dev = device.torch
    module.to(dev)
    g = device.generator(seed)
    torch.manual_seed(seed)
    xl, yl = torch.from_numpy(np.ascontiguousarray(x_lb)).to(dev), torch.from_numpy(y_lb).long().to(dev)  # uint8
    wl = torch.from_numpy(w_lb).float().to(dev) if w_lb is not None else None
    xv, yv = to_device(torch.from_numpy(x_val), device), torch.from_numpy(y_val).long()
    steps, total = fc.epoch_steps, fc.epochs * fc.epoch_steps
    opt = torch.optim.SGD(module.parameters(), lr=fc.lr, momentum=0.9, nesterov=True, weight_decay=fc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: math.cos(7 * math.pi * s / (16 * max(total, 1))))
    scaler = device.scaler()
    selected = torch.full((len(x_ulb),), -1, dtype=torch.long, device=dev)  # FlexMatch's status per unlabeled image
    unlabeled = iter(loader(x_ulb, CyclingBatches(len(x_ulb), fc.batch_size * fc.mu, total, seed), fc.workers, device))
    ema, res, best, start = EMA(module, fc.ema, fc.ema_buffers == "average"), FitResult(), None, time.perf_counter()
    bar = progress_bar(progress, total=total, desc=desc, unit="step")
    for epoch in range(fc.epochs):
        loss_sum, mask_sum = torch.zeros((), device=dev), 0.0
        for _ in range(steps):
            xu, ui = next(unlabeled)
            li = torch.randint(len(xl), (fc.batch_size,), generator=g, device=dev)
            with device.autocast():
                loss, st = _step(net or module, fc, (xl[li].float().div_(255.0), yl[li], None if wl is None else wl[li]), to_device(xu, device), g,
                                 selected, ui.to(dev))  # fmt: skip
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            ema.update(module)
            loss_sum += loss.detach()
            mask_sum += st["mask"]
            bar.update(1)
            bar.set_postfix(loss=f"{st['sup'] + fc.lambda_u * st['unsup']:.3f}", mask=f"{st['mask']:.2f}", refresh=False)
        vl, va = evaluate(ema.module, xv, yv)
        res.history.append({"epoch": epoch, "train_loss": loss_sum.item() / steps, "mask_rate": mask_sum / steps,
                            "val_loss": vl, "val_acc": va, "lr": sched.get_last_lr()[0]})  # fmt: skip
        if on_epoch is not None:
            on_epoch(res.history[-1], ema.module)
        if improved(res.history[-1], None if best is None else res.history[res.best_epoch], fc.monitor):
            res.best_val_loss, res.best_epoch, best = vl, epoch, copy.deepcopy(ema.module.state_dict())
        elif epoch - res.best_epoch >= fc.patience:
            break
    bar.close()
    module.load_state_dict(best if best is not None else ema.module.state_dict())
    res.seconds = time.perf_counter() - start
    return res
