"""Review the unclear queue: journal, state and a loopback-only web page.

The folders are the truth. A person may move files between ``unclear/`` and the
class folders by hand; every request rescans them. Each decision made on the page is
first appended to the journal (one ``write`` on an O_APPEND file, then fsync),
and only then is the file renamed (atomic) into its folder. On start-up, any
journaled decision whose rename did not happen (a crash in between) is rolled
forward, so nothing the page confirmed is ever lost.
"""
from __future__ import annotations

import csv
import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .runstate import UNCLEAR, RunInfo, fsync_dir, load_scores, provenance, read_predictions, scored_models
from .sort import finish_pending

JOURNAL_FIELDS = ["time", "image", "label", "file", "from"]
UNSURE = "unsure"  # a decision that leaves the image in unclear/


class Conflict(Exception):
    """The request is valid but the image's state changed (another tab, or a move by hand)."""


@dataclass(frozen=True)
class Item:
    image: str  # name relative to the images folder
    file: str  # file name inside the run's folders
    rank: int  # 1-based queue rank from the run (0 if it was decided by the vote)
    scores: dict  # model name -> (K,) probabilities, a list
    issue: str = ""  # why a labeled image was sent back for review (likely-wrong label), or ""


class Journal:
    """Append-only CSV of decisions: time, image, label (a class folder, unsure or undo), file, from."""

    def __init__(self, path: Path, extra_fields: list[str] | None = None):
        self.path = Path(path)
        self.fields = JOURNAL_FIELDS + list(extra_fields or [])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._append(",".join(self.fields) + "\n")
            fsync_dir(self.path.parent)
        else:  # keep the columns it was started with (a re-sort adds a score column to the run)
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f), None) or self.fields

    def _append(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, row: dict) -> None:
        """Write one decision durably (flushed and fsynced) before returning."""
        buf = io.StringIO()
        csv.DictWriter(buf, self.fields, extrasaction="ignore", lineterminator="\n").writerow(row)
        self._append(buf.getvalue())

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("image")]

    def last_decisions(self) -> dict[str, dict]:
        """Each image's standing decision, with undos applied."""
        stacks: dict[str, list[dict]] = {}
        for r in self.rows():
            s = stacks.setdefault(r["image"], [])
            if r["label"] == "undo":
                if s:
                    s.pop()
            else:
                s.append(r)
        return {img: s[-1] for img, s in stacks.items() if s}


