"""``pseudolabel run``: seed models -> co-training -> vote -> folders and report.

The run is built in a hidden ``.<name>.partial`` folder next to the target and
renamed into place only when complete, so a half-written run never looks done.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import report, sort
from .config import Config, dump_config
from .data import Pool, Problems, clean_seed_labels, load_pool, read_seed_labels, split_seeds
from .label_issues import cnn_fit_predict, find_issues, issue_note, out_of_fold_probs, requeue
from .metrics import classification_metrics
from .models import SeedModel, create_seed_model
from .progress import bar as progress_bar
from .vote import UNCLEAR, Votes, check_margin, vote


@dataclass
class Seeds:
    """Seed labels resolved against the pool. train/val: pool names; labels: {name: 0/1}."""

    labels: dict[str, int]
    train: list[str]
    val: list[str]

    def arrays(self, pool: Pool, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = pool.index()
        return pool.images[[idx[n] for n in names]], np.array([self.labels[n] for n in names], dtype=np.int64)


@dataclass
class RunResult:
    run_dir: Path
    names: list[str]
    scores: dict[str, np.ndarray]  # model name -> (N,) P(open)
    votes: Votes
    decision: np.ndarray  # (N,) final decision, seed labels win over the vote
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    n_student: int = 0  # pool images the second model learned from
    issues: dict[str, str] = field(default_factory=dict)  # image -> why its label looks wrong (queued first)


def load_inputs(cfg: Config, problems: Problems, progress: bool) -> tuple[Pool, Seeds]:
    """Decode the pool and resolve and split the seed labels (bad labels reported, not fatal)."""
    pool = load_pool(cfg.images, cfg.image_size, cfg.channels, problems, progress)
    if cfg.limit:
        pool = Pool(pool.root, pool.names[: cfg.limit], pool.images[: cfg.limit], pool.skipped_non_images)
    pairs = read_seed_labels(cfg.labels, cfg.classes, problems)
    labels = clean_seed_labels(pairs, pool.names, cfg.classes, problems, Path(cfg.labels).name)
    train, val = split_seeds(labels, cfg.n_train, cfg.seed)
    return pool, Seeds(labels, train, val)


def student_set(teacher_scores: np.ndarray, conf: float, max_n: int, exclude: set[int], seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Pool images the teacher is confident about: score >= conf (open) or <= 1 - conf (closed),
    not in ``exclude``, at most ``max_n`` chosen at random (seeded). Returns ((M,) indices, (M,) labels)."""
    s = np.asarray(teacher_scores)
    idx = np.flatnonzero((s >= conf) | (s <= 1 - conf))
    idx = np.array([i for i in idx if i not in exclude], dtype=np.int64)
    if len(idx) > max_n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_n, replace=False))
    return idx, (s[idx] >= 0.5).astype(np.int64)


def train_seed_models(cfg: Config, pool: Pool, seeds: Seeds, progress: bool, seconds: dict[str, float]
                      ) -> tuple[list[SeedModel], dict[str, np.ndarray], int]:
    """Teacher (first model): seeds, then FixMatch over the pool. Student (second model): seeds
    plus the teacher's confident pool labels. Returns the models, their (N,) pool scores and
    how many pool images the student learned from."""
    x_tr, y_tr = seeds.arrays(pool, seeds.train)
    x_va, y_va = seeds.arrays(pool, seeds.val)
    held_out = {pool.index()[n] for n in seeds.labels}
    models, scores, n_student = [], {}, 0
    for k, name in enumerate(cfg.models):
        t = time.perf_counter()
        x, y = x_tr, y_tr
        if k == 1 and cfg.student_max:
            idx, labels = student_set(scores[cfg.models[0]], cfg.teacher_conf, cfg.student_max, held_out, cfg.seed)
            x, y = np.concatenate([x_tr, pool.images[idx]]), np.concatenate([y_tr, labels])
            n_student = len(idx)
        model = create_seed_model(name, cfg, progress=progress)
        model.fit(x, y, x_va, y_va, x_unlabeled=pool.images)
        seconds[f"train {name} ({len(x)} labeled)"] = time.perf_counter() - t
        t = time.perf_counter()
        scores[name] = model.predict_proba(pool.images)[:, 1]
        seconds[f"score {name}"] = time.perf_counter() - t
        models.append(model)
    return models, scores, n_student


def final_decisions(pool: Pool, seeds: Seeds, votes: Votes) -> np.ndarray:
    """The vote, except that every seed-labeled image sits in its labeled folder."""
    decision = votes.decision.copy()
    idx = pool.index()
    for name, label in seeds.labels.items():
        decision[idx[name]] = label
    return decision


