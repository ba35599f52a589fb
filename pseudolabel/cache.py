"""Decoded images, kept once on disk as a uint8 memory map (nanoGPT's ``np.memmap``) and reused.

A cache is keyed by every file's name, size and modification time (a file written again has a new
time), the image size and the channels, so `run`, `retrain`, `resort` and `predict` over the same
images decode them once. It lives in ``pool_cache`` (default ``~/.cache/pseudolabel/pools``, or
``$PSEUDOLABEL_CACHE``), never beside the user's images. A build is streamed: one image is decoded
and appended at a time, the file moved into place only when complete, so a killed build leaves
nothing half-written behind, and memory stays that of one image whatever the pool's size.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from .progress import bar as progress_bar

FORMAT = 1  # bump when the layout or the decoding changes: older caches are then ignored


def cache_dir(setting: str | None) -> Path | None:
    """The cache folder for a config's ``pool_cache`` ("" = off); $PSEUDOLABEL_CACHE wins when set."""
    env = os.environ.get("PSEUDOLABEL_CACHE")
    text = env if env is not None else setting
    return Path(os.path.expanduser(text)) if text else None


def files_key(files: list[tuple[str, str | Path]], hw: tuple[int, int], channels: int) -> str:
    """Hex key of ``files`` ((name, path) pairs, in order) decoded to ``hw`` and ``channels``:
    streamed over the names and os.stat of each file; no file is read."""
    h = hashlib.sha256(json.dumps([FORMAT, list(hw), channels]).encode())
    for name, path in files:
        try:
            st = os.stat(path)
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()[:32]


def _open(base: Path, hw: tuple[int, int], channels: int) -> tuple[np.ndarray, dict] | None:
    """The cache at ``base`` (.u8 + .json), or None when absent or incomplete."""
    meta_path, data_path = base.with_suffix(".json"), base.with_suffix(".u8")
    try:
        meta = json.loads(meta_path.read_text())
        n = len(meta["names"])
        if data_path.stat().st_size != n * channels * hw[0] * hw[1]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if n == 0:
        return np.zeros((0, channels, *hw), np.uint8), meta
    return np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, channels, *hw)), meta


def decode_cached(files: list[tuple[str, str | Path]], hw: tuple[int, int], channels: int, cache: Path | None,
                  decode, progress: bool = True, desc: str = "decoding images") -> tuple[np.ndarray, dict]:
    """Decode ``files`` ((name, path) pairs) with ``decode(name, bytes) -> (C, H, W) uint8`` or reuse the cache.

    ``decode`` may raise OSError/ValueError for a bad file, or return None to skip it (a duplicate).
    Returns ((N, C, H, W) uint8 images: a read-only memmap when cached, else an array;
    {"names": the N kept names, "skipped": [(name, reason), ...], "reused": bool})."""
    base = cache / files_key(files, hw, channels) if cache is not None else None
    if base is not None:
        hit = _open(base, hw, channels)
        if hit is not None:
            images, meta = hit
            return images, {**meta, "reused": True}
    names, skipped, arrays = [], [], []
    tmp = None
    if base is not None:
        base.parent.mkdir(parents=True, exist_ok=True)
        tmp = base.with_name(f".{base.name}.{os.getpid()}.tmp")
    out = open(tmp, "wb") if tmp is not None else None  # noqa: SIM115 -- moved into place once complete
    try:
        for name, path in progress_bar(progress, files, desc=desc, unit="img"):
            try:
                arr = decode(name, Path(path).read_bytes())
            except (OSError, ValueError) as exc:
                skipped.append((name, f"{exc.__class__.__name__}: {exc}"))
                continue
            if arr is None:
                continue
            names.append(name)
            if out is not None:
                out.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
            else:
                arrays.append(arr)
    except BaseException:
        if out is not None:
            out.close()
            tmp.unlink(missing_ok=True)
        raise
    meta = {"names": names, "skipped": skipped}
    if out is None:
        images = np.stack(arrays).astype(np.uint8) if arrays else np.zeros((0, channels, *hw), np.uint8)
        return images, {**meta, "reused": False}
    out.close()
    os.replace(tmp, base.with_suffix(".u8"))
    meta_tmp = base.with_name(f".{base.name}.json.tmp")
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, base.with_suffix(".json"))
    return _open(base, hw, channels)[0], {**meta, "reused": False}


def decoder(hw: tuple[int, int], channels: int):
    """(name, bytes) -> (C, H, W) uint8, as :func:`data.load_image` decodes a file."""
    from PIL import Image

    from .data import load_image

    def decode(name: str, data: bytes) -> np.ndarray:
        try:
            return load_image(io.BytesIO(data), hw, channels)
        except Image.DecompressionBombError as exc:
            raise ValueError(str(exc)) from None

    return decode
