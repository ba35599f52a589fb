"""The review server as an attack surface and under load: other pages (another localhost port, a
form, a file:// page) cannot act through it, every POST needs the page's token, a JSON content type
and our Origin, malformed bodies get 400/413 without a traceback or memory growth, and four clients
with random undos lose nothing."""
import csv
import http.client
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pseudolabel.review.server import LOG, make_server
from pseudolabel.review.state import ReviewState
from tests.conftest import page_token, post, serve_state, start_review_server, tree_digest


@pytest.fixture
def served(fake_run, tmp_path):
    yield from serve_state(ReviewState(fake_run, tmp_path / "journal.csv"))


def journal(state):
    return [(r["image"], r["label"]) for r in csv.DictReader(open(state.journal.path)) if r["kind"] != "done"]


def first_unclear(state):
    return state.queue()["items"][0]["image"]


@pytest.mark.parametrize("token, origin, ctype, why", [
    (None, "same", "application/json", "session token"),
    ("wrong", "same", "application/json", "session token"),
    ("right", None, "application/json", "origin ''"),
    ("right", "http://127.0.0.1:1", "application/json", "origin 'http://127.0.0.1:1'"),
    ("right", "null", "application/json", "origin 'null'"),  # a file:// page or a sandboxed frame
    ("right", "http://evil.example", "application/json", "origin"),
    ("right", "same", "text/plain", "content type"),
    ("right", "same", None, "content type"),
    ("right", "same", "application/x-www-form-urlencoded", "content type"),
])  # fmt: skip
def test_a_post_without_token_json_and_our_origin_gets_403_and_changes_nothing(served, fake_run, token, origin,
                                                                                ctype, why):
    url, state = served
    image, before = first_unclear(state), tree_digest(fake_run)
    real = page_token(url)
    status, answer = post(url, "/api/decide", {"image": image, "label": "1"}, real if token == "right" else token,
                          origin, ctype)  # fmt: skip
    assert status == 403 and why in answer["error"]
    assert journal(state) == [] and tree_digest(fake_run) == before
    assert post(url, "/api/decide", {"image": image, "label": "1"}, real) == (200, {"image": image, "label": "1",
                                                                                   "action": journal_action(state)})


def journal_action(state):
    return [r["action"] for r in csv.DictReader(open(state.journal.path)) if r["kind"] != "done"][-1]


def test_each_server_start_has_its_own_token(fake_run, tmp_path):
    state = ReviewState(fake_run, tmp_path / "j.csv")
    a, b = make_server(state), make_server(state)
    assert a.token != b.token and len(a.token) >= 40
    a.server_close()
    b.server_close()


def test_get_requests_never_change_state(served, fake_run):
    url, state = served
    image, before = first_unclear(state), tree_digest(fake_run)
    import urllib.error
    import urllib.request

    for path in (f"api/decide?image={image}&label=1", f"api/undo?image={image}", "api/decide_many?images=x&label=1"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + path)
        assert err.value.code == 404
    assert journal(state) == [] and tree_digest(fake_run) == before


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("path, raw, status, match", [
    ("/api/decide", b"[]", 400, "JSON object, got list"),
    ("/api/decide", b"null", 400, "JSON object, got NoneType"),
    ("/api/decide", b'"x"', 400, "JSON object, got str"),
    ("/api/decide", b"{not json", 400, "not JSON"),
    ("/api/decide", b"\xff\xfe{}", 400, "not JSON"),
    ("/api/decide", DEEP, 400, "not JSON"),
    ("/api/decide", b'{"image": 5, "label": "1"}', 400, "'image' must be a str"),
    ("/api/decide", b'{"image": "x"}', 400, "'label' must be a str"),
    ("/api/decide", b'{"image": {"a": [1]}, "label": "1"}', 400, "'image' must be a str"),
    ("/api/decide_many", b'{"images": "abc", "label": "1"}', 400, "'images' must be a list"),
    ("/api/decide_many", b'{"images": [1, null], "label": "1"}', 400, "non-empty list of image names"),
    ("/api/undo", b'{"action": 7}', 400, "'action' must be a str"),
    ("/api/undo", b"{}", 400, "'image' must be a str"),
    ("/api/audit", b'{"image": "x", "label": "1"}', 404, "not an image of this run"),
    ("/api/nothing", b"{}", 404, "no such action"),
])  # fmt: skip
def test_malformed_bodies_get_a_json_error(served, fake_run, path, raw, status, match):
    url, state = served
    before = tree_digest(fake_run)
    got, answer = post(url, path, None, page_token(url), raw=raw)
    assert got == status and match in answer["error"] and "Traceback" not in answer["error"]
    assert journal(state) == [] and tree_digest(fake_run) == before


def rss_kb(pid: int) -> int:
    return int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
               .split()[1])  # fmt: skip


def test_huge_and_missing_lengths_get_413_and_400_and_memory_stays_flat(fake_run, tmp_path):
    proc, url = start_review_server(fake_run, tmp_path / "j.csv")
    try:
        token, port = page_token(url), int(url.rsplit(":", 1)[1].strip("/"))
        headers = {"Content-Type": "application/json", "X-Pseudolabel-Token": token, "Origin": url.rstrip("/")}
        post(url, "/api/decide", None, token, raw=b"{}")  # warm: the first request imports what it needs
        before = rss_kb(proc.pid)
        for _ in range(3):  # 300 MB announced, 32 MB actually sent: refused before it is read
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.putrequest("POST", "/api/decide")
            for k, v in {**headers, "Content-Length": str(300 << 20)}.items():
                conn.putheader(k, v)
            conn.endheaders()
            try:
                for _ in range(32):
                    conn.send(b" " * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = conn.getresponse()
            assert r.status == 413 and "limit" in json.loads(r.read())["error"]
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/api/decide")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 400 and "Content-Length" in json.loads(r.read())["error"]
        status, _ = post(url, "/api/decide", None, token, raw=b"x" * ((1 << 20) + 1))
        assert status == 413
        assert rss_kb(proc.pid) - before < 50 * 1024
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.wait()


def test_an_unexpected_fault_answers_500_and_logs_the_traceback_in_the_run(served, fake_run, monkeypatch):
    url, state = served

    def broken(order="rank", limit=None):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(state, "queue", broken)
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "api/queue")
    body = err.value.read().decode()
    assert err.value.code == 500 and "disk on fire" not in body and "Traceback" not in body
    log = (fake_run / LOG).read_text()
    assert "Traceback" in log and "RuntimeError: disk on fire" in log


