"""What `run` holds between its steps: the seed labels resolved against the pool, and the results."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pseudolabel.core.vote import Votes
from pseudolabel.data.pool import Pool


@dataclass
class Seeds:
    """Seed labels resolved against the pool. train/val: pool names; labels: {name: class index}."""

    labels: dict[str, int]
    train: list[str]
    val: list[str]

    def arrays(self, pool: Pool, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = pool.index()
        return pool.images[[idx[n] for n in names]], np.array([self.labels[n] for n in names], dtype=np.int64)


@dataclass
class RunResult:
    run_dir: Path
    names: list[str]
    scores: dict[str, np.ndarray]  # model name -> (N, K) probabilities
    votes: Votes
    decision: np.ndarray  # (N,) final decision, seed labels win over the vote
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    n_student: int = 0  # pool images the second model learned from
    issues: dict[str, str] = field(default_factory=dict)  # image -> why its label looks wrong (queued first)
    chance: dict[str, dict] = field(default_factory=dict)  # model -> vote.chance_test on the validation split
    trusted: bool = True  # every seed model beat chance (vote_alpha): else the vote decided nothing
    label_check: dict = field(default_factory=dict)  # the label check's checker, its accuracy and whether it counted
    precision: dict = field(default_factory=dict)  # the vote rule on held-out seed labels: decided, right, min
