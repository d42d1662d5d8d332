"""Annotating a multi-label project: tick boxes, at least one category unless the project allows
"none of these" (said explicitly), the same rules in the API, consensus on exact sets, and
suggestions with an independent probability and threshold per category."""
import io
import re
from dataclasses import dataclass

import pytest
from django.contrib.messages import get_messages
from django.template.loader import render_to_string
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, GoldLabel, Item, Project, ReviewPolicy, ReviewQueue
from modeling.models import ModelVersion, Prediction
from modeling.suggestions import Bar, Suggestion

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def multi_project(slug="tags", allow_none=False, k=1, **settings):
    project = actions.create_project(
        slug.title(), slug, mode=Project.Mode.MULTI, allow_none_of_these=allow_none,
        annotations_per_item=k, honeypot_percent=0, blind_control_percent=0, **settings,
    )
    rows = "title,description\n" + "".join(f"Item {i},text of item {i}\n" for i in range(4))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    return project


def browser_for(membership) -> Client:
    client = Client()
    client.force_login(membership.user)
    return client


def api_for(membership) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=membership.user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def first_card(client, project) -> dict:
    html = client.get(f"/p/{project.slug}/annotate/").content.decode()
    item = int(re.search(r'class="item-card" data-item-id="(\d+)"', html).group(1))
    request_id = re.search(r'name="request_id" value="(\w+)"', html).group(1)
    return {"html": html, "item": str(item), "request_id": request_id}


def ids(project, *names) -> list[int]:
    return sorted(project.categories.get(name=n).id for n in names)


def post_label(client, project, card, categories=(), none_of_these=False, **headers):
    data = {"item": card["item"], "request_id": card["request_id"], "category": [str(c) for c in categories]}
    if none_of_these:
        data["none_of_these"] = "1"
    return client.post(f"/p/{project.slug}/annotate/submit/", data, **headers)


# --- at least one category, unless "none of these" ------------------------------------------------


def test_it_refuses_an_empty_set_with_a_message_and_stores_nothing(member):
    project = multi_project()
    annotator = member("annotator", in_project=project)
    client = browser_for(annotator)
    card = first_card(client, project)

    response = post_label(client, project, card)  # a plain form post: redirect with the reason
    assert response.status_code == 302
    (message,) = get_messages(response.wsgi_request)
    assert "Tick at least one category (keys 1–9)" in str(message)
    htmx = post_label(client, project, card, **HTMX)
    assert htmx.status_code == 409
    assert "Tick at least one category" in htmx.content.decode()
    # Asking for "none of these" where the project does not allow it is refused by the action.
    refused = post_label(client, project, card, none_of_these=True, **HTMX)
    assert refused.status_code == 409
    assert "does not allow “none of these”" in refused.content.decode()
    assert Annotation.objects.count() == 0
    assert 'name="none_of_these"' not in card["html"]


def test_it_stores_none_of_these_as_an_empty_set_where_the_project_allows_it(member):
    project = multi_project(allow_none=True)
    annotator = member("annotator", in_project=project)
    client = browser_for(annotator)
    card = first_card(client, project)
    assert card["html"].count('name="none_of_these" value="1" data-key="0"') == 2  # both cards
    assert "none of these</strong>" in card["html"]  # in the shortcuts table

    nothing_said = post_label(client, project, card, **HTMX)
    assert nothing_said.status_code == 409
    assert "or “none of these” (key 0)" in nothing_said.content.decode()
    both = post_label(client, project, card, ids(project, "mlops"), none_of_these=True, **HTMX)
    assert both.status_code == 409 and "not both" in both.content.decode()
    assert Annotation.objects.count() == 0

    assert post_label(client, project, card, none_of_these=True).status_code == 302
    assert Annotation.objects.get().categories == []
    # k = 1: the empty set is the item's gold label.
    assert GoldLabel.objects.get(item_id=card["item"]).categories == []


def test_it_stores_the_ticked_set_sorted(member):
    project = multi_project()
    annotator = member("annotator", in_project=project)
    client = browser_for(annotator)
    card = first_card(client, project)
    chosen = ids(project, "other", "computer-vision", "mlops")
    assert post_label(client, project, card, reversed(chosen)).status_code == 302
    assert Annotation.objects.get().categories == chosen


# --- the API --------------------------------------------------------------------------------------


def claim(api, project) -> int:
    response = api.post(f"/api/projects/{project.slug}/claim/")
    assert response.status_code in (200, 201), response.data
    return response.data["item"]["id"]


def test_the_api_refuses_an_empty_list_with_400_unless_none_of_these_is_allowed(member):
    strict = multi_project("strict")
    api = api_for(member("annotator", in_project=strict))
    item = claim(api, strict)
    response = api.post(
        "/api/projects/strict/annotations/", {"item": item, "categories": [], "client_request_id": "r1"}, format="json"
    )
    assert response.status_code == 400
    assert "does not allow “none of these”" in response.data["categories"][0]

    lenient = multi_project("lenient", allow_none=True)
    api = api_for(member("annotator", in_project=lenient))
    item = claim(api, lenient)
    response = api.post(
        "/api/projects/lenient/annotations/", {"item": item, "categories": [], "client_request_id": "r2"}, format="json"
    )
    assert response.status_code == 201, response.data
    assert response.data["categories"] == []
    many = api.post(
        "/api/projects/lenient/annotations/",
        {"item": claim(api, lenient), "categories": ["mlops", "Other"], "client_request_id": "r3"}, format="json",
    )
    assert many.status_code == 201
    assert many.data["categories"] == ids(lenient, "mlops", "other")


