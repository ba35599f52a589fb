"""ReviewState without a browser: decisions, undo, conflicts, hand moves, status, roll-forward."""
import csv
import os

import pytest

from pseudolabel.review import Conflict, ReviewState
from tests.conftest import mark_issue


def state_for(run, tmp_path):
    return ReviewState(run, tmp_path / "labels" / "eyes-test" / "reviewed.csv")


def journal_rows(st):
    return list(csv.DictReader(open(st.journal.path)))


def test_decide_journals_then_moves(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    q = st.queue()
    first, second, third = (it["image"] for it in q["items"][:3])
    assert [it["rank"] for it in q["items"]] == sorted(it["rank"] for it in q["items"])
    st.decide(first, "1")
    st.decide(second, "0")
    st.decide(third, "unsure")
    where = st.where()
    assert (where[first], where[second], where[third]) == ("1", "0", "unclear")
    rows = journal_rows(st)
    assert [(r["image"], r["label"]) for r in rows] == [(first, "1"), (second, "0"), (third, "unsure")]
    assert rows[0]["from"] == "unclear" and rows[0]["file"] == st.items[first].file
    q2 = st.queue()
    assert q2["left"] == q["left"] - 2 and q2["total"] == q["total"]
    assert next(it for it in q2["items"] if it["image"] == third)["unsure"]


def test_undo_reverses_file_and_journal(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    image = st.queue()["items"][0]["image"]
    st.decide(image, "0")
    st.undo(image)
    assert st.where()[image] == "unclear"
    assert [r["label"] for r in journal_rows(st)] == ["0", "undo"]
    assert image not in st.journal.last_decisions()
    with pytest.raises(Conflict, match="no decision to undo"):
        st.undo(image)


def test_second_decision_on_the_same_image_is_a_conflict(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    image = st.queue()["items"][0]["image"]
    st.decide(image, "1")
    with pytest.raises(Conflict, match="already in 1/"):
        st.decide(image, "0")
    assert st.where()[image] == "1" and len(journal_rows(st)) == 1


def test_files_moved_by_hand_are_picked_up(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    item = st.items[st.queue()["items"][0]["image"]]
    os.rename(fake_run / "unclear" / item.file, fake_run / "0" / item.file)
    assert st.where()[item.image] == "0"
    assert item.image not in {it["image"] for it in st.queue()["items"]}
    with pytest.raises(Conflict):
        st.decide(item.image, "1")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "unclear/../config.yaml", "", None, 7])
def test_names_outside_the_run_are_refused(fake_run, tmp_path, bad):
    st = state_for(fake_run, tmp_path)
    with pytest.raises(KeyError):
        st.decide(bad, "1")
    with pytest.raises(KeyError):
        st.image_path(bad)


def test_bad_label_and_order(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    image = st.queue()["items"][0]["image"]
    with pytest.raises(ValueError, match="label"):
        st.decide(image, "2")
    with pytest.raises(ValueError, match="order"):
        st.queue("random")


@pytest.mark.parametrize("order", ["rank", "name", "score"])
def test_queue_orders(fake_run, tmp_path, order):
    st = state_for(fake_run, tmp_path)
    items = st.queue(order)["items"]
    keys = {"rank": lambda it: it["rank"], "name": lambda it: it["image"],
            "score": lambda it: sum(p[1] for p in it["scores"].values())}  # two classes: by mean P(class 1)
    assert [keys[order](it) for it in items] == sorted(keys[order](it) for it in items)


def test_status_reports_disagreement_between_journal_and_folders(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    image = st.queue()["items"][0]["image"]
    st.decide(image, "1")
    assert st.status()["problems"] == []
    item = st.items[image]
    os.rename(fake_run / "1" / item.file, fake_run / "0" / item.file)  # a person changes their mind by hand
    problems = st.status()["problems"]
    assert problems == [f"{image}: journal says 1, folder is 0/"]


def test_journaled_move_interrupted_by_a_crash_is_rolled_forward(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    image = st.queue()["items"][0]["image"]
    # the crash happened after the journal line was fsynced but before the rename
    st.journal.append({"time": "t", "image": image, "label": "0", "file": st.items[image].file, "from": "unclear"})
    assert st.where()[image] == "unclear"
    st2 = state_for(fake_run, tmp_path)
    assert st2.recovered == 1 and st2.where()[image] == "0"


def test_label_check_marks_reach_the_queue(fake_run, tmp_path):
    """A run with an `issue` column (the label check): the note rides with its queue item and is
    not mistaken for a model's score column."""
    first = mark_issue(fake_run, "vote says 1 (open); cross-validated P(open) = 0.04")
    state = ReviewState(fake_run, tmp_path / "journal.csv")
    assert state.models == ["yolov8-cls", "resnet50"]
    items = state.queue()["items"]
    assert items[0]["image"] == first and items[0]["issue"].startswith("vote says 1")
    assert all(it["issue"] == "" for it in items[1:])
