"""The review page in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright)."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from pseudolabel.review.state import ReviewState
from tests.conftest import ROOT, make_color_run, mark_issue, page_token, post, serve_state, start_review_server

SHOTS = ROOT / "build" / "screenshots"


def _serve(run, tmp_path):
    yield from serve_state(ReviewState(run, tmp_path / "labels" / "eyes-test" / "reviewed.csv"))


@pytest.fixture
def served(fake_run, tmp_path):
    yield from _serve(fake_run, tmp_path)


@pytest.fixture
def served_with_issue(fake_run, tmp_path):
    """The fake run with the label check's note on its first queue image."""
    mark_issue(fake_run, "vote says 1 (open); cross-validated P(open) = 0.04")
    yield from _serve(fake_run, tmp_path)


@pytest.fixture
def served_colors(tmp_path):
    """A run over the generated red/green/blue set, folders named by class."""
    yield from _serve(make_color_run(tmp_path), tmp_path)


def journal(state):
    return [(r["image"], r["label"]) for r in csv.DictReader(open(state.journal.path)) if r["kind"] != "done"]


def new_page(browser):
    """A page whose tests may evaluate JavaScript strings (playwright's wait_for_function), which
    the review page's Content-Security-Policy forbids (no eval); test_review_security checks the
    page under its real policy."""
    return browser.new_context(bypass_csp=True, viewport={"width": 1100, "height": 800}).new_page()


def open_page(browser, url):
    page = new_page(browser)
    page.goto(url)
    page.wait_for_function("document.getElementById('counter').dataset.left !== undefined")
    return page


def left(page) -> int:
    return int(page.get_attribute("#counter", "data-left"))


def current(page) -> str:
    return page.get_attribute("#big", "data-image")


def press_and_wait(page, key, expect_left):
    page.keyboard.press(key)
    page.wait_for_function(f"document.getElementById('counter').dataset.left == '{expect_left}'")


def test_keys_move_files_and_write_the_journal(browser, served):
    url, state = served
    page = open_page(browser, url)
    n = left(page)
    first = current(page)
    assert first == state.queue()["items"][0]["image"]  # most useful first
    assert page.inner_text("#counter") == f"{n} left of {state.total_queue}"
    press_and_wait(page, "1", n - 1)
    second = current(page)
    press_and_wait(page, "c", n - 2)  # first letter of 'closed'
    third = current(page)
    page.keyboard.press("s")  # unsure: stays in unclear/, recorded
    page.wait_for_function(f"document.getElementById('big').dataset.image !== '{third}'")
    page.wait_for_function(f"document.getElementById('hist').textContent.includes('{third} → unsure')")  # confirmed
    where = state.where()
    assert (where[first], where[second], where[third]) == ("1", "0", "unclear")
    assert journal(state) == [(first, "1"), (second, "0"), (third, "unsure")]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-single.png"))
    page.close()


def test_undo_reverses_the_last_decision(browser, served):
    url, state = served
    page = open_page(browser, url)
    n, first = left(page), current(page)
    press_and_wait(page, "o", n - 1)
    press_and_wait(page, "u", n)
    assert current(page) == first and state.where()[first] == "unclear"
    press_and_wait(page, "0", n - 1)
    press_and_wait(page, "Backspace", n)
    assert journal(state) == [(first, "1"), (first, "undo"), (first, "0"), (first, "undo")]
    page.close()


def open_grid(page):
    """Switch to grid mode; the cells."""
    page.keyboard.press("g")
    page.wait_for_selector("#grid .cell")
    return page.locator("#grid .cell")