class ReviewState:
    """The run's images, where each one is now, and the decisions made on them."""

    def __init__(self, run_dir: Path, journal_path: Path):
        self.run_dir = Path(run_dir)
        finish_pending(self.run_dir)  # a re-sort that was interrupted: finish it before reading its names
        self.rows = read_predictions(self.run_dir)  # predictions.csv as it stands, any re-sort finished
        self.info = RunInfo.load(self.run_dir)
        self.models = scored_models(self.run_dir)
        probs = {m: np.round(load_scores(self.run_dir, m), 4).tolist() for m in self.models}
        self.items = {
            r["image"]: Item(r["image"], r["file"].split("/", 1)[1], int(r["queue_rank"] or 0),
                             {m: probs[m][i] for m in self.models}, r.get("issue") or "")
            for i, r in enumerate(self.rows)
        }  # fmt: skip
        self.by_file = {it.file: it.image for it in self.items.values()}
        self.total_queue = sum(1 for it in self.items.values() if it.rank > 0)
        self.classes = list(self.info.classes)
        self.labels = (*self.info.folders, UNSURE)  # what a decision may say
        self.journal = Journal(journal_path)
        self.lock = threading.Lock()
        self.recovered = self.roll_forward()

    def where(self) -> dict[str, str]:
        """Rescan the folders: {image: folder}. Files that are not the run's are ignored."""
        out = {}
        for folder in self.info.all_folders:
            d = self.run_dir / folder
            for name in os.listdir(d) if d.is_dir() else []:
                if name in self.by_file:
                    out[self.by_file[name]] = folder
        return out

    def roll_forward(self) -> int:
        """Finish journaled moves that a crash interrupted. Returns how many were finished."""
        where, done = self.where(), 0
        for image, row in self.journal.last_decisions().items():
            if row["label"] in self.info.folders and where.get(image) == UNCLEAR and image in self.items:
                self._move(self.items[image], UNCLEAR, row["label"])
                done += 1
        return done

    def _move(self, item: Item, src: str, dst: str) -> None:
        os.rename(self.run_dir / src / item.file, self.run_dir / dst / item.file)
        fsync_dir(self.run_dir / dst)

    def item(self, image: str) -> Item:
        """The run's item for ``image``; anything else (e.g. a path) is refused."""
        if not isinstance(image, str) or image not in self.items:
            raise KeyError(f"not an image of this run: {str(image)[:200]!r}")
        return self.items[image]

    def decide(self, image: str, label: str) -> dict:
        """Journal, then move ``image`` from unclear/ to ``label``'s folder (or record unsure)."""
        if label not in self.labels:
            raise ValueError(f"label must be one of {', '.join(self.labels)}, got {str(label)[:100]!r}")
        with self.lock:
            item = self.item(image)
            folder = self.where().get(image)
            if folder != UNCLEAR:
                raise Conflict(f"{image} is already in {folder}/ (decided in another tab or moved by hand)")
            self.journal.append({"time": _now(), "image": image, "label": label, "file": item.file, "from": folder})
            if label != UNSURE:
                self._move(item, UNCLEAR, label)
            return {"image": image, "label": label}

    def undo(self, image: str) -> dict:
        """Reverse ``image``'s standing decision: journal an undo, move the file back to unclear/."""
        with self.lock:
            item = self.item(image)
            last = self.journal.last_decisions().get(image)
            if last is None:
                raise Conflict(f"{image} has no decision to undo")
            folder = self.where().get(image)
            expected = UNCLEAR if last["label"] == UNSURE else last["label"]
            if folder != expected:
                raise Conflict(f"{image} is in {folder}/ now, not {expected}/; undo it by hand")
            self.journal.append({"time": _now(), "image": image, "label": "undo", "file": item.file, "from": folder})
            if folder != UNCLEAR:
                self._move(item, folder, UNCLEAR)
            return {"image": image, "label": "undo", "was": last["label"]}

    def queue(self, order: str = "rank") -> dict:
        """The images now in unclear/, most useful first (or by name or by score)."""
        where, decided = self.where(), self.journal.last_decisions()
        items = [self.items[i] for i, f in where.items() if f == UNCLEAR]
        keys = {
            "rank": lambda it: (it.rank or 10**9, it.image),
            "name": lambda it: it.image,
            "score": lambda it: (_mean_score(it.scores), it.image),
        }
        if order not in keys:
            raise ValueError(f"order must be rank, name or score, got {order!r}")
        items.sort(key=keys[order])
        return {
            "total": self.total_queue, "left": len(items), "models": self.models, "classes": self.classes,
            "folders": list(self.info.folders),
            "items": [{"image": it.image, "rank": it.rank, "scores": it.scores, "issue": it.issue,
                       "unsure": decided.get(it.image, {}).get("label") == UNSURE} for it in items],
        }  # fmt: skip

    def status(self) -> dict:
        """Counts per folder and every disagreement between the journal and the folders."""
        where = self.where()
        counts = {f: sum(1 for v in where.values() if v == f) for f in self.info.all_folders}
        problems = []
        for image, row in sorted(self.journal.last_decisions().items()):
            expected = UNCLEAR if row["label"] == UNSURE else row["label"]
            if image in self.items and where.get(image) != expected:
                problems.append(f"{image}: journal says {row['label']}, folder is {where.get(image, 'missing')}/")
        missing = sorted(set(self.items) - set(where))
        problems += [f"{image}: file missing from the run folders" for image in missing]
        return {"counts": counts, "journal_entries": len(self.journal.rows()), "problems": problems}

    def image_path(self, image: str) -> Path:
        item = self.item(image)
        folder = self.where().get(image)
        if folder is None:
            raise KeyError(f"{image} is missing from the run folders")
        return self.run_dir / folder / item.file


def _mean_score(scores: dict) -> float:
    """The page's "score" order: the models' mean P(class 1) for two classes, else their mean top probability."""
    vals = [p[1] if len(p) == 2 else max(p) for p in scores.values()]
    return sum(vals) / max(len(vals), 1)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text()) or {}


def review_work(run_dir: Path, journal_path: Path | None = None) -> tuple[int, int]:
    """(images reviewed on the page, images moved by hand) in a run folder: images that are no
    longer in the folder the run put them in. Reads only."""
    run_dir = Path(run_dir)
    if not (run_dir / "predictions.csv").is_file():
        return 0, 0
    rows = read_predictions(run_dir)
    placed = {r["file"].split("/", 1)[1]: r for r in rows}
    jp = Path(journal_path or journal_path_for(run_dir))
    decided = Journal(jp).last_decisions() if jp.is_file() and jp.stat().st_size else {}
    page = hand = 0
    for f in RunInfo.load(run_dir).all_folders:
        for n in os.listdir(run_dir / f) if (run_dir / f).is_dir() else []:
            row = placed.get(n)
            if row is None or row["decision"] == f:
                continue
            kind = provenance(row, f, (decided.get(row["image"]) or {}).get("label"))
            page, hand = page + (kind == "reviewed"), hand + (kind == "hand")
    return page, hand


def journal_path_for(run_dir: Path) -> Path:
    """The journal the run recorded, or labels/<pipeline>/reviewed.csv next to the project's pipelines."""
    info = RunInfo.load(run_dir)
    if info.journal:
        return Path(info.journal)
    cfg = _yaml(Path(run_dir) / "config.yaml")
    return Path("labels") / str(cfg.get("name", Path(run_dir).name)) / "reviewed.csv"


def format_status(st: dict) -> str:
    c = st["counts"]
    lines = ["   ".join(f"{k}/ {v}" for k, v in c.items()) + f"   journal entries: {st['journal_entries']}"]
    lines += [f"disagreement: {p}" for p in st["problems"]] or ["journal and folders agree"]
    return "\n".join(lines)
