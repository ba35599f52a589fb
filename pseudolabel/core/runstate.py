"""The run's state: the one owner of what a run folder holds and how it is read.

- ``run.json``: the run's id, its K classes, their folder names (in class order), the voting
  models and the journal path. Older runs without it are read from their ``config.yaml``.
- ``predictions.csv``: one row per pool image with the fixed fields :data:`FIELDS` (image, file,
  decision = the folder it was put in, queue_rank, source, issue). No scores.
- ``scores/<model>.npy``: (N, K) float32 probabilities of each model (the seed models, and
  ``final`` after a re-sort), rows in predictions.csv order.
- provenance: :func:`provenance` says for every image whether a seed label, the vote, the final
  model, the review page or a hand move put it where it is; retrain, resort and review ask it.
- the lock (:func:`output_lock`), publishing a finished folder (:func:`publish`) and the
  manifest (:func:`write_manifest`).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

UNCLEAR = "unclear"  # the review queue's folder
FIELDS = ("image", "file", "decision", "queue_rank", "source", "issue")  # predictions.csv, in this order
SCORES = "scores"  # sub-folder of (N, K) probability arrays, one per model
RUN_JSON = "run.json"
JOURNAL = "journal.csv"  # the review journal's default place, inside the run folder
FINAL = "final"  # the final model's score name (after `resort`) and its folder
# where an image's current place comes from (see provenance)
SEED_TRAIN, SEED_VAL, VOTE, RESORTED, REVIEWED, HAND = "seed-train", "seed-val", "vote", "final", "reviewed", "hand"


@dataclass(frozen=True)
class RunInfo:
    """What every stage needs to know of a run: ids, classes and folders."""

    id: str
    classes: tuple[str, ...]
    folders: tuple[str, ...]  # the class folders, in class order
    models: tuple[str, ...]  # the voting seed models
    journal: str = ""  # the review journal, relative to the run folder ("" = an earlier release's default)
    weights: dict | None = None  # {model: name, source, file and sha256 of its pretrained weights}; None: scratch

    @property
    def all_folders(self) -> tuple[str, ...]:
        return (*self.folders, UNCLEAR)

    def folder_of(self, decision: int) -> str:
        """Class index -> its folder; -1 -> unclear."""
        return UNCLEAR if decision < 0 else self.folders[int(decision)]

    def decision_of(self, folder: str) -> int:
        """Folder -> class index; unclear -> -1."""
        if folder == UNCLEAR:
            return -1
        if folder not in self.folders:
            raise ValueError(f"{folder!r} is not a folder of this run (folders: {', '.join(self.all_folders)})")
        return self.folders.index(folder)

    @classmethod
    def new(cls, cfg, weights: dict | None = None) -> RunInfo:
        """A fresh id for a run of ``cfg``, whose journal is ``journal.csv`` inside the run folder;
        ``weights``: {model: record} of the pretrained weights its models started from."""
        return cls(uuid.uuid4().hex[:12], tuple(cfg.classes), tuple(cfg.folders), tuple(cfg.models), JOURNAL,
                   weights or None)

    @classmethod
    def load(cls, run_dir: Path) -> RunInfo:
        """From ``run.json``, or from ``config.yaml`` for runs made before it existed."""
        path = Path(run_dir) / RUN_JSON
        if path.is_file():
            return cls._parse(path)
        import yaml

        cfg_path = Path(run_dir) / "config.yaml"
        cfg = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else {}
        classes = tuple(cfg.get("classes") or ("closed", "open"))
        folders = classes if cfg.get("folder_names") == "name" else tuple(str(k) for k in range(len(classes)))
        models = tuple(cfg.get("models") or ("yolov8-cls", "resnet50"))
        return cls("", classes, folders, models)

    @classmethod
    def _parse(cls, path: Path) -> RunInfo:
        """run.json, checked: a damaged record is a ValueError naming the file and what is wrong."""
        try:
            d = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: damaged, not valid JSON ({str(exc)[:80]}); this run's record cannot be "
                             "read: run it again into a new --out") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: damaged, not a JSON object")
        lists = {"classes": 2, "folders": 2, "models": 1}  # key: fewest items
        for key in ("id", *lists):
            if key not in d:
                raise ValueError(f"{path}: damaged, the key {key!r} is missing; run it again into a new --out")
        bad = [k for k, n in lists.items() if not (isinstance(d[k], list) and len(d[k]) >= n
                                                    and all(isinstance(x, str) and x for x in d[k]))]  # fmt: skip
        if not isinstance(d["id"], str) or bad or len(d["classes"]) != len(d["folders"]):
            raise ValueError(f"{path}: damaged, {bad[0] if bad else 'id'} is not what a run records")
        journal, weights = d.get("journal", ""), d.get("weights")
        if not isinstance(journal, str) or not (weights is None or isinstance(weights, dict)):
            raise ValueError(f"{path}: damaged, journal or weights is not what a run records")
        return cls(d["id"], tuple(d["classes"]), tuple(d["folders"]), tuple(d["models"]), journal, weights)

    def save(self, run_dir: Path) -> None:
        write_atomic(Path(run_dir) / RUN_JSON, json.dumps(asdict(self), indent=2))


# ----------------------------------------------------------------------------- predictions and scores


def read_predictions(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir``/predictions.csv, one dict per pool image, in file order, with the
    fields :data:`FIELDS` (score columns of older runs are left out: :func:`load_scores` reads them)."""
    path = Path(run_dir) / "predictions.csv"
    try:
        text = path.read_text()
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        raw = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise damaged(path, f"not readable ({exc.__class__.__name__})") from None
    if "image" not in header or "decision" not in header:
        raise damaged(path, "its header has no image and decision columns")
    if text and not text.endswith("\n"):
        raise damaged(path, f"its last row (row {len(raw)}) is cut short")
    for i, r in enumerate(raw, 1):
        if None in r or any(r.get(k) is None for k in header) or not r["image"] or not r["decision"]:
            raise damaged(path, f"row {i} does not have its {len(header)} fields")
    rows = [{k: r.get(k) or "" for k in FIELDS} for r in raw]
    expected = _scored_rows(Path(run_dir))
    if expected is not None and expected[1] != len(rows):
        raise damaged(path, f"it has {len(rows)} rows, but {expected[0]} has {expected[1]}")
    return rows


