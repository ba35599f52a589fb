"""pseudolabel resort: the pure rule, then the file step on real crops with fixed final scores."""
import csv
import os

import numpy as np
import pytest

from pseudolabel.config.schema import ResortConfig
from pseudolabel.core import runstate, sort
from pseudolabel.core.runstate import output_lock
from pseudolabel.core.vote import binary_probs
from pseudolabel.review.journal import DONE, FIELDS
from pseudolabel.review.state import ReviewState, review_work
from pseudolabel.stages.resort import movable_images, resort, resort_run
from tests.conftest import mark_issue, tree_digest

U = -1
RULE = {"accept": (0.98, 0.998)}  # 0/ at P(class 1) <= 0.02, 1/ at >= 0.998
FOLDERS = ("0", "1", "unclear")


@pytest.mark.parametrize(
    "score,now,movable,expected",
    [
        (0.01, U, True, 0),  # confident closed leaves the queue
        (0.999, U, True, 1),  # confident open leaves the queue
        (0.02, U, True, 0),  # the thresholds themselves count
        (0.998, U, True, 1),
        (0.5, U, True, U),  # unsure stays unclear
        (0.99, U, True, U),  # 0.99 is not sure enough for 1/ (the strict side)
        (0.03, 0, True, U),  # a vote decision the final model doubts goes back for review
        (0.9995, 0, True, 1),  # and one it contradicts moves
        (0.9995, U, False, U),  # never: reviewed, moved by hand, or a seed label (movable_images decides)
        (0.001, 1, False, 1),
    ],
)
def test_resort_rule(score, now, movable, expected):
    d, rank = resort(binary_probs([score]), np.array([now]), np.array([movable]), np.array([False]), **RULE)
    assert d[0] == expected and rank[0] == (1 if expected == U else 0)


# K = 3: (probabilities, where it is now, voted, expected)
K3 = [
    ([0.96, 0.02, 0.02], U, False, 0),  # sure enough for class 0 (0.95)
    ([0.02, 0.9, 0.08], U, False, U),  # class 1 needs 0.99
    ([0.0, 0.995, 0.005], U, False, 1),
    ([0.1, 0.1, 0.8], U, False, 2),  # class 2 needs only 0.8
    ([0.1, 0.2, 0.7], 2, False, U),  # the final model doubts the vote's 2: back for review
    ([0.1, 0.2, 0.7], 2, True, 2),  # ... unless the vote put it there and it agrees at keep_agreed (0.6)
    ([0.5, 0.1, 0.4], 2, True, U),  # it does not give class 2 enough
]


@pytest.mark.parametrize("probs,now,voted,expected", K3)
def test_resort_rule_for_three_classes(probs, now, voted, expected):
    d, _ = resort(np.array([probs]), np.array([now]), np.array([True]), np.array([False]), accept=(0.95, 0.99, 0.8),
                  voted=np.array([voted]), keep_agreed=0.6)  # fmt: skip
    assert d[0] == expected


@pytest.mark.parametrize(
    "score,now,voted,keep,expected",
    [
        (0.95, 1, True, 0.9, 1),  # the final model agrees with the vote's 1/: it stays
        (0.05, 0, True, 0.9, 0),  # and with its 0/
        (0.9, 1, True, 0.9, 1),  # keep_agreed itself counts
        (0.85, 1, True, 0.9, U),  # agreeing, but not at keep_agreed: back for review
        (0.95, 0, True, 0.9, U),  # disagreeing with the vote: back for review
        (0.9995, 0, True, 0.9, 1),  # contradicting it beyond open_above: moves
        (0.95, 1, False, 0.9, U),  # placed by an earlier re-sort, not by the vote: the plain rule
        (0.95, U, True, 0.9, U),  # the vote left it unclear: nothing to keep
        (0.95, 1, True, 1.0, U),  # 1.0 turns keeping off
    ],
)
def test_resort_keeps_a_vote_the_final_model_agrees_with(score, now, voted, keep, expected):
    d, _ = resort(binary_probs([score]), np.array([now]), np.array([True]), np.array([False]),
                  voted=np.array([voted]), keep_agreed=keep, **RULE)  # fmt: skip
    assert d[0] == expected


