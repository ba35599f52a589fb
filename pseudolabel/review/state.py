"""Review the unclear queue: state, decisions, undo and the audit, behind a loopback-only web page.

The folders are the truth. A person may move files between ``unclear/`` and the class folders by
hand; every request rescans them. Each action made on the page is first journaled as an intent
(see :mod:`pseudolabel.review.journal`), then its files are renamed (atomic), then the action is closed.
On start-up every action that was journaled but not closed is finished, so nothing the page
confirmed is ever lost and journal and folders always agree. ``readonly`` (``--status``) finishes
nothing and writes nothing.
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.core.runstate import (
    UNCLEAR,
    FileIndex,
    RunInfo,
    fsync_dir,
    load_scores,
    provenance,
    read_predictions,
    rename_noreplace,
    scored_models,
    write_atomic,
)
from pseudolabel.core.sort import PENDING, finish_pending
from pseudolabel.report import audit as audit_mod
from pseudolabel.review.journal import UNDO, UNSURE, Journal

MAX_BULK = 1000  # the most images one bulk action may decide
CRASH_ENV = "PSEUDOLABEL_TEST_CRASH"  # tests only: "intent" or "move" kills the process at that step


class Conflict(Exception):
    """The request is valid but the image's state changed (another tab, or a move by hand)."""


@dataclass(frozen=True)
class Item:
    image: str  # name relative to the images folder
    file: str  # file name inside the run's folders
    rank: int  # 1-based queue rank from the run (0 if it was decided by the vote)
    scores: dict  # model name -> (K,) probabilities, a list
    issue: str = ""  # why a labeled image was sent back for review (likely-wrong label), or ""
    placed: str = ""  # the folder the run put it in


