"""Two-model voting: a pure function from scores to decisions. No I/O."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNCLEAR = -1


@dataclass(frozen=True)
class Votes:
    """Result of :func:`vote` for N images.

    decision: (N,) int, 1 = open, 0 = closed, -1 = unclear.
    rank: (N,) int, 1-based position in the review queue for unclear images, 0 otherwise.
    disagree: (N,) bool, the two models fall on different sides of 0.5.
    """

    decision: np.ndarray
    rank: np.ndarray
    disagree: np.ndarray

    def counts(self) -> dict[str, int]:
        return folder_counts(self.decision)


def folder_counts(decision: np.ndarray) -> dict[str, int]:
    """{"0", "1", "unclear"}: how many of the (N,) decisions fall in each folder."""
    d = np.asarray(decision)
    return {"0": int((d == 0).sum()), "1": int((d == 1).sum()), "unclear": int((d == UNCLEAR).sum())}


def _as_scores(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2:
        if p.shape[1] != 2:
            raise ValueError(f"{name}: expected (N,) scores or (N, 2) probabilities, got shape {p.shape}")
        p = p[:, 1]
    if p.ndim != 1:
        raise ValueError(f"{name}: expected (N,) scores or (N, 2) probabilities, got shape {p.shape}")
    if p.size and (np.isnan(p).any() or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"{name}: scores must lie in [0, 1]")
    return p


def check_margin(margin: float | tuple[float, float]) -> tuple[float, float]:
    """A margin is one number for both models or a pair (model A, model B), each in [0, 0.5)."""
    pair = tuple(margin) if isinstance(margin, (tuple, list)) else (margin, margin)
    if len(pair) != 2 or not all(isinstance(m, (int, float)) and 0.0 <= m < 0.5 for m in pair):
        raise ValueError(f"margin must be in [0, 0.5), or a pair of such, got {margin!r}")
    return float(pair[0]), float(pair[1])


def vote(probs_a: np.ndarray, probs_b: np.ndarray, *, margin: float | tuple[float, float]) -> Votes:
    """Decide each image from two models' scores.

    probs_a, probs_b: (N,) P(open) or (N, 2) probabilities (column 1 = open).
    margin: one number, or (margin of A, margin of B) for models whose scores are
    scaled differently. An image is open (1) when each score is >= 0.5 + its margin,
    closed (0) when each is <= 0.5 - its margin, and unclear (-1) otherwise. The
    unclear queue puts disagreements first, then the least confident (mean score
    nearest 0.5).
    """
    ma, mb = check_margin(margin)
    a, b = _as_scores(probs_a, "probs_a"), _as_scores(probs_b, "probs_b")
    if a.shape != b.shape:
        raise ValueError(f"probs_a and probs_b differ in length: {a.shape[0]} vs {b.shape[0]}")
    decision = np.full(a.shape, UNCLEAR, dtype=np.int64)
    decision[(a <= 0.5 - ma) & (b <= 0.5 - mb)] = 0
    decision[(a >= 0.5 + ma) & (b >= 0.5 + mb)] = 1  # at margin 0 a score of exactly 0.5 is open, as everywhere
    disagree = (a >= 0.5) != (b >= 0.5)
    rank = np.zeros(a.shape, dtype=np.int64)
    queued = np.flatnonzero(decision == UNCLEAR)
    confidence = np.abs((a + b) / 2 - 0.5)
    order = np.lexsort((queued, confidence[queued], ~disagree[queued]))  # last key sorts first
    rank[queued[order]] = np.arange(1, len(queued) + 1)
    return Votes(decision=decision, rank=rank, disagree=disagree)
