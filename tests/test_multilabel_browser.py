"""Multi-label labeling in headless Chromium, keyboard only (SQLite pass): number keys tick and
untick categories, 0 is "none of these", Enter sends; the reviewer corrects to a set the same way;
suggestions show a probability and a threshold per category. Screenshots in test-results/."""
import io
import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, GoldLabel, Item, Project, Review, ReviewPolicy, ReviewQueue
from modeling.models import ModelVersion, Prediction
from tests.browser import (
    PREFETCHED,
    PROBE,
    QUIET,
    VISIBLE_CARD,
    output_dir,
    visible_item,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def signed_in_page(chromium, live_server, user, path):
    client = Client()
    client.force_login(user)
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": live_server.url}])
    context.add_init_script(PROBE)
    page = context.new_page()
    page.set_default_timeout(30_000)  # the machine is shared; nothing here waits on purpose
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{live_server.url}{path}")
    return page


def tags_project(**settings) -> Project:
    project = actions.create_project(
        "Tags", "tags", mode=Project.Mode.MULTI, honeypot_percent=0, blind_control_percent=0, **settings
    )
    rows = "title,description\n" + "".join(
        f"Paper {i},Serving a vision model in production with monitoring and retraining number {i}.\n"
        for i in range(4)
    )
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    return project


def with_predictions(project) -> None:
    """A stored model's probabilities for every item, so each card shows a suggestion."""
    version = ModelVersion.objects.create(project=project, number=1, status=ModelVersion.Status.DONE, active=True)
    categories = list(project.categories.all())
    for item in Item.objects.filter(project=project):
        Prediction.objects.create(
            item=item, project=project, model_version=version, top_category=categories[1], margin=0.2,
            probabilities={str(c.id): p for c, p in zip(categories, [0.12, 0.81, 0.57, 0.04], strict=True)},
        )


def ticked(page) -> list[int]:
    return sorted(int(v) for v in page.eval_on_selector_all(
        f"{VISIBLE_CARD} input[name=category]:checked", "boxes => boxes.map(b => b.value)"
    ))


def press_enter_and_wait_for_swap(page) -> None:
    swaps = page.evaluate("() => window.__swaps.length")
    page.keyboard.press("Enter")
    page.wait_for_function("(n) => window.__swaps.length > n", arg=swaps)


def test_it_toggles_categories_with_number_keys_and_sends_them_with_enter(chromium, live_server, request):
    project = tags_project(allow_none_of_these=True)
    with_predictions(project)
    user = get_user_model().objects.create_user("tagger", password="unused-pw-1")
    actions.add_member(project, user)
    _, cv, mlops, other = [c.id for c in project.categories.all()]
    shots = output_dir(request.node.name)

    page = signed_in_page(chromium, live_server, user, "/p/tags/annotate/")
    page.wait_for_function(PREFETCHED)
    first = visible_item(page)
    suggestion = page.locator(f"{VISIBLE_CARD} .suggestion.multi")
    assert suggestion.locator("li.above-threshold").count() == 2  # 81% and 57% reach 50%
    assert "≥ 50%" in suggestion.inner_text()

    page.keyboard.press("Enter")  # nothing ticked: refused in the page, nothing sent
    assert "Tick at least one category" in page.text_content("#status")
    assert "none of these" in page.text_content("#status")
    for key in "2344":  # 4 ticked then unticked: computer-vision and mlops remain
        page.keyboard.press(key)
    assert ticked(page) == [cv, mlops]
    page.screenshot(path=str(shots / "1-two-ticked.png"))
    press_enter_and_wait_for_swap(page)

    second = visible_item(page)
    assert second != first
    assert ticked(page) == []  # the next card starts blank: nothing carried over or pre-selected
    page.keyboard.press("1")
    page.keyboard.press("0")  # "none of these" unticks the categories ...
    assert ticked(page) == [] and page.is_checked(f"{VISIBLE_CARD} input[name=none_of_these]")
    page.keyboard.press("4")  # ... and a category unticks "none of these"
    assert ticked(page) == [other] and not page.is_checked(f"{VISIBLE_CARD} input[name=none_of_these]")
    page.keyboard.press("4")
    page.keyboard.press("0")
    page.screenshot(path=str(shots / "2-none-of-these.png"))
    press_enter_and_wait_for_swap(page)
    page.wait_for_function(QUIET)
    page.keyboard.press("?")
    page.screenshot(path=str(shots / "3-shortcuts.png"))

    assert dict(Annotation.objects.filter(annotator=user).values_list("item_id", "categories")) == {
        first: [cv, mlops], second: [],
    }
    assert page.text_content("#labeled-today") == "2"
    assert page.problems == []


def test_it_labels_a_set_without_javascript(chromium, live_server):
    project = tags_project()
    user = get_user_model().objects.create_user("plain", password="unused-pw-1")
    actions.add_member(project, user)
    client = Client()
    client.force_login(user)
    context = chromium.new_context(java_script_enabled=False)
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": live_server.url}])
    page = context.new_page()
    page.goto(f"{live_server.url}/p/tags/annotate/")
    first = visible_item(page)
    page.click(f"{VISIBLE_CARD} button[data-key=Enter]")  # nothing ticked: the server says why
    page.wait_for_url(f"{live_server.url}/p/tags/annotate/")
    assert "Tick at least one category" in page.text_content(".messages, body")
    page.check(f'{VISIBLE_CARD} input[data-key="1"]')
    page.check(f'{VISIBLE_CARD} input[data-key="3"]')
    page.click(f"{VISIBLE_CARD} button[data-key=Enter]")
    page.wait_for_url(f"{live_server.url}/p/tags/annotate/")
    nlp, _, mlops, _ = [c.id for c in project.categories.all()]
    assert Annotation.objects.get(annotator=user).categories == [nlp, mlops]
    assert Annotation.objects.get(annotator=user).item_id == first
    context.close()


def test_a_reviewer_corrects_to_a_set_with_number_keys_and_enter(chromium, live_server, request):
    project = tags_project(review_policy=ReviewPolicy.ALL)
    annotator = actions.add_member(project, get_user_model().objects.create_user("ann", password="unused-pw-1"))
    reviewer = get_user_model().objects.create_user("rev", password="unused-pw-1")
    actions.add_member(project, reviewer, "reviewer")
    nlp, _, mlops, other = [c.id for c in project.categories.all()]
    lease = actions.claim_next_item(annotator)
    actions.submit_annotation(annotator, lease.item_id, [nlp], uuid.uuid4().hex, duration_ms=2100)
    assert Item.objects.get(pk=lease.item_id).review_queue == ReviewQueue.REVIEW

    page = signed_in_page(chromium, live_server, reviewer, "/p/tags/review/?queue=review")
    card = page.locator("#review-slot .item-card")
    assert card.get_attribute("data-item-id") == str(lease.item_id)
    page.keyboard.press("Enter")  # nothing ticked: refused with the reason, nothing sent
    assert "Tick at least one category" in page.text_content("#status")
    for key in "242":
        page.keyboard.press(key)
    page.keyboard.press("3")
    page.screenshot(path=str(shots_dir(request) / "review-set.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("#review-slot .item-card[data-empty=true]")
    assert f"Corrected item {lease.item_id} to mlops, other" in page.text_content("#status")
    assert page.problems == []

    gold = GoldLabel.objects.get(item_id=lease.item_id)
    assert (gold.categories, gold.source) == ([mlops, other], GoldLabel.Source.REVIEW)
    assert Review.objects.get().decision == Review.Decision.CORRECT


def shots_dir(request):
    return output_dir(request.node.name)
