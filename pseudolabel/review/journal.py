"""The review journal: an append-only CSV of actions, each written as an intent before any file moves.

Every action (one decision, a bulk decision, an undo, an audit answer) is one write of its rows,
fsynced, with a shared ``action`` id; each row says which image goes ``from`` which folder ``to``
which. Only then are the files renamed, and then one ``done`` row closes the action. The next start
of the review finishes every action that has no ``done`` row (:meth:`ReviewState.recover`), so the
journal and the folders agree whatever moment the process died. Each row carries the run's id: a
journal written for another run is refused.

Journals of earlier releases (no run, action, kind or to columns) are read as finished actions.
"""
from __future__ import annotations

import csv
import io
import os
import time
import uuid
from pathlib import Path

from pseudolabel.core.runstate import UNCLEAR, fsync_dir, write_atomic

FIELDS = ["time", "run", "action", "kind", "image", "label", "file", "from", "to"]
UNSURE = "unsure"  # a decision that leaves the image in unclear/
UNDO = "undo"  # the label of an undo row
DONE = "done"  # the kind of the row that closes an action
KINDS = ("decide", "bulk", "undo", "audit")  # what an action is


def _legacy(row: dict) -> dict:
    """A row of an earlier release's journal, with the columns it lacks filled in."""
    label = row.get("label", "")
    to = UNCLEAR if label == UNDO else (row.get("from") or UNCLEAR) if label == UNSURE else label
    return {**{k: "" for k in FIELDS}, **row, "kind": row.get("kind") or ("undo" if label == UNDO else "decide"),
            "to": row.get("to") or to}  # fmt: skip


class Journal:
    """The journal of one run. ``readonly``: never create, repair or migrate the file (``--status``)."""

    def __init__(self, path: Path, run_id: str, readonly: bool = False):
        self.path, self.run_id, self.readonly = Path(path), run_id, readonly
        self.rows: list[dict] = []  # every row, done rows included, in file order
        if os.path.lexists(self.path):
            if not self.path.is_file() or not self.path.stat().st_size:
                raise self._damaged("it is empty or not a file: not a journal pseudolabel made")
            self._read()  # only a journal (its header checked) is ever written to
        elif not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create()
        others = sorted({r["run"] for r in self.rows if r["run"] and r["run"] != run_id})
        if others and run_id:
            raise ValueError(f"journal {self.path} was written for run {others[0]}, not for this run {run_id}; "
                             "give this run its own --journal")  # fmt: skip

    def _read(self) -> None:
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1  # a line cut off by a crash is not part of the journal
        complete = data[:cut].decode("utf-8", errors="replace")
        try:
            reader = csv.DictReader(io.StringIO(complete))
            header = reader.fieldnames or []
            raw = list(reader)
        except csv.Error as exc:
            raise self._damaged(f"not a CSV file ({exc})") from None
        if not header or not {"image", "label"} <= set(header) or not set(header) <= set(FIELDS):
            first = complete.split("\n", 1)[0][:60]
            raise self._damaged(f"its first line {first!r} is not a journal's header")
        for i, r in enumerate(raw, 2):
            if None in r or any(r.get(k) is None for k in header):
                raise self._damaged(f"line {i} does not have the header's {len(header)} fields")
        self.rows = [_legacy(r) for r in raw if r.get("image") or r.get("kind") == DONE]
        if cut != len(data) and not self.readonly:  # only once it is known to be a journal
            os.truncate(self.path, cut)
        if header != FIELDS and not self.readonly:  # an earlier release's columns: rewrite once with ours
            write_atomic(self.path, self._text(self.rows, header=True))

    def _create(self) -> None:
        """A new journal holding its header, created exclusively: never through an existing name."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, (",".join(FIELDS) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)

    def _damaged(self, why: str) -> ValueError:
        return ValueError(f"journal {self.path}: damaged, {why}; it is left as it is: restore it, or give this "
                          "review its own --journal")

    def _text(self, rows: list[dict], header: bool = False) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, FIELDS, extrasaction="ignore", lineterminator="\n")
        if header:
            w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def _append(self, rows: list[dict]) -> None:
        if self.readonly:
            raise RuntimeError("this journal was opened read-only")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, self._text(rows).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows.extend(rows)

    def begin(self, kind: str, moves: list[dict]) -> str:
        """Journal the intent of one action (one write, fsynced): ``moves`` are dicts with image, label,
        file, from and to. Returns the action's id."""
        action = uuid.uuid4().hex[:10]
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._append([{**m, "time": now, "run": self.run_id, "action": action, "kind": kind} for m in moves])
        return action

    def done(self, action: str) -> None:
        """Close ``action``: every move it journaled has happened."""
        self._append([{"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": self.run_id, "action": action,
                       "kind": DONE}])  # fmt: skip

    def decisions(self) -> list[dict]:
        """The image rows (no done rows), in order."""
        return [r for r in self.rows if r["kind"] != DONE]

    def pending(self) -> dict[str, list[dict]]:
        """{action: its rows} for actions journaled but never closed (a crash came in between)."""
        closed = {r["action"] for r in self.rows if r["kind"] == DONE}
        out: dict[str, list[dict]] = {}
        for r in self.decisions():
            if r["action"] and r["action"] not in closed:
                out.setdefault(r["action"], []).append(r)
        return out

    def last_rows(self) -> dict[str, dict]:
        """{image: its last row}; its ``to`` is where the journal says the image is."""
        return {r["image"]: r for r in self.decisions()}

    def last_decisions(self) -> dict[str, dict]:
        """Each image's standing decision (a row whose label is a folder or unsure), undos applied."""
        stacks: dict[str, list[dict]] = {}
        for r in self.decisions():
            s = stacks.setdefault(r["image"], [])
            if r["label"] == UNDO:
                if s:
                    s.pop()
            else:
                s.append(r)
        return {img: s[-1] for img, s in stacks.items() if s}

    def actions(self) -> list[dict]:
        """Every action, oldest first: {action, kind, label, images, time, undone}. An action is undone
        when none of its images' standing decisions is still its own."""
        standing = {r["action"] for r in self.last_decisions().values()}
        out: dict[str, dict] = {}
        for i, r in enumerate(self.decisions()):
            key = r["action"] or f"row{i}"
            a = out.setdefault(key, {"action": key, "kind": r["kind"], "label": r["label"], "images": [],
                                     "time": r["time"]})  # fmt: skip
            a["images"].append(r["image"])
        for a in out.values():
            a["undone"] = a["kind"] != "undo" and a["action"] not in standing
        return list(out.values())

