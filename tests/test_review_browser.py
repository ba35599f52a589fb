"""The review page in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright)."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pseudolabel.review import ReviewState
from pseudolabel.review_server import make_server
from tests.conftest import ROOT, make_color_run, mark_issue

CHROMIUM = os.environ.get("PSEUDOLABEL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
SHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def _serve(run, tmp_path):
    state = ReviewState(run, tmp_path / "labels" / "eyes-test" / "reviewed.csv")
    server = make_server(state, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", state
    server.shutdown()
    server.server_close()


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
    return [(r["image"], r["label"]) for r in csv.DictReader(open(state.journal.path))]


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
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


def test_grid_bulk_labelling_and_rest_of_page(browser, served):
    url, state = served
    page = open_page(browser, url)
    n = left(page)
    page.keyboard.press("g")
    page.wait_for_selector("#grid .cell")
    cells = page.locator("#grid .cell")
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
    req = urllib.request.Request(url + "api/decide", data=json.dumps({"image": "../images/000001.jpg", "label": "1"}).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 404 and journal(state) == []


def test_foreign_host_header_is_refused(served):
    url, _ = served
    req = urllib.request.Request(url + "api/queue", headers={"Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 403


def start_server(run, journal_path):
    proc = subprocess.Popen([sys.executable, "-m", "pseudolabel.cli", "review", str(run), "--no-browser",
                             "--journal", str(journal_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    for line in proc.stdout:
        if line.startswith("open "):
            return proc, line.split()[1]
    raise AssertionError("review server did not print its URL")


def test_sigkill_mid_review_loses_no_confirmed_decision(browser, fake_run, tmp_path):
    journal_path = tmp_path / "labels" / "reviewed.csv"
    proc, url = start_server(fake_run, journal_path)
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
    proc2, url2 = start_server(fake_run, journal_path)
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
