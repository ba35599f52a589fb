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
import sys
import time
from pathlib import Path

import numpy as np

from pseudolabel.core.home import clean_stale
from PIL import Image

from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.data.fastdecode import fast_decode
from pseudolabel.data.images import MAX_PIXELS, TooLarge, load_image, one_line

FORMAT = 1  # bump when the layout or the decoding changes: older caches are then ignored


def cache_dir(setting: str | None) -> Path | None:
    """The cache folder for a config's ``pool_cache`` ("" = off); $PSEUDOLABEL_CACHE wins when set."""
    env = os.environ.get("PSEUDOLABEL_CACHE")
    text = env if env is not None else setting
    return Path(os.path.expanduser(text)) if text else None


def files_key(files: list[tuple[str, str | Path]], hw: tuple[int, int], channels: int,
              max_pixels: int | None = MAX_PIXELS) -> str:
    """Hex key of ``files`` ((name, path) pairs, in order) decoded to ``hw`` and ``channels``:
    streamed over the names and os.stat of each file; no file is read."""
    head = [FORMAT, list(hw), channels] + ([] if max_pixels == MAX_PIXELS else [max_pixels])
    h = hashlib.sha256(json.dumps(head).encode())
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


PARALLEL_MIN = 1024  # fewer files than this decode in this process: starting workers would cost more
CHUNK = 256  # files per task sent to a decoding worker
PAYOFF_S = 0.5  # fork decoding workers only when the files left would take this long to decode here


def decode_workers(n_files: int) -> int:
    """How many processes decode ``n_files`` files: one per CPU core this process may use (at most
    8), or 1 (this process) for a small set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if n_files < PARALLEL_MIN else max(1, min(8, cores))


def read_file(path) -> bytes:
    """A file's bytes, read with bare system calls: for a small image Python's file object (a Path,
    a buffered reader, its checks) costs more than the reading itself."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)  # a regular file gives all of it, and EOF shows as one byte short
        if len(data) <= size:
            return data
        parts = [data]  # the file grew since fstat: read on to the end
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _read_one(decode, name: str, path, dedupe: bool) -> tuple:
    """(array | None, sha1 of the bytes or None, error text or None) for one file. Any exception a
    decoder raises (SyntaxError, AssertionError, TypeError, MemoryError ... from a damaged file) means
    a bad file: one line of text, never a stop."""
    try:
        data = read_file(path)
        digest = hashlib.sha1(data).hexdigest() if dedupe else None  # per file as it is read: no copy of the pool
        return decode(name, data), digest, None
    except Exception as exc:  # noqa: BLE001 -- a decoder's fault on one file is that file's problem
        return None, None, one_line(str(exc) if isinstance(exc, DecodeError) else f"{exc.__class__.__name__}: {exc}")


def _read_chunk(args: tuple) -> list[tuple]:
    decode, chunk, dedupe = args
    return [_read_one(decode, name, path, dedupe) for name, path in chunk]


def _decoded(files: list, decode, dedupe: bool, workers: int | None):
    """(array | None, digest, error) per file, in ``files``' order; ``workers`` > 1 decodes in that
    many processes (forked where the system allows, so nothing is imported again). ``workers`` None:
    the first CHUNK files are decoded here, timed, and workers take the rest only when it would
    take more than PAYOFF_S here (small images at the pipeline's size decode at ~80 k img/s, where
    the workers' start and the results' transfer cost more than they save)."""
    start = 0
    if workers is None:
        workers = decode_workers(len(files))
        if workers > 1:
            first = _read_chunk((decode, files[:1], dedupe))  # untimed: the decoder's imports
            clock = time.perf_counter()
            first += _read_chunk((decode, files[1:CHUNK], dedupe))
            per_file = (time.perf_counter() - clock) / max(1, len(first) - 1)
            yield from first
            start = len(first)
            workers = workers if per_file * (len(files) - start) > PAYOFF_S else 1
    if workers <= 1:
        for name, path in files[start:]:
            yield _read_one(decode, name, path, dedupe)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    tasks = ((decode, files[i : i + CHUNK], dedupe) for i in range(start, len(files), CHUNK))
    with ctx.Pool(workers) as pool:
        for results in pool.imap(_read_chunk, tasks):
            yield from results


