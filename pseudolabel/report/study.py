"""Two looks at the data as pictures, each a report section rendered from the JSON it writes:

- the **latent study** after ``retrain`` (``final/latent.json``, ``final/latent.png``): the pool's
  embeddings in the final model's first member as its pretraining left it, before any label (the
  input of its last linear layer; the VAE's latent mean with ``pretrain: vae``), projected to 2-D
  with PCA and coloured by folder and by seed label, and k-means with K clusters scored by purity
  against the labeled images;
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

from pseudolabel.core.runstate import write_atomic


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


def nearest_distance(queries: np.ndarray, refs: np.ndarray, chunk: int = 2048, exclude_self: bool = False
                     ) -> np.ndarray:
    """(M, D), (R, D) -> (M,) Euclidean distance from each query to its nearest reference row, chunked.
    ``exclude_self``: queries are the references themselves, and row i may not match itself."""
    q, r = np.asarray(queries, np.float32), np.asarray(refs, np.float32)
    if len(r) < 1 + exclude_self:
        raise ValueError(f"need at least {1 + exclude_self} reference rows to measure distances to, got {len(r)}")
    r2 = (r * r).sum(1)
    out = np.empty(len(q), np.float32)
    for i in range(0, len(q), chunk):
        b = q[i : i + chunk]
        d2 = (b * b).sum(1)[:, None] - 2 * b @ r.T + r2[None]
        if exclude_self:
            d2[np.arange(len(b)), np.arange(i, i + len(b))] = np.inf
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
    from pseudolabel.report.plots import _colours, _plt

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
    latent_plot(res, seed_labels, classes, f"the embedding after {method} pretraining, before any label: {len(emb)} "
                f"images, PCA; k-means purity {info['purity_seed']:.2f} on seed labels", out / "latent.png")  # fmt: skip
    write_atomic(out / "latent.json", json.dumps(info, indent=2))
    return info


def latent_section(info: dict | None) -> list[str]:
    """The report section, from ``final/latent.json``."""
    if not info:
        return []
    return [
        "### Latent space",
        f"What the pretraining alone learned: the embedding of {info['n']} pool images ({info['dims']} dimensions) "
        f"after {info['pretrain']} pretraining, before any label was seen, projected to 2-D with PCA. k-means "
        f"with K = {info['k']} clusters: purity "
        f"**{info['purity_seed']:.3f}** against the {info['n_seed']} seed labels and {info['purity_folders']:.3f} "
        f"against the {info['n_folders']} images in class folders (1.0: every cluster holds one class only).",
        "![latent space](final/latent.png)"]


def eda(x_lb: np.ndarray, x_ulb: np.ndarray, emb_lb: np.ndarray, emb_ulb: np.ndarray) -> dict:
    """Labeled against unlabeled: (N, C, H, W) uint8 images and their (N, D) embeddings. Returns
    {"hist_lb", "hist_ulb": (C, bins) pixel shares; "d_ulb": (M,) distance of each unlabeled image to
    its nearest labeled one; "d_lb": (N,) each labeled image's to its nearest other labeled one}."""
    d_lb = nearest_distance(emb_lb, emb_lb, exclude_self=True) if len(emb_lb) > 1 else np.full(len(emb_lb), np.nan)
    return {"hist_lb": channel_histograms(x_lb), "hist_ulb": channel_histograms(x_ulb),
            "d_ulb": nearest_distance(emb_ulb, emb_lb), "d_lb": d_lb}  # fmt: skip


def eda_plots(res: dict, x_ood: np.ndarray, ood_titles: list[str], model: str, run_dir: Path) -> None:
    """eda_hist.png (intensity per channel), eda_nn.png (nearest-labeled distances), eda_ood.png (a grid)."""
    from pseudolabel.report.plots import _plt, sample_grid

    plt = _plt()
    c = res["hist_lb"].shape[0]
    fig, axes = plt.subplots(1, c, figsize=(4.2 * c, 3.2), dpi=100, squeeze=False)
    edges = np.linspace(0, 255, res["hist_lb"].shape[1] + 1)
    names = ["grey"] if c == 1 else ["red", "green", "blue"][:c] if c == 3 else [f"channel {i}" for i in range(c)]
    for ch, ax in enumerate(axes[0]):
        ax.stairs(res["hist_lb"][ch], edges, label="labeled (seed)", lw=2)
        ax.stairs(res["hist_ulb"][ch], edges, label="unlabeled", lw=2, ls="--")
        ax.set(title=f"{names[ch]} intensity", xlabel="pixel value", ylabel="share of pixels")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "eda_hist.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 3.4), dpi=100)
    both = np.r_[res["d_ulb"], res["d_lb"]]
    top = float(np.nanpercentile(both, 99)) if np.isfinite(both).any() else 1.0
    top = top if top > 0 else 1.0
    bins = np.linspace(0, top, 40)  # the farthest 1 % fall in the last bin: the grid below shows them
    d_lb = res["d_lb"][np.isfinite(res["d_lb"])]
    ax.hist(np.minimum(res["d_ulb"], top), bins, density=True, alpha=0.6, label="unlabeled → nearest labeled")
    ax.hist(np.minimum(d_lb, top), bins, density=True, alpha=0.6, label="labeled → nearest other labeled")
    ax.set(xlabel=f"distance in {model}'s embedding (last bin: {top:.1f} and beyond)", ylabel="density",
           title="How far the pool lies from the seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "eda_nn.png")
    plt.close(fig)
    sample_grid(x_ood, ood_titles, run_dir / "eda_ood.png", cols=8)


def write_eda(run_dir: Path, x_lb: np.ndarray, x_ulb: np.ndarray, emb_lb: np.ndarray, emb_ulb: np.ndarray,
              names_ulb: list[str], model: str, n_ood: int = 24) -> dict:
    """:func:`eda` and its pictures into ``run_dir``, and ``eda.json``; returns the JSON."""
    res = eda(x_lb, x_ulb, emb_lb, emb_ulb)
    far = np.argsort(-res["d_ulb"], kind="stable")[:n_ood]
    eda_plots(res, np.asarray(x_ulb[far]), [f"{names_ulb[i][-14:]} {res['d_ulb'][i]:.1f}" for i in far], model,
              run_dir)  # fmt: skip
    q = lambda d: {f"p{p}": round(float(np.nanpercentile(d, p)), 3) for p in (50, 95)} if np.isfinite(d).any() else {}  # noqa: E731
    info = {"model": model, "n_labeled": len(x_lb), "n_unlabeled": len(x_ulb),
            "mean_labeled": [round(float(m), 2) for m in (res["hist_lb"] * _centres(res)).sum(1)],
            "mean_unlabeled": [round(float(m), 2) for m in (res["hist_ulb"] * _centres(res)).sum(1)],
            "d_unlabeled": q(res["d_ulb"]), "d_labeled": q(res["d_lb"]),
            "share_beyond_labeled_p95": round(float((res["d_ulb"] > np.nanpercentile(res["d_lb"], 95)).mean()), 4)
            if np.isfinite(res["d_lb"]).any() else None,
            "ood": [names_ulb[i] for i in far]}  # fmt: skip
    write_atomic(run_dir / "eda.json", json.dumps(info, indent=2))
    return info


def _centres(res: dict) -> np.ndarray:
    bins = res["hist_lb"].shape[1]
    return ((np.arange(bins) + 0.5) * 256 / bins)[None]


def eda_section(info: dict | None) -> list[str]:
    """The report section, from ``eda.json``."""
    if not info:
        return []
    du, dl = info["d_unlabeled"], info["d_labeled"]
    beyond = info.get("share_beyond_labeled_p95")
    return [
        "## Labeled and unlabeled images",
        f"{info['n_labeled']} seed-labeled images against {info['n_unlabeled']} unlabeled ones. Mean pixel value "
        f"per channel: {', '.join(map(str, info['mean_labeled']))} labeled, "
        f"{', '.join(map(str, info['mean_unlabeled']))} unlabeled.",
        "![intensity histograms](eda_hist.png)",
        f"Distances in {info['model']}'s embedding (the input of its last layer): an unlabeled image lies a median "
        f"{du.get('p50', float('nan')):.2f} from its nearest seed image (95th percentile {du.get('p95', float('nan')):.2f}); "
        f"seed images lie a median {dl.get('p50', float('nan')):.2f} from each other."
        + (f" {100 * beyond:.1f} % of the unlabeled images are farther from every seed than 95 % of the seeds are "
           "from their nearest neighbour: the seeds do not cover them." if beyond is not None else ""),
        "![nearest labeled distance](eda_nn.png)",
        f"The {len(info['ood'])} unlabeled images farthest from every seed image (distance under each): label a "
        "few of these if they are a kind the seeds miss.",
        "![out of distribution](eda_ood.png)"]
