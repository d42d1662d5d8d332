"""Suggestions on the annotate page: shown beside the item and never selected; none on blind
controls and honeypots; what was shown is recorded with the label from the server's side, never
from the browser; the influence report's figures; and the same in a real browser."""
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from labeling import actions
from labeling.models import Annotation, Assignment, Category, GoldLabel, Item, Project
from modeling import predictions, runs, serving, suggestions
from modeling.models import ModelVersion, Prediction
from tests.browser import PREFETCHED, VISIBLE_CARD, log_in

from .modeling_data import load

HTMX = {"HTTP_HX_REQUEST": "true"}
PASSWORD = "pw-for-tests-1"


@pytest.fixture
def model_algorithms():
    return ["tfidf_logreg"]


pytestmark = pytest.mark.usefixtures("model_dir")


def set_project(project, **fields) -> Project:
    Project.objects.filter(pk=project.pk).update(**fields)
    project.refresh_from_db()
    return project


def train(project) -> ModelVersion:
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk)
    version.refresh_from_db()
    return version


@pytest.fixture
def trained(project):
    set_project(project, honeypot_percent=0, blind_control_percent=0)
    load(project, gold=80, unlabeled=10)
    version = train(project)
    assert version.active and Prediction.objects.count() == 10
    return version


def page_for(project, membership) -> tuple[Client, str]:
    client = Client()
    client.force_login(membership.user)
    return client, client.get(f"/p/{project.slug}/annotate/").content.decode()


def first_card(html: str) -> str:
    start = html.index('class="item-card"')
    return html[start : html.index("</article>", start)]


def card_item(card: str) -> int:
    return int(re.search(r'data-item-id="(\d+)"', card).group(1))


def label_form(card: str) -> str:
    return card[card.index('<form method="post" class="label-form') : card.index("</form>")]


@pytest.mark.django_db
def test_it_shows_the_models_probabilities_beside_the_item_and_selects_nothing(project, trained, member):
    annotator = member()
    _, html = page_for(project, annotator)
    card = first_card(html)
    stored = Prediction.objects.get(item_id=card_item(card))

    assert 'class="suggestion"' in card
    assert f"version {trained.number}" in card and f'data-model-version="{trained.pk}"' in card
    meters = re.findall(r'<meter [^>]*value="([\d.]+)"', card)
    categories = list(project.categories.all())
    assert [float(v) for v in meters] == pytest.approx([stored.probabilities[str(c.id)] for c in categories], abs=1e-3)
    # Augment, don't automate: the choices are exactly as without a model, none pressed or focused.
    form = label_form(card)
    for marker in ("autofocus", "checked", "aria-pressed", "selected", "likeliest", "suggest"):
        assert marker not in form
    assert re.findall(r'data-key="(\d)"', form) == [c.shortcut for c in categories]


@pytest.mark.django_db
def test_it_records_what_was_shown_from_the_servers_side(project, trained, member):
    annotator = member()
    client, html = page_for(project, annotator)
    card = first_card(html)
    item = card_item(card)
    stored = Prediction.objects.get(item_id=item)
    chosen = Category.objects.get(project=project, name="other")
    request_id = re.search(r'name="request_id" value="(\w+)"', card).group(1)

    # Whatever the browser claims about the suggestion is ignored.
    client.post(
        f"/p/{project.slug}/annotate/submit/",
        {"item": item, "request_id": request_id, "category": chosen.id, "suggestion_shown": "0",
         "model_version_id": "999", "suggested_category": str(chosen.id)},
        **HTMX,
    )

    annotation = Annotation.objects.get(item_id=item)
    assert annotation.categories == [chosen.id]
    assert annotation.suggestion_shown is True
    assert annotation.model_version_id == trained.pk
    assert annotation.suggested_category_id == stored.top_category_id
    assert annotation.suggestion == stored.probabilities


