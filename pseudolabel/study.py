"""Two looks at the data as pictures, each a report section rendered from the JSON it writes:

- the **latent study** after ``retrain`` (``final/latent.json``, ``final/latent.png``): the pool's
  embeddings in the final model's first member (the input of its last linear layer, the VAE's latent
  mean with ``pretrain: vae``), projected to 2-D with PCA and coloured by folder and by seed label,
  and k-means with K clusters scored by purity against the labeled images;
- the **EDA** of ``run`` (``eda.json``, ``eda_hist.png``, ``eda_ood.png``, ``eda_nn.png``): labeled and
  unlabeled images side by side, with per-channel intensity histograms, the distance from each
  unlabeled image to its nearest labeled one in the seed model's embedding, and the unlabeled images
  farthest from every labeled one.

The computations are pure functions of arrays; the plots and JSON are written at the edge.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .runstate import write_atomic


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2): the first two principal components (centred; SVD, no scaling)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) embeddings, got shape {x.shape}")
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    out = xc @ vt[:2].T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Share of the labeled items (``labels`` >= 0) whose label is their cluster's most common one."""
    keep = np.asarray(labels) >= 0
    c, y = np.asarray(clusters)[keep], np.asarray(labels)[keep]
    if not len(y):
        return float("nan")
    return float(sum(np.bincount(y[c == k]).max() for k in np.unique(c)) / len(y))


def kmeans(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N,) cluster of each row: scikit-learn's k-means (k-means++, 4 starts) on standardised rows."""
    from sklearn.cluster import KMeans

    x = np.asarray(x, dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)


def nearest_distance(queries: np.ndarray, refs: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(M, D), (R, D) -> (M,) Euclidean distance from each query to its nearest reference row, chunked."""
    q, r = np.asarray(queries, np.float32), np.asarray(refs, np.float32)
    if not len(r):
        raise ValueError("no reference rows to measure distances to")
    r2 = (r * r).sum(1)
    out = np.empty(len(q), np.float32)
    for i in range(0, len(q), chunk):
        b = q[i : i + chunk]
        d2 = (b * b).sum(1)[:, None] - 2 * b @ r.T + r2[None]
        out[i : i + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


def channel_histograms(images: np.ndarray, bins: int = 32, chunk: int = 4096) -> np.ndarray:
    """(N, C, H, W) uint8 -> (C, bins) share of pixels per intensity bin, per channel (streamed)."""
    c = images.shape[1]
    counts = np.zeros((c, bins), np.float64)
    for i in range(0, len(images), chunk):
        b = np.asarray(images[i : i + chunk])
        for ch in range(c):
            counts[ch] += np.bincount((b[:, ch].ravel().astype(np.int64) * bins) // 256, minlength=bins)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def latent_study(emb: np.ndarray, folders: list[str], seed_labels: np.ndarray, classes: list[str],
                 folder_names: list[str], seed: int = 0) -> dict:
    """(N, D) embeddings, each image's folder (a class folder or "unclear"), its seed label (-1 for none).
    Returns {"xy": (N, 2) PCA projection, "clusters": (N,), and the JSON figures}."""
    k = len(classes)
    xy, clusters = pca_2d(emb), kmeans(emb, k, seed)
    folder_label = np.array([folder_names.index(f) if f in folder_names else -1 for f in folders])
    return {"xy": xy, "clusters": clusters, "folder_label": folder_label,
            "json": {"n": len(emb), "dims": int(emb.shape[1]), "k": k, "projection": "PCA",
                     "purity_seed": round(purity(clusters, seed_labels), 4), "n_seed": int((seed_labels >= 0).sum()),
                     "purity_folders": round(purity(clusters, folder_label), 4),
                     "n_folders": int((folder_label >= 0).sum())}}  # fmt: skip


def latent_plot(res: dict, seed_labels: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """Three panels: the PCA projection coloured by folder, by seed label and by k-means cluster."""
    from .report import _colours, _plt

    plt = _plt()
    xy, cols = res["xy"], _colours(len(classes))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), dpi=100)
    panels = [("by folder now", res["folder_label"], "unclear"), ("by seed label", seed_labels, "no seed label"),
              ("k-means clusters", res["clusters"], None)]  # fmt: skip
    for ax, (name, lab, rest) in zip(axes, panels):
        if rest is not None:
            off = lab < 0
            ax.scatter(xy[off, 0], xy[off, 1], s=3, c="#cccccc", label=rest, alpha=0.5)
        for j in range(len(classes)):
            on = lab == j
            label = classes[j] if rest is not None else f"cluster {j + 1}"
            ax.scatter(xy[on, 0], xy[on, 1], s=6 if name != "by seed label" else 14, color=cols[j], label=label,
                       alpha=0.8, edgecolors="k" if name == "by seed label" else "none", linewidths=0.3)  # fmt: skip
        ax.set(title=name, xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_latent(out: Path, emb: np.ndarray, folders: list[str], seed_labels: np.ndarray, classes: list[str],
                 folder_names: list[str], method: str, seed: int = 0) -> dict:
    """Run :func:`latent_study`, write ``out/latent.png`` and ``out/latent.json``; returns the JSON."""
    res = latent_study(emb, folders, seed_labels, classes, folder_names, seed)
    info = {**res["json"], "pretrain": method}
    latent_plot(res, seed_labels, classes, f"final model's embedding ({method} pretraining), {len(emb)} images, "
                f"PCA; k-means purity {info['purity_seed']:.2f} on seed labels", out / "latent.png")  # fmt: skip
    write_atomic(out / "latent.json", json.dumps(info, indent=2))
    return info


def latent_section(info: dict | None) -> list[str]:
    """The report section, from ``final/latent.json``."""
    if not info:
        return []
    return [
        "### Latent space",
        f"The final model's embedding of {info['n']} pool images ({info['dims']} dimensions, {info['pretrain']} "
        f"pretraining), projected to 2-D with PCA. k-means with K = {info['k']} clusters: purity "
        f"**{info['purity_seed']:.3f}** against the {info['n_seed']} seed labels and {info['purity_folders']:.3f} "
        f"against the {info['n_folders']} images in class folders (1.0: every cluster holds one class only).",
        "![latent space](final/latent.png)"]