def test_a_single_label_project_still_takes_exactly_one_category(project, member):
    project.honeypot_percent = 0
    project.save()
    import_items(project, io.BytesIO(b"title,description\nA,text a\n"), "a.csv")
    api = api_for(member("annotator"))
    item = claim(api, project)
    for categories in ([], ["mlops", "other"]):
        response = api.post(
            f"/api/projects/{project.slug}/annotations/",
            {"item": item, "categories": categories, "client_request_id": f"r{len(categories)}"}, format="json",
        )
        assert response.status_code == 400
        assert "single-label" in str(response.data)
    with pytest.raises(actions.QueueError, match="Choose a category"):
        actions._validated_categories(project, [])


# --- consensus on exact sets ------------------------------------------------------------------------


def label_as(membership, categories, request_id):
    lease = actions.claim_next_item(membership)
    actions.submit_annotation(membership, lease.item_id, categories, request_id)
    return lease.item_id


def test_two_annotators_with_the_same_set_make_gold_by_consensus(member):
    project = multi_project(k=2, review_policy=ReviewPolicy.DISAGREEMENTS)
    first, second = member("annotator", in_project=project), member("annotator", in_project=project)
    cv, mlops = ids(project, "computer-vision", "mlops")
    item = label_as(first, [mlops, cv], "a")
    assert label_as(second, [cv, mlops], "b") == item
    gold = GoldLabel.objects.get(item_id=item)
    assert (gold.categories, gold.source) == ([cv, mlops], GoldLabel.Source.CONSENSUS)


def test_overlapping_but_different_sets_go_to_the_disagreement_queue(member):
    project = multi_project(k=2, review_policy=ReviewPolicy.DISAGREEMENTS)
    first, second = member("annotator", in_project=project), member("annotator", in_project=project)
    cv, mlops = ids(project, "computer-vision", "mlops")
    item = label_as(first, [cv, mlops], "a")
    label_as(second, [cv], "b")
    assert Item.objects.get(pk=item).review_queue == ReviewQueue.DISAGREEMENT
    assert not GoldLabel.objects.filter(item_id=item).exists()


# --- suggestions: a probability and a threshold per category ----------------------------------------


@dataclass
class BarWithThreshold(Bar):
    threshold: float = 0.5


def render_suggestion(project, bars) -> str:
    suggestion = Suggestion(True, "shown", 7, 3, bars)
    return render_to_string("modeling/_suggestion.html", {"project": project, "suggestion": suggestion})


def test_multi_label_suggestions_show_each_probability_against_its_threshold():
    project = actions.create_project("Tags", "tags", mode=Project.Mode.MULTI)
    nlp, cv, mlops, other = project.categories.all()
    html = render_suggestion(project, [
        BarWithThreshold(nlp, 0.82, 82, True, threshold=0.35),
        BarWithThreshold(cv, 0.30, 30, False, threshold=0.35),
        BarWithThreshold(mlops, 0.64, 64, False, threshold=0.7),
        Bar(other, 0.55, 55, False),  # no threshold given: the default 0.5
    ])
    rows = re.findall(r'<li( class="likeliest above-threshold")? data-category="(\d+)">(.*?)</li>', html, re.DOTALL)
    shown = {int(cat): (bool(above), re.sub(r"\s+", " ", body)) for above, cat, body in rows}
    assert shown[nlp.id][0] and "≥ 35% ✓" in shown[nlp.id][1] and "82%" in shown[nlp.id][1]
    assert not shown[cv.id][0] and "≥ 35%" in shown[cv.id][1] and "✓" not in shown[cv.id][1]
    assert not shown[mlops.id][0] and "≥ 70%" in shown[mlops.id][1]
    assert shown[other.id][0] and "≥ 50% ✓" in shown[other.id][1]
    assert "Independent probability per category" in html


def test_single_label_suggestions_are_unchanged():
    project = actions.create_project("Plain", "plain")
    nlp, cv, *_ = project.categories.all()
    html = render_suggestion(project, [Bar(nlp, 0.7, 70, True), Bar(cv, 0.3, 30, False)])
    assert "threshold" not in html and "≥" not in html
    assert html.count('class="likeliest"') == 1


def test_the_annotate_page_shows_stored_multi_label_probabilities_with_thresholds(member):
    project = multi_project()
    annotator = member("annotator", in_project=project)
    version = ModelVersion.objects.create(project=project, number=1, status=ModelVersion.Status.DONE, active=True)
    categories = list(project.categories.all())
    for item in Item.objects.filter(project=project):
        Prediction.objects.create(
            item=item, project=project, model_version=version, top_category=categories[0], margin=0.1,
            probabilities={str(c.id): p for c, p in zip(categories, [0.9, 0.6, 0.2, 0.05], strict=True)},
        )
    html = browser_for(annotator).get(f"/p/{project.slug}/annotate/").content.decode()
    card = html[html.index('class="item-card"'):html.index("</article>")]
    assert 'class="suggestion multi"' in card
    assert card.count("above-threshold") == 2  # 90% and 60% reach the default 50%
    assert card.count("≥ 50%") == 4
    assert "checked" not in card  # information only: nothing ticked for the person
