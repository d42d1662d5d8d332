"""The annotate page in a real browser: Chromium driven by Playwright, keyboard only.

Runs against pytest-django's live server (SQLite pass). Under CI=true a missing Chromium fails the
test instead of skipping it. Screenshots land in test-results/<test name>/ (git-ignored).
"""
import io
import statistics
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, Item, Project
from tests.browser import (
    PREFETCHED,
    PROBE,
    QUIET,
    VISIBLE_CARD,
    category_on_key,
    log_in,
    output_dir,
    percentile,
    visible_item,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-test-pw-1"
ANNOTATE = "/p/demo/annotate/"


@pytest.fixture
def demo():
    """The demo project and users, as `make run` seeds them; returns the annotator."""
    call_command("seed_demo", password=PASSWORD, items=80, stdout=io.StringIO())
    return get_user_model().objects.get(username="annotator")


@pytest.fixture
def open_page(chromium, live_server):
    """A logged-in page with the test probe installed; fails the test on any script error."""
    opened = []

    def open_(username, path, **context_options):
        context = chromium.new_context(viewport={"width": 1280, "height": 860}, **context_options)
        context.add_init_script(PROBE)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.errors = []  # uncaught exceptions
        page.console_errors = []  # includes the browser's own "Failed to load resource" lines
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
        log_in(page, live_server.url, username, PASSWORD, path)
        page.wait_for_function(PREFETCHED)
        opened.append(context)
        return page

    yield open_
    for context in opened:
        context.close()


def labels_of(user) -> dict[int, list[int]]:
    return dict(Annotation.objects.filter(annotator=user).values_list("item_id", "categories"))


def press_and_wait_for_swap(page, key: str) -> None:
    """Press `key` at a human pace: the next item is already prefetched when the key goes down."""
    page.wait_for_function(PREFETCHED)
    swaps = page.evaluate("() => window.__swaps.length")
    page.keyboard.press(key)
    page.wait_for_function("(n) => window.__swaps.length > n", arg=swaps)


def test_it_labels_ten_items_with_the_keyboard_alone(demo, open_page, request):
    page = open_page("annotator", ANNOTATE)
    expected = {}

    for i in range(10):
        key = str(1 + i % 4)
        item, category = visible_item(page), category_on_key(page, key)
        press_and_wait_for_swap(page, key)
        expected[item] = [category]

    page.wait_for_function(QUIET)
    swaps = page.evaluate("() => window.__swaps")
    frames = [s["frame"] for s in swaps]
    print(
        f"\nkeypress -> next item painted, {len(frames)} swaps: p50 {statistics.median(frames):.1f} ms, "
        f"p95 {percentile(frames, 95):.1f} ms, max {max(frames):.1f} ms "
        f"(DOM swapped: max {max(s['dom'] for s in swaps):.1f} ms)"
    )
    assert [s["from"] for s in swaps] == [str(i) for i in expected]
    assert max(frames) < 100, f"the next item took {max(frames):.0f} ms to show: it should be prefetched"
    assert labels_of(demo) == expected
    assert page.text_content("#labeled-today") == "10"

    # u: the last label is taken back and its item is on screen again, fresh; a new key relabels it.
    last = list(expected)[-1]
    page.keyboard.press("u")
    page.wait_for_function(QUIET)
    assert visible_item(page) == last
    assert last not in labels_of(demo)
    assert page.text_content("#labeled-today") == "9"
    expected[last] = [category_on_key(page, "3")]
    press_and_wait_for_swap(page, "3")

    # s: the item goes back to the pool unlabeled, and the next one shows.
    skipped = visible_item(page)
    press_and_wait_for_swap(page, "s")
    page.wait_for_function(QUIET)
    assert visible_item(page) != skipped
    assert Assignment.objects.get(annotator=demo, item_id=skipped).status == Assignment.Status.SKIPPED
    assert labels_of(demo) == expected
    assert page.text_content("#labeled-today") == "10"
    assert page.errors == [] and page.console_errors == []

    folder = output_dir(request.node.name)
    page.screenshot(path=str(folder / "annotate.png"))
    page.emulate_media(color_scheme="dark")
    page.keyboard.press("g")
    page.screenshot(path=str(folder / "annotate-dark-guidelines.png"))
    page.keyboard.press("?")
    assert page.is_visible("#shortcuts")
    page.screenshot(path=str(folder / "shortcuts-dark.png"))


def test_it_never_labels_an_item_that_was_not_on_screen_however_fast_the_keys(demo, open_page):
    page = open_page("annotator", ANNOTATE)
    keys = [str(1 + i % 4) for i in range(10)]

    # As fast as a person can read: each key as soon as a fresh item shows, prefetch or not.
    for key in keys:
        page.wait_for_function("(sel) => { const c = document.querySelector(sel); return c && c.dataset.itemId && !c.dataset.sent; }", arg=VISIBLE_CARD)
        page.keyboard.press(key)
    # Faster than any answer: ten keys in one burst, from a stage with the next item prefetched.
    page.wait_for_function(PREFETCHED)
    for key in keys:
        page.keyboard.press(key)
    # A held key repeats; it labels one item, not a run of them.
    page.wait_for_function(PREFETCHED)
    page.keyboard.down("2")
    page.keyboard.down("2")
    page.keyboard.down("2")
    page.keyboard.up("2")
    page.wait_for_function(QUIET)

    presses = page.evaluate("() => window.__keys")
    assert len(presses) == 21  # the probe sees repeats but logs only the first keydown
    accepted = [p for p in presses if p["accepted"]]
    assert all(p["accepted"] for p in presses[:10]), "a key on a fresh item must never be refused"
    assert presses[10]["accepted"] and presses[11]["accepted"], "the item on screen and the prefetched one"
    assert presses[-1]["accepted"]
    refused = [p for p in presses if not p["accepted"]]
    print(f"\nburst: {len(accepted)} of {len(presses)} keys labeled an item on screen; {len(refused)} refused while the next item was on its way")

    categories = {str(c.shortcut): c.id for c in Project.objects.get(slug="demo").categories.all()}
    assert len({p["item"] for p in accepted}) == len(accepted), "two keys labeled one item"
    assert labels_of(demo) == {int(p["item"]): [categories[p["key"]]] for p in accepted}
    assert page.text_content("#labeled-today") == str(len(accepted))
    assert page.errors == [] and page.console_errors == []


def test_it_recovers_from_a_refused_label_and_from_a_dropped_connection(demo, open_page):
    page = open_page("annotator", ANNOTATE)
    context = page.context

    # The lease on the item on screen expired and its only slot went to someone else: the server
    # refuses the label (409); the page says so and carries on with the next items.
    lost = visible_item(page)
    Assignment.objects.filter(annotator=demo, item_id=lost).delete()
    Item.objects.filter(pk=lost).update(open_slots=0)
    press_and_wait_for_swap(page, "1")
    page.wait_for_function(QUIET)
    page.wait_for_function(PREFETCHED)
    assert "expired" in page.text_content("#status")
    assert labels_of(demo) == {}

    # The connection drops as a label leaves: the page retries the same request until it lands.
    kept, category = visible_item(page), category_on_key(page, "2")
    context.set_offline(True)
    page.keyboard.press("2")
    # The refusal above is an error too and may still be on the status line: wait for this one.
    page.wait_for_function("() => document.getElementById('status').textContent.includes('Cannot reach the server')")
    time.sleep(1.2)
    assert labels_of(demo) == {}
    context.set_offline(False)
    page.wait_for_function(QUIET, timeout=20_000)
    assert labels_of(demo) == {kept: [category]}
    page.wait_for_function(PREFETCHED)
    assert page.errors == []


def small_project(slug: str, titles: list[str], username: str = "labeler", **settings):
    """A project of `titles` (no known-gold checks) with one annotator who logs in with PASSWORD."""
    project = actions.create_project(slug.title(), slug, honeypot_percent=0, **settings)
    quoted = [t.replace('"', '""') for t in titles]
    rows = "title,description\n" + "".join(f'"{t}","<b>bold</b> {t}"\n' for t in quoted)
    import_items(project, io.BytesIO(rows.encode()), f"{slug}.csv")
    user = get_user_model().objects.create_user(username, password=PASSWORD)
    actions.add_member(project, user)
    return user


def test_it_shows_markup_in_items_as_text_and_runs_none_of_it(open_page):
    titles = [f'<script>alert("{n}")</script><img src=x onerror="alert({n})"> item {n}' for n in range(4)]
    small_project("escaping", titles)

    # Without the CSP: the escaping alone must keep these scripts from running.
    page = open_page("labeler", "/p/escaping/annotate/", bypass_csp=True)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    shown = [page.text_content(f"{VISIBLE_CARD} .item-title")]
    for _ in range(2):  # the third card arrives through an htmx swap
        press_and_wait_for_swap(page, "s")
        shown.append(page.text_content(f"{VISIBLE_CARD} .item-title"))
    page.wait_for_function(QUIET)

    assert shown == titles[:3]
    assert page.text_content(f"{VISIBLE_CARD} .item-text").startswith("<b>bold</b>")
    assert page.evaluate("() => document.querySelectorAll('#stage script, #stage img, #stage b').length") == 0
    assert dialogs == []
    assert page.errors == [] and page.console_errors == []


def test_it_says_all_done_when_the_queue_runs_out(open_page):
    user = small_project("short", ["First", "Second", "Third"])
    page = open_page("labeler", "/p/short/annotate/")
    for key in "123":
        page.wait_for_function("(sel) => { const c = document.querySelector(sel); return c && c.dataset.itemId && !c.dataset.sent; }", arg=VISIBLE_CARD)
        page.keyboard.press(key)
    page.wait_for_function(QUIET)
    assert page.is_visible("text=All done for now")
    assert page.text_content("#labeled-today") == "3"
    assert len(labels_of(user)) == 3
    assert page.errors == [] and page.console_errors == []


def test_it_labels_with_plain_form_posts_when_javascript_is_off(chromium, live_server, request):
    user = small_project("nojs", ["First", "Second", "Third"])
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    log_in(page, live_server.url, "labeler", PASSWORD, "/p/nojs/annotate/")
    first = visible_item(page)
    assert page.is_hidden("#stage > .slot[hidden]")

    page.click(f'{VISIBLE_CARD} button[data-key="2"]')  # a full POST, then the redirect
    page.wait_for_url(f"{live_server.url}/p/nojs/annotate/")
    second = visible_item(page)
    page.click(f'{VISIBLE_CARD} button[data-key="s"]')
    page.wait_for_url(f"{live_server.url}/p/nojs/annotate/")
    page.click("#undo-form button")
    page.wait_for_url(f"{live_server.url}/p/nojs/annotate/")

    assert second != first
    assert visible_item(page) == first  # undone: back on screen
    assert labels_of(user) == {}
    assert Assignment.objects.get(annotator=user, item_id=second).status == Assignment.Status.SKIPPED
    page.screenshot(path=str(output_dir(request.node.name) / "annotate-no-js.png"))
    context.close()


def test_it_ticks_several_labels_with_digits_and_sends_them_with_enter(open_page):
    user = small_project("multi", ["First", "Second", "Third"], mode=Project.Mode.MULTI)
    page = open_page("labeler", "/p/multi/annotate/")
    first = visible_item(page)
    page.keyboard.press("Enter")  # nothing ticked yet: refused, nothing sent
    assert "Tick at least one category" in page.text_content("#status")
    for key in "1332":  # 3 twice: ticked, then unticked
        page.keyboard.press(key)
    ticked = [int(v) for v in page.eval_on_selector_all(f"{VISIBLE_CARD} input:checked", "boxes => boxes.map(b => b.value)")]
    press_and_wait_for_swap(page, "Enter")
    page.wait_for_function(QUIET)
    assert visible_item(page) != first
    assert labels_of(user) == {first: sorted(ticked)}
    assert len(ticked) == 2
    assert page.errors == [] and page.console_errors == []
