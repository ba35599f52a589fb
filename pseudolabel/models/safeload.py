"""Loading weights files without ever running code from them.

A ``.pt`` / ``.pth`` / ``.bin`` file is a pickle, and a pickle can name any function to call while it is
read (``__reduce__``): ``torch.load(..., weights_only=False)`` on a stranger's file runs the stranger's
code. Everything we load goes through here instead:

- :func:`state_dict` reads a ``.safetensors`` file (no code at all) or a pickle with
  ``torch.load(weights_only=True)``, which builds tensors and plain containers only;
- :func:`checkpoint` reads a pickle that holds whole modules (an ultralytics checkpoint) with
  ``weights_only=True`` and exactly the classes the caller allows (``torch.serialization.safe_globals``),
  after listing every global the file names, without running it, and refusing the file if any is not
  allowed;
- :func:`check_matched` says how much of a network a state dict really fills.

Every failure is a :class:`BadWeights` (a ValueError): one line naming the file and, for a refused
pickle, the class or function it wanted.
"""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

MIN_MATCHED = 0.9  # a weights file must fill at least this share of the network's tensors (classifier excepted)
WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "net")  # where training scripts nest a state dict


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class BadWeights(ValueError):
    """A weights file that cannot be loaded safely: one line naming it."""


def _why(exc: BaseException) -> str:
    from pseudolabel.data.images import one_line

    return one_line(f"{exc.__class__.__name__}: {exc}", 160)


def globals_in(path: Path | bytes) -> list[str]:
    """Every ``module.name`` global the pickle in a torch file names, read without running it
    (``torch.serialization.get_unsafe_globals_in_checkpoint``); [] when there is none."""
    src = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    return list(torch.serialization.get_unsafe_globals_in_checkpoint(src))


def _torch_load(path: Path, allowed: list | None = None):
    """``torch.load(weights_only=True)``, with ``allowed`` classes let in; any fault is a BadWeights."""
    try:
        if allowed:
            with torch.serialization.safe_globals(allowed):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unpickling fault (UnpicklingError, EOFError, KeyError ...)
        text = str(exc)
        if "Weights only load failed" in text or "GLOBAL" in text:
            found = re.findall(r"GLOBAL ([\w.]+)", text)
            names = ", ".join(dict.fromkeys(found)) if found else _refused_names(path, allowed or [])
            raise BadWeights(f"{path}: refused to load it: it names {names or 'a class'} that a weights file "
                             "must not hold (a pickle can run code; use .safetensors or a plain state dict)") from None
        raise BadWeights(f"{path}: not a readable weights file ({_why(exc)})") from None


def _refused_names(path: Path, allowed: list) -> str:
    ok = {f"{getattr(a, '__module__', '')}.{getattr(a, '__qualname__', '')}" for a in allowed}
    try:
        bad = [g for g in globals_in(path) if g not in ok]
    except Exception:  # noqa: BLE001 -- a file we cannot even list: the caller's message stands
        return ""
    return ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


def _is_zip_torch(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in what a file held: itself, or under one of :data:`WRAPPERS`; ``module.`` prefixes
    (DataParallel) dropped."""
    for _ in range(3):
        if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise BadWeights(f"{path}: holds no state dict (found {type(obj).__name__})")
    tensors = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise BadWeights(f"{path}: holds no tensors")
    return tensors


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """{name: tensor} of a weights file: ``.safetensors``, or a torch pickle read with ``weights_only=True``
    (a checkpoint dict is unwrapped). A BadWeights of one line for anything else."""
    path = Path(path)
    if not path.is_file():
        raise BadWeights(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 -- a damaged or foreign file: one line
            raise BadWeights(f"{path}: not a readable .safetensors file ({_why(exc)})") from None
    return _unwrap(_torch_load(path), path)


def checkpoint(path: Path, allow: Callable[[str], object | None]):
    """A torch pickle that holds modules (an ultralytics checkpoint), loaded with ``weights_only=True``.
    ``allow(name)`` returns the class for a ``module.name`` global that such a file may hold, or None;
    every global the file names is checked before anything is built. Returns what the file held."""
    path = Path(path)
    if not path.is_file():
        raise BadWeights(f"weights file not found: {path}")
    if not _is_zip_torch(path):
        raise BadWeights(f"{path}: not a torch checkpoint (a torch checkpoint is a zip archive)")
    try:
        names = globals_in(path)
    except Exception as exc:  # noqa: BLE001
        raise BadWeights(f"{path}: not a readable checkpoint ({_why(exc)})") from None
    allowed, refused = [], []
    for name in names:
        cls = allow(name)
        (allowed.append(cls) if cls is not None else refused.append(name))
    if refused:
        raise BadWeights(f"{path}: refused to load it: it names {', '.join(refused[:3])}"
                         f"{f' and {len(refused) - 3} more' if len(refused) > 3 else ''}, which a checkpoint of "
                         "this kind never holds (a pickle can run code)")  # fmt: skip
    return _torch_load(path, allowed)


def check_matched(path: Path, theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], what: str,
                  skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of ``theirs`` (a file's state dict) that fit ``ours`` (the network's) by name and shape,
    keys starting with ``skip`` (its classifier) left out. Fewer than :data:`MIN_MATCHED` of the network's
    tensors filled is a BadWeights naming how many matched."""
    wanted = [k for k in ours if not k.startswith(skip)]
    fit = {k: theirs[k] for k in wanted if k in theirs and tuple(theirs[k].shape) == tuple(ours[k].shape)}
    if len(fit) < MIN_MATCHED * len(wanted):
        raise BadWeights(f"{path}: only {len(fit)} of the {len(wanted)} tensors of {what} match it by name and "
                         f"shape (at least {MIN_MATCHED:.0%} must); is it a {what} state dict?")  # fmt: skip
    return fit


def by_order(path: Path, theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], what: str
             ) -> dict[str, torch.Tensor]:
    """``theirs`` (another implementation's names) renamed to ``ours`` position by position: the two must
    have as many tensors, each of the same shape, in the same order, else a BadWeights naming the first
    that differs."""
    a, b = list(theirs.items()), list(ours.items())
    if len(a) != len(b):
        raise BadWeights(f"{path}: {len(a)} tensors, but {what} has {len(b)}; it is not a {what} state dict")
    for (ka, va), (kb, vb) in zip(a, b):
        if tuple(va.shape) != tuple(vb.shape):
            raise BadWeights(f"{path}: {ka} {list(va.shape)} does not fit {what}'s {kb} {list(vb.shape)}")
    return {kb: va for (_, va), (kb, _) in zip(a, b)}