def damaged(path: Path, why: str) -> ValueError:
    """The one-line error of a run file that cannot be trusted: never read as a smaller truth."""
    return ValueError(f"{path}: damaged, {why}; this run's record cannot be trusted: restore the file or run "
                      "again into a new --out")


def _scored_rows(run_dir: Path) -> tuple[str, int] | None:
    """(the first score file, its number of rows): how many images the run scored, or None."""
    d = run_dir / SCORES
    for f in sorted(x for x in d.glob("*.npy") if not x.name.startswith(".")) if d.is_dir() else ():
        try:
            return f"{SCORES}/{f.name}", int(np.load(f, mmap_mode="r").shape[0])
        except (ValueError, OSError, EOFError, IndexError) as exc:
            raise damaged(f, f"not a readable score array ({exc.__class__.__name__})") from None
    return None


def predictions_text(rows: list[dict]) -> str:
    """predictions.csv's text for ``rows`` (dicts with at least :data:`FIELDS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


class FileIndex:
    """Which image a file in one of the run's folders is, from the run's own record (predictions.csv's
    ``file``: ``folder/name``). A run of this release never gives two images the same name; for older
    runs, a name shared by several images is told apart by the folder the run recorded for each."""

    def __init__(self, rows: list[dict]):
        self.by_name: dict[str, str] = {}
        self.by_place: dict[tuple[str, str], str] = {}
        shared: set[str] = set()
        for r in rows:
            folder, _, name = r["file"].partition("/")
            if name in self.by_name:
                shared.add(name)
            self.by_name[name] = r["image"]
            self.by_place[(folder, name)] = r["image"]
        for name in shared:
            del self.by_name[name]

    def image(self, folder: str, name: str) -> str | None:
        """The image whose file ``name`` is, found in ``folder``; None for a file that is not the run's."""
        found = self.by_name.get(name)
        return found if found is not None else self.by_place.get((folder, name))


def save_scores(run_dir: Path, model: str, probs: np.ndarray) -> None:
    """Keep a model's (N, K) probabilities as ``scores/<model>.npy`` (written atomically)."""
    d = Path(run_dir) / SCORES
    d.mkdir(exist_ok=True)
    tmp = d / f".{model}.tmp.npy"
    np.save(tmp, np.asarray(probs, dtype=np.float32))
    os.replace(tmp, d / f"{model}.npy")