@pytest.mark.parametrize(
    "source,issue,decided,put,now,settle,expected",
    [
        ("vote", "", False, "0", "0", True, True),  # placed by the vote, untouched
        ("final", "", False, "unclear", "unclear", True, True),  # placed by an earlier re-sort
        ("vote", "", True, "0", "0", True, False),  # decided on the page (even "unsure")
        ("vote", "", False, "0", "1", True, False),  # moved by hand: not where it was put
        ("seed-train", "", False, "0", "0", True, False),  # a seed label
        ("vote", "vote says 1 (open)", False, "unclear", "unclear", True, True),  # a flagged vote decision: settled
        ("vote", "vote says 1 (open)", False, "unclear", "unclear", False, False),  # unless settle_flagged is off
        ("seed-val", "seed label says 0 (closed)", False, "unclear", "unclear", True, False),  # flagged seed label
    ],
)
def test_movable_images(source, issue, decided, put, now, settle, expected):
    row = {"image": "a.jpg", "source": source, "decision": put, "issue": issue}
    got = movable_images([row], {"a.jpg": now}, {"a.jpg": {"label": "unsure"}} if decided else {}, settle)
    assert got.tolist() == [expected]


def test_queue_puts_flagged_first_then_least_sure():
    s = np.array([0.9, 0.5, 0.3, 0.001, 0.6, 0.2])
    now = np.full(6, U)
    first = np.array([False, False, False, False, False, True])
    d, rank = resort(binary_probs(s), now, np.ones(6, bool), first, **RULE)
    assert d.tolist() == [U, U, U, 0, U, U]
    assert rank.tolist() == [5, 2, 4, 0, 3, 1]  # flagged 0.2 first, then |s - 0.5| = 0, 0.1, 0.2, 0.4


@pytest.mark.parametrize(
    "scores,kwargs,match",
    [
        ([[0.5, 0.5], [-0.2, 1.2]], RULE, r"must lie in \[0, 1\]"),
        ([[0.5, 0.5], [np.nan, 0.5]], RULE, r"must lie in \[0, 1\]"),
        ([[0.5, 0.5]], RULE, "for N = 1"),
        ([[0.5, 0.5], [0.5, 0.5]], {"accept": (0.9, 0.9, 0.9)}, r"one threshold in \(0, 1\] per class \(2\)"),
        ([[0.5, 0.5], [0.5, 0.5]], {"accept": (0.0, 0.9)}, "per class"),
        ([[0.5, 0.5], [0.5, 0.5]], {**RULE, "keep_agreed": 0.0}, r"keep_agreed must be in \(0, 1\], got 0.0"),
        ([[0.5, 0.5], [0.5, 0.5]], {**RULE, "voted": np.ones(3, bool)}, "for N = 2"),
    ],
)
def test_resort_rejects_bad_input(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        resort(np.array(scores), np.full(2, U), np.ones(2, bool), np.zeros(2, bool), **kwargs)


def rows_of(run):
    return list(csv.DictReader(open(run / "predictions.csv")))


def fixed_scores(run, seed=1):
    """Fake final model: fixed P(class 1) in predictions.csv order, half of them confident."""
    n = len(rows_of(run))
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.5, rng.choice([0.001, 0.9999], n), rng.random(n))


def final_scores(run):
    """P(class 1) of the final model, as resort kept it in scores/final.npy."""
    return runstate.load_scores(run, "final")[:, 1]


@pytest.fixture
def touched(fake_run, tmp_path):
    """A run where a person decided three images on the page (1, 0, unsure), moved one by hand,
    and the label check flagged one vote decision. Returns (run, journal, {kind: image})."""
    flagged = mark_issue(fake_run, "vote says 0 (closed); cross-validated P(open) = 0.97")
    journal = tmp_path / "journal.csv"
    st = ReviewState(fake_run, journal)
    queue = [it["image"] for it in st.queue()["items"] if it["image"] != flagged]
    st.decide(queue[0], "1")
    st.decide(queue[1], "0")
    st.decide(queue[2], "unsure")
    hand = next(i for i, f in st.where().items() if f == "0")
    os.rename(fake_run / "0" / st.items[hand].file, fake_run / "1" / st.items[hand].file)
    return fake_run, journal, {"page1": queue[0], "page0": queue[1], "unsure": queue[2], "hand": hand,
                               "flagged": flagged}  # fmt: skip


