"""``pseudolabel run``: seed models -> co-training -> vote -> folders and report.

The run is built in a hidden ``.<name>.partial`` folder next to the target and
renamed into place only when complete, so a half-written run never looks done.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import report, runstate, sort
from .cache import cache_dir
from .config import Config, dump_config
from .data import Pool, Problems, clean_seed_labels, load_pool, read_seed_labels, split_seeds
from .label_issues import cnn_fit_predict, find_issues, issue_note, out_of_fold_probs, requeue
from .metrics import model_metrics
from .models import SeedModel, create_seed_model, norm_stats
from .progress import bar as progress_bar
from .runstate import folder_counts, output_lock, prepare_output, publish, write_manifest
from .vote import UNCLEAR, Votes, chance_test, check_threshold, confident, vote


@dataclass
class Seeds:
    """Seed labels resolved against the pool. train/val: pool names; labels: {name: class index}."""

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
    scores: dict[str, np.ndarray]  # model name -> (N, K) probabilities
    votes: Votes
    decision: np.ndarray  # (N,) final decision, seed labels win over the vote
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    n_student: int = 0  # pool images the second model learned from
    issues: dict[str, str] = field(default_factory=dict)  # image -> why its label looks wrong (queued first)
    chance: dict[str, dict] = field(default_factory=dict)  # model -> vote.chance_test on the validation split
    trusted: bool = True  # every seed model beat chance (vote_alpha): else the vote decided nothing
    label_check: dict = field(default_factory=dict)  # the label check's checker, its accuracy and whether it counted
    precision: dict = field(default_factory=dict)  # the vote rule on held-out seed labels: decided, right, min


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
    if cfg.engine != "ray" or not hasattr(model, "module") or getattr(model, "encoder", None) is not None:
        return model.predict_proba(pool.images)  # a frozen model's head is scikit-learn's: scored here
    from . import ray_engine

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


def check_labels(cfg: Config, pool: Pool, seeds: Seeds, decision: np.ndarray, rank: np.ndarray, progress: bool,
                 first: SeedModel | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str], dict]:
    """Flag likely-wrong labels among the seeds and the vote's decisions (cleanlab on out-of-fold
    probabilities) and send them to the front of the review queue.

    The checker is the first seed model's frozen encoder with a logistic regression when that model is
    frozen (cheap: its embeddings are cached), else a small CNN (``label_check``, with the pipeline's
    pretrained weights when it has them). A checker is trusted only when its out-of-fold accuracy beats
    chance (``alpha``) and reaches ``min_accuracy``; an untrusted one flags nothing. A person's seed label
    is flagged only when the checker also gives it at most ``seed_max_p``.

    decision, rank: (N,) as after :func:`final_decisions`. Returns the new (decision, rank), {image: why it
    was flagged} and a summary for the report."""
    lc = cfg.label_check
    labeled = np.flatnonzero(decision != UNCLEAR)
    y = decision[labeled]
    if not lc.enabled or min(np.bincount(y, minlength=cfg.num_classes)) < lc.folds:
        why = "off" if not lc.enabled else f"fewer than {lc.folds} labeled images in a class"
        return decision, rank, {}, {"checked": 0, "trusted": False, "why": why}
    is_seed = np.isin(labeled, [pool.index()[n] for n in seeds.labels])
    if first is not None and hasattr(first, "oof_probs"):
        checker = f"{first.name}'s frozen encoder with a logistic regression"
        probs = first.oof_probs(np.asarray(pool.images[labeled]), y, lc.folds, cfg.seed)
    else:
        from .weights import checker_weights

        weights = checker_weights(cfg)
        checker = f"{lc.backbone} ({'from scratch' if weights == 'none' else weights}), {lc.epochs} epochs a fold"
        fit = cnn_fit_predict(lc, cfg.channels, cfg.hw, cfg.num_classes, norm_stats(cfg), weights)
        with progress_bar(progress, total=lc.folds, desc="label check", unit="fold") as bar:
            probs = out_of_fold_probs(pool.images[labeled], y, fit, lc.folds, cfg.seed, lc.max_train, is_seed,
                                      progress=lambda _: bar.update(1))  # fmt: skip
    gate = chance_test(y, probs)
    accuracy = gate["correct"] / max(gate["n"], 1)
    summary = {"checked": int(len(y)), "checker": checker, "accuracy": round(accuracy, 4), "p": gate["p"],
               "baseline": gate["baseline"], "folds": lc.folds, "min_accuracy": lc.min_accuracy, "alpha": lc.alpha,
               "seed_max_p": lc.seed_max_p}  # fmt: skip
    if gate["p"] > lc.alpha or accuracy < lc.min_accuracy:
        return decision, rank, {}, {**summary, "trusted": False,
                                    "why": f"its out-of-fold accuracy is {100 * accuracy:.1f} % (chance "
                                           f"{100 * gate['baseline']:.0f} %, p = {gate['p']:.2g}; it needs p <= "
                                           f"{lc.alpha} and {100 * lc.min_accuracy:.0f} %)"}  # fmt: skip
    flagged, quality = find_issues(y, probs, lc.max_share)
    strong = probs[np.arange(len(y)), y] <= lc.seed_max_p
    flagged &= ~is_seed | strong  # a person's label needs stronger evidence than a vote's
    full_flag, full_quality = np.zeros(len(decision), bool), np.ones(len(decision))
    full_flag[labeled], full_quality[labeled] = flagged, quality
    issues = {pool.names[labeled[j]]: issue_note(bool(is_seed[j]), int(y[j]), cfg.classes, probs[j])
              for j in np.flatnonzero(flagged)}  # fmt: skip
    summary.update(trusted=True, why="", flagged_seeds=int((flagged & is_seed).sum()),
                   flagged_votes=int((flagged & ~is_seed).sum()))
    return (*requeue(decision, rank, full_flag, full_quality), issues, summary)


def held_out(cfg: Config, models: list[SeedModel], scores: dict[str, np.ndarray], pool: Pool, seeds: Seeds
             ) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """((S,) true classes, {model: (S, K) probabilities none of them trained on}, how) of the seed labels:
    when every seed model is frozen (cheap to refit), out of fold over all of them (``vote_folds``), so a
    few labels a class give the checks their power; else the seed validation split, from ``scores``."""
    if all(hasattr(m, "oof_probs") for m in models):
        names = sorted(seeds.labels)
        x, y = seeds.arrays(pool, names)
        return y, {m.name: m.oof_probs(x, y, cfg.vote_folds, cfg.seed) for m in models}, "out of fold"
    idx = pool.index()
    vi = np.array([idx[n] for n in seeds.val], dtype=np.int64)
    y = np.array([seeds.labels[n] for n in seeds.val], dtype=np.int64)
    return y, {m.name: scores[m.name][vi] for m in models}, "validation split"


def chance_tests(y: np.ndarray, held: dict[str, np.ndarray], how: str) -> dict[str, dict]:
    """{model: :func:`vote.chance_test` of its held-out (S, K) probabilities against the (S,) true classes}."""
    return {name: {**chance_test(y, p), "how": how} for name, p in held.items()}


def vote_precision(cfg: Config, y: np.ndarray, held: dict[str, np.ndarray]) -> dict:
    """The vote rule applied to held-out seed labels: {"decided", "right", "min"}: how many it would
    decide, how many of those rightly, and the share it must reach (``vote_min_precision``)."""
    if len(held) != 2 or not len(y):
        return {"decided": 0, "right": 0, "min": cfg.vote_min_precision}
    v = vote(*held.values(), threshold=cfg.threshold)
    d = v.decision >= 0
    return {"decided": int(d.sum()), "right": int((v.decision[d] == y[d]).sum()), "min": cfg.vote_min_precision}


def voters_trusted(cfg: Config, chance: dict[str, dict], precision: dict | None = None) -> bool:
    """Whether every seed model beats chance at ``cfg.vote_alpha`` and the vote rule is right often enough on
    the held-out seed labels it decides (``vote_min_precision``); a line on stderr when not."""
    weak = [f"{m} ({c['correct']} of {c['n']} held-out seed labels right ({c.get('how', 'validation split')}), "
            f"p = {c['p']:.2g})" for m, c in chance.items() if c["p"] > cfg.vote_alpha]  # fmt: skip
    if weak and cfg.vote_alpha < 1.0:
        print(f"warning: no better than chance at vote_alpha {cfg.vote_alpha}: {', '.join(weak)}; the vote decides "
              "nothing and every pool image goes to unclear/", file=sys.stderr)  # fmt: skip
        return False
    p = precision or {}
    if p.get("decided") and p["right"] < p["min"] * p["decided"]:
        print(f"warning: on held-out seed labels the vote would decide {p['decided']} and be right on {p['right']} "
              f"({100 * p['right'] / p['decided']:.0f} %, below vote_min_precision {p['min']}); the vote decides "
              "nothing and every pool image goes to unclear/", file=sys.stderr)  # fmt: skip
        return False
    return True


def seed_metrics(cfg: Config, models: list[SeedModel], scores: dict[str, np.ndarray], pool: Pool, seeds: Seeds
                 ) -> dict[str, dict]:
    """Each model on the seed validation split (:func:`metrics.model_metrics`), with params and seconds."""
    idx = pool.index()
    vi = np.array([idx[n] for n in seeds.val])
    y = np.array([seeds.labels[n] for n in seeds.val])
    return {
        m.name: {**model_metrics(y, scores[m.name][vi], cfg.classes), "parameters": m.num_parameters(),
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


def run_pipeline(cfg: Config, out: Path, overwrite: bool = False, progress: bool = True) -> RunResult:
    """The whole ``run`` stage. Returns scores, votes and timings; writes everything under ``out``.
    Every model's pretrained weights are found first (:func:`weights.resolve_all`): missing ones are one
    line before anything is written."""
    from .weights import resolve_all

    resolve_all(cfg, "run")
    with output_lock(Path(out)):
        return _run_locked(cfg, Path(out), overwrite, progress)


def _run_locked(cfg: Config, out: Path, overwrite: bool, progress: bool) -> RunResult:
    t0 = time.perf_counter()
    check_output(out, overwrite)
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
    from .probe import embed
    from .study import write_eda

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


def vote_rule(cfg: Config) -> str:
    """The decision rule in words, e.g. 'both models' top class is the same, with yolov8-cls >= 0.98 and ...'."""
    t = check_threshold(cfg.threshold, len(cfg.models))
    return ("both models' top class is the same, with top probability " +
            " and ".join(f"{n} ≥ {x:.2f}" for n, x in zip(cfg.models, t)))