def check_labels(cfg: Config, pool: Pool, seeds: Seeds, decision: np.ndarray, rank: np.ndarray, progress: bool
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Flag likely-wrong labels among the seeds and the vote's decisions (cleanlab on out-of-fold
    probabilities) and send them to the front of the review queue.

    decision, rank: (N,) as after :func:`final_decisions`. Returns the new (decision, rank) and
    {image: why it was flagged}."""
    lc = cfg.label_check
    labeled = np.flatnonzero(decision != UNCLEAR)
    y = decision[labeled]
    if not lc.enabled or min(np.bincount(y, minlength=2)) < lc.folds:
        return decision, rank, {}
    is_seed = np.isin(labeled, [pool.index()[n] for n in seeds.labels])
    fit = cnn_fit_predict(cfg.channels, cfg.image_size, lc.epochs)
    with progress_bar(progress, total=lc.folds, desc="label check", unit="fold") as bar:
        probs = out_of_fold_probs(pool.images[labeled], y, fit, lc.folds, cfg.seed, lc.max_train, is_seed,
                                  progress=lambda _: bar.update(1))  # fmt: skip
    flagged, quality = find_issues(y, probs, lc.max_share)
    full_flag, full_quality = np.zeros(len(decision), bool), np.ones(len(decision))
    full_flag[labeled], full_quality[labeled] = flagged, quality
    issues = {pool.names[labeled[j]]: issue_note(bool(is_seed[j]), int(y[j]), cfg.classes, probs[j, 1])
              for j in np.flatnonzero(flagged)}  # fmt: skip
    return (*requeue(decision, rank, full_flag, full_quality), issues)


def seed_metrics(models: list[SeedModel], scores: dict[str, np.ndarray], pool: Pool, seeds: Seeds) -> dict[str, dict]:
    """Each model on the seed validation split: accuracy, precision, recall, F1, EER, AUC, params, seconds."""
    idx = pool.index()
    vi = np.array([idx[n] for n in seeds.val])
    y = np.array([seeds.labels[n] for n in seeds.val])
    return {
        m.name: {**classification_metrics(y, scores[m.name][vi]), "parameters": m.num_parameters(),
                 "train_seconds": round(m.fit_seconds, 1)}
        for m in models
    }  # fmt: skip


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing run folder unless ``overwrite`` (before any work is done)."""
    if out.exists() and not overwrite:
        raise ValueError(f"run folder {out} already exists; use --overwrite to replace it")
    if out.exists():
        from .review import review_work

        page, hand = review_work(out)
        if page or hand:
            raise ValueError(f"run folder {out} holds review work ({page} image(s) decided on the review page, {hand} "
                             "moved by hand) that a new run would undo; refusing. Retrain from it, or use another --out")


def prepare_output(out: Path) -> Path:
    """A fresh hidden folder next to ``out`` to build the run in."""
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left over from an interrupted run of ours
    partial.mkdir(parents=True)
    return partial


