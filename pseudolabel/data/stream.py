"""Batches streamed from a uint8 image array (an ``np.memmap`` of the pool cache, or any array).

Nothing here turns a whole pool into floats: a batch is gathered as uint8, moved to the device,
and only there made float in [0, 1]. Training draws its unlabeled batches from successive
random permutations (USB's sampler), so a budget in steps costs the same whatever the pool's size.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pseudolabel.core.device import Device, current
from pseudolabel.data.memmap import read_in_order, whole_file


class ArrayBatches(Dataset):
    """(N, C, H, W) uint8 array -> one batch per item: a list of row indices gives
    ((B, C, H, W) uint8 tensor, (B,) long indices)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(rows, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # a memmap reads fastest in file order
        batch = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        batch[order] = self.images[idx[order]]
        return torch.from_numpy(batch), torch.from_numpy(idx)


class CyclingBatches(Sampler):
    """``steps`` batches of ``batch`` row indices out of ``n``, from successive seeded permutations."""

    def __init__(self, n: int, batch: int, steps: int, seed: int):
        if n < 1 or batch < 1 or steps < 0:
            raise ValueError(f"need n >= 1, batch >= 1 and steps >= 0, got n={n}, batch={batch}, steps={steps}")
        self.n, self.batch, self.steps, self.seed = n, batch, steps, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        # on the CPU (it only orders rows), and its own stream: a generator seeded like the augmentations'
        # would draw the same numbers as they do
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919)
        perm, at = torch.randperm(self.n, generator=g, device="cpu"), 0
        for _ in range(self.steps):
            rows = []
            while len(rows) < self.batch:
                if at == self.n:
                    perm, at = torch.randperm(self.n, generator=g, device="cpu"), 0
                take = min(self.batch - len(rows), self.n - at)
                rows += perm[at : at + take].tolist()
                at += take
            yield rows


class InOrder(Sampler):
    """Batches of ``batch`` consecutive rows out of ``n``, the last one shorter."""

    def __init__(self, n: int, batch: int):
        self.n, self.batch = n, batch

    def __len__(self) -> int:
        return -(-self.n // self.batch)

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, self.n, self.batch):
            yield list(range(i, min(i + self.batch, self.n)))


class Loader:
    """A DataLoader of (uint8 batch, indices) whose own bookkeeping tensors stay on the CPU, whatever
    the default device: batches are read on the CPU and moved by :func:`to_device`."""

    def __init__(self, loader: DataLoader):
        self.loader, self.dataset = loader, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        with torch.device("cpu"):
            it = iter(self.loader)
        yield from it


def loader(images: np.ndarray, sampler, workers: int = 0, device: Device | None = None) -> Loader:
    """Batches of (uint8 batch, indices) over ``images`` as ``sampler`` gives row lists; ``workers``
    processes read ahead."""
    device = device or current()
    return Loader(DataLoader(ArrayBatches(images), sampler=sampler, batch_size=None, num_workers=workers,
                             pin_memory=device.type == "cuda", persistent_workers=False))  # fmt: skip


def to_device(batch: torch.Tensor, device: Device | None = None) -> torch.Tensor:
    """(B, C, H, W) uint8 -> float in [0, 1] on ``device`` (converted there, not before)."""
    device = device or current()
    return batch.to(device.torch, non_blocking=True).float().div_(255.0)


def raw_batches(images: np.ndarray, batch_size: int, workers: int = 0, device: Device | None = None):
    """Every row of ``images`` in order, as (B, C, H, W) uint8 CPU tensors (a whole-file memmap is
    read with plain reads into one reused buffer: each batch is valid until the next)."""
    path = whole_file(images)
    if path is not None:
        for batch in read_in_order(path, images.shape, batch_size):
            yield torch.from_numpy(batch)  # shares the buffer: to_device copies it first
        return
    for batch, _ in loader(images, InOrder(len(images), batch_size), workers, device):
        yield batch


def batches(images: np.ndarray, batch_size: int, workers: int = 0, device: Device | None = None):
    """Every row of ``images`` in order, as (B, C, H, W) float batches on ``device``."""
    for batch in raw_batches(images, batch_size, workers, device):
        yield to_device(batch, device)
