"""The checks that decide whether machines may decide: the vote's gate (chance, and its precision on held-out seed labels) and the label check."""
from __future__ import annotations

import sys

import numpy as np

from pseudolabel.config.schema import Config, norm_stats
from pseudolabel.core.progress import bar as progress_bar
from pseudolabel.core.vote import UNCLEAR, chance_test, vote
from pseudolabel.data.pool import Pool
from pseudolabel.stages.label_check import cnn_fit_predict, find_issues, issue_note, out_of_fold_probs, requeue
from pseudolabel.stages.results import Seeds
from pseudolabel.train.seeds import SeedModel


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
        from pseudolabel.models.weights import checker_weights

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
