"""The one device every tensor is made on, resolved once per command (nanoGPT's habit).

``resolve("auto")`` picks CUDA, then Apple's MPS, then the CPU. :func:`use` makes the result the
device of this process; training and scoring ask :func:`current` and create every tensor on it,
random ones included (``torch.rand(..., device=x.device)``), so that nothing crosses devices.
Mixed precision: bf16 autocast on CUDA cards that have it, else fp16 with a GradScaler; the CPU
and MPS run fp32. Exported model files are always saved from the CPU, so they load anywhere.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # what `device:` and --device accept


@dataclass(frozen=True)
class Device:
    """A resolved device: ``name`` is what torch takes ("cpu", "cuda:0", "mps")."""

    name: str

    @property
    def torch(self) -> torch.device:
        return torch.device(self.name)

    @property
    def type(self) -> str:
        return self.torch.type

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype: bf16 or fp16 on CUDA, None (fp32) elsewhere."""
        if self.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def autocast(self):
        """The autocast context of a forward pass (a no-op on the CPU and MPS)."""
        dtype = self.amp_dtype
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, active only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.type, enabled=self.amp_dtype == torch.float16)

    def generator(self, seed: int) -> torch.Generator:
        """A seeded random generator on this device (the augmentations draw from it)."""
        return torch.Generator(device=self.torch).manual_seed(seed)


def resolve(name: str = "auto") -> Device:
    """"auto" | "cpu" | "cuda" | "cuda:N" | "mps" -> a Device; a device this machine lacks is a ValueError."""
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return Device("cuda:0")
        mps = getattr(torch.backends, "mps", None)
        return Device("mps" if mps is not None and mps.is_available() else "cpu")
    if text == "cpu":
        return Device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", text):
        index = int(text.split(":")[1]) if ":" in text else 0
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA device on this machine (use --device cpu or auto)")
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return Device(f"cuda:{index}")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r}: MPS is not available on this machine")
        return Device("mps")
    raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")


_CURRENT: Device | None = None


def use(name: str | Device) -> Device:
    """Resolve ``name`` and make it this process's device; returns it."""
    global _CURRENT
    _CURRENT = name if isinstance(name, Device) else resolve(name)
    return _CURRENT


def current() -> Device:
    """This process's device: the one :func:`use` set, else "auto" resolved once."""
    return _CURRENT if _CURRENT is not None else use("auto")
