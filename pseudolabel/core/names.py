"""Class names as folder names: the one way a class name becomes a folder name (``run``, ``export``
and ``init`` all come here).

:func:`folder_name` escapes what a file system would misread, so the result is always one plain
path component and two class names never share a folder:

- ``/``, ``\\``, ``:``, ``*``, ``?``, ``"``, ``<``, ``>``, ``|``, ``%`` and control characters become
  ``%XX`` (``a/b`` -> ``a%2Fb``; ``%`` itself is escaped, so the mapping is one-to-one);
- a leading ``.`` (``.``, ``..``, hidden names), a leading space and a trailing ``.`` or space
  (which Windows drops) are escaped the same way, and so is the first letter of a name Windows
  reserves for a device (``CON``, ``NUL``, ``COM1`` ...);
- an empty name, or one longer than :data:`MAX_BYTES`, is refused.

:func:`class_folders` maps all K names at once and refuses two that differ only in case.
"""
from __future__ import annotations

import unicodedata

MAX_BYTES = 200  # a folder name's longest UTF-8 form (file systems allow 255)
_UNSAFE = frozenset('/\\:*?"<>|%')
_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))})
RUN_RESERVED = ("unclear", "unsure", "undo", "final", "cache", "scores")  # a run's own folders and labels


def _escape(ch: str) -> str:
    try:
        return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        return f"%u{ord(ch):04X}"


def _plain(ch: str) -> bool:
    if ch in _UNSAFE or ord(ch) < 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF:
        return False
    return unicodedata.category(ch) not in ("Cc", "Cs")


def folder_name(name: str) -> str:
    """``name`` as one safe path component (see the module's notes); ValueError naming it when it
    cannot be one (empty, or too long)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"class name {name!r} cannot be a folder name: it is empty")
    parts = [ch if _plain(ch) else _escape(ch) for ch in name]
    if parts[0] in (".", " "):
        parts[0] = _escape(parts[0])
    if parts[-1] in (".", " "):
        parts[-1] = _escape(parts[-1])
    if "".join(parts).split(".")[0].rstrip(" ").lower() in _DEVICES:
        parts[0] = _escape(parts[0])
    out = "".join(parts)
    if len(out.encode("utf-8")) > MAX_BYTES:
        raise ValueError(f"class name {name[:40]!r}... is too long for a folder name ({len(out.encode())} bytes; "
                         f"at most {MAX_BYTES})")
    return out


def name_key(name: str) -> str:
    """What makes two names the same on a case-insensitive, normalising file system (macOS, Windows)."""
    return unicodedata.normalize("NFC", name).casefold()


def class_folders(classes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The K class names as K distinct folder names (:func:`folder_name`), in class order; ValueError
    when two would be the same folder on a case-insensitive file system."""
    folders = tuple(folder_name(c) for c in classes)
    seen: dict[str, str] = {}
    for c, f in zip(classes, folders):
        other = seen.setdefault(name_key(f), c)
        if other != c:
            raise ValueError(f"classes {other!r} and {c!r} would share one folder ({f!r}); they differ only in case")
    return folders


def run_folder_problem(name: str) -> str | None:
    """Why class ``name`` cannot name its own folder in a run (``folder_names: name``), or None: it must
    be a plain name (:func:`folder_name` leaves it as it is), not one of the run's own folders
    (:data:`RUN_RESERVED`) and not a number (class folders named by index are 0/, 1/, ...)."""
    try:
        safe = folder_name(name)
    except ValueError as exc:
        return str(exc)
    if safe != name:
        return f"it is not a plain folder name (it would be {safe!r})"
    if name.lower() in RUN_RESERVED:
        return f"{name!r} is one of the run's own folders ({', '.join(RUN_RESERVED)})"
    if name.isdigit():
        return "a number would be read as a class index"
    return None