def load_scores(run_dir: Path, model: str) -> np.ndarray:
    """(N, K) probabilities of ``model`` in predictions.csv order. Runs made before scores/ existed
    kept P(class 1) as a predictions.csv column; that is read as [1 - p, p]."""
    path = Path(run_dir) / SCORES / f"{model}.npy"
    if path.is_file():
        try:
            return np.load(path).astype(np.float64)
        except (ValueError, OSError, EOFError) as exc:
            raise damaged(path, f"not a readable score array ({exc.__class__.__name__})") from None
    with open(Path(run_dir) / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and model in rows[0]:
        p = np.array([float(r[model]) for r in rows])
        return np.stack([1 - p, p], 1)
    raise ValueError(f"{run_dir}: no scores for {model!r} ({path} is missing)")


def scored_models(run_dir: Path) -> list[str]:
    """The models whose scores the run holds: the voters, then ``final`` after a re-sort."""
    info = RunInfo.load(run_dir)
    extra = [FINAL] if (Path(run_dir) / SCORES / f"{FINAL}.npy").is_file() else []
    return [*info.models, *extra]


def folder_counts(decision: np.ndarray, folders: tuple[str, ...]) -> dict[str, int]:
    """{folder: images} for (N,) decisions (class index or -1): every class folder, then unclear."""
    d = np.asarray(decision)
    return {**{f: int((d == k).sum()) for k, f in enumerate(folders)}, UNCLEAR: int((d < 0).sum())}


# ----------------------------------------------------------------------------- provenance


def provenance(row: dict, folder_now: str | None, page_label: str | None) -> str:
    """Why image ``row`` (a predictions.csv row) is where it is now.

    folder_now: its folder today (None if missing); page_label: its standing decision on the review
    page (a folder name or "unsure"), or None. Returns one of: "reviewed" (decided on the page,
    "unsure" included), "hand" (moved by hand since the run placed it), "seed-train"/"seed-val"
    (a seed label), "vote" (the seed models' vote) or "final" (a re-sort by the final model)."""
    if page_label is not None:
        return REVIEWED
    if folder_now != row["decision"]:
        return HAND
    return row["source"] or VOTE


def human(kind: str) -> bool:
    """Whether a person gave this label: a seed label, the review page or a hand move."""
    return kind in (SEED_TRAIN, SEED_VAL, REVIEWED, HAND)


def machine_placed(kind: str) -> bool:
    """Placed by machines (the vote or a re-sort) and touched by nobody since."""
    return kind in (VOTE, RESORTED)


# ----------------------------------------------------------------------------- files: atomic writes, lock, manifest


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_renameat2 = None  # glibc's renameat2, looked up once (False where the system has none)
RENAME_NOREPLACE = 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, never replacing an existing ``dst`` (FileExistsError instead).

    Linux: one atomic renameat2(RENAME_NOREPLACE). Elsewhere, or on a file system without it: a
    check, then the rename (callers hold the run's lock, so only a person's hand move can race it)."""
    global _renameat2
    if _renameat2 is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _renameat2 = libc.renameat2
            _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):
            _renameat2 = False
    if _renameat2:
        import ctypes

        at_fdcwd = -100
        if _renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst)) if err != errno.EEXIST else \
                FileExistsError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once (temporary file, fsync, rename, fsync of the folder)."""
    tmp = path.parent / f".{path.name}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_manifest(folder: Path) -> None:
    """``manifest.json``, written last: sha256 of every top-level file and the image count of each
    class folder. A folder without it was never finished."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
    names = RunInfo.load(folder).all_folders if (folder / RUN_JSON).is_file() else ()
    counts = {f: len(os.listdir(folder / f)) for f in names if (folder / f).is_dir()}
    manifest = {"complete": True, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files, "folders": counts}
    tmp = folder / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, folder / "manifest.json")


MARKER = ".pseudolabel"  # in every folder pseudolabel builds (a run, its final/, their partial folders)


def mark(folder: Path, kind: str) -> None:
    """Put our marker into ``folder`` (created exclusively): the proof that we made it and may replace it."""
    fd = os.open(Path(folder) / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"made_by": "pseudolabel", "kind": kind}) + "\n")


def is_ours(folder: Path) -> bool:
    """Whether pseudolabel made ``folder``: it holds our marker, or (made before the marker) the files a
    finished run or final model holds: manifest.json with run.json and predictions.csv, or with model.ts
    and preprocess.json."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    return holds_ours(set(os.listdir(folder)))


def holds_ours(names: set[str]) -> bool:
    """Whether a folder holding the files ``names`` is one pseudolabel made (see :func:`is_ours`)."""
    return MARKER in names or "manifest.json" in names and (
        {RUN_JSON, "predictions.csv"} <= names or {"model.ts", "preprocess.json"} <= names)


def _empty_dir(folder: Path) -> bool:
    if folder.is_symlink() or not folder.is_dir():
        return False
    with os.scandir(folder) as it:
        return next(it, None) is None


def check_replaceable(folder: Path, flag: str = "--overwrite") -> None:
    """Refuse to replace ``folder`` unless it is missing, empty, or a folder pseudolabel made (:func:`is_ours`):
    a ValueError of one line naming it, before anything is touched."""
    folder = Path(folder)
    if not os.path.lexists(folder) or _empty_dir(folder) or is_ours(folder):
        return
    what = "a file" if not folder.is_dir() or folder.is_symlink() else "a folder pseudolabel did not make"
    raise ValueError(f"{folder} is {what}; {flag} replaces only a run (or final model) made by pseudolabel, or an "
                     "empty folder: nothing was touched, choose another --out")


WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def write_error(exc: BaseException, where: Path) -> OSError | None:
    """The write failure ``exc`` as an OSError that names a path (``where`` when it named none): torch's own
    writers fail with a RuntimeError ("file write failed", "enforce fail at inline_container.cc") on a full
    disk or past a file-size limit. None for any other exception."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return exc if exc.filename else OSError(exc.errno, exc.strerror, str(where))
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("inline_container" in text or "write failed" in text.lower()):
        full = shutil.disk_usage(Path(where).parent).free < (1 << 20)
        return OSError(errno.ENOSPC if full else errno.EIO, "No space left on device" if full else
                       "the file could not be written (a full disk or a file-size limit)", str(where))
    return None


def check_apart(out: Path, images: Path, flag: str) -> None:
    """Refuse an output folder that is the images folder, lies inside it or holds it (through links too)."""
    o, i = Path(os.path.realpath(out)), Path(os.path.realpath(images))
    if o == i or i in o.parents:
        raise ValueError(f"{flag} {out} is {'the' if o == i else 'inside the'} images folder {images}; a run never "
                         "writes among your images: choose a folder outside it")
    if o in i.parents:
        raise ValueError(f"{flag} {out} holds the images folder {images}; choose a folder outside it")


def remove_ours(folder: Path) -> None:
    """Remove ``folder`` if it is empty or ours (:func:`is_ours`); anything else is refused."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return
    check_replaceable(folder, "pseudolabel")
    shutil.rmtree(folder)


def prepare_output(out: Path, kind: str = "run") -> Path:
    """A fresh hidden folder next to ``out`` to build the run (or ``kind``) in, with our marker. One left
    over from an interrupted run of ours is removed; a folder of that name that is not ours is refused."""
    partial = out.parent / f".{out.name}.partial"
    remove_ours(partial)
    partial.mkdir(parents=True)
    mark(partial, kind)
    return partial


def publish(partial: Path, out: Path) -> None:
    """Swap the finished partial folder into place. The old ``out``, if any (empty, or ours: see
    :func:`check_replaceable`), is removed last, once the new one is in place."""
    old = out.parent / f".{out.name}.old"
    remove_ours(old)
    if os.path.lexists(out):
        check_replaceable(out)
        out.rename(old)
    partial.rename(out)
    remove_ours(old)


@contextlib.contextmanager
def output_lock(out: Path, what: str = "run"):
    """Hold ``.<name>.lock`` next to ``out`` for the whole ``what`` (run, resort, review); a second
    command on ``out`` is refused.

    The lock is the kernel's (flock), so it is released even when the holder is killed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, kind = (os.pread(fd, 64, 0).decode(errors="replace").strip() or "?").partition(" ")
            doing = "reviewing" if kind == "review" else "writing"
            raise ValueError(f"another pseudolabel {kind or 'run'} (pid {pid}) is {doing} {out}; wait for it"
                             + (" or use another --out" if what == "run" else ""))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}".encode(), 0)
        yield
    finally:
        os.close(fd)
