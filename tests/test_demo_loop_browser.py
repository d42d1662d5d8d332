"""The whole demo loop in headless Chromium: an admin imports a file, a model is trained, an
annotator labels by keyboard, a reviewer settles the disagreement, the model is trained again;
then the dashboard and the model page, with their server-drawn charts, in light and dark mode.
The ORM runs only between browser sessions (never inside Playwright's event loop)."""
import uuid

import pytest
from django.conf import settings
from django.test import Client

from labeling import actions
from labeling.models import Annotation, GoldLabel, ReviewPolicy
from modeling import runs
from modeling.models import ModelVersion
from tests import services
from tests.browser import LAUNCH_ARGS, PREFETCHED, QUIET, output_dir
from tests.conftest import require

from .modeling_data import csv_bytes, rows

# Every <img> inside a chart figure has been fetched and decoded (a 404 or a CSP block leaves 0).
BULK_ROWS = 60_000
CHARTS_DRAWN = "() => [...document.querySelectorAll('figure.chart img')].every(i => i.complete && i.naturalWidth > 0)"


def session_cookie(user, base_url):
    client = Client()
    client.force_login(user)
    return {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": base_url}


def train(project) -> ModelVersion:
    """A training run as the worker does it, in this process."""
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.DONE, version.error
    return version


def watch(page, problems):
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_runs_the_demo_loop_and_shows_the_dashboard_and_model_page(project, member, live_server, model_dir, request):
    require(services.chromium_present(), "Chromium")
    from playwright.sync_api import expect, sync_playwright

    project.annotations_per_item = 2
    project.honeypot_percent = 0
    project.review_policy = ReviewPolicy.DISAGREEMENTS
    project.save()
    ada, ann, bob = member("admin", username="ada"), member(username="ann"), member(username="bob")
    rita = member("reviewer", username="rita")
    cookies = {m.user.username: session_cookie(m.user, live_server.url) for m in (ada, ann, rita)}
    shots, problems = output_dir(request.node.name), []
    scratch = actions.create_project("Scratch", "scratch")
    actions.add_member(scratch, ada.user, "admin")
    bulk = ("title,description\n" + "".join(f"Bulk {i},Bulk text number {i} about pipelines.\n" for i in range(BULK_ROWS))).encode()
    upload = csv_bytes(list(rows(60, seed=3, prefix="gold")) + list(rows(6, seed=1003, labeled=False, prefix="open")))

    def browse(who, viewport=(1280, 900), scheme="light"):
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, color_scheme=scheme)
        context.add_cookies([cookies[who]])
        page = context.new_page()
        watch(page, problems)
        return page

    # 1. Import, in the browser.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browse("ada")
        page.goto(f"{live_server.url}/p/{project.slug}/import/")
        page.set_input_files("#id_file", files=[{"name": "papers.csv", "mimeType": "text/csv", "buffer": upload}])
        page.click("button[type=submit]")
        expect(page.locator(".messages")).to_contain_text("Imported 66 items from papers.csv")
        # A big file into a scratch project: its progress bar shows while the page waits.
        page.goto(f"{live_server.url}/p/{scratch.slug}/import/")
        page.set_input_files("#id_file", files=[{"name": "bulk.csv", "mimeType": "text/csv", "buffer": bulk}])
        # The bar polls while the browser waits for the import's answer (too quick here to see).
        with page.expect_response(lambda r: "/import/progress/" in r.url) as polled:
            page.click("button[type=submit]")
        assert polled.value.status == 200 and polled.value.request.headers.get("hx-request") == "true"
        expect(page.locator(".messages")).to_contain_text(f"Imported {BULK_ROWS:,} items from bulk.csv", timeout=120_000)
        browser.close()
    first = train(project)

    # 2. Label by keyboard (with the first model's suggestions beside the items).
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browse("ann")
        page.goto(f"{live_server.url}/p/{project.slug}/annotate/")
        page.wait_for_function(PREFETCHED)
        for _ in range(3):
            page.keyboard.press("3")  # mlops
            page.wait_for_function(QUIET)
            page.wait_for_function(PREFETCHED)
        browser.close()
    assert Annotation.objects.filter(annotator=ann.user).count() == 3
    mlops, other = (project.categories.get(name=n).id for n in ("mlops", "other"))
    for n in range(3):  # Bob agrees twice and disagrees once
        lease = actions.claim_next_item(bob)
        actions.submit_annotation(bob, lease.item_id, [other if n == 0 else mlops], uuid.uuid4().hex)

    # 3. Review: the reviewer corrects the disagreement by keyboard.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browse("rita")
        page.goto(f"{live_server.url}/p/{project.slug}/review/?queue=disagreement")
        expect(page.locator("#review-slot .item-card[data-item-id]")).to_have_count(1)
        page.keyboard.press("4")  # other
        expect(page.locator("#status")).to_contain_text("Corrected item")
        browser.close()
    assert GoldLabel.objects.filter(project=project, source=GoldLabel.Source.REVIEW).count() == 1

    # 4. Retrain on the new gold labels, recount, and look.
    second = train(project)
    assert second.trained_on > first.trained_on
    gold = actions.recount_progress(project)["gold"]
    assert gold == 60 + 3
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS)
        for scheme in ("light", "dark"):
            page = browse("rita", viewport=(1280, 1000), scheme=scheme)
            page.goto(f"{live_server.url}/p/{project.slug}/")
            expect(page.locator("#stat-gold span")).to_have_text(str(gold))
            page.screenshot(path=str(shots / f"dashboard-{scheme}.png"), full_page=True)

            page.goto(f"{live_server.url}/p/{project.slug}/model/")
            expect(page.locator("h2", has_text=f"Serving version v{second.number}")).to_be_visible()
            expect(page.locator("figure.chart img")).to_have_count(3)
            page.wait_for_function(CHARTS_DRAWN)
            sources = page.eval_on_selector_all("figure.chart img", "imgs => imgs.map(i => i.currentSrc)")
            assert all(f"/charts/{scheme}/" in src for src in sources), sources  # the theme's drawing
            expect(page.locator("#retrain-advice")).to_contain_text("How often to retrain")
            page.screenshot(path=str(shots / f"model-{scheme}.png"), full_page=True)
        browser.close()
    assert not problems, problems  # no script error, no CSP violation, no failed image