@pytest.mark.django_db
def test_it_shows_nothing_on_blind_controls_but_keeps_the_hidden_suggestion(project, trained, member):
    set_project(project, blind_control_percent=100)
    annotator = member()
    client, html = page_for(project, annotator)
    card = first_card(html)
    item = card_item(card)
    assert 'class="suggestion"' not in html and "<meter" not in html

    request_id = re.search(r'name="request_id" value="(\w+)"', card).group(1)
    category = project.categories.first()
    client.post(f"/p/{project.slug}/annotate/submit/", {"item": item, "request_id": request_id, "category": category.id})

    annotation = Annotation.objects.get(item_id=item)
    assert annotation.suggestion_shown is False
    # What the model would have said, for the influence report's control group.
    assert annotation.model_version_id == trained.pk
    assert annotation.suggested_category_id == Prediction.objects.get(item_id=item).top_category_id


@pytest.mark.django_db
def test_it_shows_nothing_on_honeypots_and_records_no_suggestion(project, trained, member):
    set_project(project, honeypot_percent=100)
    annotator = member()
    honeypot_item = Item.objects.filter(project=project, status=Item.Status.GOLD, split="train").first()
    # Even a honeypot item that has a stored prediction (it was unlabeled once) shows none.
    version = ModelVersion.objects.get(active=True)
    model = serving.model_for(version)
    columns = predictions.category_columns(project, model.classes_)
    predictions.store(version, columns, [honeypot_item.pk], model.predict_proba([honeypot_item.text]))
    lease = actions.claim_next_item(annotator)
    while lease is not None and lease.item_id != honeypot_item.pk:
        Assignment.objects.filter(pk=lease.pk).delete()  # not the one under test: draw again
        lease = actions.claim_next_item(annotator)
    assert lease.is_honeypot

    assert suggestions.for_card(annotator, lease, list(project.categories.all())).reason == "honeypot"
    client = Client()
    client.force_login(annotator.user)
    html = client.get(f"/p/{project.slug}/annotate/").content.decode()
    assert card_item(first_card(html)) == honeypot_item.pk
    assert 'class="suggestion"' not in first_card(html)
    assert suggestions.for_submit(annotator, honeypot_item.pk) == {"suggestion_shown": False}


@pytest.mark.django_db
def test_it_shows_nothing_before_a_model_exists(project, member):
    set_project(project, honeypot_percent=0, blind_control_percent=0)
    load(project, gold=0, unlabeled=3)
    annotator = member()
    _, html = page_for(project, annotator)
    assert 'class="suggestion"' not in html
    assert suggestions.for_submit(annotator, card_item(first_card(html))) == {"suggestion_shown": False}


@pytest.mark.django_db
def test_it_picks_blind_controls_by_a_stable_hash_at_the_projects_rate(project):
    set_project(project, blind_control_percent=10)
    picks = [suggestions.is_blind(project, item, user) for item in range(2000) for user in range(5)]
    assert 0.085 < sum(picks) / len(picks) < 0.115
    assert picks == [suggestions.is_blind(project, item, user) for item in range(2000) for user in range(5)]
    set_project(project, blind_control_percent=0)
    assert not any(suggestions.is_blind(project, item, 1) for item in range(500))


