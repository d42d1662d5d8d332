"""Reviewing a multi-label project: approve when the annotations agree as sets, correct to a set
(tick boxes and one send, with or without JavaScript, or the API), "none of these" only where
allowed, gold stores the set."""
import io
import re
import uuid

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import actions, review
from labeling.importer import import_items
from labeling.models import GoldLabel, Item, Project, Review, ReviewPolicy, ReviewQueue

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def multi_project(allow_none=False, policy=ReviewPolicy.ALL, slug="tags"):
    project = actions.create_project(
        "Tags", slug, mode=Project.Mode.MULTI, allow_none_of_these=allow_none, annotations_per_item=2,
        review_policy=policy, honeypot_percent=0, blind_control_percent=0,
    )
    import_items(project, io.BytesIO(b"title,description\nOne,text one\nTwo,text two\n"), "items.csv")
    return project


def ids(project, *names) -> list[int]:
    return sorted(project.categories.get(name=n).id for n in names)


def annotate(project, member, first_set, second_set) -> Item:
    a, b = member("annotator", in_project=project), member("annotator", in_project=project)
    lease = actions.claim_next_item(a)
    actions.submit_annotation(a, lease.item_id, first_set, uuid.uuid4().hex)
    assert actions.claim_next_item(b).item_id == lease.item_id
    actions.submit_annotation(b, lease.item_id, second_set, uuid.uuid4().hex)
    return Item.objects.get(pk=lease.item_id)


def reviewer_page(client, project, queue) -> str:
    return client.get(f"/p/{project.slug}/review/?queue={queue}").content.decode()


def card_fields(html: str, queue: str) -> dict:
    return {
        "item": re.search(r'name="item" value="(\d+)"', html).group(1),
        "request_id": re.search(r'name="request_id" value="(\w+)"', html).group(1),
        "queue": queue,
    }


@pytest.fixture
def reviewer(member):
    def make(project):
        membership = member("reviewer", in_project=project)
        client = Client()
        client.force_login(membership.user)
        return membership, client

    return make


def test_a_reviewer_approves_annotations_that_agree_as_sets(member, reviewer):
    project = multi_project()
    cv, mlops = ids(project, "computer-vision", "mlops")
    item = annotate(project, member, [mlops, cv], [cv, mlops])
    assert item.review_queue == ReviewQueue.REVIEW  # policy: review everything
    _, client = reviewer(project)
    html = reviewer_page(client, project, "review")
    assert 'data-can-approve="true"' in html
    assert "All 2 annotations agree on computer-vision, mlops" in html

    response = client.post(f"/p/{project.slug}/review/decide/", {**card_fields(html, "review"), "decision": "approve"})
    assert response.status_code == 302
    gold = GoldLabel.objects.get(item=item)
    assert (gold.categories, gold.source) == ([cv, mlops], GoldLabel.Source.REVIEW)


def test_disagreeing_sets_cannot_be_approved_and_are_corrected_to_a_ticked_set(member, reviewer):
    project = multi_project(policy=ReviewPolicy.DISAGREEMENTS)
    nlp, cv, mlops = ids(project, "natural-language-processing", "computer-vision", "mlops")
    item = annotate(project, member, [cv, mlops], [cv])
    assert item.review_queue == ReviewQueue.DISAGREEMENT
    _, client = reviewer(project)
    html = reviewer_page(client, project, "disagreement")
    assert 'data-can-approve="false"' in html
    assert "tick the right categories (number keys) and press Enter" in html
    assert html.count('type="checkbox" name="correct_set"') == 4
    assert 'name="correct_to"' not in html.replace('name="correct_to" value="" disabled', "")
    assert 'name="none_of_these"' not in html  # not allowed in this project

    fields = card_fields(html, "disagreement")
    approve = client.post(f"/p/{project.slug}/review/decide/", {**fields, "decision": "approve"}, **HTMX)
    assert approve.status_code == 409
    nothing = client.post(f"/p/{project.slug}/review/decide/", {**fields, "decision": "correct"}, **HTMX)
    assert nothing.status_code == 409
    assert "Tick at least one category" in nothing.content.decode()
    assert not GoldLabel.objects.filter(item=item).exists()

    # Without JavaScript: the ticked boxes and the send button, one plain POST.
    response = client.post(
        f"/p/{project.slug}/review/decide/",
        {**fields, "decision": "correct", "correct_set": [str(nlp), str(mlops)]},
    )
    assert response.status_code == 302
    assert "Corrected item" in [str(m) for m in get_messages(response.wsgi_request)][-1]
    gold = GoldLabel.objects.get(item=item)
    assert gold.categories == [nlp, mlops]
    assert Review.objects.get(item=item).decision == Review.Decision.CORRECT


