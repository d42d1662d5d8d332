"""Helpers for the browser tests (tests/test_browser.py): Chromium via Playwright's sync API."""
import re
from pathlib import Path

PROBE = (Path(__file__).parent / "instrument.js").read_text()
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

VISIBLE_CARD = "#stage > .slot:not([hidden]) .item-card"
# Both slots hold a card nobody has acted on: the next item is prefetched, as it is at a human pace.
PREFETCHED = "() => document.querySelectorAll('#stage > .slot .item-card[data-item-id]:not([data-sent])').length === 2"
# Every request answered: no slot is waiting and no undo is running.
QUIET = "() => !document.querySelector('#stage > .slot[data-awaiting]') && !document.querySelector('[aria-busy=true]')"


def output_dir(node_name: str) -> Path:
    """test-results/<test name>/, made on demand (git-ignored)."""
    path = RESULTS / re.sub(r"[^\w.-]+", "_", node_name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_in(page, base_url: str, username: str, password: str, next_path: str) -> None:
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{next_path}")


def visible_item(page) -> int:
    return int(page.get_attribute(VISIBLE_CARD, "data-item-id"))


def category_on_key(page, key: str) -> int:
    """The category id the visible card's button for `key` sends."""
    return int(page.get_attribute(f'{VISIBLE_CARD} .label-form button[data-key="{key}"]', "value"))


def percentile(values, p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
