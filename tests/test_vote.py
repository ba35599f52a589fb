import numpy as np
import pytest

from pseudolabel.vote import UNCLEAR, vote

# (score A, score B, margin, expected decision)
CASES = [
    (0.9, 0.95, 0.2, 1),
    (0.7, 0.7, 0.2, 1),  # exactly 0.5 + margin counts
    (0.69, 0.9, 0.2, UNCLEAR),  # one model not confident enough
    (0.1, 0.05, 0.2, 0),
    (0.3, 0.3, 0.2, 0),  # exactly 0.5 - margin counts
    (0.31, 0.1, 0.2, UNCLEAR),
    (0.9, 0.1, 0.2, UNCLEAR),  # confident disagreement
    (0.5, 0.5, 0.0, 1),  # margin 0: >= 0.5 is open
    (0.49, 0.2, 0.0, 0),
    (0.51, 0.49, 0.0, UNCLEAR),
    (0.95, 0.99, 0.45, 1),
    (0.94, 0.99, 0.45, UNCLEAR),
]


@pytest.mark.parametrize("a,b,margin,expected", CASES)
def test_vote_rule(a, b, margin, expected):
    v = vote(np.array([a]), np.array([b]), margin=margin)
    assert v.decision[0] == expected
    assert (v.rank[0] > 0) == (expected == UNCLEAR)


def test_vote_is_symmetric_and_takes_probability_matrices():
    rng = np.random.default_rng(0)
    a, b = rng.random(200), rng.random(200)
    v1 = vote(a, b, margin=0.2)
    v2 = vote(np.stack([1 - b, b], 1), np.stack([1 - a, a], 1), margin=0.2)
    np.testing.assert_array_equal(v1.decision, v2.decision)
    np.testing.assert_array_equal(v1.rank, v2.rank)


def test_queue_puts_disagreements_first_then_least_confident():
    a = np.array([0.60, 0.90, 0.55, 0.05, 0.45, 0.95, 0.65])
    b = np.array([0.60, 0.20, 0.40, 0.02, 0.45, 0.97, 0.75])
    v = vote(a, b, margin=0.2)
    queue = [int(i) for i in np.argsort(v.rank) if v.rank[i] > 0]
    # disagreements: 1 (mean .55) and 2 (mean .475): nearer 0.5 first -> 2, 1
    # then agreements that are not confident: 4 (.45), 0 (.60), 6 (.70)
    assert queue == [2, 1, 4, 0, 6]
    assert sorted(v.rank[v.rank > 0]) == list(range(1, 6))
    assert v.counts() == {"0": 1, "1": 1, "unclear": 5}


# per-model margins: (score A, score B, (margin A, margin B), expected)
PAIR_CASES = [
    (0.99, 0.6, (0.48, 0.1), 1),
    (0.97, 0.9, (0.48, 0.1), UNCLEAR),  # A not sure enough for its own margin
    (0.99, 0.55, (0.48, 0.1), UNCLEAR),
    (0.01, 0.4, (0.48, 0.1), 0),
    (0.01, 0.45, (0.48, 0.1), UNCLEAR),
    (0.99, 0.2, (0.48, 0.0), UNCLEAR),  # disagreement
]


@pytest.mark.parametrize("a,b,margin,expected", PAIR_CASES)
def test_vote_rule_with_a_margin_per_model(a, b, margin, expected):
    assert vote(np.array([a]), np.array([b]), margin=margin).decision[0] == expected
    # a pair of equal margins is the same as one number
    same = vote(np.array([a]), np.array([b]), margin=(margin[0], margin[0])).decision[0]
    assert same == vote(np.array([a]), np.array([b]), margin=margin[0]).decision[0]


@pytest.mark.parametrize(
    "a,b,margin,match",
    [
        ([0.5], [0.5], 0.5, "margin"),
        ([0.5], [0.5], -0.1, "margin"),
        ([0.5], [0.5], (0.1, 0.5), "margin"),
        ([0.5], [0.5], (0.1, 0.2, 0.3), "margin"),
        ([0.5, 0.2], [0.5], 0.1, "differ in length"),
        ([1.5], [0.5], 0.1, r"\[0, 1\]"),
        ([[0.2, 0.3, 0.5]], [[0.2, 0.8]], 0.1, "shape"),
    ],
)
def test_vote_rejects_bad_input(a, b, margin, match):
    with pytest.raises(ValueError, match=match):
        vote(np.array(a), np.array(b), margin=margin)
