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
            d = json.loads(path.read_text())
            return cls(d["id"], tuple(d["classes"]), tuple(d["folders"]), tuple(d["models"]), d.get("journal", ""),
                       d.get("weights"))
        import yaml

        cfg_path = Path(run_dir) / "config.yaml"
        cfg = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else {}
        classes = tuple(cfg.get("classes") or ("closed", "open"))
        folders = classes if cfg.get("folder_names") == "name" else tuple(str(k) for k in range(len(classes)))
        models = tuple(cfg.get("models") or ("yolov8-cls", "resnet50"))
        return cls("", classes, folders, models)

    def save(self, run_dir: Path) -> None:
        write_atomic(Path(run_dir) / RUN_JSON, json.dumps(asdict(self), indent=2))


# ----------------------------------------------------------------------------- predictions and scores


def read_predictions(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir``/predictions.csv, one dict per pool image, in file order, with the
    fields :data:`FIELDS` (score columns of older runs are left out: :func:`load_scores` reads them)."""
    with open(Path(run_dir) / "predictions.csv", newline="") as f:
        return [{k: r.get(k) or "" for k in FIELDS} for r in csv.DictReader(f)]


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
        return np.load(path).astype(np.float64)
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


def prepare_output(out: Path) -> Path:
    """A fresh hidden folder next to ``out`` to build the run in."""
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left over from an interrupted run of ours
    partial.mkdir(parents=True)
    return partial


def publish(partial: Path, out: Path) -> None:
    """Swap the finished partial folder into place (the old run, if any, is removed last)."""
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    if old.exists():
        shutil.rmtree(old)


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
