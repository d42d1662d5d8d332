"""A reviewer resolves a disagreement with the keyboard, in headless Chromium (SQLite pass)."""

import io
import uuid

import pytest
from django.conf import settings
from django.test import Client

from labeling import actions
from labeling.importer import import_items
from labeling.models import GoldLabel, Item, Review, ReviewQueue
from tests import services
from tests.browser import LAUNCH_ARGS, output_dir
from tests.conftest import require


def disputed_items(project, member, n):
    rows = "title,description\n" + "".join(
        f"Vision paper {i},Convolutional networks for image segmentation number {i}.\n"
        for i in range(n)
    )
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    alice, bob = member(username="alice"), member(username="bob")
    for _ in range(n):
        for who, name in ((alice, "mlops"), (bob, "other")):
            lease = actions.claim_next_item(who)
            actions.submit_annotation(
                who,
                lease.item_id,
                [project.categories.get(name=name).id],
                uuid.uuid4().hex,
                duration_ms=3400,
            )
    return list(Item.objects.filter(review_queue=ReviewQueue.DISAGREEMENT).order_by("rank"))


def session_cookie(user, base_url):
    client = Client()
    client.force_login(user)
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
        "url": base_url,
    }


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_lets_a_reviewer_resolve_a_disagreement_with_the_keyboard(
    project, member, live_server, request
):
    require(services.chromium_present(), "Chromium")
    from playwright.sync_api import expect, sync_playwright

    project.annotations_per_item = 2
    project.honeypot_percent = 0
    project.save()
    first, second = disputed_items(project, member, 2)
    reviewer = member("reviewer", username="rita")
    shots = output_dir(request.node.name)
    problems = []
    cookie = session_cookie(
        reviewer.user, live_server.url
    )  # the ORM only outside Playwright's loop

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.add_cookies([cookie])
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{live_server.url}/p/{project.slug}/review/?queue=disagreement")

        card = page.locator("#review-slot .item-card")
        expect(card).to_have_attribute("data-item-id", str(first.id))
        expect(card.locator("tr.annotation")).to_have_count(2)
        expect(card).to_contain_text("alice")
        expect(card).to_contain_text("bob")
        page.evaluate("window.stillTheSamePage = true")

        page.keyboard.press("a")  # the annotations disagree: nothing is sent, the reason is shown
        expect(page.locator("#status")).to_contain_text("The annotations disagree")
        page.keyboard.press("?")
        expect(page.locator("#shortcuts")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#shortcuts")).to_be_hidden()

        page.keyboard.press("n")
        expect(card.locator(".review-note")).to_be_focused()
        page.keyboard.type("Segmentation is vision, not ops.")
        page.keyboard.press("Escape")
        page.screenshot(path=str(shots / "1-disagreement.png"), full_page=True)

        page.keyboard.press("2")  # computer-vision
        expect(card).to_have_attribute("data-item-id", str(second.id))
        expect(page.locator("#status")).to_contain_text(
            f"Corrected item {first.id} to computer-vision"
        )
        expect(page.locator("#review-tabs [data-queue=disagreement] .count")).to_have_text("1")
        assert page.evaluate("window.stillTheSamePage") is True  # swapped by htmx, no reload
        page.screenshot(path=str(shots / "2-next-item.png"), full_page=True)

        page.keyboard.press("r")  # the second one goes back to the pool
        expect(page.locator("#review-slot .item-card")).to_have_attribute("data-empty", "true")
        page.screenshot(path=str(shots / "3-queue-empty.png"), full_page=True)
        browser.close()

    assert problems == []  # no script error, no CSP violation
    gold = GoldLabel.objects.get(item=first)
    decision = Review.objects.get(item=first)
    assert gold.categories == [project.categories.get(name="computer-vision").id]
    assert (gold.source, gold.decided_by, gold.review) == (
        GoldLabel.Source.REVIEW,
        reviewer.user,
        decision,
    )
    assert decision.note == "Segmentation is vision, not ops." and decision.duration_ms > 0
    assert Review.objects.get(item=second).decision == Review.Decision.REJECT
    assert Review.objects.count() == 2  # the refused `a` sent nothing
    second.refresh_from_db()
    assert (second.status, second.round) == (Item.Status.OPEN, 1)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_lets_a_reviewer_decide_without_javascript(project, member, live_server, request):
    require(services.chromium_present(), "Chromium")
    from playwright.sync_api import expect, sync_playwright

    project.annotations_per_item = 2
    project.honeypot_percent = 0
    project.save()
    first, second = disputed_items(project, member, 2)
    reviewer = member("reviewer", username="rita")
    cookie = session_cookie(reviewer.user, live_server.url)
    shots = output_dir(request.node.name)

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
        context = browser.new_context(
            java_script_enabled=False, viewport={"width": 1280, "height": 1000}
        )
        context.add_cookies([cookie])
        page = context.new_page()
        page.goto(f"{live_server.url}/p/{project.slug}/review/?queue=disagreement")
        expect(page.get_by_role("button", name="a Approve")).to_be_disabled()
        page.locator(f'[data-item-id="{first.id}"] textarea[name=note]').fill("Plain form")
        page.get_by_role("button", name="2 computer-vision").click()
        expect(page.locator(".messages")).to_contain_text(
            f"Corrected item {first.id} to computer-vision"
        )
        expect(page.locator("#review-slot .item-card")).to_have_attribute(
            "data-item-id", str(second.id)
        )
        page.screenshot(path=str(shots / "after-plain-post.png"), full_page=True)
        browser.close()

    decision = Review.objects.get()
    assert (decision.item_id, decision.decision, decision.note) == (
        first.id,
        "correct",
        "Plain form",
    )