def test_resort_moves_only_machine_placed_images(touched, tmp_path):
    run, journal, who = touched
    originals = tree_digest(tmp_path / "images")
    before = ReviewState(run, journal).where()
    page_hand = review_work(run, journal)
    rows_before = {r["image"]: r for r in rows_of(run)}
    scores = fixed_scores(run)
    for i, r in enumerate(rows_of(run)):  # the final model contradicts every person's decision: it must not matter
        if r["image"] == who["flagged"]:
            scores[i] = 0.5  # and is unsure of the flagged vote decision, which stays first in the queue
        elif r["image"] in who.values():
            scores[i] = 0.0001 if before[r["image"]] == "1" else 0.9999
        elif r["source"] == "vote" and r["decision"] in "01" and i % 3 == 0:  # and agrees, not surely, with some votes
            scores[i] = 0.95 if r["decision"] == "1" else 0.05
    rc = ResortConfig(accept=(0.95, 0.998))
    summary = resort_run(run, journal, rc, scores=binary_probs(scores))
    st = ReviewState(run, journal)
    after = st.where()
    assert {who[k]: after[who[k]] for k in who} == {who[k]: before[who[k]] for k in who}  # all left alone
    rows = {r["image"]: r for r in rows_of(run)}
    for i, r in enumerate(rows_of(run)):
        if r["image"] in who.values() or r["source"].startswith("seed"):
            continue
        s, was = scores[i], rows_before[r["image"]]
        agree = (was["decision"], s >= rc.keep_agreed, s <= 1 - rc.keep_agreed) in (("1", True, False), ("0", False, True))
        kept = was["source"] == "vote" and agree
        assert after[r["image"]] == (was["decision"] if kept else "0" if s <= 1 - rc.accept[0] else "1"
                                     if s >= rc.accept[1] else "unclear"), r  # fmt: skip
        assert final_scores(run)[i] == pytest.approx(s, abs=1e-6)
    assert review_work(run, journal) == page_hand  # the page's and the hand's work still count as such
    assert st.status()["problems"] == []
    assert tree_digest(tmp_path / "images") == originals
    assert summary["after"] == {f: sum(v == f for v in after.values()) for f in FOLDERS}
    assert summary["kept_agreed"] > 0 and f"({summary['kept_agreed']} images)" in (run / "report.md").read_text()
    assert (summary["settled_flags"], summary["flags_left"]) == (0, 1)
    q = st.queue()["items"]
    assert q[0]["image"] == who["flagged"] and [it["rank"] for it in q] == sorted(it["rank"] for it in q)
    assert rows[who["unsure"]]["queue_rank"] and "final" in st.models
    assert "## Re-sorted by the final model" in (run / "report.md").read_text() and (run / "resort.png").is_file()


@pytest.mark.parametrize(
    "score,settle,folder",
    [
        (0.001, True, "0"),  # the final model agrees with the flagged vote (closed): settled into 0/
        (0.9995, True, "1"),  # it sides with the label check: into 1/
        (0.5, True, "unclear"),  # unsure: it stays, first in the queue
        (0.001, False, "unclear"),  # settle_flagged off: left for a person whatever the score
    ],
)
def test_resort_settles_a_flagged_vote_decision(touched, score, settle, folder):
    run, journal, who = touched
    scores = np.full(len(rows_of(run)), 0.5)
    scores[[r["image"] for r in rows_of(run)].index(who["flagged"])] = score
    summary = resort_run(run, journal, ResortConfig(settle_flagged=settle, accept=(0.95, 0.998)),
                         scores=binary_probs(scores))
    st = ReviewState(run, journal)
    assert st.where()[who["flagged"]] == folder
    assert (summary["settled_flags"], summary["flags_left"]) == ((0, 1) if folder == "unclear" else (1, 0))
    assert f"the final model settled {summary['settled_flags']}" in (run / "report.md").read_text()
    if folder == "unclear":
        assert st.queue()["items"][0]["image"] == who["flagged"]
    assert st.status()["problems"] == []


@pytest.mark.parametrize("flags,folder", [([], "0"), (["--keep-flagged"], "unclear")])
def test_resort_cli_keep_flagged(touched, monkeypatch, capsys, flags, folder):
    """`pseudolabel resort --keep-flagged` turns settling off; a fake final model (fixed scores,
    sure the flagged vote decision is closed) stands in for the exported one."""
    from pseudolabel import cli
    from pseudolabel.stages import resort as resort_module

    run, journal, who = touched
    names = [r["image"] for r in rows_of(run)]
    scores = binary_probs(np.where(np.array(names) == who["flagged"], 0.001, 0.5))
    monkeypatch.setattr(resort_module, "score_run", lambda *a, **k: scores)
    assert cli.main(["resort", str(run), "--journal", str(journal), *flags]) == 0
    assert ReviewState(run, journal).where()[who["flagged"]] == folder
    assert f"{int(folder != 'unclear')} flagged by the label check were settled" in capsys.readouterr().out


def test_resort_is_idempotent_and_keeps_the_journal_readable(touched):
    run, journal, who = touched
    scores = binary_probs(fixed_scores(run))
    resort_run(run, journal, ResortConfig(), scores=scores)
    files = sorted(p.relative_to(run).as_posix() for f in FOLDERS for p in (run / f).iterdir())
    again = resort_run(run, journal, ResortConfig(), scores=scores)
    assert sorted(p.relative_to(run).as_posix() for f in FOLDERS for p in (run / f).iterdir()) == files
    assert not any(again["moved"].values())
    st = ReviewState(run, journal)  # the run now has the final model's scores; the journal keeps its header
    image = st.queue()["items"][-1]["image"]
    st.decide(image, "1")
    rows = list(csv.DictReader(open(journal)))
    assert list(rows[0]) == FIELDS and None not in rows[-1] and rows[-1]["kind"] == DONE
    mine = [r for r in rows if r["action"] == rows[-1]["action"] and r["kind"] != DONE]
    assert [(r["image"], r["label"], r["to"]) for r in mine] == [(image, "1", "1")]


