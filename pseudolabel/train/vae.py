"""A variational autoencoder on the pool (Kingma & Welling 2014), as the eye-state write-up
(shared/seeds/000) pretrained its encoder, and the linear probe that reads its latent space.

The encoder is the classifier's own backbone: :func:`attach_latent` puts a linear layer to the
latent mean between the embedding and the last linear layer, so the network becomes
``features -> mu (L) -> linear (K)``. :func:`pretrain_vae` trains ``features`` and ``mu`` with a
log-variance head and a decoder fitted to the image size, both thrown away afterwards.
The probe (:func:`fit_probe`) freezes everything but the last linear layer.

>>> vae_loss(x, recon_logits, mu, logvar, beta=1.0)   # pure: per-image mean of (BCE + beta KL)
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pseudolabel.core.device import current
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.data.stream import to_device
from pseudolabel.models.layers import _parent_of_last_linear, last_linear
from pseudolabel.train.common import pretrain_batches


def vae_loss(x: torch.Tensor, recon_logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (N, C, H, W) in [0, 1]; recon_logits: its (N, C, H, W) reconstruction as Bernoulli logits;
    mu, logvar: (N, L) posterior. Returns (loss, reconstruction, KL), each a mean over the N images of
    a sum over pixels (reconstruction) or latent dimensions (KL); loss = reconstruction + beta KL."""
    if x.shape != recon_logits.shape or mu.shape != logvar.shape or len(mu) != len(x):
        raise ValueError(f"shapes differ: x {tuple(x.shape)}, reconstruction {tuple(recon_logits.shape)}, "
                         f"mu {tuple(mu.shape)}, logvar {tuple(logvar.shape)}")  # fmt: skip
    recon = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none").flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
    return recon + beta * kl, recon, kl


class Decoder(nn.Module):
    """(N, L) latent -> (N, C, H, W) Bernoulli logits: a linear layer to a (4w, H/8, W/8) map, then
    three stride-2 transposed convolutions, cropped to (H, W)."""

    def __init__(self, latent: int, channels: int, hw: tuple[int, int], width: int = 32):
        super().__init__()
        self.hw, self.width = tuple(hw), width
        self.h0, self.w0 = math.ceil(hw[0] / 8), math.ceil(hw[1] / 8)
        self.fc = nn.Linear(latent, 4 * width * self.h0 * self.w0)
        self.up = nn.Sequential(
            nn.ReLU(inplace=True), nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1))  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.up(self.fc(z).view(len(z), 4 * self.width, self.h0, self.w0))
        return x[:, :, : self.hw[0], : self.hw[1]]


class Latent(nn.Sequential):
    """``mu`` (D -> L, the VAE's latent mean) then ``head`` (L -> K): what replaces the last linear layer."""

    def __init__(self, mu: nn.Linear, head: nn.Linear):
        super().__init__()
        self.mu, self.head = mu, head


def attach_latent(module: nn.Module, latent: int) -> nn.Module:
    """Put a D -> ``latent`` linear layer (the VAE's mean) before ``module``'s last linear layer,
    which then reads the L-dimensional latent. In place; returns ``module``."""
    parent, name = _parent_of_last_linear(module)
    old = getattr(parent, name)
    if isinstance(parent, Latent):
        raise ValueError("this network already has a latent layer")
    dev = old.weight.device
    setattr(parent, name, Latent(nn.Linear(old.in_features, latent, device=dev),
                                 nn.Linear(latent, old.out_features, device=dev)))  # fmt: skip
    if isinstance(getattr(module, "recipe", None), dict):  # how to build it anew (the Ray engine does)
        module.recipe = {**module.recipe, "latent": latent}
    return module


def latent_layer(module: nn.Module) -> nn.Linear:
    """The latent-mean layer :func:`attach_latent` added."""
    for m in module.modules():
        if isinstance(m, Latent):
            return m.mu
    raise ValueError(f"{type(module).__name__} has no latent layer (see attach_latent)")


def pretrain_vae(module: nn.Module, x_pool: np.ndarray, *, epochs: int, epoch_steps: int = 15,
                 batch_size: int = 256, lr: float = 2e-3, beta: float = 1.0, seed: int = 0,
                 progress: bool = True, workers: int = 0) -> list[dict]:
    """Train ``module``'s layers up to and including its latent layer (see :func:`attach_latent`) as a
    VAE's encoder on (N, C, H, W) uint8 images (a memmap is streamed): ``epochs`` x ``epoch_steps``
    steps, batches drawn at random. Returns one row per epoch: {"epoch", "loss", "recon", "kl", "seconds"}."""
    batch_size = min(batch_size, max(2, len(x_pool)))
    device = current()
    module.to(device.torch)
    g = device.generator(seed)
    torch.manual_seed(seed)
    mu_layer = latent_layer(module)
    latent, c, h, w = mu_layer.out_features, *x_pool.shape[1:]
    d = device.torch
    logvar_layer = nn.Linear(mu_layer.in_features, latent, device=d)
    decoder = Decoder(latent, c, (h, w)).to(d)
    skip = {id(p) for p in last_linear(module).parameters()}
    params = [p for p in module.parameters() if id(p) not in skip]
    opt = torch.optim.AdamW(params + list(logvar_layer.parameters()) + list(decoder.parameters()), lr=lr,
                            weight_decay=1e-4)  # fmt: skip
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * epoch_steps, pct_start=0.05)
    history, start, tap = [], time.perf_counter(), []
    handle = mu_layer.register_forward_pre_hook(lambda _m, args: tap.__setitem__(slice(None), [args[0]]))
    bar = progress_bar(progress, total=epochs * epoch_steps, desc="pretrain (VAE)", unit="step")
    pool = pretrain_batches(module, x_pool, batch_size, epochs * epoch_steps, seed, workers, device)
    try:
        for epoch in range(epochs):
            sums = torch.zeros(3, device=d)
            for _ in range(epoch_steps):
                x = to_device(next(pool)[0], device)
                module(x)
                mu, logvar = mu_layer(tap[0]).float(), logvar_layer(tap[0]).float().clamp(-10, 10)
                z = mu + torch.randn(mu.shape, device=d, generator=g) * (0.5 * logvar).exp()
                loss, recon, kl = vae_loss(x, decoder(z), mu, logvar, beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                sums += torch.stack([loss, recon, kl]).detach() / epoch_steps
                bar.update(1)
            loss_, recon_, kl_ = sums.tolist()
            history.append({"epoch": epoch, "loss": loss_, "recon": recon_, "kl": kl_,
                            "seconds": time.perf_counter() - start})  # fmt: skip
            bar.set_postfix(loss=f"{loss_:.1f}", refresh=False)
            if not math.isfinite(loss_):
                raise ValueError(f"VAE loss is {loss_} at epoch {epoch}: lower pretrain_lr (now {lr})")
    finally:
        handle.remove()
        bar.close()
    return history


