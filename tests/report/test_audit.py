"""The audit: Wilson intervals against hand-computed values, the seeded blind draw, and the answers'
journal, moves, audit.json, report and status on fake runs whose truth we set."""
import json
import math

import numpy as np
import pytest

from pseudolabel.core import runstate
from pseudolabel.report import audit
from pseudolabel.review.state import Conflict, ReviewState, format_status


def wilson_reference(k, n, z=1.959963984540054):
    """Wilson (1927), written out from the formula: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    lo = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    hi = (p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    return lo, hi


@pytest.mark.parametrize("right, n, expected", [
    (49, 50, (0.8950, 0.9965)),  # the example: "49 of 50 right, 89.5–99.6 %"
    (50, 50, (0.9287, 1.0)),
    (0, 10, (0.0, 0.2775)),
    (5, 10, (0.2366, 0.7634)),
    (1, 1, (0.2065, 1.0)),
])  # fmt: skip
def test_wilson_interval_table(right, n, expected):
    lo, hi = audit.wilson(right, n)
    assert (round(lo, 4), round(hi, 4)) == expected
    assert np.allclose((lo, hi), wilson_reference(right, n), atol=1e-12)


def test_wilson_refuses_impossible_counts():
    with pytest.raises(ValueError, match="between 0 and n = 3"):
        audit.wilson(4, 3)
    assert all(math.isnan(v) for v in audit.wilson(0, 0))


def rows_of(folders: dict[str, int], source="vote"):
    return [{"image": f"{f}-{i:03d}.png", "decision": f, "source": source}
            for f, n in folders.items() for i in range(n)]


@pytest.mark.parametrize("folders, n, expected", [
    ({"0": 100, "1": 100}, 10, {"0": 5, "1": 5}),
    ({"0": 3, "1": 100}, 10, {"0": 3, "1": 7}),  # a small folder gives its rest to the others
    ({"a": 10, "b": 10, "c": 10}, 100, {"a": 10, "b": 10, "c": 10}),  # never more than there is
    ({"a": 10, "b": 10, "c": 10}, 4, {"a": 2, "b": 1, "c": 1}),
])  # fmt: skip
def test_sample_spreads_over_folders_and_is_seeded(folders, n, expected):
    rows = rows_of(folders) + rows_of({"unclear": 50}) + rows_of({"0": 20}, source="seed-train")
    got = audit.sample(rows, n, seed=3)
    assert {f: sum(g.startswith(f + "-") for g in got) for f in folders} == expected
    assert len(set(got)) == len(got) and all(not g.startswith("unclear") for g in got)
    assert got == audit.sample(rows, n, seed=3) and (n < 4 or got != audit.sample(rows, n, seed=4))


def test_sample_refuses_nothing_to_audit():
    with pytest.raises(ValueError, match="nothing to audit"):
        audit.sample(rows_of({"unclear": 5}), 3, 0)
    with pytest.raises(ValueError, match=">= 1"):
        audit.sample(rows_of({"0": 5}), 0, 0)


def test_audit_answers_give_the_folders_precision(fake_run, tmp_path):
    """Answer every audit image with a truth we choose (all but one of 0/ right, every other one of 1/): the
    figures, audit.json, the report section and --status say exactly that, and a wrong folder's
    image moves to the class the person gave, journaled."""
    st = ReviewState(fake_run, tmp_path / "j.csv", audit=(6, 0))  # the fake run has 5 in 0/, 3 in 1/
    q = st.audit_queue()
    assert set(q["items"][0]) == {"image"}  # blind: no score, no folder
    placed = {i: st.items[i].placed for i in st.audit_images}
    zeros = [i for i in st.audit_images if placed[i] == "0"]
    ones = [i for i in st.audit_images if placed[i] == "1"]
    assert len(zeros) == len(ones) == 3
    answers = {**{i: "0" for i in zeros[1:]}, zeros[0]: "1", **{i: "1" if k % 2 else "0" for k, i in enumerate(ones)}}
    for image, label in answers.items():
        st.audit_answer(image, label)
    with pytest.raises(Conflict, match="already answered"):
        st.audit_answer(zeros[1], "0")
    where = st.where()
    assert all(where[i] == label for i, label in answers.items())
    fig = json.loads((fake_run / "audit.json").read_text())["folders"]
    right1 = sum(answers[i] == "1" for i in ones)
    assert (fig["0"]["audited"], fig["0"]["right"], fig["1"]["audited"], fig["1"]["right"]) == (3, 2, 3, right1)
    assert np.allclose((fig["0"]["low"], fig["0"]["high"]), audit.wilson(2, 3))
    report = (fake_run / "report.md").read_text()
    assert "## Audit" in report and f"`0/`: 2 of 3 right, {100 * audit.wilson(2, 3)[0]:.1f}–" in report
    assert "0/: 2 of 3 right" in format_status(ReviewState(fake_run, tmp_path / "j.csv", readonly=True).status())
    assert st.audit_queue()["left"] == 0
    # the answers are review decisions like any other: retrain sees them as a person's labels
    rows = {r["image"]: r for r in runstate.read_predictions(fake_run)}
    decided = st.journal.last_decisions()
    assert runstate.provenance(rows[zeros[0]], "1", decided[zeros[0]]["label"]) == runstate.REVIEWED


def test_audit_refuses_images_outside_the_draw(fake_run, tmp_path):
    st = ReviewState(fake_run, tmp_path / "j.csv", audit=(4, 0))
    other = next(i for i, it in st.items.items() if it.placed == "0" and i not in st.audit_images)
    with pytest.raises(KeyError, match="not an image of this audit"):
        st.audit_answer(other, "1")
    with pytest.raises(ValueError, match="label must be one of 0, 1"):
        st.audit_answer(st.audit_images[0], "unsure")