def test_an_interrupted_resort_is_finished_by_the_next_command(fake_run, tmp_path, monkeypatch):
    journal = tmp_path / "journal.csv"
    scores = binary_probs(fixed_scores(fake_run))
    before = rows_of(fake_run)
    real_rename, calls = sort.rename_noreplace, []

    def crash_after_three(src, dst):
        if len(calls) == 3:
            raise KeyboardInterrupt("power cut")
        calls.append(src)
        real_rename(src, dst)

    monkeypatch.setattr(sort, "rename_noreplace", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        resort_run(fake_run, journal, ResortConfig(), scores=scores)
    monkeypatch.setattr(sort, "rename_noreplace", real_rename)
    assert (fake_run / sort.PENDING).is_file() and rows_of(fake_run) == before
    st = ReviewState(fake_run, journal)  # e.g. `pseudolabel review` opens the run next
    assert not (fake_run / sort.PENDING).exists() and rows_of(fake_run) != before
    assert st.status()["problems"] == []
    for r in rows_of(fake_run):
        assert (fake_run / r["file"]).is_file(), r["file"]


@pytest.mark.parametrize("where,holder,match", [
    ("", "review", r"another pseudolabel review \(pid \d+\) is reviewing"),
    ("final", "retrain", r"another pseudolabel retrain \(pid \d+\) is writing .*final; wait for it$"),
])
def test_resort_is_refused_while_a_review_page_is_open_or_retrain_runs(fake_run, tmp_path, where, holder, match):
    with output_lock(fake_run / where if where else fake_run, what=holder):
        with pytest.raises(ValueError, match=match):
            resort_run(fake_run, tmp_path / "j.csv", ResortConfig(), scores=binary_probs(fixed_scores(fake_run)))
    assert not (fake_run / "scores" / "final.npy").exists()


def test_resort_without_a_final_model_says_what_to_do(fake_run, tmp_path):
    with pytest.raises(ValueError, match="run `pseudolabel retrain`"):
        resort_run(fake_run, tmp_path / "j.csv", ResortConfig())
    assert not (fake_run / "scores" / "final.npy").exists() and not (fake_run / "resort.json").exists()


def test_the_report_says_up_top_where_the_images_are_now(fake_run, tmp_path):
    """The report opens with the vote's folders; after each re-sort one line under that title gives
    the folders as they are now, replaced (not repeated) by the next re-sort."""
    from pseudolabel.report.render import WHERE_TITLE

    scores = fixed_scores(fake_run)
    for s in (scores, np.full_like(scores, 0.5)):  # the second sends every machine-placed image to unclear/
        a = resort_run(fake_run, tmp_path / "journal.csv", ResortConfig(), scores=binary_probs(s))["after"]
        text = (fake_run / "report.md").read_text()
        top = text.split(WHERE_TITLE)[1].split("## Re-sorted by the final model")[0]
        assert text.count("Now, after `pseudolabel resort`") == 1 and "| 0/ (closed) |" in top
        assert f"`0/` {a['0']}, `1/` {a['1']}, `unclear/` {a['unclear']} ({100 * a['unclear'] / 60:.1f} % unclear)" in top


@pytest.mark.parametrize("per", [48, 3])
def test_the_report_shows_the_new_queue(touched, per):
    """samples_unclear.png is drawn again from the re-sorted queue: the images it shows are the
    first ones the review page shows, in its order, past page decisions and hand moves."""
    from pseudolabel.stages.resort import queue_samples

    run, journal, _ = touched
    (run / "samples_unclear.png").write_bytes(b"the vote's queue")
    resort_run(run, journal, ResortConfig(), scores=binary_probs(fixed_scores(run)))
    st = ReviewState(run, journal)
    page = [it["image"] for it in st.queue()["items"]]
    bad = run / "unclear" / st.items[page[1]].file
    bad.unlink()  # a hard link to the pool: replace it rather than empty the original
    bad.write_bytes(b"")  # a queue file broken by hand: left out of the picture, no crash
    page.remove(page[1])
    assert (run / "samples_unclear.png").read_bytes()[:4] == b"\x89PNG"
    probs = runstate.load_scores(run, "final")
    assert queue_samples(run, rows_of(run), probs, ("closed", "open"), per) == page[:per] and len(page) > 3
