"""The dashboard after a small demo loop (import → label in the browser → review), in headless
Chromium: it renders under the enforced CSP, bars have their widths, light and dark screenshots."""
import io
import uuid

import pytest
from django.conf import settings
from django.test import Client

from labeling import actions, review
from labeling.importer import import_items
from labeling.models import Annotation, ReviewPolicy
from tests import services
from tests.browser import LAUNCH_ARGS, PREFETCHED, QUIET, output_dir
from tests.conftest import require


def session_cookie(user, base_url):
    client = Client()
    client.force_login(user)
    return {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": base_url}


def label_rest(project, ann, bob, rita):
    """Bob labels everything Ann did (one disagreement); Rita corrects the disagreement."""
    other = project.categories.get(name="other").id
    mlops = project.categories.get(name="mlops").id
    for n in range(3):
        lease = actions.claim_next_item(bob)
        actions.submit_annotation(bob, lease.item_id, [other if n == 0 else mlops], uuid.uuid4().hex)
    item = review.claim_review(rita, "disagreement")
    review.decide_review(rita, item.id, "correct", uuid.uuid4().hex, category_ids=[other])
    actions.recount_progress(project)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_shows_the_dashboard_after_a_demo_loop(project, member, live_server, request):
    require(services.chromium_present(), "Chromium")
    from playwright.sync_api import expect, sync_playwright

    project.annotations_per_item = 2
    project.honeypot_percent = 0
    project.review_policy = ReviewPolicy.DISAGREEMENTS
    project.save()
    rows = "title,description\n" + "".join(f"Paper {i},Pipelines for model deployment number {i}.\n" for i in range(8))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    ann, bob, rita = member(username="ann"), member(username="bob"), member("reviewer", username="rita")
    shots, problems = output_dir(request.node.name), []
    cookies = {m.user.username: session_cookie(m.user, live_server.url) for m in (ann, rita)}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.context.add_cookies([cookies["ann"]])
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{live_server.url}/p/{project.slug}/annotate/")
        page.wait_for_function(PREFETCHED)
        for _ in range(3):
            page.keyboard.press("3")  # mlops
            page.wait_for_function(QUIET)
            page.wait_for_function(PREFETCHED)
        browser.close()
    assert Annotation.objects.filter(annotator=ann.user).count() == 3
    label_rest(project, ann, bob, rita)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS)
        for scheme in ("light", "dark"):
            page = browser.new_context(viewport={"width": 1280, "height": 1100}, color_scheme=scheme).new_page()
            page.context.add_cookies([cookies["rita"]])
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{live_server.url}/p/{project.slug}/")
            expect(page.locator("#stat-gold span")).to_have_text("3")
            expect(page.locator("#stat-reviewed span")).to_have_text("1")
            expect(page.locator("#throughput tbody tr")).to_have_count(2)
            expect(page.locator("#agreement-weeks li")).to_have_count(1)
            # The mlops bar: 2 of 3 gold labels, drawn by a width class (the CSP forbids style="").
            mlops_bar = page.locator("#label-distribution li", has_text="mlops").locator(".bar")
            expect(mlops_bar).to_have_class("bar w-65")
            track = page.locator("#label-distribution li", has_text="mlops").locator(".bar-track").bounding_box()
            width = mlops_bar.bounding_box()["width"]
            assert width == pytest.approx(0.65 * track["width"], abs=2)
            page.screenshot(path=str(shots / f"dashboard-{scheme}.png"), full_page=True)
        browser.close()
    assert not problems, problems