def _crash_point(step: str) -> None:
    """The kill-point hook of the crash tests: die here, as SIGKILL would, when asked to."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class ReviewState:
    """The run's images, where each one is now, and the actions taken on them."""

    def __init__(self, run_dir: Path, journal_path: Path, readonly: bool = False,
                 audit: tuple[int, int] | None = None):
        self.run_dir, self.readonly = Path(run_dir), readonly
        self.resort_pending = (self.run_dir / PENDING).is_file()
        if not readonly:
            finish_pending(self.run_dir)  # a re-sort that was interrupted: finish it before reading its names
        self.rows = read_predictions(self.run_dir)  # predictions.csv as it stands
        self.info = RunInfo.load(self.run_dir)
        self.models = scored_models(self.run_dir)
        probs = {m: np.round(load_scores(self.run_dir, m), 4).tolist() for m in self.models}
        self.items = {
            r["image"]: Item(r["image"], r["file"].split("/", 1)[1], int(r["queue_rank"] or 0),
                             {m: probs[m][i] for m in self.models}, r.get("issue") or "", r["decision"])
            for i, r in enumerate(self.rows)
        }  # fmt: skip
        self.files = FileIndex(self.rows)  # folder listings -> images, by the run's own record
        self.total_queue = sum(1 for it in self.items.values() if it.rank > 0)
        self.classes = list(self.info.classes)
        self.labels = (*self.info.folders, UNSURE)  # what a decision may say
        self.journal = Journal(journal_path, self.info.id, readonly=readonly)
        self.lock = threading.RLock()  # actions, and the index's updates (where() also takes it)
        self._where: dict[str, str] = {}  # the folder index (see where())
        self._members: dict[str, set[str]] = {}
        self._stamps: dict[str, int | None] = {}
        self._orders: dict[str, list[str]] = {}  # every image, sorted once per queue order
        self.audit_images = audit_mod.sample(self.rows, *audit) if audit else []
        self.audit_seed = audit[1] if audit else None
        self.recovered = 0 if readonly else self.recover()

    def where(self) -> dict[str, str]:
        """{image: folder} as the folders stand now (files that are not the run's are ignored); do not
        modify it. An index kept in memory: this process's own moves update it, and a folder whose
        modification time changed (a hand move) is listed again; the others are not read."""
        with self.lock:
            for folder in self.info.all_folders:
                try:
                    stamp = os.stat(self.run_dir / folder).st_mtime_ns
                except OSError:
                    stamp = None
                if self._stamps.get(folder, -1) != stamp:
                    self._rescan(folder, stamp)
        return self._where

    def _rescan(self, folder: str, stamp: int | None) -> None:
        d = self.run_dir / folder
        listed = {self.files.image(folder, n) for n in (os.listdir(d) if stamp is not None else [])} - {None}
        for image in self._members.get(folder, set()) - listed:
            if self._where.get(image) == folder:
                del self._where[image]
        for image in listed:
            old = self._where.get(image)
            if old is not None and old != folder:
                self._members[old].discard(image)
            self._where[image] = folder
        self._members[folder], self._stamps[folder] = listed, stamp

    def _moved(self, image: str, src: str, dst: str) -> None:
        """Update the index after this process moved ``image``; the two folders' new times are ours."""
        self._members.setdefault(src, set()).discard(image)
        self._members.setdefault(dst, set()).add(image)
        self._where[image] = dst
        for folder in (src, dst):
            if self._stamps.get(folder) is not None:
                self._stamps[folder] = os.stat(self.run_dir / folder).st_mtime_ns

    def recover(self) -> int:
        """Finish every action journaled but not closed (a crash came in between): each move not yet
        made is made, then the action is closed. Returns how many files moved."""
        where, moved = self.where(), 0
        for action, rows in self.journal.pending().items():
            for r in rows:
                if r["image"] in self.items and where.get(r["image"]) == r["from"] != r["to"]:
                    try:
                        self._move(self.items[r["image"]], r["from"], r["to"])  # updates where
                        moved += 1
                    except FileExistsError:  # a file put there by hand since: --status shows the disagreement
                        pass
            self.journal.done(action)
        return moved

    def _move(self, item: Item, src: str, dst: str) -> None:
        self.where()  # a hand move since the last look is read before our own changes the folder times
        rename_noreplace(self.run_dir / src / item.file, self.run_dir / dst / item.file)  # never onto a file
        fsync_dir(self.run_dir / dst)
        self._moved(item.image, src, dst)

    def _act(self, kind: str, moves: list[dict]) -> str:
        """Journal ``moves`` as one action, rename the files, close the action. Returns its id."""
        action = self.journal.begin(kind, moves)
        _crash_point("intent")
        for m in moves:
            if m["from"] != m["to"]:
                self._move(self.items[m["image"]], m["from"], m["to"])
                _crash_point("move")
        self.journal.done(action)
        return action

    def item(self, image: str) -> Item:
        """The run's item for ``image``; anything else (e.g. a path) is refused."""
        if not isinstance(image, str) or image not in self.items:
            raise KeyError(f"not an image of this run: {str(image)[:200]!r}")
        return self.items[image]

    def _check_label(self, label, allowed) -> None:
        if not isinstance(label, str) or label not in allowed:
            raise ValueError(f"label must be one of {', '.join(allowed)}, got {str(label)[:100]!r}")

    def _decision(self, image: str, label: str, where: dict) -> dict:
        item = self.item(image)
        folder = where.get(image)
        if folder != UNCLEAR:
            raise Conflict(f"{image} is already in {folder}/ (decided in another tab or moved by hand)")
        if label != UNSURE:
            self._check_free(item.file, label)
        return {"image": image, "label": label, "file": item.file, "from": UNCLEAR,
                "to": UNCLEAR if label == UNSURE else label}  # fmt: skip

    def _check_free(self, file: str, folder: str) -> None:
        """Conflict when a file named ``file`` is already in ``folder`` (put there by hand): a move never
        replaces a file."""
        if os.path.lexists(self.run_dir / folder / file):
            raise Conflict(f"{folder}/{file} already exists (put there by hand?); move it away first")

    def decide(self, image: str, label: str) -> dict:
        """Move ``image`` from unclear/ to ``label``'s folder (or record unsure), journaled first."""
        self._check_label(label, self.labels)
        with self.lock:
            move = self._decision(image, label, self.where())
            return {"image": image, "label": label, "action": self._act("decide", [move])}

    def decide_many(self, images: list, label: str) -> dict:
        """Decide every one of ``images`` or none: every name is checked before any is decided."""
        self._check_label(label, self.labels)
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise ValueError("images must be a non-empty list of image names")
        if len(images) > MAX_BULK or len(set(images)) != len(images):
            raise ValueError(f"images must be at most {MAX_BULK} distinct names, got {len(images)}")
        with self.lock:
            where = self.where()
            moves = [self._decision(i, label, where) for i in images]
            return {"done": list(images), "label": label, "action": self._act("bulk", moves)}

    def undo(self, image: str | None = None, action: str | None = None) -> dict:
        """Reverse one image's standing decision, or every standing decision of ``action`` (a bulk
        action is undone whole): journaled as one action, then the files move back."""
        with self.lock:
            standing, where = self.journal.last_decisions(), self.where()
            if action is not None:
                if not isinstance(action, str):
                    raise ValueError("action must be an action id")
                rows = [r for r in standing.values() if r["action"] == action]
                if not rows:
                    raise Conflict(f"action {action[:40]} has nothing left to undo")
            else:
                self.item(image)
                if image not in standing:
                    raise Conflict(f"{image} has no decision to undo")
                rows = [standing[image]]
            for r in rows:
                if where.get(r["image"]) != r["to"]:
                    raise Conflict(f"{r['image']} is in {where.get(r['image'], 'no folder')}/ now, not {r['to']}/; "
                                   "undo it by hand")  # fmt: skip
            moves = [{"image": r["image"], "label": UNDO, "file": r["file"], "from": r["to"], "to": r["from"]}
                     for r in rows]  # fmt: skip
            for m in moves:
                if m["from"] != m["to"]:
                    self._check_free(m["file"], m["to"])
            done = self._act("undo", moves)
            return {"undone": [r["image"] for r in rows], "label": UNDO, "was": rows[0]["label"], "action": done,
                    "image": rows[0]["image"]}  # fmt: skip

    def history(self, n: int = 20) -> list[dict]:
        """The last ``n`` actions, newest first: {action, kind, label, images (count), first, time, undone}."""
        out = []
        for a in reversed(self.journal.actions()[-n:]):
            out.append({**{k: a[k] for k in ("action", "kind", "label", "time", "undone")},
                        "images": len(a["images"]), "first": a["images"][0]})  # fmt: skip
        return out

    def queue(self, order: str = "rank", limit: int | None = None) -> dict:
        """The images now in unclear/, most useful first (or by name or by score): the first ``limit``
        of them (None: all) and how many are ``left``. Each order is sorted once; a request only walks it."""
        keys = {
            "rank": lambda it: (it.rank or 10**9, it.image),
            "name": lambda it: it.image,
            "score": lambda it: (_mean_score(it.scores), it.image),
        }
        if order not in keys:
            raise ValueError(f"order must be rank, name or score, got {str(order)[:40]!r}")
        if order not in self._orders:
            self._orders[order] = [it.image for it in sorted(self.items.values(), key=keys[order])]
        where, decided = self.where(), self.journal.last_decisions()
        left = len(self._members.get(UNCLEAR, ()))
        items = []
        for image in self._orders[order]:
            if limit is not None and len(items) >= limit:
                break
            if where.get(image) == UNCLEAR:
                it = self.items[image]
                items.append({"image": it.image, "rank": it.rank, "scores": it.scores, "issue": it.issue,
                              "unsure": decided.get(it.image, {}).get("label") == UNSURE})  # fmt: skip
        return {"total": self.total_queue, "left": left, "models": self.models, "classes": self.classes,
                "folders": list(self.info.folders), "items": items}  # fmt: skip

    # ------------------------------------------------------------------------- audit

    def audit_answers(self) -> list[tuple[str, str]]:
        """(machine folder, reviewer's folder) of every standing audit answer."""
        return [(r["from"], r["label"]) for r in self.journal.last_decisions().values() if r["kind"] == "audit"]

    def audit_queue(self) -> dict:
        """The audit images not answered yet, blind: names only, no score, no folder."""
        answered = {r["image"] for r in self.journal.last_decisions().values() if r["kind"] == "audit"}
        todo = [i for i in self.audit_images if i not in answered]
        return {"total": len(self.audit_images), "left": len(todo), "classes": self.classes,
                "folders": list(self.info.folders), "items": [{"image": i} for i in todo],
                "figures": self.audit_figures()}  # fmt: skip

    def audit_answer(self, image: str, label: str) -> dict:
        """The reviewer's class for an audit image: journaled; a disagreeing answer moves the file."""
        self._check_label(label, self.info.folders)
        with self.lock:
            item = self.item(image)
            if image not in self.audit_images:
                raise KeyError(f"not an image of this audit: {image[:200]!r}")
            folder = self.where().get(image)
            if image in self.journal.last_decisions() or folder != item.placed:
                raise Conflict(f"{image} was already answered or moved (now in {folder}/)")
            if label != folder:
                self._check_free(item.file, label)
            action = self._act("audit", [{"image": image, "label": label, "file": item.file, "from": folder,
                                          "to": label}])  # fmt: skip
            self.write_audit()
            return {"image": image, "label": label, "action": action}

    def audit_figures(self) -> dict:
        return audit_mod.figures(self.audit_answers(), self.info.folders)

    def write_audit(self) -> None:
        """audit.json in the run (atomic), then the report, which renders it."""
        import json

        from pseudolabel.report.render import RUN_SUMMARY, render

        fig = self.audit_figures()
        write_atomic(self.run_dir / audit_mod.AUDIT_JSON, json.dumps(
            {"seed": self.audit_seed, "sampled": len(self.audit_images), "folders": fig}, indent=2))
        if (self.run_dir / RUN_SUMMARY).is_file():
            render(self.run_dir)

    # ------------------------------------------------------------------------- status

    def status(self) -> dict:
        """Counts per folder, every disagreement between the journal and the folders, and the audit."""
        where = self.where()
        counts = {f: sum(1 for v in where.values() if v == f) for f in self.info.all_folders}
        problems = []
        for image, row in sorted(self.journal.last_rows().items()):
            if image in self.items and where.get(image) != row["to"]:
                says = "undone" if row["label"] == UNDO else row["label"]
                problems.append(f"{image}: journal says {says}, folder is {where.get(image, 'missing')}/")
        missing = sorted(set(self.items) - set(where))
        problems += [f"{image}: file missing from the run folders" for image in missing]
        problems += [f"action {a} ({len(rows)} image(s)) was interrupted; the next `pseudolabel review` finishes it"
                     for a, rows in self.journal.pending().items()]  # fmt: skip
        if self.resort_pending and self.readonly:
            problems.append("a re-sort was interrupted; the next `pseudolabel review` or `resort` finishes it")
        return {"counts": counts, "journal_entries": len(self.journal.decisions()), "problems": problems,
                "audit": self.audit_figures()}  # fmt: skip

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
    files, by_image = FileIndex(rows), {r["image"]: r for r in rows}
    info = RunInfo.load(run_dir)
    decided = Journal(Path(journal_path or journal_path_for(run_dir)), info.id, readonly=True).last_decisions()
    page = hand = 0
    for f in info.all_folders:
        for n in os.listdir(run_dir / f) if (run_dir / f).is_dir() else []:
            row = by_image.get(files.image(f, n))
            if row is None or row["decision"] == f:
                continue
            kind = provenance(row, f, (decided.get(row["image"]) or {}).get("label"))
            page, hand = page + (kind == "reviewed"), hand + (kind == "hand")
    return page, hand


