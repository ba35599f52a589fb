"""Where third-party libraries may write: under our own cache, never elsewhere in the user's home.

matplotlib keeps a font list in ``~/.cache/matplotlib`` and a config folder in ``~/.config/matplotlib``;
ONNX Runtime writes a device id and a telemetry queue into ``$XDG_CACHE_HOME/Microsoft/DeveloperTools``
when it is imported (no switch turns that off); ultralytics' settings go to our own folder
(:mod:`pseudolabel.models.yolo`). Each is pointed into :func:`cache_root` before it is imported.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/pseudolabel`` (``~/.cache/pseudolabel``): ours to write."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pseudolabel"


def contain_matplotlib() -> None:
    """matplotlib's config and font cache in our cache (unless the user named their own MPLCONFIGDIR)."""
    os.environ.setdefault("MPLCONFIGDIR", str(cache_root() / "matplotlib"))


def pyplot():
    """matplotlib.pyplot on the Agg backend, its files kept in our cache."""
    contain_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def onnxruntime():
    """The onnxruntime module, imported with ``XDG_CACHE_HOME`` pointed into our cache for the moment of
    its import (when it writes its device id), and its telemetry turned off."""
    import sys

    if "onnxruntime" not in sys.modules:
        before = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = str(cache_root() / "onnxruntime")
        try:
            import onnxruntime
        finally:
            if before is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = before
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime


def clean_stale(folder: Path) -> int:
    """Remove the temporary files ``.NAME.PID.tmp`` in one of our cache folders whose process is gone (a
    cache build killed mid-way). Returns how many were removed."""
    import re

    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        m = re.fullmatch(r"\..+\.(\d+)\.tmp", e.name)
        if not m or not e.is_file(follow_symlinks=False) or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its process still runs: still being written
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            os.unlink(e.path)
            removed += 1
        except OSError:
            pass
    return removed
