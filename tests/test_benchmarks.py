"""The helpers of benchmarks/review_curve.py, on a run of real crops (no training), and of benchmarks/hard_dev.py."""
from __future__ import annotations

import pytest

from benchmarks.review_curve import answer_all
from pseudolabel.review.state import ReviewState
from pseudolabel.stages.retrain import label_sources

from tests.conftest import tree_digest


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


@pytest.mark.parametrize("scores, y, expected", [
    ([[0.9, 0.1, 0.6]], [0, 0, 1], [True, False, False]),  # one member: its own mistakes
    ([[0.9, 0.1, 0.4], [0.8, 0.2, 0.6]], [0, 0, 1], [True, False, False]),  # one of two right: not always wrong
    ([[0.9, 0.7, 0.4], [0.6, 0.5, 0.3]], [0, 0, 1], [True, True, True]),  # 0.5 counts as open
])
def test_always_wrong_needs_every_member_wrong(scores, y, expected):
    import numpy as np

    from benchmarks.hard_dev import always_wrong

    assert always_wrong(np.array(scores), np.array(y)).tolist() == expected


def test_run_scores_groups_members_by_run_folder(tmp_path):
    import numpy as np

    from benchmarks.hard_dev import run_scores

    for run, files in {"r0": {"x": 2, "y": 1}, "r1": {"x": 1}}.items():
        (tmp_path / run).mkdir()
        for name, n in files.items():
            np.savez(tmp_path / run / f"{name}.npz", **{f"m{i}": np.full(4, i / 10) for i in range(n)})
    got = run_scores(sorted(tmp_path.glob("*/*.npz")))
    assert {r.name: s.shape for r, s in got.items()} == {"r0": (3, 4), "r1": (1, 4)}


def test_threshold_sweep_after_a_resort_replays_the_two_seed_models(fake_run, tmp_path, capsys):
    """`quality.py --run RUN --sweep` replays the vote from the voters' kept scores, never the final
    model's (a re-sort adds those), and the vote at the run's own threshold gives the run's folders."""
    import numpy as np

    from benchmarks.quality import sweep
    from pseudolabel.config.schema import ResortConfig
    from pseudolabel.core.runstate import read_predictions
    from pseudolabel.core.vote import binary_probs
    from pseudolabel.stages.resort import resort_run

    rows = read_predictions(fake_run)
    dev = {r["image"]: int(r["decision"]) for r in rows if r["decision"] != "unclear"}  # the vote's own labels
    resort_run(fake_run, tmp_path / "j.csv", ResortConfig(), scores=binary_probs(np.linspace(0.0, 1.0, len(rows))))
    got = sweep(fake_run, dev, thresholds_a=(0.8, 0.9), thresholds_b=(0.8,))
    out = capsys.readouterr().out
    assert "| threshold yolov8-cls | threshold resnet50 |" in out and out.count("\n| 0.") == 2
    assert got[0]["macro_precision"] == 1.0  # threshold 0.8 is make_run's: the folders it made
    assert got[0]["unclear"] == np.mean([r["decision"] == "unclear" for r in rows])