def test_grid_bulk_labelling_and_rest_of_page(browser, served):
    url, state = served
    page = open_page(browser, url)
    n = left(page)
    cells = open_grid(page)
    on_page = min(48, n)
    assert cells.count() == on_page
    names = [cells.nth(i).get_attribute("data-image") for i in range(3)]
    # click the first, then drag across the next two
    cells.nth(0).click()
    box1, box2 = cells.nth(1).bounding_box(), cells.nth(2).bounding_box()
    page.mouse.move(box1["x"] + 20, box1["y"] + 20)
    page.mouse.down()
    page.mouse.move(box2["x"] + 20, box2["y"] + 20, steps=5)
    page.mouse.up()
    assert page.locator("#grid .cell.sel").count() == 3
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-grid.png"))
    press_and_wait(page, "1", n - 3)
    assert all(state.where()[x] == "1" for x in names)
    press_and_wait(page, "r", n - on_page)  # the rest of the page gets the other class
    labels = dict(journal(state))
    assert sum(v == "1" for v in labels.values()) == 3 and sum(v == "0" for v in labels.values()) == on_page - 3
    page.close()


def test_reload_continues_where_it_stopped(browser, served):
    url, state = served
    page = open_page(browser, url)
    n = left(page)
    press_and_wait(page, "1", n - 1)
    skipped = current(page)
    page.keyboard.press("s")
    page.wait_for_function(f"document.getElementById('big').dataset.image !== '{skipped}'")
    # reload only once the server confirmed the skip (a reload cancels a request still on its way)
    page.wait_for_function(f"document.getElementById('hist').textContent.includes('{skipped} → unsure')")
    expected = current(page)
    page.reload()
    page.wait_for_function("document.getElementById('counter').dataset.left !== undefined")
    assert left(page) == n - 1 and current(page) == expected
    page.close()


def test_two_tabs_lose_nothing(browser, served):
    url, state = served
    a, b = open_page(browser, url), open_page(browser, url)
    n, image = left(a), current(a)
    assert current(b) == image
    press_and_wait(a, "1", n - 1)
    b.keyboard.press("0")  # tab b still shows the same image
    b.wait_for_function("document.getElementById('msg').textContent.includes('already in 1/')")
    assert state.where()[image] == "1"
    assert journal(state) == [(image, "1")]
    b.wait_for_function(f"document.getElementById('counter').dataset.left == '{n - 1}'")  # b catches up
    assert current(b) != image
    a.close()
    b.close()


@pytest.mark.parametrize(
    "path",
    ["api/image?name=../../../../etc/passwd", "api/image?name=/etc/passwd", "api/image?name=..%2Fconfig.yaml",
     "../../etc/passwd", "api/image?name=unclear/../predictions.csv"],
)  # fmt: skip
def test_path_traversal_is_refused(served, path):
    url, _ = served
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + path)
    assert err.value.code == 404
    assert b"root:" not in err.value.read()


def test_decide_on_a_path_is_refused_and_nothing_is_written(served):
    url, state = served
    status, answer = post(url, "/api/decide", {"image": "../images/000001.jpg", "label": "1"}, page_token(url))
    assert status == 404 and "not an image of this run" in answer["error"] and journal(state) == []