def decode_cached(files: list[tuple[str, str | Path]], hw: tuple[int, int], channels: int, cache: Path | None,
                  decode=None, progress: bool = True, desc: str = "decoding images", *, dedupe: bool = False,
                  workers: int | None = None) -> tuple[np.ndarray, dict]:
    """Decode ``files`` ((name, path) pairs) with ``decode(name, bytes) -> (C, H, W) uint8`` (default:
    :class:`Decoder`) or reuse the cache. ``decode`` may raise OSError/ValueError for a bad file; with
    ``dedupe`` a file with the same bytes as an earlier one is skipped as "Duplicate: same bytes as
    <name>". ``workers`` processes decode (default: :func:`decode_workers` when the files are slow enough to
    pay for them, see :func:`_decoded`); ``decode`` must then pickle.
    Returns ((N, C, H, W) uint8 images: a read-only memmap when cached, else an array;
    {"names": the N kept names, "skipped": [(name, reason), ...], "reused": bool})."""
    decode = decode or Decoder(hw, channels)
    base = cache / files_key(files, hw, channels, getattr(decode, "max_pixels", MAX_PIXELS)) if cache is not None \
        else None
    if base is not None:
        hit = _open(base, hw, channels)
        if hit is not None:
            images, meta = hit
            return images, {**meta, "reused": True}
    names, skipped, arrays, digests = [], [], [], {}
    tmp = None
    if base is not None:
        base.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(base.parent)  # what a killed build left behind
        tmp = base.with_name(f".{base.name}.{os.getpid()}.tmp")
    out = open(tmp, "wb") if tmp is not None else None  # noqa: SIM115 -- moved into place once complete
    try:
        results = _decoded(files, decode, dedupe, workers)
        for (name, _), (arr, digest, error) in progress_bar(progress, zip(files, results), desc=desc, unit="img",
                                                            total=len(files)):  # fmt: skip
            if error is None and digest in digests:
                error = f"Duplicate: same bytes as {digests[digest]}"
            if error is not None:
                skipped.append((name, error))
                continue
            if digest is not None:
                digests[digest] = name
            names.append(name)
            if out is not None:
                out.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
            else:
                arrays.append(arr)
    except BaseException as exc:
        if out is not None:
            try:
                out.close()
            except OSError:
                pass
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename is None:  # a full disk or a size limit: name the cache
                raise OSError(exc.errno, exc.strerror, str(base.parent)) from None
        raise
    meta = {"names": names, "skipped": skipped}
    if out is None:
        images = np.stack(arrays).astype(np.uint8) if arrays else np.zeros((0, channels, *hw), np.uint8)
        return images, {**meta, "reused": False}
    try:
        out.close()
        os.replace(tmp, base.with_suffix(".u8"))
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(base.parent)) from None
        raise
    meta_tmp = base.with_name(f".{base.name}.json.tmp")
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, base.with_suffix(".json"))
    return _open(base, hw, channels)[0], {**meta, "reused": False}


class DecodeError(ValueError):
    """A bad file, its message already saying what the decoder raised."""


_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


class Decoder:
    """(name, bytes) -> (C, H, W) uint8, as :func:`data.load_image` decodes a file (through
    :func:`fastdecode.fast_decode` where its pixels are certain to be the same); a plain object, so
    that decoding worker processes can be sent it. Errors name no buffer; libtiff's own messages
    (printed by C code straight to stderr) are caught and become part of the error."""

    def __init__(self, hw: tuple[int, int], channels: int, max_pixels: int | None = MAX_PIXELS):
        self.hw, self.channels, self.max_pixels = tuple(hw), channels, max_pixels

    def __call__(self, name: str, data: bytes) -> np.ndarray:
        fast = fast_decode(data, self.hw, self.channels)  # the same pixels, where that is certain
        if fast is not None:
            return fast
        if data[:4] in _TIFF:
            with captured_stderr() as said:
                try:
                    return self._pil(data)
                except Exception as exc:  # noqa: BLE001 -- any decoder fault: a bad file
                    raise DecodeError(f"{exc.__class__.__name__}: {exc}" + (f" (libtiff: {said()})" if said() else "")) \
                        from None
        return self._pil(data)

    def _pil(self, data: bytes) -> np.ndarray:
        import warnings

        try:
            with warnings.catch_warnings():  # Pillow's warnings name no file ("Corrupt EXIF data" ...): the
                warnings.simplefilter("ignore")  # decode's outcome is what counts, said once, with the file
                return load_image(io.BytesIO(data), self.hw, self.channels, self.max_pixels)
        except TooLarge as exc:
            raise ValueError(f"{exc}; raise max_pixels in the pipeline to read it") from None
        except Image.DecompressionBombError as exc:
            raise ValueError(one_line(str(exc)).split(" could be ")[0] + " (Pillow's limit)") from None
        except Image.UnidentifiedImageError:  # its message would name the in-memory buffer, not the file
            raise Image.UnidentifiedImageError("not an image format PIL can read") from None


class captured_stderr:
    """File descriptor 2 sent to a temporary file for the block: C libraries' messages (libtiff's)
    are kept, not printed. ``with captured_stderr() as said: ...; said()`` -> what was written, one line."""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self._text = None
        return self.text

    def text(self) -> str:
        if self._text is None:
            self._file.seek(0)
            self._text = one_line(os.pread(self._file.fileno(), 4096, 0).decode("utf-8", "replace"), 200)
        return self._text

    def __exit__(self, *exc) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self.text()
        self._file.close()


def decoder(hw: tuple[int, int], channels: int, max_pixels: int | None = MAX_PIXELS) -> Decoder:
    """(name, bytes) -> (C, H, W) uint8, as :func:`data.load_image` decodes a file."""
    return Decoder(hw, channels, max_pixels)
