"""``pseudolabel run``: seed models -> co-training -> vote -> folders and report.

The run is built in a hidden ``.<name>.partial`` folder next to the target and
renamed into place only when complete, so a half-written run never looks done.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from pseudolabel import report
from pseudolabel.config.schema import Config
from pseudolabel.core import runstate
from pseudolabel.core.runstate import output_lock, prepare_output, publish, write_manifest
from pseudolabel.core.vote import Votes, confident, vote
from pseudolabel.data.cache import cache_dir
from pseudolabel.data.images import Problems
from pseudolabel.data.labels import clean_seed_labels, read_seed_labels, split_seeds
from pseudolabel.data.pool import Pool, load_pool
from pseudolabel.stages.gates import chance_tests, check_labels, held_out, vote_precision, voters_trusted
from pseudolabel.stages.outputs import _summary, print_summary, seed_metrics, write_outputs
from pseudolabel.stages.results import RunResult, Seeds
from pseudolabel.train.seeds import SeedModel, create_seed_model


def load_inputs(cfg: Config, problems: Problems, progress: bool) -> tuple[Config, Pool, Seeds]:
    """Decode the pool and resolve and split the seed labels (bad labels reported, not fatal).
    With ``normalize: pool`` the returned config carries the pool's measured mean and std."""
    pool = load_pool(cfg.images, cfg.hw, cfg.channels, problems, progress, cache=cache_dir(cfg.pool_cache),
                     max_pixels=cfg.max_pixels)
    pairs = read_seed_labels(cfg.labels, cfg.classes, problems)
    labels = clean_seed_labels(pairs, pool.names, cfg.classes, problems, Path(cfg.labels).name)
    if cfg.limit:  # the first `limit` images, plus every seed-labeled one
        keep = np.array([i < cfg.limit or n in labels for i, n in enumerate(pool.names)])
        pool = Pool(pool.root, [n for n, k in zip(pool.names, keep) if k], pool.images[keep], pool.skipped_non_images)
    train, val = split_seeds(labels, cfg.n_train, cfg.seed, cfg.num_classes)
    if cfg.normalize == "pool":
        mean, std = channel_stats(pool.images)
        cfg = dataclasses.replace(cfg, normalize="given", mean=mean, std=std)
    return cfg, pool, Seeds(labels, train, val)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, C, H, W) uint8 images on the [0, 1] scale, a chunk at a time."""
    c = images.shape[1]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        sq += (x * x).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 1e-12))
    return tuple(round(float(v), 5) for v in mean), tuple(round(float(v), 5) for v in std)


def student_set(teacher_probs: np.ndarray, conf: float, max_n: int, exclude: set[int], seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Pool images the teacher is confident about: (N, K) probabilities whose top class has a
    probability >= conf (see :func:`vote.confident`), not in ``exclude``, at most ``max_n`` chosen at
    random (seeded). Returns ((M,) indices, (M,) labels: the teacher's top class)."""
    top, sure = confident(np.asarray(teacher_probs, dtype=np.float64), conf)
    idx = np.array([i for i in np.flatnonzero(sure) if i not in exclude], dtype=np.int64)
    if len(idx) > max_n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_n, replace=False))
    return idx, top[idx].astype(np.int64)


def train_seed_models(cfg: Config, pool: Pool, seeds: Seeds, progress: bool, seconds: dict[str, float]
                      ) -> tuple[list[SeedModel], dict[str, np.ndarray], int]:
    """Teacher (first model): seeds, then FixMatch over the pool. Student (second model): seeds
    plus the teacher's confident pool labels. Returns the models, their (N, K) pool probabilities
    and how many pool images the student learned from."""
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
        scores[name] = score_pool(cfg, model, pool)
        seconds[f"score {name}"] = time.perf_counter() - t
        models.append(model)
    return models, scores, n_student


def score_pool(cfg: Config, model: SeedModel, pool: Pool) -> np.ndarray:
    """(N, K) probabilities of ``model`` for the pool: in this process from the decoded pool, or with
    ``engine: ray`` on Ray Data actors reading the pool's files (they decoded here, so none may fail)."""
    if cfg.engine != "ray" or hasattr(model, "encoder"):
        return model.predict_proba(pool.images)  # a frozen model's head is scikit-learn's: scored here
    from pseudolabel.engines import ray as ray_engine

    paths = [pool.root / n for n in pool.names]
    kept, probs, bad = ray_engine.score(ray_engine.module_bytes(model.module), "module", paths, cfg.hw, cfg.channels,
                                        cfg.num_classes, cfg.ray, tta=model.tc.tta)  # fmt: skip
    if bad:
        raise ValueError(f"{bad[0][0]}: Ray could not score it ({bad[0][1]}); {len(bad)} such image(s)")
    return probs


def final_decisions(pool: Pool, seeds: Seeds, votes: Votes) -> np.ndarray:
    """The vote, except that every seed-labeled image sits in its labeled folder."""
    decision = votes.decision.copy()
    idx = pool.index()
    for name, label in seeds.labels.items():
        decision[idx[name]] = label
    return decision


