"""ReviewState without a browser: decisions, undo, bulk actions, conflicts, hand moves, status,
the journal's intents and its run, kill points, and the audit."""
import csv
import os
import subprocess
import sys

import pytest

from pseudolabel.core import runstate
from pseudolabel.review.journal import FIELDS
from pseudolabel.review.state import CRASH_ENV, Conflict, ReviewState
from tests.conftest import ROOT, mark_issue, tree_digest


def state_for(run, tmp_path, **kw):
    return ReviewState(run, tmp_path / "labels" / "eyes-test" / "reviewed.csv", **kw)


def journal_rows(st):
    """The journal's image rows as written on disk (the done rows that close actions left out)."""
    return [r for r in csv.DictReader(open(st.journal.path)) if r["kind"] != "done"]


def unclear_images(st, n):
    return [it["image"] for it in st.queue()["items"][:n]]


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
    assert [(r["image"], r["label"], r["to"]) for r in rows] == [(first, "1", "1"), (second, "0", "0"),
                                                                 (third, "unsure", "unclear")]
    assert rows[0]["from"] == "unclear" and rows[0]["file"] == st.items[first].file and rows[0]["run"] == "fakerun"
    done = [r for r in csv.DictReader(open(st.journal.path)) if r["kind"] == "done"]
    assert [d["action"] for d in done] == [r["action"] for r in rows]  # every action closed after its moves
    q2 = st.queue()
    assert q2["left"] == q["left"] - 2 and q2["total"] == q["total"]
    assert next(it for it in q2["items"] if it["image"] == third)["unsure"]


