"""Pieces shared by the self-supervised pretraining methods (SimCLR, the VAE)."""
from __future__ import annotations

import numpy as np
import torch.nn as nn

from pseudolabel.data.stream import CyclingBatches, loader


def pretrain_batches(module: nn.Module, x_pool: np.ndarray, batch_size: int, steps: int, seed: int, workers: int,
                     device):
    """Put ``module`` in train mode with dropout off (the embedding is taken before dropout would act
    on it) and return an iterator of ``steps`` random (uint8 batch, rows) from (N, C, H, W) ``x_pool``."""
    module.train()
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return iter(loader(x_pool, CyclingBatches(len(x_pool), batch_size, steps, seed), workers, device))


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N,) int labels -> (N,) fold index in [0, k), each class spread evenly over the folds."""
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"folds must be an integer >= 2, got {k!r}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold
