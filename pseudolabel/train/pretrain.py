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
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pseudolabel.data import augment
from pseudolabel.train.simclr import pretrain_simclr

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


def safetensors_error() -> type:
    from safetensors import SafetensorError

    return SafetensorError


def pretrain_cached(module: nn.Module, x_pool: np.ndarray, *, cache: Path | None, settings: dict,
                    method: str = "simclr", **kwargs) -> tuple[list[dict], bool]:
    """:func:`pretrain_simclr` (or, with ``method="vae"``, :func:`vae.pretrain_vae`; ``kwargs`` go to
    it), unless ``cache`` already holds the weights the same call made before: then those are
    loaded. ``module`` must be freshly built from ``settings``. Returns (the pretraining's history,
    [] when loaded; whether the weights came from the cache)."""
    from safetensors.torch import load_model, save_model

    from pseudolabel.train.vae import pretrain_vae

    methods = {"simclr": pretrain_simclr, "vae": pretrain_vae}
    if method not in methods:
        raise ValueError(f"pretraining method must be one of {tuple(methods)}, got {method!r}")
    train = methods[method]
    if cache is None:
        return train(module, x_pool, **kwargs), False
    run_args = {k: v for k, v in kwargs.items() if k != "progress"}
    path = Path(cache) / f"{method}-{cache_key(x_pool, {**settings, **run_args})}.safetensors"
    if path.is_file():
        try:
            load_model(module, str(path))
            return [], True
        except Exception as exc:  # noqa: BLE001 -- a damaged or foreign file: train again and replace it
            print(f"{path}: cannot load cached {NAMES[method]} weights ({exc}); pretraining again", file=sys.stderr)
    history = train(module, x_pool, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_model(module, str(tmp))  # safetensors: weights we write are never a pickle
        os.replace(tmp, path)
    except (OSError, RuntimeError, safetensors_error()) as exc:  # a full disk: the cache is only a cache
        tmp.unlink(missing_ok=True)
        print(f"{path}: cannot keep the {NAMES[method]} weights in the cache ({exc.__class__.__name__})",
              file=sys.stderr)
    return history, False