def journal_path_for(run_dir: Path) -> Path:
    """The journal the run recorded in run.json: ``journal.csv`` inside the run for runs of this
    release (a relative path is relative to the run folder). Runs of earlier releases used
    labels/<pipeline>/reviewed.csv under the working folder, which is kept for them."""
    info = RunInfo.load(run_dir)
    if info.journal:
        p = Path(info.journal)
        if p.is_absolute() or not info.journal.startswith("labels/") or (Path(run_dir) / p).exists():
            return p if p.is_absolute() else Path(run_dir) / p
        return p  # recorded by the release before journals lived in the run
    cfg = _yaml(Path(run_dir) / "config.yaml")
    return Path("labels") / str(cfg.get("name", Path(run_dir).name)) / "reviewed.csv"


def format_status(st: dict) -> str:
    c = st["counts"]
    lines = ["   ".join(f"{k}/ {v}" for k, v in c.items()) + f"   journal entries: {st['journal_entries']}"]
    lines += [f"disagreement: {p}" for p in st["problems"]] or ["journal and folders agree"]
    audited = {f: v for f, v in st.get("audit", {}).items() if v["audited"]}
    if audited:
        lines.append("audit (95 % Wilson interval): " + "; ".join(audit_mod.describe(f, v).replace("`", "")
                                                                  for f, v in audited.items()))
    return "\n".join(lines)
