"""Binary classification metrics on P(open) scores. Pure numpy, no I/O."""
from __future__ import annotations

import numpy as np


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for labels y (N,) in {0, 1} and scores (N,); thresholds descending."""
    y, score = np.asarray(y).astype(bool), np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(yy)[distinct]
    fp = (distinct + 1) - tp
    pos, neg = max(yy.sum(), 1), max((~yy).sum(), 1)
    tpr = np.r_[0.0, tp / pos]
    fpr = np.r_[0.0, fp / neg]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve; nan when only one class is present."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.trapezoid(tpr, fpr))


def eer(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold: where the false accept rate (closed scored open)
    equals the false reject rate (open scored closed). nan when only one class is present."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan")
    fpr, tpr, thr = roc_curve(y, score)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2), float(min(thr[i], 1.0))


def classification_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, precision, recall, F1 (open = positive) at ``threshold``, plus EER and ROC AUC.

    y: (N,) labels in {0, 1}; score: (N,) P(open).
    """
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=np.float64)
    pred = (score >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    e, e_thr = eer(y, score)
    return {
        "n": int(len(y)),
        "threshold": float(threshold),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "eer": e,
        "eer_threshold": e_thr,
        "roc_auc": roc_auc(y, score),
    }
