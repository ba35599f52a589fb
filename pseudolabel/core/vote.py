"""Two-model voting over K classes: a pure function from probabilities to decisions. No I/O.

Probabilities are (N, K) everywhere, K from the shape. For K = 2 the rule is the binary one of
earlier releases: decided as class 1 when each P(class 1) >= threshold, as class 0 when each
P(class 1) <= 1 - threshold (threshold = 0.5 + margin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNCLEAR = -1


@dataclass(frozen=True)
class Votes:
    """Result of :func:`vote` for N images.

    decision: (N,) int, the class index 0..K-1, or -1 = unclear.
    rank: (N,) int, 1-based position in the review queue for unclear images, 0 otherwise.
    disagree: (N,) bool, the two models' top classes differ.
    """

    decision: np.ndarray
    rank: np.ndarray
    disagree: np.ndarray


def as_probs(p: np.ndarray, name: str = "probs") -> np.ndarray:
    """Check (N, K) probabilities (K >= 2, each in [0, 1]) and return them as float64."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name}: expected (N, K) probabilities with K >= 2, got shape {p.shape}")
    if p.size and (np.isnan(p).any() or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"{name}: probabilities must lie in [0, 1]")
    return p


def top_class(p: np.ndarray) -> np.ndarray:
    """(N, K) -> (N,) index of the top probability; a tie goes to the higher class index (so for
    K = 2 a P(class 1) of exactly 0.5 is class 1, as a threshold of 0.5 on it would say)."""
    k = p.shape[1]
    return k - 1 - np.argmax(p[:, ::-1], axis=1)


def top_margin(p: np.ndarray) -> np.ndarray:
    """(N, K) -> (N,) top probability minus the second: 0 = undecided between two classes."""
    s = np.sort(p, axis=1)
    return s[:, -1] - s[:, -2]


def check_threshold(threshold: float | tuple[float, ...], n_models: int = 2) -> tuple[float, ...]:
    """A threshold is one number for every model or one per model, each in (0, 1]."""
    t = tuple(threshold) if isinstance(threshold, (tuple, list)) else (threshold,) * n_models
    if len(t) != n_models or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 < x <= 1.0
                                     for x in t):  # fmt: skip
        raise ValueError(f"threshold must be in (0, 1], one number or one per model ({n_models}), got {threshold!r}")
    return tuple(float(x) for x in t)


def confident(p: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) -> ((N,) top class, (N,) bool: is the model sure of it at ``threshold``).

    For K = 2 the test is made on P(class 1) alone (class 1: P >= t; class 0: P <= 1 - t), so
    two-class scores behave exactly as one score and its complement, whatever the rounding."""
    c = top_class(p)
    if p.shape[1] == 2:
        s = p[:, 1]
        return c, np.where(c == 1, s >= threshold, s <= 1.0 - threshold)
    return c, p[np.arange(len(p)), c] >= threshold


def chance_test(y: np.ndarray, probs: np.ndarray) -> dict:
    """Is a model better than chance on its validation images? (N,) true classes, (N, K)
    probabilities -> {"n", "correct", "baseline": the share of the most common class (what always
    naming it scores), "p": one-sided binomial P(at least ``correct`` right out of n at ``baseline``)}."""
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        return {"n": 0, "correct": 0, "baseline": 1.0, "p": 1.0}
    correct = int((top_class(as_probs(probs)) == y).sum())
    base = float(np.bincount(y).max() / n)
    if base >= 1.0:
        return {"n": n, "correct": correct, "baseline": base, "p": 1.0}
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(base) +
                 (n - i) * math.log1p(-base) for i in range(correct, n + 1)]  # fmt: skip
    top = max(log_terms)
    return {"n": n, "correct": correct, "baseline": base,
            "p": float(min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms)))}


def vote(probs_a: np.ndarray, probs_b: np.ndarray, *, threshold: float | tuple[float, float],
         trusted: bool = True) -> Votes:
    """Decide each image from two models' (N, K) probabilities.

    An image is class c when both models' top class is c and each top probability is >= that
    model's threshold (one number, or (threshold of A, threshold of B)); otherwise it is unclear
    (-1). ``trusted`` False (a model no better than chance, see :func:`chance_test`): nothing is
    decided, every image is queued. The unclear queue puts disagreements first, then the least
    confident: the smallest gap between the top two classes of the two models' mean probabilities.
    """
    ta, tb = check_threshold(threshold, 2)
    a, b = as_probs(probs_a, "probs_a"), as_probs(probs_b, "probs_b")
    if a.shape != b.shape:
        raise ValueError(f"probs_a and probs_b differ in shape: {a.shape} vs {b.shape}")
    ca, sure_a = confident(a, ta)
    cb, sure_b = confident(b, tb)
    decision = np.where((ca == cb) & sure_a & sure_b & trusted, ca, UNCLEAR).astype(np.int64)
    disagree = ca != cb
    queued = np.flatnonzero(decision == UNCLEAR)
    mean = (a + b) / 2
    if a.shape[1] == 2:  # binary: the distance of the mean P(class 1) from 0.5, from that column alone
        gap = np.abs(mean[:, 1] - 0.5)
    else:
        gap = top_margin(mean)
    order = np.lexsort((queued, gap[queued], ~disagree[queued]))  # last key sorts first
    rank = np.zeros(len(a), dtype=np.int64)
    rank[queued[order]] = np.arange(1, len(queued) + 1)
    return Votes(decision=decision, rank=rank, disagree=disagree)


def binary_probs(p1: np.ndarray) -> np.ndarray:
    """(N,) P(class 1) -> (N, 2) probabilities [1 - p, p]."""
    p1 = np.asarray(p1, dtype=np.float64)
    return np.stack([1.0 - p1, p1], axis=1)
