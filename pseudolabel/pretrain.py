"""Self-supervised pretraining on the pool (SimCLR, Chen et al. 2020) before the final model trains.

Two strong views of each unlabeled crop should map to nearby embeddings and away from every
other crop in the batch. The embedding is the input of the network's last linear layer, so any
backbone works; a small projection head is trained alongside and then thrown away.

>>> loss = nt_xent(z1, z2, temperature=0.2)          # pure: (N, D), (N, D) -> scalar
>>> pretrain_simclr(module, x_pool, epochs=60)        # trains ``module`` in place
>>> pretrain_cached(module, x_pool, cache=run / "cache", settings={...}, epochs=60)  # or loads what it made before

SimCLR sees no labels, so a second ``retrain`` of the same run (after a re-sort or a review) would
train exactly the same weights again; :func:`pretrain_cached` keeps them, keyed by the pool's
bytes, every setting and this code, and loads them instead.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import augment
from .augment import strong_augment
from .device import current
from .progress import bar as progress_bar
from .stream import CyclingBatches, loader, to_device


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


def last_linear(module: nn.Module) -> nn.Linear:
    """The network's final linear layer (its input is the embedding)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no linear layer to take an embedding from")
    return linears[-1]


@contextmanager
def embedding_tap(module: nn.Module):
    """Within the block, ``tap[0]`` holds the (N, D) input of the last linear layer after each forward."""
    tap: list[torch.Tensor] = []

    def hook(_mod, args):
        tap[:] = [args[0]]

    handle = last_linear(module).register_forward_pre_hook(hook)
    try:
        yield tap
    finally:
        handle.remove()


def pretrain_batches(module: nn.Module, x_pool: np.ndarray, batch_size: int, steps: int, seed: int, workers: int,
                     device):
    """Put ``module`` in train mode with dropout off (the embedding is taken before dropout would act
    on it) and return an iterator of ``steps`` random (uint8 batch, rows) from (N, C, H, W) ``x_pool``."""
    module.train()
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return iter(loader(x_pool, CyclingBatches(len(x_pool), batch_size, steps, seed), workers, device))


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


NAMES = {"simclr": "SimCLR", "vae": "VAE"}  # how each pretraining method is called in messages


def cache_key(x_pool: np.ndarray, settings: dict) -> str:
    """Hex name for the weights SimCLR makes from (N, C, H, W) ``x_pool`` under ``settings`` (a
    JSON-able dict of everything else that shapes them). The code of this module and of the
    augmentations, and torch's version, are part of it, so any change there starts afresh."""
    h = hashlib.sha256()
    h.update(repr((x_pool.shape, str(x_pool.dtype))).encode())
    for i in range(0, len(x_pool), 4096):  # streamed: no copy of the pool
        h.update(memoryview(np.ascontiguousarray(x_pool[i : i + 4096])))
    h.update(json.dumps(settings, sort_keys=True).encode())
    for source in (Path(__file__), Path(augment.__file__), Path(__file__).with_name("vae.py")):
        h.update(source.read_bytes())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:24]


def pretrain_cached(module: nn.Module, x_pool: np.ndarray, *, cache: Path | None, settings: dict,
                    method: str = "simclr", **kwargs) -> tuple[list[dict], bool]:
    """:func:`pretrain_simclr` (or, with ``method="vae"``, :func:`vae.pretrain_vae`; ``kwargs`` go to
    it), unless ``cache`` already holds the weights the same call made before: then those are
    loaded. ``module`` must be freshly built from ``settings``. Returns (the pretraining's history,
    [] when loaded; whether the weights came from the cache)."""
    from .vae import pretrain_vae

    methods = {"simclr": pretrain_simclr, "vae": pretrain_vae}
    if method not in methods:
        raise ValueError(f"pretraining method must be one of {tuple(methods)}, got {method!r}")
    train = methods[method]
    if cache is None:
        return train(module, x_pool, **kwargs), False
    run_args = {k: v for k, v in kwargs.items() if k != "progress"}
    path = Path(cache) / f"{method}-{cache_key(x_pool, {**settings, **run_args})}.pt"
    if path.is_file():
        try:
            module.load_state_dict(torch.load(path, weights_only=True))
            return [], True
        except Exception as exc:  # noqa: BLE001 -- a damaged or foreign file: train again and replace it
            print(f"{path}: cannot load cached {NAMES[method]} weights ({exc}); pretraining again", file=sys.stderr)
    history = train(module, x_pool, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(module.state_dict(), tmp)
    os.replace(tmp, path)
    return history, False
