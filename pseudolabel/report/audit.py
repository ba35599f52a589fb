"""The audit: how precise are the machine-made folders, measured on the user's own data.

``pseudolabel review RUN --audit N`` shows N images drawn at random (seeded) from the folders the
machines filled, blind (no score, no folder). From the reviewer's answers each folder gets its
estimated precision with a 95 % Wilson score interval. Pure functions here; the review state
journals the answers and writes ``audit.json``.
"""
from __future__ import annotations

import math

import numpy as np

from pseudolabel.core.runstate import RESORTED, UNCLEAR, VOTE

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval
AUDIT_JSON = "audit.json"


def wilson(right: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``right`` / ``n``; (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= right <= n:
        raise ValueError(f"right must be between 0 and n = {n}, got {right}")
    p, z2 = right / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def sample(rows: list[dict], n: int, seed: int) -> list[str]:
    """N image names drawn from the images the machines placed (predictions.csv rows whose source is
    the vote or a re-sort, not unclear), spread evenly over the class folders (a folder smaller than
    its share gives its rest to the others), then shuffled so that the order tells nothing."""
    if n < 1:
        raise ValueError(f"--audit takes a number of images >= 1, got {n}")
    by_folder: dict[str, list[str]] = {}
    for r in rows:
        if r["source"] in (VOTE, RESORTED) and r["decision"] != UNCLEAR:
            by_folder.setdefault(r["decision"], []).append(r["image"])
    if not by_folder:
        raise ValueError("the machines placed no image in a class folder; there is nothing to audit")
    rng = np.random.default_rng(seed)
    pools = {f: list(rng.permutation(sorted(v))) for f, v in sorted(by_folder.items())}
    take = {f: 0 for f in pools}
    left = min(n, sum(len(v) for v in pools.values()))
    while left:
        open_ = [f for f in pools if take[f] < len(pools[f])]
        share = max(left // len(open_), 1)
        for f in open_:
            k = min(share, len(pools[f]) - take[f], left)
            take[f], left = take[f] + k, left - k
    picked = [str(x) for f in pools for x in pools[f][: take[f]]]
    return [str(x) for x in rng.permutation(picked)]


def figures(answers: list[tuple[str, str]], folders: tuple[str, ...]) -> dict[str, dict]:
    """{folder: {audited, right, precision, low, high}} from (machine folder, reviewer's folder) pairs;
    precision and the interval are None for a folder with no answer."""
    out = {}
    for f in folders:
        got = [a for m, a in answers if m == f]
        right = sum(a == f for a in got)
        low, high = wilson(right, len(got)) if got else (None, None)
        out[f] = {"audited": len(got), "right": right, "precision": right / len(got) if got else None,
                  "low": low, "high": high}  # fmt: skip
    return out


def describe(folder: str, fig: dict) -> str:
    """One line: "`1/`: 49 of 50 right, 89.5–99.6 %"."""
    if not fig["audited"]:
        return f"`{folder}/`: not audited yet"
    return (f"`{folder}/`: {fig['right']} of {fig['audited']} right, "
            f"{100 * fig['low']:.1f}–{100 * fig['high']:.1f} %")  # fmt: skip
