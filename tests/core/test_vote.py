import numpy as np
import pytest

from pseudolabel.core.vote import UNCLEAR, binary_probs, top_class, vote

# K = 3: (probs of A, probs of B, threshold, expected decision)
K3 = [
    ([0.8, 0.1, 0.1], [0.7, 0.2, 0.1], 0.7, 0),
    ([0.1, 0.1, 0.8], [0.2, 0.1, 0.7], 0.7, 2),
    ([0.1, 0.7, 0.2], [0.1, 0.7, 0.2], 0.7, 1),  # exactly the threshold counts
    ([0.1, 0.69, 0.21], [0.1, 0.9, 0.0], 0.7, UNCLEAR),  # A not sure enough
    ([0.9, 0.05, 0.05], [0.05, 0.9, 0.05], 0.5, UNCLEAR),  # confident disagreement
    ([0.4, 0.35, 0.25], [0.5, 0.3, 0.2], 0.4, 0),  # plurality tops count at a low threshold
    ([0.4, 0.35, 0.25], [0.5, 0.3, 0.2], (0.3, 0.6), UNCLEAR),  # B under its own threshold
    ([0.4, 0.35, 0.25], [0.6, 0.3, 0.1], (0.3, 0.6), 0),
]


@pytest.mark.parametrize("a,b,threshold,expected", K3)
def test_vote_rule_for_three_classes(a, b, threshold, expected):
    v = vote(np.array([a]), np.array([b]), threshold=threshold)
    assert v.decision[0] == expected
    assert (v.rank[0] > 0) == (expected == UNCLEAR)


# K = 2, given as P(class 1): (score A, score B, threshold, expected)
K2 = [
    (0.9, 0.95, 0.7, 1),
    (0.7, 0.7, 0.7, 1),  # exactly the threshold counts
    (0.69, 0.9, 0.7, UNCLEAR),
    (0.1, 0.05, 0.7, 0),
    (0.3, 0.3, 0.7, 0),  # exactly 1 - threshold counts
    (0.31, 0.1, 0.7, UNCLEAR),
    (0.9, 0.1, 0.7, UNCLEAR),  # confident disagreement
    (0.99, 0.6, (0.98, 0.6), 1),
    (0.97, 0.9, (0.98, 0.6), UNCLEAR),
    (0.01, 0.4, (0.98, 0.6), 0),
    (0.01, 0.45, (0.98, 0.6), UNCLEAR),
]


@pytest.mark.parametrize("a,b,threshold,expected", K2)
def test_vote_rule_for_two_classes(a, b, threshold, expected):
    assert vote(binary_probs([a]), binary_probs([b]), threshold=threshold).decision[0] == expected


def test_queue_puts_disagreements_first_then_least_confident():
    a = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.5, 0.45, 0.05], [0.9, 0.05, 0.05], [0.4, 0.3, 0.3],
                  [0.1, 0.1, 0.8]])
    b = np.array([[0.6, 0.3, 0.1], [0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.95, 0.0, 0.05], [0.45, 0.3, 0.25],
                  [0.2, 0.1, 0.7]])
    v = vote(a, b, threshold=0.85)
    queue = [int(i) for i in np.argsort(v.rank) if v.rank[i] > 0]
    # disagreements: 1 (mean gap 0.4 - 0.5... top two 0.5 / 0.4) and 2 (0.475 / 0.45): the smaller gap first -> 2, 1;
    # then agreements not sure enough: 4 (gap 0.125), 0 (gap 0.3), 5 (gap 0.65)
    assert queue == [2, 1, 4, 0, 5]
    assert v.decision[3] == 0 and list(v.disagree) == [False, True, True, False, False, False]


def test_vote_is_symmetric_in_the_models():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(4), 200), rng.dirichlet(np.ones(4), 200)
    v1, v2 = vote(a, b, threshold=(0.5, 0.4)), vote(b, a, threshold=(0.4, 0.5))
    np.testing.assert_array_equal(v1.decision, v2.decision)
    np.testing.assert_array_equal(v1.rank, v2.rank)


def test_top_class_breaks_ties_to_the_higher_index():
    assert top_class(np.array([[0.5, 0.5], [0.2, 0.4], [0.4, 0.4], [0.6, 0.2]])).tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize(
    "a,b,threshold,match",
    [
        ([[0.5, 0.5]], [[0.5, 0.5]], 0.0, "threshold"),
        ([[0.5, 0.5]], [[0.5, 0.5]], 1.1, "threshold"),
        ([[0.5, 0.5]], [[0.5, 0.5]], (0.6, 0.7, 0.8), "threshold"),
        ([[0.5, 0.5], [0.2, 0.8]], [[0.5, 0.5]], 0.6, "differ in shape"),
        ([[1.5, 0.5]], [[0.5, 0.5]], 0.6, r"\[0, 1\]"),
        ([[0.2, 0.3, 0.5]], [[0.2, 0.8]], 0.6, "differ in shape"),
        ([0.2, 0.8], [0.2, 0.8], 0.6, r"\(N, K\)"),
    ],
)
def test_vote_rejects_bad_input(a, b, threshold, match):
    with pytest.raises(ValueError, match=match):
        vote(np.array(a), np.array(b), threshold=threshold)


def _scores_with(correct: int, y: np.ndarray, k: int) -> np.ndarray:
    """(N, K) probabilities whose top class is right for the first ``correct`` of ``y``, wrong after."""
    top = np.where(np.arange(len(y)) < correct, y, (y + 1) % k)
    return np.eye(k)[top] * 0.7 + 0.3 / k


# (true classes, how many the model gets right, K)
CHANCE = [
    (np.arange(50) % 10, 6, 10),  # CIFAR-10's seed split: 6 of 50 where 5 is chance
    (np.arange(50) % 10, 18, 10),  # 36 %: far above chance
    (np.array([0] * 9 + [1] * 8), 17, 2),  # the eyes split, all right
    (np.array([0] * 9 + [1] * 8), 12, 2),
    (np.array([0] * 30 + [1] * 10), 30, 2),  # always naming the common class is the baseline: p near 1
    (np.array([2] * 7), 7, 3),  # one class only: nothing to beat
]


@pytest.mark.parametrize("y,correct,k", CHANCE)
def test_chance_test_is_scipys_one_sided_binomial_tail(y, correct, k):
    from scipy.stats import binom

    from pseudolabel.core.vote import chance_test

    c = chance_test(y, _scores_with(correct, y, k))
    base = np.bincount(y).max() / len(y)
    assert c["n"] == len(y) and c["correct"] == correct and c["baseline"] == pytest.approx(base)
    want = 1.0 if base == 1.0 else binom.sf(correct - 1, len(y), base)
    assert c["p"] == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_an_untrusted_vote_decides_nothing_and_queues_every_image():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet([1, 1, 1], 40), rng.dirichlet([1, 1, 1], 40)
    a[:10] = b[:10] = [0.98, 0.01, 0.01]  # would be decided as class 0
    trusted, untrusted = vote(a, b, threshold=0.5), vote(a, b, threshold=0.5, trusted=False)
    assert (trusted.decision[:10] == 0).all()
    assert (untrusted.decision == UNCLEAR).all() and sorted(untrusted.rank) == list(range(1, 41))
    assert (untrusted.disagree == trusted.disagree).all()
