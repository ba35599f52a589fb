"""The run report's "What review buys" section, from a measured curve file."""
import json

import pytest

from pseudolabel.data import Problems
from pseudolabel.report import review_curve_section

GOOD = {"source": "bench", "points": [{"answers": 50, "dev_acc": 0.959, "dev_eer": 0.039, "held_out_acc": 0.97},
                                      {"answers": 0, "dev_acc": 0.952, "dev_eer": 0.047, "held_out_acc": 0.952}]}


@pytest.mark.parametrize(
    "content,expect,problem",
    [
        (json.dumps(GOOD), "| 0 | 95.20 % | 4.70 % |\n| 50 | 95.90 % | 3.90 % |", False),
        ("{not json", "could not be read", True),
        (json.dumps({"points": [{"answers": 0}]}), "could not be read", True),
        (None, "could not be read", True),  # the file is missing
    ],
)  # fmt: skip
def test_review_curve_section(tmp_path, content, expect, problem):
    curve = tmp_path / "curve.json"
    if content is not None:
        curve.write_text(content)
    problems = Problems()
    text = review_curve_section(str(curve), tmp_path, 123, problems)
    assert expect in text
    assert bool(problems.lines) == problem and (not problem or str(curve) in problems.lines[0])
    assert (tmp_path / "review_curve.png").exists() != problem
    if not problem:
        assert "123 images" in text and "![review curve](review_curve.png)" in text


def test_no_curve_configured(tmp_path):
    problems = Problems()
    assert "No measured curve" in review_curve_section(None, tmp_path, 5, problems) and not problems.lines
