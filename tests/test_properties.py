"""Property-based tests (hypothesis) for voting and for seed-label parsing.

The default suite runs a few hundred examples; the slow suite (CI runs it) runs 1,000+ label
files through the parsers."""
from __future__ import annotations

import csv
import io
import json
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pseudolabel.core.vote import UNCLEAR, binary_probs, vote
from pseudolabel.data.images import Problems
from pseudolabel.data.labels import clean_seed_labels, read_seed_labels

CLASSES = ("closed", "open")
# scores as the models give them (float32), and margins that are exact in binary, so 0.5 + m, 0.5 - m and
# 1 - (0.5 + m) are all exact; off such margins the two forms differ by one rounding step at the very edge
score = st.floats(0.0, 1.0, allow_nan=False, width=32).map(float)
margin = st.integers(1, 511).map(lambda k: k / 1024)


@st.composite
def score_pairs(draw):
    n = draw(st.integers(0, 40))
    a = np.array(draw(st.lists(score, min_size=n, max_size=n)))
    b = np.array(draw(st.lists(score, min_size=n, max_size=n)))
    return a, b


def binary_vote(a: np.ndarray, b: np.ndarray, ma: float, mb: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-class vote of earlier releases, written out as it was: (N,) P(class 1) of each model and
    a margin each. Returns (decision, rank)."""
    decision = np.full(a.shape, UNCLEAR, dtype=np.int64)
    decision[(a <= 0.5 - ma) & (b <= 0.5 - mb)] = 0
    decision[(a >= 0.5 + ma) & (b >= 0.5 + mb)] = 1
    disagree = (a >= 0.5) != (b >= 0.5)
    rank = np.zeros(a.shape, dtype=np.int64)
    queued = np.flatnonzero(decision == UNCLEAR)
    confidence = np.abs((a + b) / 2 - 0.5)
    order = np.lexsort((queued, confidence[queued], ~disagree[queued]))
    rank[queued[order]] = np.arange(1, len(queued) + 1)
    return decision, rank


@settings(max_examples=400, deadline=None)
@given(score_pairs(), margin, margin)
@example(tuple(np.array(x, np.float32).astype(np.float64) for x in ([0.02, 0.98, 0.45], [0.45, 0.55, 0.02])), 0.48, 0.05)
# ^ the eyes margins, with float32 scores on their edges
def test_two_classes_vote_exactly_as_the_binary_rule(pair, ma, mb):
    """K = 2 with threshold = 0.5 + margin gives the binary rule's decisions and queue, image for image."""
    a, b = pair
    v = vote(binary_probs(a), binary_probs(b), threshold=(0.5 + ma, 0.5 + mb))
    decision, rank = binary_vote(a, b, ma, mb)
    np.testing.assert_array_equal(v.decision, decision)
    np.testing.assert_array_equal(v.rank, rank)


@st.composite
def prob_pairs(draw):
    n, k = draw(st.integers(0, 30)), draw(st.integers(2, 6))
    rows = st.lists(st.floats(0.001, 1.0), min_size=k, max_size=k)
    a = np.array(draw(st.lists(rows, min_size=n, max_size=n))).reshape(n, k)
    b = np.array(draw(st.lists(rows, min_size=n, max_size=n))).reshape(n, k)
    return a / a.sum(1, keepdims=True) if n else a, b / b.sum(1, keepdims=True) if n else b


@settings(max_examples=300, deadline=None)
@given(prob_pairs(), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_vote_properties(pair, ta, tb):
    a, b = pair
    v = vote(a, b, threshold=(ta, tb))
    d = v.decision
    # a decided image is one both models give the same top class, each at its threshold or more
    decided = d != UNCLEAR
    if decided.any():
        assert np.all(a[decided].argmax(1) == d[decided]) or np.all(a[decided, d[decided]] == a[decided].max(1))
        assert np.all(a[decided, d[decided]] >= ta) and np.all(b[decided, d[decided]] >= tb)
    # the queue is a permutation 1..U over exactly the unclear images, disagreements first
    assert sorted(v.rank[~decided].tolist()) == list(range(1, int((~decided).sum()) + 1))
    assert np.all(v.rank[decided] == 0)
    q = np.flatnonzero(~decided)
    if len(q):
        assert np.all(np.diff(v.disagree[q[np.argsort(v.rank[q])]].astype(int)) <= 0)
    # symmetric: swapping the models (and their thresholds) changes nothing
    assert np.array_equal(vote(b, a, threshold=(tb, ta)).decision, d)
    # a permutation of the classes permutes the decisions
    perm = np.arange(a.shape[1])[::-1] if len(a) else np.arange(0)
    if len(a):
        w = vote(a[:, perm], b[:, perm], threshold=(ta, tb)).decision
        ties = (np.sort(a, 1)[:, -1] == np.sort(a, 1)[:, -2]) | (np.sort(b, 1)[:, -1] == np.sort(b, 1)[:, -2])
        mapped = np.where(w >= 0, perm[np.clip(w, 0, None)], UNCLEAR)
        assert np.array_equal(mapped[~ties], d[~ties])


@settings(max_examples=200, deadline=None)
@given(prob_pairs(), st.floats(0.05, 0.8), st.floats(0.0, 0.2))
def test_a_higher_threshold_never_decides_more(pair, t, extra):
    a, b = pair
    low = vote(a, b, threshold=t).decision
    high = vote(a, b, threshold=min(t + extra, 1.0)).decision
    assert np.all((high == UNCLEAR) | (high == low))


# ----------------------------------------------------------------------------- label parsing

name_chars = string.ascii_letters + string.digits + "_-. éü日"
image_name = st.text(name_chars, min_size=1, max_size=12).map(lambda s: s.strip() + ".jpg").filter(lambda s: s != ".jpg")
label_value = st.sampled_from(["open", "closed", "Open", "CLOSED", "0", "1", "squint", "", "2"])


@st.composite
def label_pairs(draw):
    return draw(st.lists(st.tuples(image_name, label_value), max_size=25))


def expected(pairs: list[tuple[str, str]], pool: set[str]) -> dict[str, int]:
    """What a correct parser must keep: known labels, names in the pool, never an image under two classes."""
    norm = {"open": 1, "closed": 0, "1": 1, "0": 0}
    seen: dict[str, set[int]] = {}
    for name, value in pairs:
        lab = norm.get(value.strip().lower())
        if lab is not None and name in pool:
            seen.setdefault(name, set()).add(lab)
    return {n: s.pop() for n, s in seen.items() if len(s) == 1}


def write(tmp: Path, fmt: str, pairs: list[tuple[str, str]]) -> Path:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["image", "label"])
        w.writerows(pairs)
        path = tmp / "labels.csv"
        path.write_text(buf.getvalue())
    else:
        data: dict[str, list[str]] = {}
        for name, value in pairs:
            data.setdefault(value, []).append(name)
        path = tmp / "labels.json"
        path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def check_parse(tmp: Path, fmt: str, pairs: list[tuple[str, str]], pool_share: float) -> None:
    names = sorted({n for n, _ in pairs})
    pool = set(names[: int(len(names) * pool_share)]) | {"extra.jpg"}
    path = write(tmp, fmt, pairs)
    problems = Problems(quiet=True)
    raw = read_seed_labels(path, CLASSES, problems)
    got = clean_seed_labels(raw, sorted(pool), CLASSES, problems, str(path))
    assert got == dict(sorted(expected(pairs, pool).items()))
    assert all("\n" not in line for line in problems.lines)
    dropped = {n for n, _ in pairs} - set(got)
    for n in dropped:  # every dropped name is reported, by name, on one line
        assert any(n in line for line in problems.lines) or not any(v.strip().lower() in
                   ("open", "closed", "0", "1") for m, v in pairs if m == n), (n, problems.lines)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["csv", "json"]), label_pairs(), st.floats(0.0, 1.0))
def test_label_parsing(tmp_path, fmt, pairs, share):
    check_parse(tmp_path, fmt, pairs, share)


@pytest.mark.slow
@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["csv", "json"]), label_pairs(), st.floats(0.0, 1.0))
def test_label_parsing_many(tmp_path, fmt, pairs, share):
    check_parse(tmp_path, fmt, pairs, share)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200), st.sampled_from(["labels.csv", "labels.json"]))
def test_garbage_label_files_fail_cleanly(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    problems = Problems(quiet=True)
    try:
        read_seed_labels(path, CLASSES, problems)
    except ValueError as exc:  # the only allowed failure: one line naming the file
        assert str(exc).startswith(str(path)) and "\n" not in str(exc).strip()
    assert all("\n" not in line for line in problems.lines)
