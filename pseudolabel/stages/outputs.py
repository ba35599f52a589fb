"""What `run` writes: folders, predictions.csv, scores, run.json, metrics, the pictures and the summary."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from pseudolabel import report
from pseudolabel.config.schema import Config, dump_config
from pseudolabel.core import runstate, sort
from pseudolabel.core.metrics import model_metrics
from pseudolabel.core.runstate import folder_counts
from pseudolabel.core.vote import UNCLEAR, check_threshold
from pseudolabel.data.images import Problems
from pseudolabel.data.pool import Pool
from pseudolabel.stages.results import RunResult, Seeds
from pseudolabel.train.seeds import SeedModel


def seed_metrics(cfg: Config, models: list[SeedModel], scores: dict[str, np.ndarray], pool: Pool, seeds: Seeds
                 ) -> dict[str, dict]:
    """Each model on the seed validation split (:func:`metrics.model_metrics`), with params and seconds; a frozen
    model by the probabilities its head gave the split before it refitted on every seed label."""
    idx = pool.index()
    vi = np.array([idx[n] for n in seeds.val])
    y = np.array([seeds.labels[n] for n in seeds.val])
    held = {m.name: getattr(m, "val_probs", None) for m in models}  # a frozen head refits on every seed label
    return {
        m.name: {**model_metrics(y, held[m.name] if held[m.name] is not None else scores[m.name][vi], cfg.classes),
                 "parameters": m.num_parameters(), "train_seconds": round(m.fit_seconds, 1)}
        for m in models
    }  # fmt: skip


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
    from pseudolabel.models.weights import resolve_all

    lines = {m: "from scratch" for m in cfg.models}
    lines.update({m: f"{w.name} ({w.source}, sha256 {w.sha256[:12]}…)" for m, w in resolve_all(cfg, "run").items()})
    return lines


def write_outputs(cfg: Config, run_dir: Path, pool: Pool, seeds: Seeds, res: RunResult, problems: Problems) -> None:
    """Folders, predictions.csv, scores/, run.json, metrics.json, split.csv, config.yaml and the pictures."""
    keep = changed_images(pool, res, problems)
    placements = sort.plan(pool.names, res.decision, res.votes.rank, cfg.folders)
    sort.materialize([p for p, k in zip(placements, keep) if k], pool.root, run_dir, cfg.folders)
    source = {n: runstate.SEED_TRAIN for n in seeds.train} | {n: runstate.SEED_VAL for n in seeds.val}
    rows = [{"image": p.image, "file": f"{p.folder}/{p.file}", "decision": p.folder,
             "queue_rank": int(res.votes.rank[i]) if p.folder == runstate.UNCLEAR else "",
             "source": source.get(p.image, runstate.VOTE), "issue": res.issues.get(p.image, "")}
            for i, p in enumerate(placements) if keep[i]]  # fmt: skip
    (run_dir / "predictions.csv").write_text(runstate.predictions_text(rows))
    for name, probs in res.scores.items():
        runstate.save_scores(run_dir, name, probs[keep])
    from pseudolabel.models.weights import resolve_all

    weights = {m: w.record() for m, w in resolve_all(cfg, "run").items()}  # resolved before the run: remembered
    runstate.RunInfo.new(cfg, weights).save(run_dir)
    with open(run_dir / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "split"])
        for split, group in (("train", seeds.train), ("val", seeds.val)):
            w.writerows([n, seeds.labels[n], split] for n in group)
    (run_dir / "metrics.json").write_text(json.dumps(res.metrics, indent=2))
    dump_config(cfg, run_dir / "config.yaml")
    _pictures(cfg, run_dir, pool, res)


def changed_images(pool: Pool, res: RunResult, problems: Problems) -> np.ndarray:
    """Images whose file changed while the run trained go to unclear/ (their scores are of the image that was
    read); images whose file is gone are left out of the run. One warning each. Returns the (N,) rows kept."""
    from pseudolabel.data.images import shown

    moved, gone = pool.changed()
    keep = np.ones(len(pool.names), bool)
    for i in moved:
        res.decision[i] = UNCLEAR
        problems.add(f"{shown(pool.root / pool.names[i])}: changed while the run trained; put in unclear/ (its "
                     "scores are of the image as it was read)")
    for i in gone:
        keep[i] = False
        res.decision[i] = UNCLEAR
        problems.add(f"{shown(pool.root / pool.names[i])}: gone from the images folder while the run trained; left "
                     "out of the run")
    return keep


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