def _summary(cfg: Config, seeds: Seeds, res: RunResult) -> dict:
    return {
        "pipeline": cfg.name, "rule": vote_rule(cfg), "counts": folder_counts(res.decision, cfg.folders),
        "classes": list(cfg.classes), "folders": list(cfg.folders), "models": list(cfg.models),
        "threshold": list(check_threshold(cfg.threshold, len(cfg.models))),
        "n_student": res.n_student, "n_seed": len(seeds.labels),
        "n_train": len(seeds.train), "n_val": len(seeds.val), "agreement": float(1 - res.votes.disagree.mean()),
        "disagree": int(res.votes.disagree.sum()), "seconds": res.seconds, "issues": res.issues,
        "label_folds": cfg.label_check.folds, "metrics": res.metrics,
        "chance": res.chance, "vote_alpha": cfg.vote_alpha, "trusted": res.trusted, "label_check": res.label_check,
        "vote_precision": res.precision,
        "weights": weights_lines(cfg),
    }  # fmt: skip


def weights_lines(cfg: Config) -> dict[str, str]:
    """{model: one line on the weights it started from} for every model `run` builds."""
    from .weights import pipeline_models, resolve

    built = {m: resolve(spec, fam, arch, m) for m, _, spec, fam, arch in pipeline_models(cfg, "run")}
    lines = {m: "from scratch" for m in cfg.models}
    lines.update({m: f"{w.name} ({w.source}, sha256 {w.sha256[:12]}…)" for m, w in built.items()})
    return lines