def test_approve_ignores_ticked_boxes_sent_with_it(member, reviewer):
    """A plain form carries whatever is ticked; pressing Approve must approve, not correct."""
    project = multi_project()
    cv, mlops = ids(project, "computer-vision", "mlops")
    item = annotate(project, member, [cv], [cv])
    _, client = reviewer(project)
    fields = card_fields(reviewer_page(client, project, "review"), "review")
    client.post(f"/p/{project.slug}/review/decide/", {**fields, "decision": "approve", "correct_set": [str(mlops)]})
    assert GoldLabel.objects.get(item=item).categories == [cv]
    assert Review.objects.get(item=item).decision == Review.Decision.APPROVE


def test_none_of_these_is_a_correction_only_where_the_project_allows_it(member, reviewer):
    project = multi_project(allow_none=True, policy=ReviewPolicy.DISAGREEMENTS)
    cv, mlops = ids(project, "computer-vision", "mlops")
    item = annotate(project, member, [cv], [])
    _, client = reviewer(project)
    html = reviewer_page(client, project, "disagreement")
    assert 'name="none_of_these" value="1" data-key="0"' in html
    assert "none of these ×1" in html  # the empty set is named, not left blank
    fields = card_fields(html, "disagreement")
    both = client.post(
        f"/p/{project.slug}/review/decide/",
        {**fields, "decision": "correct", "correct_set": [str(mlops)], "none_of_these": "1"}, **HTMX,
    )
    assert both.status_code == 409 and "not both" in both.content.decode()
    response = client.post(f"/p/{project.slug}/review/decide/", {**fields, "decision": "correct", "none_of_these": "1"})
    assert response.status_code == 302
    assert GoldLabel.objects.get(item=item).categories == []


def test_the_api_corrects_to_a_set_and_refuses_an_empty_one_where_not_allowed(member):
    project = multi_project(policy=ReviewPolicy.DISAGREEMENTS)
    nlp, cv, other = ids(project, "natural-language-processing", "computer-vision", "other")
    item = annotate(project, member, [cv], [other])
    membership = member("reviewer", in_project=project)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    claimed = api.post(f"/api/projects/{project.slug}/review/claim/", {"queue": "disagreement"}, format="json")
    assert claimed.status_code == 200 and claimed.data["annotations_agree"] is False

    empty = api.post(
        f"/api/projects/{project.slug}/review/decisions/",
        {"item": item.pk, "decision": "correct", "categories": [], "client_request_id": "d1"}, format="json",
    )
    assert empty.status_code == 400
    assert "does not allow “none of these”" in empty.data["detail"]
    done = api.post(
        f"/api/projects/{project.slug}/review/decisions/",
        {"item": item.pk, "decision": "correct", "categories": ["other", str(nlp)], "client_request_id": "d2"},
        format="json",
    )
    assert done.status_code == 201, done.data
    assert done.data["gold"]["categories"] == [nlp, other]


def test_review_decide_action_approves_sets_regardless_of_order(member):
    project = multi_project()
    cv, mlops = ids(project, "computer-vision", "mlops")
    item = annotate(project, member, [mlops, cv], [cv, mlops])
    membership = member("reviewer", in_project=project)
    assert review.claim_review(membership, ReviewQueue.REVIEW).pk == item.pk
    decided = review.decide_review(membership, item.pk, Review.Decision.APPROVE, "x1")
    assert decided.categories == [cv, mlops]
