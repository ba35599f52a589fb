"""Likely-wrong labels: cleanlab's ``find_label_issues`` on out-of-fold probabilities.

The labeled set of a run is the seed labels (a person's) plus every image the vote
decided. A small CNN is trained K times, each time without one fold, and scores the
fold it did not see, so no image is judged by a model that learned its own label.
cleanlab then flags the labels those out-of-fold probabilities contradict.

Pure pieces: :func:`stratified_folds`, :func:`out_of_fold_probs` (given a fit-predict
function), :func:`find_issues` and :func:`requeue`. :func:`cnn_fit_predict` is the model.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pseudolabel.core.vote import UNCLEAR
from pseudolabel.train.common import stratified_folds

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def out_of_fold_probs(x: np.ndarray, y: np.ndarray, fit_predict: FitPredict, k: int = 4, seed: int = 0,
                      max_train: int | None = None, keep: np.ndarray | None = None,
                      progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, C, H, W) images, (N,) labels -> (N, K) probabilities, each row from a model that did
    not train on it. ``fit_predict(x_train, y_train, x_test, seed) -> (M, K)``.

    max_train: train each fold's model on at most this many of the other folds' images (random,
    seeded), always including those where the optional (N,) bool ``keep`` is True."""
    folds = stratified_folds(y, k, seed)
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(y), bool) if keep is None else np.asarray(keep, bool)
    probs = None
    for f in range(k):
        test = folds == f
        train = np.flatnonzero(~test)
        if max_train is not None and len(train) > max_train:
            must, rest = train[keep[train]], train[~keep[train]]
            train = np.sort(np.concatenate([must, rng.choice(rest, max(0, max_train - len(must)), replace=False)]))
        p = fit_predict(x[train], y[train], x[test], seed + f)
        if probs is None:
            probs = np.zeros((len(y), p.shape[1]), dtype=np.float64)
        probs[test] = p
        if progress:
            progress(f)
    return probs


def find_issues(labels: np.ndarray, pred_probs: np.ndarray, max_share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's label issues. labels: (N,) int class indices; pred_probs: (N, K) out-of-fold.

    Returns ((N,) bool mask of flagged labels, (N,) label quality in [0, 1], low = suspect).
    At most ``max_share`` of N are flagged, the lowest quality first."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(pred_probs):
        raise ValueError(f"labels and pred_probs differ in length: {len(labels)} vs {len(pred_probs)}")
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share must be in [0, 1], got {max_share!r}")
    quality = get_label_quality_scores(labels, pred_probs)
    mask = find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate")
    cap = int(max_share * len(labels))
    if mask.sum() > cap:
        keep = np.flatnonzero(mask)[np.argsort(quality[mask], kind="stable")[:cap]]
        mask = np.zeros_like(mask)
        mask[keep] = True
    return mask, quality


def requeue(decision: np.ndarray, rank: np.ndarray, flagged: np.ndarray, quality: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Send flagged images to the front of the review queue, least trustworthy first.

    decision, rank: (N,) as from :func:`pseudolabel.core.vote.vote`; flagged: (N,) bool;
    quality: (N,) label quality (low = first). Returns new (decision, rank): flagged images are
    unclear with ranks 1..F, the images that were unclear keep their order after them."""
    decision, rank = decision.copy(), rank.copy()
    fl = np.flatnonzero(flagged)
    fl = fl[np.argsort(quality[fl], kind="stable")]
    was = np.flatnonzero((decision == UNCLEAR) & ~flagged)
    was = was[np.argsort(rank[was], kind="stable")]
    decision[fl] = UNCLEAR
    rank[:] = 0
    rank[fl] = np.arange(1, len(fl) + 1)
    rank[was] = np.arange(len(fl) + 1, len(fl) + len(was) + 1)
    return decision, rank


def issue_note(seed: bool, label: int, classes: tuple[str, ...], probs: np.ndarray) -> str:
    """The reason shown for a flagged image, from its (K,) out-of-fold probabilities, e.g.
    "vote says 1 (open); cross-validated P(open) = 0.04, top: closed 0.96"."""
    top = int(np.argmax(probs))
    return (f"{'seed label' if seed else 'vote'} says {label} ({classes[label]}); "
            f"cross-validated P({classes[label]}) = {probs[label]:.2f}, top: {classes[top]} {probs[top]:.2f}")


def flagged_label(note: str) -> int:
    """The label an image had when it was flagged, read back from its :func:`issue_note`."""
    return int(note.split(" says ", 1)[1][0])


def cnn_fit_predict(lc, channels: int, image_size: tuple[int, int], num_classes: int, norm=None,
                    pretrained: str = "none") -> FitPredict:
    """A fit-predict function: ``lc.backbone`` (a LabelCheckConfig's) trained supervised for
    ``lc.epochs`` (no early stop), with K = ``num_classes`` outputs, from ``pretrained`` weights."""

    def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
        import torch

        from pseudolabel.config.schema import SeedTrainConfig
        from pseudolabel.models.backbones import create_backbone
        from pseudolabel.train.fixmatch import predict_probs
        from pseudolabel.train.supervised import fit_module

        torch.manual_seed(seed)
        net = create_backbone(lc.backbone, num_classes=num_classes, in_chans=channels, image_size=image_size,
                              norm=norm, pretrained=pretrained)
        tc = SeedTrainConfig(epochs=lc.epochs, batch_size=lc.batch_size, lr=lc.lr, patience=lc.epochs)
        fit_module(net, x_train, y_train, x_train[:64], y_train[:64], tc, seed, "label check", False)
        return predict_probs(net, x_test).numpy()  # streamed: x_test stays uint8

    return fit_predict