class Attacker(BaseHTTPRequestHandler):
    """A page on another localhost port that tries every way a page can send a decision."""

    pages: dict[str, str] = {}

    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        body = self.pages.get(self.path.split("?")[0], "").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def attack_pages(target: str, image: str) -> dict[str, str]:
    body = json.dumps({"image": image, "label": "1"})
    many = json.dumps({"images": [image], "label": "1"})
    fetches = "".join(
        f"fetch('{target}api/{p}', {{method: 'POST', mode: '{mode}', "
        f"headers: {{'Content-Type': '{ct}'}}, body: {b!r}}})"
        ".catch(() => 0);\n"
        for p, b in (("decide", body), ("decide_many", many)) for mode in ("no-cors", "cors")
        for ct in ("text/plain", "application/json"))  # fmt: skip
    fetches += (f"fetch('{target}api/decide', {{method: 'POST', headers: {{'Content-Type': 'application/json', "
                f"'X-Pseudolabel-Token': 'guess'}}, body: {body!r}}}).catch(() => 0);\n")  # fmt: skip
    name = (body[:-1] + ', "x": "').replace('"', "&quot;")  # the form sends name=value: {..., "x": "="}
    form = (f'<form id="f" method="POST" action="{target}api/decide" enctype="text/plain">'
            f'<input name="{name}" value="&quot;}}"></form><script>document.getElementById("f").submit()</script>')
    frame = f'<iframe src="{target}"></iframe>'
    return {"/fetch": f"<script>{fetches}document.title = 'sent';</script>", "/form": form, "/frame": frame}


@pytest.mark.parametrize("how", ["fetch", "form", "frame", "file"])
def test_another_page_cannot_decide(browser, served, fake_run, tmp_path, how):
    """A page on another localhost port (fetch in no-cors and cors modes, a guessed token, a plain
    form, our page in a frame) or a file:// page sends decisions: none lands."""
    url, state = served
    image, before = first_unclear(state), tree_digest(fake_run)
    Attacker.pages = attack_pages(url, image)
    evil = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        if how == "file":
            f = tmp_path / "evil.html"
            f.write_text(Attacker.pages["/fetch"] + Attacker.pages["/form"])
            page.goto(f.as_uri())
        else:
            page.goto(f"http://localhost:{evil.server_address[1]}/{how}")
        page.wait_for_timeout(1500)
        if how == "frame":  # the page refuses to be framed, so no click can reach it
            assert all(fr.locator("#counter").count() == 0 for fr in page.frames[1:])
        assert journal(state) == [] and tree_digest(fake_run) == before
        # our own page, in the same browser and under its own Content-Security-Policy, still works
        ours = browser.new_page()
        ours.goto(url)
        until(lambda: ours.get_attribute("#counter", "data-left") is not None)
        ours.keyboard.press("1")
        until(lambda: journal(state) == [(image, "1")])
        ours.close()
    finally:
        page.close()
        evil.shutdown()
        evil.server_close()


def until(check, timeout=20.0):
    """Poll ``check`` from Python (the page's policy forbids evaluating strings in it)."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


def client(url: str, token: str, mine: list[str], n: int, seed: int, latencies: list[float], standing: dict):
    """One reviewer: ``n`` decisions on its own images, undoing the last action a third of the time."""
    rng, todo, done = random.Random(seed), list(mine), []
    for _ in range(n):
        if done and (not todo or rng.random() < 1 / 3):
            action, image = done.pop()
            t = time.perf_counter()
            status, _ = post(url, "/api/undo", {"action": action}, token)
            latencies.append(time.perf_counter() - t)
            assert status == 200
            standing.pop(image)
            todo.append(image)
            continue
        image = todo.pop(rng.randrange(len(todo)))
        label = rng.choice(["0", "1", "unsure"])
        t = time.perf_counter()
        status, answer = post(url, "/api/decide", {"image": image, "label": label}, token)
        latencies.append(time.perf_counter() - t)
        assert status == 200, answer
        done.append((answer["action"], image))
        standing[image] = label


def test_four_clients_with_random_undos_lose_nothing(served, fake_run):
    """The load test, small (benchmarks/review_load.py runs 4 x 1,000): afterwards each image's
    journaled standing decision is exactly the last one its client was told, and the folders agree."""
    url, state = served
    token, images = page_token(url), [it["image"] for it in state.queue()["items"]]
    latencies, standing, threads = [], [{} for _ in range(4)], []
    for k in range(4):
        t = threading.Thread(target=client, args=(url, token, images[k::4], 30, k, latencies, standing[k]))
        threads.append(t)
        t.start()
    for t in threads:
        t.join()
    told = {i: label for s in standing for i, label in s.items()}
    assert {i: r["label"] for i, r in state.journal.last_decisions().items()} == told
    assert state.status()["problems"] == [] and len(latencies) == 120
    where = state.where()
    assert all(where[i] == ("unclear" if label == "unsure" else label) for i, label in told.items())