def check_output(out: Path, overwrite: bool, images: Path | None = None) -> None:
    """Refuse, before any work is done: an ``out`` that is, lies inside or holds the images folder; an
    existing one unless ``overwrite``, and then only a run pseudolabel made or an empty folder."""
    if images is not None:
        runstate.check_apart(out, Path(images), "--out")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"run folder {out} already exists; use --overwrite to replace it")
    runstate.check_replaceable(out)
    if runstate.is_ours(out):
        from pseudolabel.review.state import review_work

        page, hand = review_work(out)
        if page or hand:
            raise ValueError(f"run folder {out} holds review work ({page} image(s) decided on the review page, {hand} "
                             "moved by hand) that a new run would undo; refusing. Retrain from it, or use another --out")


def run_pipeline(cfg: Config, out: Path, overwrite: bool = False, progress: bool = True) -> RunResult:
    """The whole ``run`` stage. Returns scores, votes and timings; writes everything under ``out``.
    Every model's pretrained weights are found first (:func:`weights.resolve_all`): missing ones are one
    line before anything is written."""
    from pseudolabel.models.weights import resolve_all

    resolve_all(cfg, "run")
    check_output(Path(out), overwrite, Path(cfg.images))  # before the lock file is made beside it
    with output_lock(Path(out)):
        return _run_locked(cfg, Path(out), overwrite, progress)


def _run_locked(cfg: Config, out: Path, overwrite: bool, progress: bool) -> RunResult:
    t0 = time.perf_counter()
    check_output(out, overwrite, Path(cfg.images))
    problems = Problems()
    cfg, pool, seeds = load_inputs(cfg, problems, progress)
    seconds: dict[str, float] = {"load": time.perf_counter() - t0}
    partial = prepare_output(out)
    try:
        result = _build_run(cfg, partial, pool, seeds, problems, progress, seconds)
        result.seconds["total"] = time.perf_counter() - t0
        (partial / "timings.json").write_text(json.dumps(result.seconds, indent=2))
        summary = _summary(cfg, seeds, result)
        summary["review_curve"] = report.review_curve_section(cfg.review_curve, partial, summary["counts"]["unclear"],
                                                              problems)  # fmt: skip
        summary["problems"] = problems.lines
        runstate.write_atomic(partial / report.RUN_SUMMARY, json.dumps(summary, indent=2))
        report.render(partial)
        write_manifest(partial)
        publish(partial, out)
        result.run_dir = out
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if exc.filename is None and exc.errno is not None:  # e.g. a full disk mid-write: say where it was
            raise OSError(exc.errno, exc.strerror, str(out)) from exc
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print_summary(cfg, result, problems, out)
    return result


def _build_run(cfg: Config, partial: Path, pool: Pool, seeds: Seeds, problems: Problems, progress: bool,
               seconds: dict[str, float]) -> RunResult:
    models, scores, n_student = train_seed_models(cfg, pool, seeds, progress, seconds)
    if cfg.eda:
        t = time.perf_counter()
        run_eda(cfg, partial, pool, seeds, models[0])
        seconds["EDA"] = time.perf_counter() - t
    y_held, held, how = held_out(cfg, models, scores, pool, seeds)
    chance, precision = chance_tests(y_held, held, how), vote_precision(cfg, y_held, held)
    trusted = voters_trusted(cfg, chance, precision)
    votes = vote(*scores.values(), threshold=cfg.threshold, trusted=trusted)
    t = time.perf_counter()
    decision = final_decisions(pool, seeds, votes)
    decision, rank, issues, checked = check_labels(cfg, pool, seeds, decision, votes.rank, progress, models[0])
    votes = Votes(votes.decision, rank, votes.disagree)
    seconds["label check"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = seed_metrics(cfg, models, scores, pool, seeds)
    result = RunResult(partial, pool.names, scores, votes, decision, seconds, metrics, n_student, issues, chance,
                       trusted, checked, precision)
    write_outputs(cfg, partial, pool, seeds, result, problems)
    report.curves_plot({m.name: m.history for m in models}, partial / "curves.png")
    seconds["write"] = time.perf_counter() - t
    return result


def run_eda(cfg: Config, run_dir: Path, pool: Pool, seeds: Seeds, model: SeedModel) -> dict:
    """The seed-labeled images against (at most ``eda_max`` of) the others, in ``model``'s embedding:
    :func:`study.write_eda` into ``run_dir``."""
    from pseudolabel.report.study import write_eda
    from pseudolabel.train.probe import embed

    idx = pool.index()
    lb = np.array(sorted(idx[n] for n in seeds.labels), dtype=np.int64)
    ulb = np.setdiff1d(np.arange(len(pool.names)), lb)
    if len(ulb) > cfg.eda_max:
        ulb = np.sort(np.random.default_rng(cfg.seed).choice(ulb, cfg.eda_max, replace=False))
    x_lb, x_ulb = np.asarray(pool.images[lb]), np.asarray(pool.images[ulb])
    if hasattr(model, "embed"):  # a frozen model: its cached embeddings
        emb_lb, emb_ulb = model.embed(x_lb), model.embed(x_ulb)
    else:
        emb_lb, emb_ulb = embed(model.module, x_lb).numpy(), embed(model.module, x_ulb).numpy()
    return write_eda(run_dir, x_lb, x_ulb, emb_lb, emb_ulb, [pool.names[i] for i in ulb], model.name)


