"""The README's screenshots of the review page, on the generated red/green/blue set (no data from
../shared): single mode, grid mode with decided cells, and the blind audit.

    .venv/bin/python docs/make_screenshots.py      # writes docs/review-{single,grid,audit}.png
"""
from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pseudolabel.review.state import ReviewState  # noqa: E402
from pseudolabel.review.server import make_server  # noqa: E402
from tests.conftest import COLORS, make_color_data, place_fake_run  # noqa: E402

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def make_run(tmp: Path, n_per_class: int = 40) -> Path:
    """A run over the generated set whose two fake models are mostly right (about 1 in 8 answers
    wrong), so that the page shows what a real run looks like."""
    import numpy as np

    truth = make_color_data(tmp / "images", n_per_class=n_per_class)
    names = sorted(truth)
    rng = np.random.default_rng(0)
    y = np.array([list(COLORS).index(truth[n]) for n in names])

    def model():
        lab = np.where(rng.random(len(y)) < 0.12, rng.integers(0, 3, len(y)), y)
        return 0.75 * np.eye(3)[lab] + 0.25 * rng.dirichlet(np.ones(3), len(y))

    run = tmp / "run"
    place_fake_run(run, tmp / "images", names, (model(), model()), 0.8, tuple(COLORS), tuple(COLORS))
    return run


def serve(state: ReviewState, mode: str = "review") -> tuple[str, object]:
    server = make_server(state, 0, mode=mode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        run = make_run(Path(tmp))
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
        page = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 760}).new_page()
        url, server = serve(ReviewState(run, run / "journal.csv"))
        page.goto(url)
        page.wait_for_function("document.getElementById('counter').dataset.left !== undefined")
        for key in ("1", "3", "2"):
            page.keyboard.press(key)
            page.wait_for_function("!document.getElementById('counter').textContent.includes('sending')")
        page.wait_for_timeout(300)
        page.screenshot(path=str(ROOT / "docs" / "review-single.png"))
        page.keyboard.press("g")
        page.wait_for_selector("#grid .cell")
        cells = page.locator("#grid .cell")
        for i in (0, 1, 2, 9):
            cells.nth(i).click()
        page.keyboard.press("3")
        page.wait_for_function("document.querySelectorAll('#grid .cell.done').length === 4")
        for i in (4, 5):
            cells.nth(i).click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(ROOT / "docs" / "review-grid.png"))
        server.shutdown()
        url, server = serve(ReviewState(run, run / "journal.csv", audit=(12, 0)), mode="audit")
        page.goto(url)
        page.wait_for_function("document.getElementById('counter').textContent.includes('to audit')")
        for _ in range(8):  # answered truthfully: the generated image imgK.jpg is class K mod 3
            image = page.get_attribute("#auditimg", "data-image")
            page.keyboard.press(str(int(image[3:6]) % 3 + 1))
            page.wait_for_function(f"document.getElementById('auditimg').dataset.image !== '{image}'")
        page.wait_for_function("!document.getElementById('counter').textContent.includes('sending')")
        page.wait_for_timeout(300)
        page.screenshot(path=str(ROOT / "docs" / "review-audit.png"))
        server.shutdown()
        browser.close()
    print("wrote docs/review-single.png, docs/review-grid.png, docs/review-audit.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