def test_foreign_host_header_is_refused(served):
    url, _ = served
    req = urllib.request.Request(url + "api/queue", headers={"Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 403


def test_sigkill_mid_review_loses_no_confirmed_decision(browser, fake_run, tmp_path):
    journal_path = tmp_path / "labels" / "reviewed.csv"
    proc, url = start_review_server(fake_run, journal_path)
    assert url.startswith("http://127.0.0.1:")
    page = open_page(browser, url)
    n = left(page)
    confirmed = {}
    for i, key in enumerate(["1", "0", "1", "0", "1"]):
        image = current(page)
        press_and_wait(page, key, n - i - 1)  # the page shows the next image: the decision is confirmed
        confirmed[image] = key
    page.keyboard.press("1")  # one more in flight as the server dies
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    page.close()
    proc2, url2 = start_review_server(fake_run, journal_path)
    try:
        st = ReviewState(fake_run, journal_path)
        decided = st.journal.last_decisions()
        where = st.where()
        for image, label in confirmed.items():
            assert decided[image]["label"] == label and where[image] == label
        assert st.status()["problems"] == []
        page = open_page(browser, url2)
        assert left(page) in (n - 5, n - 6)
        page.close()
    finally:
        proc2.terminate()
        proc2.wait()


def test_page_picks_up_a_file_moved_by_hand(browser, served, fake_run):
    url, state = served
    page = open_page(browser, url)
    n, image = left(page), current(page)
    item = state.items[image]
    os.rename(fake_run / "unclear" / item.file, fake_run / "0" / item.file)  # a person drags it in a file manager
    page.keyboard.press("1")
    page.wait_for_function("document.getElementById('msg').textContent.includes('already in 0/')")
    page.wait_for_function(f"document.getElementById('counter').dataset.left == '{n - 1}'")
    assert state.where()[image] == "0" and journal(state) == []
    page.close()


def test_status_command_prints_counts_and_disagreements(fake_run, tmp_path):
    journal_path = tmp_path / "j.csv"
    st = ReviewState(fake_run, journal_path)
    image = st.queue()["items"][0]["image"]
    st.decide(image, "1")
    os.rename(fake_run / "1" / st.items[image].file, fake_run / "0" / st.items[image].file)
    out = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "review", str(fake_run), "--status", "--journal",
                          str(journal_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    c = st.status()["counts"]
    assert f"0/ {c['0']}   1/ {c['1']}   unclear/ {c['unclear']}" in out.stdout
    assert f"disagreement: {image}: journal says 1, folder is 0/" in out.stdout


def test_review_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pseudolabel.cli", "review", str(tmp_path), "--no-browser"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == f"pseudolabel: error: not a run folder (no predictions.csv): {tmp_path}"


def test_label_check_flag_is_shown(browser, served_with_issue):
    url, state = served_with_issue
    page = open_page(browser, url)
    assert "likely wrong label: vote says 1 (open)" in page.inner_text("#info")
    grid = open_page(browser, url)
    grid.keyboard.press("g")
    grid.wait_for_selector(".cell")
    assert grid.locator(".cell.issue").count() == 1
    press_and_wait(page, "0", left(page) - 1)  # answered like any other queue image
    assert "likely wrong label" not in page.inner_text("#info")
    page.keyboard.press("g")
    page.wait_for_selector(".cell")
    assert page.locator(".cell.issue").count() == 0  # the flagged image has left the queue


def test_three_classes_keys_hints_and_grid_labelling_to_the_third_class(browser, served_colors):
    """Keys 1-3 pick the classes in the order shown; a first letter works only where it is unique and
    no command key (r and g are commands, so only blue gets one); grid mode labels a selection with
    the third class and shows each decided cell's class."""
    url, state = served_colors
    page = open_page(browser, url)
    hints = page.inner_text("#keys")
    assert "1 red · 2 green · 3/b blue" in hints and "rest of page" not in hints
    # each model's name with its top class and probability
    assert re.search(r"yolov8-cls\t(red|green|blue) [01]\.\d{3}\nresnet50\t(red|green|blue) [01]\.\d{3}", page.inner_text("#info"))
    n = left(page)
    first = current(page)
    press_and_wait(page, "3", n - 1)
    second = current(page)
    press_and_wait(page, "b", n - 2)
    third = current(page)
    press_and_wait(page, "1", n - 3)
    where = state.where()
    assert (where[first], where[second], where[third]) == ("blue", "blue", "red")
    assert journal(state) == [(first, "blue"), (second, "blue"), (third, "red")]
    page.keyboard.press("g")
    page.wait_for_selector("#grid .cell")
    cells = page.locator("#grid .cell")
    names = [cells.nth(i).get_attribute("data-image") for i in range(2)]
    cells.nth(0).click()
    cells.nth(1).click()
    press_and_wait(page, "3", n - 5)
    assert all(state.where()[x] == "blue" for x in names)
    done = page.locator("#grid .cell.done")
    assert done.count() == 2 and all("→ blue" in done.nth(i).inner_text() for i in range(2))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-grid-3-classes.png"))
    page.close()


def test_fifty_keys_as_fast_as_the_browser_can_give_fifty_decisions_in_order(browser, served):
    url, state = served
    page = open_page(browser, url)
    n = left(page)
    order = [it["image"] for it in state.queue()["items"]][:50]
    keys = ["1", "0", "s", "o", "c"] * 10
    for key in keys:  # no waiting between presses
        page.keyboard.press(key)
    page.wait_for_function(f"document.getElementById('counter').dataset.left == '{n - 40}'", timeout=60000)
    page.wait_for_function("!document.getElementById('counter').textContent.includes('sending')", timeout=60000)
    label = {"1": "1", "0": "0", "s": "unsure", "o": "1", "c": "0"}
    assert journal(state) == [(image, label[k]) for image, k in zip(order, keys)]
    assert state.status()["problems"] == []
    page.close()


def test_u_after_a_bulk_action_undoes_all_of_it_and_the_history_shows_it(browser, served):
    url, state = served
    page = open_page(browser, url)
    n = left(page)
    cells = open_grid(page)
    names = [cells.nth(i).get_attribute("data-image") for i in range(4)]
    for i in range(4):
        cells.nth(i).click()
    press_and_wait(page, "0", n - 4)
    assert page.locator("#grid .cell.done").count() == 4
    assert all("→ closed" in page.locator("#grid .cell.done").nth(i).inner_text() for i in range(4))
    page.wait_for_function("document.getElementById('hist').textContent.includes('4 images → closed')")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-grid-decided.png"))
    press_and_wait(page, "u", n)  # one key: the whole bulk action
    assert all(state.where()[x] == "unclear" for x in names)
    page.wait_for_function("document.querySelector('#hist li.undone') !== null")
    assert "undo of 4 images" in page.inner_text("#hist")
    page.close()


def test_a_failed_decision_is_shown_with_its_image(browser, served, fake_run):
    url, state = served
    page = open_page(browser, url)
    image = current(page)
    item = state.items[image]
    os.rename(fake_run / "unclear" / item.file, fake_run / "1" / item.file)  # gone before the key lands
    page.keyboard.press("0")
    page.wait_for_function("document.getElementById('failed').textContent.includes('already in 1/')")
    assert image in page.inner_text("#failed") and page.locator("#failed img").count() == 1
    page.close()


@pytest.fixture
def audit_served(fake_run, tmp_path):
    yield from serve_state(ReviewState(fake_run, tmp_path / "j.csv", audit=(6, 0)), mode="audit")


def test_audit_page_is_blind_and_gives_the_figures(browser, audit_served, fake_run):
    url, state = audit_served
    page = new_page(browser)
    page.goto(url)
    page.wait_for_function("document.getElementById('counter').textContent.includes('to audit')")
    text = page.inner_text("body")
    assert "yolov8-cls" not in text and "resnet50" not in text and "rank" not in text  # blind
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-audit.png"))
    shown = []
    for _ in range(6):
        image = page.get_attribute("#auditimg", "data-image")
        shown.append(image)
        page.keyboard.press("0")  # every image is closed, says the person
        page.wait_for_function(f"document.getElementById('auditimg').dataset.image !== '{image}'")
    page.wait_for_function("document.getElementById('auditfig').textContent.includes('Audit done')")
    assert sorted(shown) == sorted(state.audit_images)
    fig = json.loads((fake_run / "audit.json").read_text())["folders"]
    assert (fig["0"]["audited"], fig["0"]["right"], fig["1"]["audited"], fig["1"]["right"]) == (3, 3, 3, 0)
    assert "3 of 3 right" in page.inner_text("#auditfig") and "0 of 3 right" in page.inner_text("#auditfig")
    assert all(state.where()[i] == "0" for i in shown)  # the 1/ ones moved to what the person said
    page.close()
