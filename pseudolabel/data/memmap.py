"""Reading uint8 images in order from a memory map, torch-free (the ONNX actors of the Ray engine use it)."""
from __future__ import annotations

import os

import numpy as np


def whole_file(images: np.ndarray) -> str | None:
    """The file behind ``images`` when it is a whole-file memmap (the pool cache), else None."""
    name = getattr(images, "filename", None)
    if not isinstance(images, np.memmap) or not name or images.offset:
        return None
    try:
        return name if os.path.getsize(name) == images.nbytes and images.flags.c_contiguous else None
    except OSError:
        return None


def read_in_order(path: str, shape: tuple, batch_size: int):
    """(B, C, H, W) uint8 batches read from ``path`` with plain reads: a scan maps no page of the
    file, so the process's memory stays that of one batch whatever the file's size. The batches share
    one buffer: each is valid until the next is read."""
    row = int(np.prod(shape[1:]))
    buf = np.empty((min(batch_size, shape[0]), *shape[1:]), dtype=np.uint8)  # one buffer, refilled
    with open(path, "rb", buffering=0) as f:
        for i in range(0, shape[0], batch_size):
            n = min(batch_size, shape[0] - i)
            f.readinto(memoryview(buf).cast("B")[: n * row])
            yield buf[:n]


def uint8_batches(images: np.ndarray, batch_size: int):
    """Every row of (N, C, H, W) uint8 ``images`` in order, as (B, C, H, W) uint8 arrays (a whole-file
    memmap through :func:`read_in_order`)."""
    path = whole_file(images)
    if path is not None:
        yield from read_in_order(path, images.shape, batch_size)
        return
    for i in range(0, len(images), batch_size):
        yield np.asarray(images[i : i + batch_size])
