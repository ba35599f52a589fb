"""``pseudolabel resort``: after ``retrain``, the final model re-decides what only machines placed.

The final model is a better judge than the two seed models' vote, so it shrinks the review queue:
every image that the vote placed and nobody has touched since goes to its top class's folder when
that class's probability is >= the class's ``accept`` threshold, and to ``unclear/`` otherwise
(which may also send a vote decision back for review). An image still where the two seed models'
vote put it stays there when the final model gives its class ``keep_agreed`` or more (three models
agreeing). A vote decision the label check flagged is re-decided like any other
(``settle_flagged``): the final model never trained on its label, so its score is a second opinion;
what it leaves unclear keeps the front of the queue. Never moved: the seed labels (even flagged
ones), anything decided on the review page (even "unsure") and anything moved by hand.

:func:`resort` is the pure rule. :func:`resort_run` reads the run, scores it and moves the
run's own links (never the originals) through :func:`sort.move_within`, which writes its plan
first, so a crash is finished by the next command that opens the run.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pseudolabel.config.schema import ResortConfig
from pseudolabel.config.values import accept_per_class
from pseudolabel.core import runstate, sort
from pseudolabel.core.names import name_key
from pseudolabel.core.runstate import FINAL, UNCLEAR, folder_counts
from pseudolabel.core.vote import as_probs, top_class, top_margin
from pseudolabel.review.state import ReviewState


def resort(probs: np.ndarray, decision: np.ndarray, movable: np.ndarray, first: np.ndarray, *,
           accept: tuple[float, ...], voted: np.ndarray | None = None, keep_agreed: float = 1.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Re-decide the movable images from the final model's probabilities.

    probs: (N, K) from the final model. decision: (N,) int, where each image is now (class index,
    or -1 = unclear). movable: (N,) bool, images a machine placed and nobody touched. first: (N,)
    bool, unclear images that stay at the front of the queue (label-check flags). accept: (K,)
    thresholds: class c when the top class is c with probability >= accept[c]. voted: (N,) bool or
    None, images still where the seed models' vote put them; such an image stays when the final
    model gives its class >= ``keep_agreed`` (1.0 turns this off). Returns (decision, rank): (N,)
    new decisions, and (N,) 1-based queue ranks for the unclear images (0 otherwise), the flagged
    ones first, then the least sure (the smallest gap between the top two classes).

    For K = 2 the tests run on P(class 1) alone: class 1 at P >= accept[1], class 0 at
    P <= 1 - accept[0], so two-class scores keep their meaning whatever the rounding.
    """
    p = as_probs(probs, "probs")
    n, k = p.shape
    voted = np.zeros(n, bool) if voted is None else np.asarray(voted, bool)
    if not (np.shape(decision) == np.shape(movable) == np.shape(first) == voted.shape == (n,)):
        raise ValueError(f"decision, movable, first and voted must be (N,) arrays for N = {n} images, got "
                         f"{np.shape(decision)}, {np.shape(movable)}, {np.shape(first)}, {voted.shape}")  # fmt: skip
    acc = np.asarray(accept, dtype=np.float64)
    if acc.shape != (k,) or (acc <= 0).any() or (acc > 1).any():
        raise ValueError(f"accept must hold one threshold in (0, 1] per class ({k}), got {list(accept)!r}")
    if not 0.0 < keep_agreed <= 1.0:
        raise ValueError(f"keep_agreed must be in (0, 1], got {keep_agreed!r}")
    d = np.asarray(decision, dtype=np.int64)
    c = top_class(p)
    if k == 2:
        s = p[:, 1]
        sure = np.where(c == 1, s >= acc[1], s <= 1.0 - acc[0])
        agreed = voted & (((d == 1) & (s >= keep_agreed)) | ((d == 0) & (s <= 1.0 - keep_agreed)))
        gap = np.abs(s - 0.5)
    else:
        sure = p[np.arange(n), c] >= acc[c]
        agreed = voted & (d >= 0) & (p[np.arange(n), np.clip(d, 0, k - 1)] >= keep_agreed)
        gap = top_margin(p)
    rule = np.where(sure, c, -1)
    new = np.where(movable & ~agreed, rule, d).astype(np.int64)
    queued = np.flatnonzero(new < 0)
    order = np.lexsort((queued, gap[queued], ~np.asarray(first, bool)[queued]))  # last key first
    rank = np.zeros(n, dtype=np.int64)
    rank[queued[order]] = np.arange(1, len(queued) + 1)
    return new, rank


