"""The review-playing helpers of benchmarks/review_curve.py, on a run of real crops (no training)."""
from __future__ import annotations

import pytest

from benchmarks.review_curve import answer_all
from pseudolabel.retrain import label_sources
from pseudolabel.review import ReviewState

from .conftest import tree_digest


@pytest.mark.parametrize("pick", ["unclear", "same folder", "other folder", "a mix"])
def test_answer_all_answers_each_image_wherever_the_vote_put_it(fake_run, tmp_path, pick):
    where = ReviewState(fake_run, tmp_path / "none.csv").where()
    by = {f: sorted(i for i, g in where.items() if g == f) for f in ("0", "1", "unclear")}
    truth = {
        "unclear": {i: 1 for i in by["unclear"][:3]},
        "same folder": {i: 0 for i in by["0"][:3]},
        "other folder": {i: 0 for i in by["1"][:3]},
        "a mix": {by["unclear"][0]: 0, by["0"][0]: 1, by["1"][0]: 1},
    }[pick]
    before = tree_digest(fake_run)
    copy = tmp_path / "copy"
    answered = answer_all(fake_run, copy, truth)
    assert sorted(answered) == sorted(truth)
    assert tree_digest(fake_run) == before  # the run itself is never touched
    sources, _ = label_sources(copy, copy / "journal.csv")
    for image, label in truth.items():
        assert sources[image] == (str(label), "reviewed"), image
    others = {i: k for i, (_, k) in sources.items() if i not in truth}
    assert all(sources[i][0] == where[i] for i in others)  # nobody else moved