# --- influence --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_reports_accuracy_acceptance_and_wrong_acceptance_with_and_without_suggestions(project, make_user):
    load(project, gold=8, unlabeled=2)
    version = ModelVersion.objects.create(project=project, number=1, status="done")
    nlp, cv, mlops = (Category.objects.get(project=project, name=n).id for n in ("natural-language-processing", "computer-vision", "mlops"))
    gold_items = list(Item.objects.filter(project=project, status=Item.Status.GOLD).order_by("id"))
    GoldLabel.objects.filter(item__in=gold_items).update(categories=[nlp])
    open_item = Item.objects.filter(project=project, status=Item.Status.OPEN).first()
    ann, bob = make_user("ann"), make_user("bob")

    def label(user, item, chosen, shown, suggested, n, version_id=version.pk):
        Annotation.objects.create(
            item=item, annotator=user, project=project, categories=[chosen], client_request_id=f"r{n}",
            suggestion_shown=shown, suggested_category_id=suggested, model_version_id=version_id,
        )

    # ann, shown: right suggestion taken (correct), wrong suggestion taken (wrong), wrong one refused (correct).
    label(ann, gold_items[0], nlp, True, nlp, 1)
    label(ann, gold_items[1], cv, True, cv, 2)
    label(ann, gold_items[2], nlp, True, mlops, 3)
    # ann, blind: agrees with the hidden (wrong) answer once, is right once.
    label(ann, gold_items[3], cv, False, cv, 4)
    label(ann, gold_items[4], nlp, False, nlp, 5)
    # bob, shown, on an item without gold: counts for acceptance only.
    label(bob, open_item, cv, True, cv, 6)
    # bob, before any model.
    label(bob, gold_items[5], nlp, False, None, 7, version_id=None)

    report = suggestions.influence(project)

    whole = report["project"]
    assert whole["shown"] == {
        "annotations": 4, "on_gold": 3, "accuracy": round(2 / 3, 4), "agrees_with_model": 0.75,
        "wrong_suggestions": 2, "took_wrong_suggestion": 0.5, "accuracy_when_agreeing": 0.5,
    }
    assert whole["blind"]["annotations"] == 2 and whole["blind"]["accuracy"] == 0.5
    assert whole["blind"]["agrees_with_model"] == 1.0 and whole["blind"]["took_wrong_suggestion"] == 1.0
    assert whole["without_model"] == 1
    assert whole["accuracy_change"] == round(2 / 3 - 0.5, 4) and whole["agreement_change"] == -0.25
    by_name = {row["username"]: row for row in report["annotators"]}
    assert by_name["ann"]["shown"]["annotations"] == 3 and by_name["ann"]["blind"]["annotations"] == 2
    assert by_name["bob"]["shown"] == {
        "annotations": 1, "on_gold": 0, "accuracy": None, "agrees_with_model": 1.0,
        "wrong_suggestions": 0, "took_wrong_suggestion": None, "accuracy_when_agreeing": None,
    }
    assert by_name["bob"]["without_model"] == 1


# --- in a real browser ------------------------------------------------------------------------


def open_annotate(chromium, live_server, project, username):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    log_in(page, live_server.url, username, PASSWORD, f"/p/{project.slug}/annotate/")
    page.wait_for_function(PREFETCHED)
    return page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_shows_a_suggestion_unselected_and_blind_items_none_in_a_browser(chromium, live_server, project, trained):
    users = get_user_model()
    shown_to = actions.add_member(project, users.objects.create_user("shown", password=PASSWORD))
    page = open_annotate(chromium, live_server, project, "shown")

    card = page.locator(VISIBLE_CARD)
    assert card.locator(".suggestion").is_visible()
    assert card.locator(".suggestion meter").count() == project.categories.count()
    # Nothing chosen for the person: focus is not on a category, no button looks pressed.
    assert page.evaluate("() => !document.activeElement.closest('.label-form')")
    assert card.locator(".label-form [aria-pressed], .label-form :checked").count() == 0
    item = int(card.get_attribute("data-item-id"))
    key = "2"
    chosen = int(card.locator(f'.label-form button[data-key="{key}"]').get_attribute("value"))
    page.keyboard.press(key)
    page.wait_for_function("(id) => !document.querySelector(`#stage .item-card[data-item-id='${id}']:not([data-sent])`)", arg=item)
    page.wait_for_function("() => !document.querySelector('#stage > .slot[data-awaiting]')")
    annotation = Annotation.objects.get(annotator=shown_to.user, item_id=item)
    assert annotation.categories == [chosen] and annotation.suggestion_shown
    assert page.errors == []

    set_project(project, blind_control_percent=100)
    actions.add_member(project, users.objects.create_user("blind", password=PASSWORD))
    blind_page = open_annotate(chromium, live_server, project, "blind")
    assert blind_page.locator("#stage .suggestion").count() == 0
    assert blind_page.locator(VISIBLE_CARD).is_visible()
    assert blind_page.errors == []