def movable_images(rows: list[dict], where: dict[str, str], decided: dict[str, dict], settle_flagged: bool = True
                   ) -> np.ndarray:
    """(N,) bool: placed by machines (the vote or an earlier re-sort) and touched by nobody since
    (:func:`runstate.provenance`), and, unless ``settle_flagged``, not flagged by the label check."""
    return np.array([
        runstate.machine_placed(runstate.provenance(r, where.get(r["image"]), (decided.get(r["image"]) or {}).get("label")))
        and (settle_flagged or not r.get("issue"))
        for r in rows
    ], dtype=bool)  # fmt: skip


def score_run(run_dir: Path, state: ReviewState, rows: list[dict], where: dict[str, str],
              model: str | Path | None = None, ray=None) -> np.ndarray:
    """(N, K) probabilities from the exported final model for every image of ``rows``, read from the
    run's folders (``where``: {image: folder} as :meth:`ReviewState.where` gives it); scored on Ray
    Data actors when ``ray`` (a RayConfig) is given."""
    from pseudolabel.serve.predict import Classifier

    clf = Classifier.load(model or run_dir)
    if list(clf.classes) != list(state.info.classes):
        raise ValueError(f"{model or run_dir}: the model's classes ({', '.join(clf.classes)}) are not this run's "
                         f"({', '.join(state.info.classes)}); resort needs a model of the run's own classes")
    missing = [r["image"] for r in rows if r["image"] not in where]
    if missing:
        raise ValueError(f"{run_dir}: {len(missing)} image(s) missing from the run folders, e.g. {missing[0]}; "
                         "`pseudolabel review --status` lists them")  # fmt: skip
    paths = [run_dir / where[r["image"]] / state.items[r["image"]].file for r in rows]
    def unreadable(message: str) -> None:
        raise ValueError(f"{run_dir}: {message.replace('; skipped', '')}")

    if ray is not None:
        from pseudolabel.engines.ray import score_classifier

        chunks = score_classifier(clf, paths, ray, warn=unreadable)
    else:
        chunks = clf.score_files(paths, warn=unreadable)
    return np.concatenate([p for _, p in chunks])  # streamed, by chunks


def new_rows(rows: list[dict], info: runstate.RunInfo, decision: np.ndarray, rank: np.ndarray, movable: np.ndarray
             ) -> tuple[list[dict], list[tuple[str, str]]]:
    """predictions.csv rows after the re-sort, and the (source, target) moves inside the run folder.
    A moved image's new name is its own (:func:`sort.unique_names`): never another image's name, now
    or after the moves, so no move can land on a file."""
    width = sort.rank_width(int(np.max(rank, initial=0)))
    moving = [i for i, m in enumerate(movable) if m]
    wanted = [sort.file_name(rows[i]["image"], int(decision[i]), int(rank[i]), width) for i in moving]
    current = [name_key(r["file"].partition("/")[2]) for r in rows]
    holders = Counter(current)
    # a moving image may keep its own name; every other name a file has now is taken
    keeps = {current[i] for i, w in zip(moving, wanted) if current[i] == name_key(w) and holders[current[i]] == 1}
    free = sort.unique_names([rows[i]["image"] for i in moving], wanted, set(current) - keeps)
    out, moves = [dict(r) for r in rows], []
    for i, name in zip(moving, free):
        r, d, k = out[i], int(decision[i]), int(rank[i])
        folder = info.folder_of(d)
        target = f"{folder}/{name}"
        if target != r["file"]:
            moves.append((r["file"], target))
        source = r["source"] if folder == r["decision"] else runstate.RESORTED
        r.update(file=target, decision=folder, queue_rank=k if k else "", source=source)
    for i, k in enumerate(rank):
        if not movable[i] and k:
            out[i]["queue_rank"] = int(k)  # still unclear (unsure, or flagged): a place in the new queue
    return out, moves


