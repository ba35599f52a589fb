"""``pseudolabel resort``: after ``retrain``, the final model re-decides what only machines placed.

The final model is a better judge than the two seed models' vote (97 % against 93-95 % on the
dev labels), so it shrinks the review queue: every image that the vote placed and nobody has
touched since goes to ``0/`` when its P(open) <= ``closed_below``, to ``1/`` when it is >=
``open_above``, and to ``unclear/`` otherwise (which may also send a vote decision back for
review). An image still where the two seed models' vote put it stays there when the final model
agrees with that vote at ``keep_agreed`` or more (three models agreeing). A vote decision the
label check flagged is re-decided like any other (``settle_flagged``): the final model never
trained on its label, so its score is a second opinion; what it leaves unclear keeps the front of
the queue. Never moved: the seed labels (even flagged ones), anything decided on the review page
(even "unsure") and anything moved by hand.

:func:`resort` is the pure rule. :func:`resort_run` reads the run, scores it and moves the
run's own links (never the originals) through :func:`sort.move_within`, which writes its plan
first, so a crash is finished by the next command that opens the run.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from . import sort
from .config import ResortConfig
from .review import ReviewState
from .vote import UNCLEAR, folder_counts

SCORE_COLUMN = "final"  # predictions.csv column with the final model's P(open)


def resort(scores: np.ndarray, decision: np.ndarray, movable: np.ndarray, first: np.ndarray, *,
           closed_below: float, open_above: float, voted: np.ndarray | None = None,
           keep_agreed: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Re-decide the movable images from the final model's scores.

    scores: (N,) P(open) from the final model. decision: (N,) int, where each image is now
    (1, 0 or -1 = unclear). movable: (N,) bool, images a machine placed and nobody touched.
    first: (N,) bool, unclear images that stay at the front of the queue (label-check flags).
    voted: (N,) bool or None, images still where the seed models' vote put them; a voted image in
    ``1/`` stays when its score is >= ``keep_agreed``, one in ``0/`` when it is <= 1 - keep_agreed
    (1.0 turns this off). Returns (decision, rank): (N,) int new decisions, and (N,) int 1-based
    queue ranks for the unclear images (0 otherwise), the flagged ones first, then the least sure
    (score nearest 0.5).
    """
    s = np.asarray(scores, dtype=np.float64)
    voted = np.zeros(s.shape, bool) if voted is None else np.asarray(voted, bool)
    if s.ndim != 1 or not (s.shape == np.shape(decision) == np.shape(movable) == np.shape(first) == voted.shape):
        raise ValueError(f"scores, decision, movable, first and voted must be (N,) arrays of one length, got "
                         f"{s.shape}, {np.shape(decision)}, {np.shape(movable)}, {np.shape(first)}, {voted.shape}")  # fmt: skip
    if s.size and (np.isnan(s).any() or s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must lie in [0, 1]")
    if not 0.0 <= closed_below < 0.5 < open_above <= 1.0:
        raise ValueError(f"need 0 <= closed_below < 0.5 < open_above <= 1, got {closed_below!r}, {open_above!r}")
    if not 0.5 < keep_agreed <= 1.0:
        raise ValueError(f"keep_agreed must be in (0.5, 1], got {keep_agreed!r}")
    d = np.asarray(decision)
    agreed = voted & (((d == 1) & (s >= keep_agreed)) | ((d == 0) & (s <= 1.0 - keep_agreed)))
    rule = np.where(s >= open_above, 1, np.where(s <= closed_below, 0, UNCLEAR))
    new = np.where(movable & ~agreed, rule, d).astype(np.int64)
    queued = np.flatnonzero(new == UNCLEAR)
    order = np.lexsort((queued, np.abs(s[queued] - 0.5), ~np.asarray(first, bool)[queued]))  # last key first
    rank = np.zeros(s.shape, dtype=np.int64)
    rank[queued[order]] = np.arange(1, len(queued) + 1)
    return new, rank


def movable_images(rows: list[dict], where: dict[str, str], decided: set[str], settle_flagged: bool = True
                   ) -> np.ndarray:
    """(N,) bool: placed by the vote (or an earlier re-sort), still where it was put, not decided
    on the page, and, unless ``settle_flagged``, not flagged by the label check."""
    return np.array([
        not r["source"].startswith("seed") and r["image"] not in decided and where.get(r["image"]) == r["decision"]
        and (settle_flagged or not r.get("issue"))
        for r in rows
    ])  # fmt: skip


def score_run(run_dir: Path, state: ReviewState, rows: list[dict], where: dict[str, str],
              model: str | Path | None = None) -> np.ndarray:
    """(N,) P(open) from the exported final model for every image of ``rows``, read from the run's
    folders (``where``: {image: folder} as :meth:`ReviewState.where` gives it)."""
    from .predict import EyeStateClassifier

    clf = EyeStateClassifier.load(model or run_dir)
    missing = [r["image"] for r in rows if r["image"] not in where]
    if missing:
        raise ValueError(f"{run_dir}: {len(missing)} image(s) missing from the run folders, e.g. {missing[0]}; "
                         "`pseudolabel review --status` lists them")  # fmt: skip
    paths = [run_dir / where[r["image"]] / state.items[r["image"]].file for r in rows]
    return clf.predict_array(clf.load_images(paths))


def new_rows(rows: list[dict], scores: np.ndarray, decision: np.ndarray, rank: np.ndarray, movable: np.ndarray
             ) -> tuple[list[dict], list[tuple[str, str]]]:
    """predictions.csv rows after the re-sort, and the (source, target) moves inside the run folder."""
    out, moves = [], []
    for r, s, d, k, m in zip(rows, scores, decision, rank, movable):
        r = {**r, SCORE_COLUMN: f"{s:.6f}"}
        if m:
            folder = sort.folder_of(int(d))
            target = f"{folder}/{sort.file_name(r['image'], int(d), int(k))}"
            if target != r["file"]:
                moves.append((r["file"], target))
            source = r["source"] if folder == r["decision"] else "final"
            r.update(file=target, decision=folder, queue_rank=int(k) if k else "", source=source)
        elif k:
            r["queue_rank"] = int(k)  # still unclear (unsure, or flagged): a place in the new queue
        out.append(r)
    return out, moves


def queue_samples(run_dir: Path, rows: list[dict], per: int = 48) -> list[str]:
    """Draw the report's ``samples_unclear.png`` again from the re-sorted queue (``rows`` as
    predictions.csv now has them): its first ``per`` images, captioned with rank and final score.
    `run` drew it from the vote's queue, most of which a re-sort empties. Returns the images drawn."""
    from .config import load_config
    from .data import load_image
    from .report import sample_grid

    cfg = load_config(run_dir / "config.yaml")
    size, ch = cfg.image_size, cfg.channels
    queue, images = [], [np.zeros((0, ch, size, size), np.uint8)]
    queued = [r for r in rows if r["decision"] == "unclear" and r["queue_rank"]]
    for r in sorted(queued, key=lambda r: int(r["queue_rank"])):
        if len(queue) == per:
            break
        try:
            images.append(load_image(run_dir / r["file"], size, ch)[None])
        except (OSError, ValueError):  # gone since (decided on the page) or changed by hand: not in the picture
            continue
        queue.append(r)
    titles = [f"{r['queue_rank']}: {float(r[SCORE_COLUMN]):.2f}" for r in queue]
    sample_grid(np.concatenate(images), titles, run_dir / "samples_unclear.png")
    return [r["image"] for r in queue]


def _csv_text(rows: list[dict]) -> str:
    """predictions.csv text: image, file, the seed models' scores, the final score, then the fixed fields."""
    fields = [f for f in rows[0] if f != SCORE_COLUMN]
    fixed = [f for f in fields if f in sort.PREDICTION_FIELDS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fixed[:2] + sort.model_columns(fields) + [SCORE_COLUMN] + fixed[2:], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def resort_run(run_dir: Path, journal: Path, rc: ResortConfig, model: str | Path | None = None,
               scores: np.ndarray | None = None) -> dict:
    """Re-sort ``run_dir`` with its final model (or ``model``; or given (N,) ``scores`` in
    predictions.csv order). Writes resort.json and a report section; returns the summary."""
    from .pipeline import output_lock, write_manifest
    from .report import resort_plot, write_resort_section

    run_dir = Path(run_dir)
    with output_lock(run_dir, what="resort"), output_lock(run_dir / "final", what="resort"):  # no review, no retrain
        t0 = time.perf_counter()
        state = ReviewState(run_dir, journal)  # also finishes an interrupted re-sort or page decision
        rows = state.rows
        where = state.where()
        movable = movable_images(rows, where, set(state.journal.last_decisions()), rc.settle_flagged)
        now = np.array([sort.decision_of(where.get(r["image"], r["decision"])) for r in rows])
        s = score_run(run_dir, state, rows, where, model) if scores is None else np.asarray(scores, dtype=np.float64)
        first = np.array([bool(r.get("issue")) for r in rows])
        voted = np.array([r["source"] == "vote" for r in rows])
        rule = {"closed_below": rc.closed_below, "open_above": rc.open_above}
        decision, rank = resort(s, now, movable, first, voted=voted, keep_agreed=rc.keep_agreed, **rule)
        kept = int((decision != resort(s, now, movable, first, **rule)[0]).sum())  # stayed only by agreement
        rows_after, moves = new_rows(rows, s, decision, rank, movable)
        sort.move_within(run_dir, moves, _csv_text(rows_after))
        queue_samples(run_dir, rows_after)
        summary = {
            "closed_below": rc.closed_below, "open_above": rc.open_above, "keep_agreed": rc.keep_agreed,
            "kept_agreed": kept, "settled_flags": int((first & movable & (decision != UNCLEAR)).sum()),
            "flags_left": int((first & (decision == UNCLEAR)).sum()), "before": folder_counts(now),
            "after": folder_counts(decision), "movable": int(movable.sum()),
            "moved": {f"{a}->{b}": int(((now == x) & (decision == y)).sum())
                      for a, x in (("0", 0), ("1", 1), ("unclear", UNCLEAR))
                      for b, y in (("0", 0), ("1", 1), ("unclear", UNCLEAR)) if x != y},
            "seconds": round(time.perf_counter() - t0, 1), "model": str(model or run_dir / "final"),
        }  # fmt: skip
        sort.write_atomic(run_dir / "resort.json", json.dumps(summary, indent=2))
        resort_plot(s, rc.closed_below, rc.open_above, run_dir / "resort.png", rc.keep_agreed)
        write_resort_section(run_dir / "report.md", summary)
        write_manifest(run_dir)
    return summary
