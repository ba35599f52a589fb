"""The run report: its "What review buys" section from a measured curve file, and the final model's section."""
import json

import pytest

from pseudolabel.data import Problems
from pseudolabel.report import FINAL_TITLE, RESORT_TITLE, review_curve_section, write_final_section

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


METRICS = {"counts": {"labeled": 3105, "seed-train": 79, "seed-val": 17, "reviewed": 0, "vote": 3026,
                      "unlabeled": 3998},
           "at_0.5": {"accuracy": 1.0}, "members": [{"pretrain_cached": True}, {"pretrain_cached": False}],
           "backbone": "tinycnn", "parameters": 144000, "tta": "flip+shift", "n": 17, "eer": 0.0, "roc_auc": 1.0,
           "seconds": 704, "pretrain_seconds": 150, "train_seconds": 520}
TOP, ISSUES = "# Run report\n\n## Where everything went\n\ntable\n", "## Likely label errors\n\nnone\n"
RESORTED = f"{RESORT_TITLE}\n\nmoved\n"


@pytest.mark.parametrize(
    "before, order",
    [
        (TOP + "\n" + ISSUES, ["## Where", FINAL_TITLE, "## Likely"]),  # after run: before the label errors
        (TOP + "\n" + RESORTED + "\n" + ISSUES, ["## Where", FINAL_TITLE, RESORT_TITLE, "## Likely"]),  # after resort
        (TOP + f"\n{FINAL_TITLE}\n\nold figures\n\n" + ISSUES, ["## Where", FINAL_TITLE, "## Likely"]),  # replaced
        ("", [FINAL_TITLE]),  # no report yet
    ],
)
def test_the_final_model_section_goes_in_once_and_in_order(tmp_path, before, order):
    md = tmp_path / "report.md"
    if before:
        md.write_text(before)
    write_final_section(md, METRICS)
    write_final_section(md, METRICS)  # a second retrain replaces it
    text = md.read_text()
    assert text.count(FINAL_TITLE) == 1 and "old figures" not in text
    assert [text.index(h) for h in order] == sorted(text.index(h) for h in order)
    assert "3105 labeled images (seed 79, reviewed 0, placed by machines 3026) and 3998 unlabeled" in text
    assert "17 images: accuracy 1.000" in text and "1 of 2 from the cache" in text and "the 17 seed labels held" in text
    assert all(line in text for line in before.splitlines() if line not in ("old figures",))