def test_undo_reverses_file_and_journal(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    image = st.queue()["items"][0]["image"]
    st.decide(image, "0")
    st.undo(image)
    assert st.where()[image] == "unclear"
    assert [(r["label"], r["from"], r["to"]) for r in journal_rows(st)] == [("0", "unclear", "0"),
                                                                         ("undo", "0", "unclear")]
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


def test_bulk_is_all_or_nothing_and_undone_whole(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    images = unclear_images(st, 4)
    st.decide(images[2], "0")  # decided elsewhere first: the bulk action that names it must do nothing
    before = st.where()
    with pytest.raises(Conflict, match=f"{images[2]} is already in 0/"):
        st.decide_many(images, "1")
    with pytest.raises(KeyError):
        st.decide_many([images[0], "../config.yaml"], "1")
    assert st.where() == before and len(journal_rows(st)) == 1
    bulk = st.decide_many([images[0], images[1], images[3]], "1")
    assert all(st.where()[i] == "1" for i in (images[0], images[1], images[3]))
    assert st.history()[0] == {"action": bulk["action"], "kind": "bulk", "label": "1", "images": 3,
                               "first": images[0], "time": st.history()[0]["time"], "undone": False}
    res = st.undo(action=bulk["action"])
    assert sorted(res["undone"]) == sorted([images[0], images[1], images[3]])
    assert all(st.where()[i] == "unclear" for i in (images[0], images[1], images[3])) and st.where()[images[2]] == "0"
    assert st.history()[1]["undone"] and st.history()[0]["kind"] == "undo"
    with pytest.raises(Conflict, match="nothing left to undo"):
        st.undo(action=bulk["action"])


@pytest.mark.parametrize("images, label, match", [
    ([], "1", "non-empty list"), ("abc", "1", "non-empty list"), ([1, 2], "1", "non-empty list"),
    (["a", "a"], "1", "distinct"), (["x"] * 1001, "1", "at most 1000"), (["x"], "7", "label must be one of"),
])  # fmt: skip
def test_bad_bulk_requests_are_refused_before_anything_is_written(fake_run, tmp_path, images, label, match):
    st = state_for(fake_run, tmp_path)
    with pytest.raises(ValueError, match=match):
        st.decide_many(images, label)
    assert journal_rows(st) == []


def test_files_moved_by_hand_are_picked_up(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    item = st.items[st.queue()["items"][0]["image"]]
    os.rename(fake_run / "unclear" / item.file, fake_run / "0" / item.file)
    assert st.where()[item.image] == "0"
    assert item.image not in {it["image"] for it in st.queue()["items"]}
    with pytest.raises(Conflict):
        st.decide(item.image, "1")


def test_a_hand_move_after_a_finished_decision_is_never_undone_by_a_restart(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    image = st.queue()["items"][0]["image"]
    st.decide(image, "1")
    os.rename(fake_run / "1" / st.items[image].file, fake_run / "unclear" / st.items[image].file)  # changed their mind
    st2 = state_for(fake_run, tmp_path)
    assert st2.recovered == 0 and st2.where()[image] == "unclear"


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
    image, other = unclear_images(st, 2)
    st.decide(image, "1")
    st.decide(other, "0")
    st.undo(other)
    assert st.status()["problems"] == []
    item = st.items[image]
    os.rename(fake_run / "1" / item.file, fake_run / "0" / item.file)  # a person changes their mind by hand
    os.rename(fake_run / "unclear" / st.items[other].file, fake_run / "1" / st.items[other].file)
    assert st.status()["problems"] == [f"{image}: journal says 1, folder is 0/",
                                       f"{other}: journal says undone, folder is 1/"]


def test_journal_of_another_run_is_refused(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    st.decide(st.queue()["items"][0]["image"], "1")
    info = runstate.RunInfo.load(fake_run)
    runstate.RunInfo("otherrun", info.classes, info.folders, info.models).save(fake_run)  # as if another run
    with pytest.raises(ValueError) as err:
        state_for(fake_run, tmp_path)
    assert str(err.value) == (f"journal {st.journal.path} was written for run fakerun, not for this run otherrun; "
                              "give this run its own --journal")


def test_default_journal_lives_in_the_run(fake_run):
    from pseudolabel.review.state import journal_path_for

    info = runstate.RunInfo.load(fake_run)
    runstate.RunInfo(info.id, info.classes, info.folders, info.models, runstate.JOURNAL).save(fake_run)
    assert journal_path_for(fake_run) == fake_run / "journal.csv"


def test_status_only_reads(fake_run, tmp_path):
    """--status with an interrupted action, a cut-off journal line and a pending re-sort: it reports
    them and leaves every file's path, bytes and mtime as they were."""
    st = state_for(fake_run, tmp_path)
    image, other = unclear_images(st, 2)
    st.decide(image, "1")
    st.journal.begin("decide", [{"image": other, "label": "0", "file": st.items[other].file, "from": "unclear",
                                 "to": "0"}])  # a crash after the intent, before the move
    with open(st.journal.path, "a") as f:
        f.write("2026-01-01,fakerun,abc,decide,000001")  # a line cut off by the crash
    (fake_run / "resort-plan.json").write_text('{"moves": [], "predictions": ""}')
    before = tree_digest(tmp_path)
    out = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "review", str(fake_run), "--status", "--journal",
                          str(st.journal.path)], capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert tree_digest(tmp_path) == before
    assert f"disagreement: {other}: journal says 0, folder is unclear/" in out.stdout
    assert "was interrupted; the next `pseudolabel review` finishes it" in out.stdout
    assert "a re-sort was interrupted" in out.stdout


def test_legacy_journal_is_read_and_rewritten_with_our_columns(fake_run, tmp_path):
    st = state_for(fake_run, tmp_path)
    a, b = unclear_images(st, 2)
    path = tmp_path / "old.csv"
    for image, label in ((a, "1"), (b, "0")):
        os.rename(fake_run / "unclear" / st.items[image].file, fake_run / label / st.items[image].file)
    path.write_text("time,image,label,file,from\n"
                    f"t,{a},1,{st.items[a].file},unclear\nt,{b},0,{st.items[b].file},unclear\nt,{b},undo,{st.items[b].file},0\n")
    os.rename(fake_run / "0" / st.items[b].file, fake_run / "unclear" / st.items[b].file)
    old = ReviewState(fake_run, path)
    assert old.recovered == 0 and old.status()["problems"] == []
    assert {i: r["label"] for i, r in old.journal.last_decisions().items()} == {a: "1"}
    assert next(csv.reader(open(path))) == FIELDS
    old.decide(b, "1")
    assert old.where()[b] == "1"


def crash(fake_run, journal, step, code):
    """Run ``code`` on a ReviewState in a child process that the kill-point hook stops at ``step``."""
    script = (f"from pseudolabel.review.state import ReviewState\nst = ReviewState({str(fake_run)!r}, {str(journal)!r})\n"
              f"{code}\nprint('survived')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, CRASH_ENV: step}, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == -9 and "survived" not in out.stdout, out.stderr


@pytest.mark.parametrize("step", ["intent", "move"])
@pytest.mark.parametrize("what", ["decide", "bulk", "undo", "bulk undo", "audit"])
def test_killed_at_each_step_the_restart_agrees_with_the_journal(fake_run, tmp_path, what, step):
    """SIGKILL after the intent is journaled (no file moved yet) or after the first move: the next
    start finishes the action, journal and folders agree, and every image is where the action puts it."""
    journal = tmp_path / "j.csv"
    st = ReviewState(fake_run, journal)
    images = unclear_images(st, 3)
    if what in ("undo", "bulk undo"):
        action = st.decide_many(images, "1")["action"] if what == "bulk undo" else st.decide(images[0], "0")["action"]
        undone = images if what == "bulk undo" else images[:1]
        code, expect = f"st.undo(action={action!r})", {i: "unclear" for i in undone}
    elif what == "audit":
        rows = runstate.read_predictions(fake_run)
        image = next(r["image"] for r in rows if r["decision"] == "0" and r["source"] == "vote")
        code, expect = f"st.audit_images = [{image!r}]\nst.audit_answer({image!r}, '1')", {image: "1"}
    elif what == "bulk":
        code, expect = f"st.decide_many({images!r}, '0')", {i: "0" for i in images}
    else:
        code, expect = f"st.decide({images[0]!r}, '1')", {images[0]: "1"}
    crash(fake_run, journal, step, code)
    after = ReviewState(fake_run, journal)
    assert after.status()["problems"] == [] and after.journal.pending() == {}
    assert {i: after.where()[i] for i in expect} == expect


def test_label_check_marks_reach_the_queue(fake_run, tmp_path):
    """A run with an `issue` column (the label check): the note rides with its queue item and is
    not mistaken for a model's score column."""
    first = mark_issue(fake_run, "vote says 1 (open); cross-validated P(open) = 0.04")
    state = ReviewState(fake_run, tmp_path / "journal.csv")
    assert state.models == ["yolov8-cls", "resnet50"]
    items = state.queue()["items"]
    assert items[0]["image"] == first and items[0]["issue"].startswith("vote says 1")
    assert all(it["issue"] == "" for it in items[1:])
