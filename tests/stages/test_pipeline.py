import numpy as np
import pytest

from pseudolabel.config.schema import Config
from pseudolabel.core.vote import UNCLEAR, Votes, binary_probs
from pseudolabel.data.pool import Pool
from pseudolabel.stages.outputs import vote_rule
from pseudolabel.stages.results import Seeds
from pseudolabel.stages.run import check_output, final_decisions, student_set

SCORES = binary_probs([0.99, 0.85, 0.5, 0.15, 0.01, 0.95, 0.3])


@pytest.mark.parametrize(
    "conf,max_n,exclude,expected_idx,expected_labels",
    [
        (0.8, 10, set(), [0, 1, 3, 4, 5], [1, 1, 0, 0, 1]),
        (0.9, 10, set(), [0, 4, 5], [1, 0, 1]),
        (0.9, 10, {0}, [4, 5], [0, 1]),  # seed images are excluded
        (0.5, 10, set(), [0, 1, 2, 3, 4, 5, 6], [1, 1, 1, 0, 0, 1, 0]),
        (0.8, 0, set(), [], []),
    ],
)
def test_student_set(conf, max_n, exclude, expected_idx, expected_labels):
    idx, labels = student_set(SCORES, conf, max_n, exclude, seed=0)
    assert idx.tolist() == expected_idx and labels.tolist() == expected_labels


def test_student_set_with_three_classes():
    p = np.array([[0.9, 0.05, 0.05], [0.3, 0.3, 0.4], [0.1, 0.85, 0.05], [0.05, 0.05, 0.9]])
    idx, labels = student_set(p, 0.8, 10, {3}, seed=0)
    assert idx.tolist() == [0, 2] and labels.tolist() == [0, 1]


def test_student_set_caps_at_random_and_is_seeded():
    s = binary_probs(np.linspace(0, 1, 1000))
    idx1, _ = student_set(s, 0.8, 50, set(), seed=3)
    idx2, _ = student_set(s, 0.8, 50, set(), seed=3)
    idx3, _ = student_set(s, 0.8, 50, set(), seed=4)
    assert len(idx1) == 50 and idx1.tolist() == idx2.tolist() and idx1.tolist() != idx3.tolist()
    assert ((s[idx1, 1] >= 0.8) | (s[idx1, 1] <= 0.2)).all()


def test_seed_labels_win_over_the_vote():
    pool = Pool(root=None, names=["a", "b", "c", "d"], images=np.zeros((4, 1, 2, 2), np.uint8))
    votes = Votes(decision=np.array([1, UNCLEAR, 0, UNCLEAR]), rank=np.array([0, 1, 0, 2]), disagree=np.zeros(4, bool))
    seeds = Seeds(labels={"a": 0, "b": 1}, train=["a"], val=["b"])
    assert final_decisions(pool, seeds, votes).tolist() == [0, 1, 0, UNCLEAR]
    assert votes.decision.tolist() == [1, UNCLEAR, 0, UNCLEAR]  # the vote itself is not modified


def test_check_output_refuses_existing_folder(tmp_path):
    check_output(tmp_path / "new", overwrite=False)
    check_output(tmp_path, overwrite=True)
    with pytest.raises(ValueError, match="already exists.*--overwrite"):
        check_output(tmp_path, overwrite=False)


def test_vote_rule_in_words():
    rule = vote_rule(Config(threshold=(0.98, 0.55)))
    assert rule == "both models' top class is the same, with top probability yolov8-cls ≥ 0.98 and resnet50 ≥ 0.55"


@pytest.mark.parametrize("alpha,trusted", [(0.05, False), (0.5, True), (1.0, True)])
def test_a_seed_model_no_better_than_chance_stops_the_vote(capsys, alpha, trusted):
    import dataclasses

    from pseudolabel.stages.gates import voters_trusted

    chance = {"yolov8-cls": {"n": 50, "correct": 18, "baseline": 0.1, "p": 1e-6},
              "resnet50": {"n": 50, "correct": 6, "baseline": 0.1, "p": 0.38}}
    assert voters_trusted(dataclasses.replace(Config(), vote_alpha=alpha), chance) == trusted
    err = capsys.readouterr().err
    assert ("resnet50 (6 of 50 held-out seed labels right (validation split), p = 0.38)" in err) == (not trusted)
    assert "yolov8-cls" not in err