def write_outputs(cfg: Config, run_dir: Path, pool: Pool, seeds: Seeds, res: RunResult, problems: Problems) -> None:
    """Folders, predictions.csv, scores/, run.json, metrics.json, split.csv, config.yaml and the pictures."""
    placements = sort.plan(pool.names, res.decision, res.votes.rank, cfg.folders)
    sort.materialize(placements, pool.root, run_dir, cfg.folders)
    source = {n: runstate.SEED_TRAIN for n in seeds.train} | {n: runstate.SEED_VAL for n in seeds.val}
    rows = [{"image": p.image, "file": f"{p.folder}/{p.file}", "decision": p.folder,
             "queue_rank": int(res.votes.rank[i]) if p.folder == runstate.UNCLEAR else "",
             "source": source.get(p.image, runstate.VOTE), "issue": res.issues.get(p.image, "")}
            for i, p in enumerate(placements)]  # fmt: skip
    (run_dir / "predictions.csv").write_text(runstate.predictions_text(rows))
    for name, probs in res.scores.items():
        runstate.save_scores(run_dir, name, probs)
    from .weights import pipeline_models, resolve

    weights = {m: resolve(spec, fam, arch, m).record() for m, _, spec, fam, arch in pipeline_models(cfg, "run")}
    runstate.RunInfo.new(cfg, weights).save(run_dir)
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
    t = check_threshold(cfg.threshold, len(cfg.models))
    report.scatter_plot(a, b, res.decision, tuple(res.scores), t, cfg.classes, run_dir / "scatter.png")
    rng = np.random.default_rng(cfg.seed)
    for d, folder in [*enumerate(cfg.folders), (UNCLEAR, runstate.UNCLEAR)]:
        idx = np.flatnonzero(res.decision == d)
        if d == UNCLEAR:
            idx = idx[np.argsort(res.votes.rank[idx])][:per_folder]
        else:
            idx = np.sort(rng.choice(idx, size=min(per_folder, len(idx)), replace=False)) if len(idx) else idx
        titles = [report.score_caption(cfg.classes, a[i], b[i]) for i in idx]
        report.sample_grid(pool.images[idx], titles, run_dir / f"samples_{folder}.png")
    if res.issues:
        idx = [pool.index()[n] for n in res.issues]
        report.sample_grid(pool.images[idx], list(res.issues), run_dir / "samples_issues.png", cols=8)


def print_summary(cfg: Config, res: RunResult, problems: Problems, out: Path) -> None:
    counts = folder_counts(res.decision, cfg.folders)
    names = dict(zip(cfg.folders, cfg.classes))
    n = len(res.decision)
    lines = [f"\nrun folder: {out}", f"{'folder':<24}{'images':>8}{'share':>9}"]
    lines += [f"{report.folder_title(k, names.get(k)):<24}{v:>8}{100 * v / n:>8.1f}%" for k, v in counts.items()]
    lines += ["", f"{'model':<12}{'val acc':>9}{'macro F1':>9}{'params':>9}{'train s':>9}"]
    lines += [f"{k:<12}{m['accuracy']:>9.3f}{m['macro_f1']:>9.3f}{m['parameters'] / 1e6:>8.1f}M{m['train_seconds']:>9.0f}"
              for k, m in res.metrics.items()]  # fmt: skip
    lines += ["", f"total {res.seconds.get('total', 0):.0f} s; report: {out / 'report.md'}"]
    if problems.lines:
        lines.append(f"{len(problems.lines)} input problem(s), listed in the report")
    print("\n".join(lines), file=sys.stdout)
