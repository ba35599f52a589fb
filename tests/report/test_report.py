"""The run report: its "What review buys" section from a measured curve file, and the final model's section."""
import json

import pytest

from pseudolabel.data.images import Problems
from pseudolabel.report.render import FINAL_TITLE, RESORT_TITLE, RUN_SUMMARY, render, review_curve_section

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
           "accuracy": 1.0, "macro_f1": 1.0, "members": [{"pretrain_cached": True}, {"pretrain_cached": False}],
           "backbone": "tinycnn", "parameters": 144000, "tta": "flip+shift", "n": 17, "eer": 0.0, "roc_auc": 1.0,
           "seconds": 704, "pretrain_seconds": 150, "train_seconds": 520}
SUMMARY = {"pipeline": "p", "rule": "a rule", "counts": {"red": 5, "green": 3, "blue": 1, "unclear": 1},
           "classes": ["red", "green", "blue"], "folders": ["red", "green", "blue"], "models": ["m1", "m2"],
           "n_student": 0, "n_seed": 6, "n_train": 3, "n_val": 3, "agreement": 0.9, "disagree": 1,
           "seconds": {"load": 1.0}, "issues": {}, "metrics": {"m1": {"accuracy": 0.5, "top2_accuracy": 0.9,
           "macro_precision": 0.4, "macro_recall": 0.5, "macro_f1": 0.45, "parameters": 1e6, "train_seconds": 3}},
           "problems": ["a.jpg: cannot read image"]}  # fmt: skip
RESORTED = {"accept": [0.9, 0.9, 0.8], "keep_agreed": 0.9, "kept_agreed": 2, "settled_flags": 0, "flags_left": 0,
            "before": {"red": 5, "green": 3, "blue": 1, "unclear": 1}, "after": {"red": 6, "green": 3, "blue": 1,
            "unclear": 0}, "movable": 4, "moved": {"unclear->red": 1}, "seconds": 1}  # fmt: skip


@pytest.mark.parametrize("final,resorted", [(False, False), (True, False), (False, True), (True, True)])
def test_the_report_is_rendered_from_each_stages_json(tmp_path, final, resorted):
    """run, retrain and resort each write their JSON; the report shows each stage's section once,
    in order, whatever ran, and a second render gives the same page."""
    (tmp_path / RUN_SUMMARY).write_text(json.dumps(SUMMARY))
    if final:
        (tmp_path / "final").mkdir()
        (tmp_path / "final" / "metrics.json").write_text(json.dumps(METRICS))
    if resorted:
        (tmp_path / "resort.json").write_text(json.dumps(RESORTED))
    text = render(tmp_path).read_text()
    assert render(tmp_path).read_text() == text
    order = ["## Where", *([FINAL_TITLE] if final else []), *([RESORT_TITLE] if resorted else []), "## Likely"]
    assert [text.index(h) for h in order] == sorted(text.index(h) for h in order)
    assert all(text.count(h) == 1 for h in order)
    assert "| red/ | 5 |" in text and "### blue/" in text and "- a.jpg: cannot read image" in text
    assert "| m1 | 0.5000 | 0.9000 |" in text  # K = 3: top-2 and macro figures, no EER
    assert ("3105 labeled images (seed 79, reviewed 0, placed by machines 3026) and 3998 unlabeled" in text) == final
    assert ("17 images: accuracy 1.000" in text and "1 of 2 from the cache" in text) == final
    assert ("Now, after `pseudolabel resort`:** `red/` 6, `green/` 3, `blue/` 1, `unclear/` 0" in text) == resorted
    assert ("red >= 0.9, green >= 0.9, blue >= 0.8" in text) == resorted


@pytest.mark.parametrize("p_m2,noted", [(0.38, True), (0.01, False)])
def test_the_report_says_when_a_model_no_better_than_chance_stopped_the_vote(tmp_path, p_m2, noted):
    chance = {"m1": {"n": 50, "correct": 18, "baseline": 0.1, "p": 1e-6},
              "m2": {"n": 50, "correct": 6, "baseline": 0.1, "p": p_m2}}
    summary = {**SUMMARY, "chance": chance, "vote_alpha": 0.05, "trusted": not noted}
    (tmp_path / RUN_SUMMARY).write_text(json.dumps(summary))
    text = render(tmp_path).read_text()
    assert ("**The vote decided nothing:** m2 got 6 of 50 held-out seed labels right (validation split), where "
            "always naming the most common class gets 10 % (p = 0.38)" in text) == noted
    assert "m1 got" not in text
