"""Classification metrics on (N, K) probabilities, with the binary figures (EER, ROC AUC, figures at
a threshold on P(class 1)) for K = 2. Pure numpy, no I/O."""
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
    """Two classes: accuracy, precision, recall, F1 (class 1 = positive) at ``threshold``, plus EER
    and ROC AUC. y: (N,) labels in {0, 1}; score: (N,) P(class 1).
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


def confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def multiclass_metrics(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict:
    """K-class figures of (N, K) probabilities against (N,) true class indices: accuracy, top-2
    accuracy, per-class and macro precision, recall and F1, and the K x K confusion matrix (rows =
    true). Predictions are the top class (ties to the higher index, as in :func:`vote.top_class`)."""
    from pseudolabel.core.vote import top_class

    y, probs = np.asarray(y, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    if len(classes) != k:
        raise ValueError(f"{len(classes)} class names for {k} probability columns")
    pred = top_class(probs) if len(probs) else np.zeros(0, np.int64)
    cm = confusion(y, pred, k)
    per = {}
    for c, name in enumerate(classes):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per[name] = {"precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r) if p + r else 0.0),
                     "n": int(cm[c, :].sum())}  # fmt: skip
    top2 = np.argsort(-probs, axis=1, kind="stable")[:, :2] if len(probs) else np.zeros((0, 2), np.int64)
    present = [v for v in per.values() if v["n"]] or list(per.values())
    return {
        "n": int(len(y)), "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "top2_accuracy": float((top2 == y[:, None]).any(1).mean()) if len(y) else float("nan"),
        "macro_precision": float(np.mean([v["precision"] for v in present])),
        "macro_recall": float(np.mean([v["recall"] for v in present])),
        "macro_f1": float(np.mean([v["f1"] for v in present])),
        "per_class": per, "confusion": cm.tolist(), "classes": list(classes),
    }  # fmt: skip


def model_metrics(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict:
    """:func:`multiclass_metrics`; for K = 2 also :func:`classification_metrics` on P(class 1) at 0.5
    (precision, recall and F1 of class 1, EER, ROC AUC); for K > 2 precision, recall and F1 are the
    macro means, and EER and ROC AUC are absent."""
    out = multiclass_metrics(y, probs, classes)
    if np.shape(probs)[1] == 2:
        out.update(classification_metrics(y, np.asarray(probs)[:, 1], 0.5))
    else:
        out.update(precision=out["macro_precision"], recall=out["macro_recall"], f1=out["macro_f1"])
    return out
