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

from pseudolabel.data import Problems, clean_seed_labels, read_seed_labels
from pseudolabel.vote import UNCLEAR, vote

CLASSES = ("closed", "open")
score = st.floats(0.0, 1.0, allow_nan=False)
margin = st.floats(0.0, 0.4999)


@st.composite
def score_pairs(draw):
    n = draw(st.integers(0, 40))
    a = np.array(draw(st.lists(score, min_size=n, max_size=n)))
    b = np.array(draw(st.lists(score, min_size=n, max_size=n)))
    return a, b


@settings(max_examples=300, deadline=None)
@given(score_pairs(), margin, margin)
@example((np.array([0.0001]), np.array([0.0])), 0.4999, 0.25)  # a score on the float-rounded edge of its margin
def test_vote_properties(pair, ma, mb):
    a, b = pair
    v = vote(a, b, margin=(ma, mb))
    d = v.decision
    # a decided image is one both models put beyond their margin, on the same side
    is_open = (a >= 0.5 + ma) & (b >= 0.5 + mb)
    assert np.all((d == 1) == is_open)
    assert np.all((d == 0) == ((a <= 0.5 - ma) & (b <= 0.5 - mb) & ~is_open))  # at margin 0, exactly 0.5 is open
    # the queue is a permutation 1..U over exactly the unclear images
    unclear = d == UNCLEAR
    assert sorted(v.rank[unclear].tolist()) == list(range(1, int(unclear.sum()) + 1))
    assert np.all(v.rank[~unclear] == 0)
    # disagreements come before agreements in the queue
    q = np.flatnonzero(unclear)
    if len(q):
        order = q[np.argsort(v.rank[q])]
        flags = v.disagree[order].astype(int)
        assert np.all(np.diff(flags) <= 0)
    # symmetric: swapping the models (and their margins) changes nothing
    w = vote(b, a, margin=(mb, ma))
    assert np.array_equal(w.decision, d)
    # mirrored: P(open) -> 1 - P(open) swaps the classes
    m = vote(1 - a, 1 - b, margin=(ma, mb))
    clear = (np.abs(np.abs(a - 0.5) - ma) > 1e-9) & (np.abs(np.abs(b - 0.5) - mb) > 1e-9)  # off the float-rounded edges
    assert np.array_equal((m.decision == 1)[clear], (d == 0)[clear])
    assert np.array_equal((m.decision == 0)[clear], (d == 1)[clear])


@settings(max_examples=200, deadline=None)
@given(score_pairs(), margin, st.floats(0.0, 0.2))
def test_a_wider_margin_never_decides_more(pair, m, extra):
    a, b = pair
    narrow = vote(a, b, margin=m).decision
    wide = vote(a, b, margin=min(m + extra, 0.4999)).decision
    assert np.all((wide == UNCLEAR) | (wide == narrow))


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