def queue_samples(run_dir: Path, rows: list[dict], probs: np.ndarray, classes: tuple[str, ...], per: int = 48
                  ) -> list[str]:
    """Draw the report's ``samples_unclear.png`` again from the re-sorted queue (``rows`` as
    predictions.csv now has them, ``probs`` the final model's (N, K)): its first ``per`` images,
    captioned with rank, top class and probability. Returns the images drawn."""
    from pseudolabel.config.schema import load_config
    from pseudolabel.data.images import load_image
    from pseudolabel.report.plots import sample_grid

    cfg = load_config(run_dir / "config.yaml")
    h, w = cfg.hw
    queue, images = [], [np.zeros((0, cfg.channels, h, w), np.uint8)]
    queued = [(i, r) for i, r in enumerate(rows) if r["decision"] == UNCLEAR and r["queue_rank"]]
    for i, r in sorted(queued, key=lambda t: int(t[1]["queue_rank"])):
        if len(queue) == per:
            break
        try:
            images.append(load_image(run_dir / r["file"], cfg.hw, cfg.channels)[None])
        except Exception:  # noqa: BLE001 -- gone since (decided on the page) or changed by hand: not in the picture
            continue
        queue.append((i, r))
    titles = [f"{r['queue_rank']}: {classes[int(np.argmax(probs[i]))][:6]} {probs[i].max():.2f}" for i, r in queue]
    sample_grid(np.concatenate(images), titles, run_dir / "samples_unclear.png")
    return [r["image"] for _, r in queue]


def resort_run(run_dir: Path, journal: Path, rc: ResortConfig, model: str | Path | None = None,
               scores: np.ndarray | None = None, ray=None) -> dict:
    """Re-sort ``run_dir`` with its final model (or ``model``; or given (N, K) ``scores`` in
    predictions.csv order; scored on Ray when ``ray``, a RayConfig, is given). Writes scores/final.npy,
    resort.json and the report; returns the summary."""
    from pseudolabel.report.plots import resort_plot
    from pseudolabel.report.render import RUN_SUMMARY, render

    run_dir = Path(run_dir)
    with runstate.output_lock(run_dir, what="resort"), runstate.output_lock(run_dir / "final", what="resort"):
        t0 = time.perf_counter()
        state = ReviewState(run_dir, journal)  # also finishes an interrupted re-sort or page decision
        rows, info, where = state.rows, state.info, state.where()
        movable = movable_images(rows, where, state.journal.last_decisions(), rc.settle_flagged)
        now = np.array([info.decision_of(where.get(r["image"], r["decision"])) for r in rows])
        p = score_run(run_dir, state, rows, where, model, ray) if scores is None else np.asarray(scores, np.float64)
        first = np.array([bool(r.get("issue")) for r in rows])
        voted = np.array([r["source"] == runstate.VOTE for r in rows])
        acc = accept_per_class(rc, len(info.classes))
        decision, rank = resort(p, now, movable, first, voted=voted, keep_agreed=rc.keep_agreed, accept=acc)
        kept = int((decision != resort(p, now, movable, first, accept=acc)[0]).sum())  # stayed only by agreement
        rows_after, moves = new_rows(rows, info, decision, rank, movable)
        runstate.save_scores(run_dir, FINAL, p)
        sort.move_within(run_dir, moves, runstate.predictions_text(rows_after))
        queue_samples(run_dir, rows_after, p, info.classes)
        names = [*info.folders, UNCLEAR]
        summary = {
            "accept": list(acc), "keep_agreed": rc.keep_agreed,
            "kept_agreed": kept, "settled_flags": int((first & movable & (decision >= 0)).sum()),
            "flags_left": int((first & (decision < 0)).sum()), "before": folder_counts(now, info.folders),
            "after": folder_counts(decision, info.folders), "movable": int(movable.sum()),
            "moved": {f"{a}->{b}": int(((now == info.decision_of(a)) & (decision == info.decision_of(b))).sum())
                      for a in names for b in names if a != b},
            "seconds": round(time.perf_counter() - t0, 1), "model": str(model or run_dir / "final"),
        }  # fmt: skip
        runstate.write_atomic(run_dir / "resort.json", json.dumps(summary, indent=2))
        resort_plot(p, acc, info.classes, run_dir / "resort.png", rc.keep_agreed)
        if (run_dir / RUN_SUMMARY).is_file():  # a run of this version: its report shows the re-sort
            render(run_dir)
        runstate.write_manifest(run_dir)
    return summary