def write_manifest(folder: Path) -> None:
    """``manifest.json``, written last: sha256 of every top-level file and the image count of each
    class folder. A folder without it was never finished."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
    counts = {f: len(os.listdir(folder / f)) for f in sort.FOLDERS if (folder / f).is_dir()}
    manifest = {"complete": True, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files, "folders": counts}
    tmp = folder / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, folder / "manifest.json")


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


def run_pipeline(cfg: Config, out: Path, overwrite: bool = False, progress: bool = True) -> RunResult:
    """The whole ``run`` stage. Returns scores, votes and timings; writes everything under ``out``."""
    with output_lock(Path(out)):
        return _run_locked(cfg, Path(out), overwrite, progress)


def _run_locked(cfg: Config, out: Path, overwrite: bool, progress: bool) -> RunResult:
    t0 = time.perf_counter()
    check_output(out, overwrite)
    problems = Problems()
    pool, seeds = load_inputs(cfg, problems, progress)
    seconds: dict[str, float] = {"load": time.perf_counter() - t0}
    partial = prepare_output(out)
    try:
        result = _build_run(cfg, partial, pool, seeds, problems, progress, seconds)
        result.seconds["total"] = time.perf_counter() - t0
        (partial / "timings.json").write_text(json.dumps(result.seconds, indent=2))
        summary = _summary(cfg, seeds, result)
        summary["review_curve"] = report.review_curve_section(cfg.review_curve, partial, summary["counts"]["unclear"],
                                                              problems)  # fmt: skip
        report.write_report(partial, summary, result.metrics, problems.lines)
        write_manifest(partial)
        publish(partial, out)
        result.run_dir = out
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print_summary(result, problems, out)
    return result


def _build_run(cfg: Config, partial: Path, pool: Pool, seeds: Seeds, problems: Problems, progress: bool,
               seconds: dict[str, float]) -> RunResult:
    models, scores, n_student = train_seed_models(cfg, pool, seeds, progress, seconds)
    votes = vote(*scores.values(), margin=cfg.margin)
    t = time.perf_counter()
    decision = final_decisions(pool, seeds, votes)
    decision, rank, issues = check_labels(cfg, pool, seeds, decision, votes.rank, progress)
    votes = Votes(votes.decision, rank, votes.disagree)
    seconds["label check"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = seed_metrics(models, scores, pool, seeds)
    result = RunResult(partial, pool.names, scores, votes, decision, seconds, metrics, n_student, issues)
    write_outputs(cfg, partial, pool, seeds, result, problems)
    report.curves_plot({m.name: m.history for m in models}, partial / "curves.png")
    seconds["write"] = time.perf_counter() - t
    return result


def vote_rule(cfg: Config) -> str:
    """The decision rule in words, e.g. 'yolov8-cls >= 0.98 and resnet50 >= 0.60 (open), ...'."""
    m = check_margin(cfg.margin)
    hi = " and ".join(f"{n} ≥ {0.5 + x:.2f}" for n, x in zip(cfg.models, m))
    lo = " and ".join(f"{n} ≤ {0.5 - x:.2f}" for n, x in zip(cfg.models, m))
    return f"{hi} (open), or {lo} (closed)"


def _summary(cfg: Config, seeds: Seeds, res: RunResult) -> dict:
    counts = {f: int((res.decision == d).sum()) for f, d in (("0", 0), ("1", 1), ("unclear", UNCLEAR))}
    return {
        "pipeline": cfg.name, "rule": vote_rule(cfg), "counts": counts, "models": list(cfg.models),
        "n_student": res.n_student, "n_seed": len(seeds.labels),
        "n_train": len(seeds.train), "n_val": len(seeds.val), "agreement": float(1 - res.votes.disagree.mean()),
        "disagree": int(res.votes.disagree.sum()), "seconds": res.seconds, "issues": res.issues,
        "label_folds": cfg.label_check.folds,
    }  # fmt: skip


def write_outputs(cfg: Config, run_dir: Path, pool: Pool, seeds: Seeds, res: RunResult, problems: Problems) -> None:
    """Folders, predictions.csv, metrics.json, split.csv, config.yaml and the report's pictures."""
    placements = sort.plan(pool.names, res.decision, res.votes.rank)
    sort.materialize(placements, pool.root, run_dir)
    source = {n: "seed-train" for n in seeds.train} | {n: "seed-val" for n in seeds.val}
    names = list(res.scores)
    with open(run_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*sort.PREDICTION_FIELDS[:2], *names, *sort.PREDICTION_FIELDS[2:]])  # image, file, scores, ...
        for i, p in enumerate(placements):
            rank = int(res.votes.rank[i]) if p.folder == "unclear" else ""
            w.writerow([p.image, f"{p.folder}/{p.file}", *(f"{res.scores[n][i]:.6f}" for n in names), p.folder,
                        rank, source.get(p.image, "vote"), res.issues.get(p.image, "")])  # fmt: skip
    with open(run_dir / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "split"])
        for split, group in (("train", seeds.train), ("val", seeds.val)):
            w.writerows([n, seeds.labels[n], split] for n in group)
    (run_dir / "metrics.json").write_text(json.dumps(res.metrics, indent=2))
    dump_config(cfg, run_dir / "config.yaml")
    _pictures(cfg, run_dir, pool, res)


def _pictures(cfg: Config, run_dir: Path, pool: Pool, res: RunResult, per_folder: int = 48) -> None:
    a, b = list(res.scores.values())
    report.scatter_plot(a, b, res.decision, tuple(res.scores), check_margin(cfg.margin), run_dir / "scatter.png")
    rng = np.random.default_rng(cfg.seed)
    for folder, d in (("0", 0), ("1", 1), ("unclear", UNCLEAR)):
        idx = np.flatnonzero(res.decision == d)
        if d == UNCLEAR:
            idx = idx[np.argsort(res.votes.rank[idx])][:per_folder]
        else:
            idx = np.sort(rng.choice(idx, size=min(per_folder, len(idx)), replace=False)) if len(idx) else idx
        titles = [f"{a[i]:.2f}/{b[i]:.2f}" for i in idx]
        report.sample_grid(pool.images[idx], titles, run_dir / f"samples_{folder}.png")
    if res.issues:
        idx = [pool.index()[n] for n in res.issues]
        report.sample_grid(pool.images[idx], list(res.issues), run_dir / "samples_issues.png", cols=8)


def print_summary(res: RunResult, problems: Problems, out: Path) -> None:
    counts = {f: int((res.decision == d).sum()) for f, d in (("0", 0), ("1", 1), ("unclear", UNCLEAR))}
    n = len(res.decision)
    lines = [f"\nrun folder: {out}", f"{'folder':<10}{'images':>8}{'share':>9}"]
    lines += [f"{k + '/':<10}{v:>8}{100 * v / n:>8.1f}%" for k, v in counts.items()]
    lines += ["", f"{'model':<12}{'val acc':>9}{'val EER':>9}{'params':>9}{'train s':>9}"]
    lines += [f"{k:<12}{m['accuracy']:>9.3f}{m['eer']:>9.3f}{m['parameters'] / 1e6:>8.1f}M{m['train_seconds']:>9.0f}"
              for k, m in res.metrics.items()]  # fmt: skip
    lines += ["", f"total {res.seconds.get('total', 0):.0f} s; report: {out / 'report.md'}"]
    if problems.lines:
        lines.append(f"{len(problems.lines)} input problem(s), listed in the report")
    print("\n".join(lines), file=sys.stdout)
