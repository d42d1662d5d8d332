"""Authorization matrix: every review and gold endpoint, HTML and API, for every kind of caller."""

import io
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from labeling import actions
from labeling.importer import import_items
from labeling.models import GoldLabel, Item, Review, ReviewQueue


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def disputed_item(project, member, title):
    """One item two annotators labeled differently: it waits in the disagreement queue."""
    import_items(
        project, io.BytesIO(f"title,description\n{title},text of {title}\n".encode()), "items.csv"
    )
    for name in ("mlops", "other"):
        annotator = member(in_project=project)
        lease = actions.claim_next_item(annotator)
        actions.submit_annotation(
            annotator, lease.item_id, [project.categories.get(name=name).id], uuid.uuid4().hex
        )
    item = Item.objects.get(project=project, title=title)
    assert item.review_queue == ReviewQueue.DISAGREEMENT
    return item


@pytest.fixture
def world(project, member):
    project.annotations_per_item = 2
    project.honeypot_percent = 0
    project.save()
    elsewhere = actions.create_project(
        "Elsewhere", "elsewhere", annotations_per_item=2, honeypot_percent=0
    )
    return {
        "project": project,
        "item": disputed_item(project, member, "Here"),
        "foreign_item": disputed_item(elsewhere, member, "There"),
        "annotator": member("annotator").user,
        "reviewer": member("reviewer").user,
        "admin": member("admin").user,
        "outsider": member("admin", in_project=elsewhere).user,
        "anonymous": None,
    }


def client_as(world, role):
    client = Client()
    if world[role] is not None:
        client.force_login(world[role])
    return client


def call(client, endpoint, world, item=None):
    project, item = world["project"], item or world["item"]
    slug = project.slug
    if endpoint == "review page":
        return client.get(reverse("review", args=[slug]) + "?queue=disagreement")
    if endpoint.startswith("review decide"):
        data = {
            "item": item.id,
            "queue": "disagreement",
            "decision": "reject",
            "request_id": uuid.uuid4().hex,
        }
        headers = (
            {"HX-Request": "true", "HX-Current-URL": "http://testserver/p/test/review/"}
            if endpoint.endswith("htmx")
            else {}
        )
        return client.post(reverse("review_decide", args=[slug]), data, headers=headers)
    if endpoint == "api queues":
        return client.get(reverse("api-review-queues", args=[slug]))
    if endpoint == "api claim":
        return client.post(
            reverse("api-review-claim", args=[slug]),
            {"queue": "disagreement"},
            content_type="application/json",
        )
    if endpoint == "api decide":
        data = {"item": item.id, "decision": "reject", "client_request_id": uuid.uuid4().hex}
        return client.post(
            reverse("api-review-decide", args=[slug]), data, content_type="application/json"
        )
    if endpoint == "api gold":
        return client.get(reverse("api-gold", args=[slug]))
    raise AssertionError(endpoint)


ALLOWED = {
    "review page": 200,
    "review decide": 302,  # a plain form post: decided, back to the queue
    "review decide htmx": 200,  # the next card
    "api queues": 200,
    "api claim": 200,
    "api decide": 201,
    "api gold": 200,
}
# Anonymous callers: the HTML pages send them to the login page (htmx: by HX-Redirect); the API
# answers 401 with a token challenge (token authentication comes first in the settings).
ANONYMOUS = {
    "review page": 302,
    "review decide": 302,
    "review decide htmx": 200,  # HX-Redirect to the login page, never a login form inside the card
    "api queues": 401,
    "api claim": 401,
    "api decide": 401,
    "api gold": 401,
}
EXPECTED = {
    "annotator": dict.fromkeys(ALLOWED, 403),
    "reviewer": ALLOWED,
    "admin": ALLOWED,
    "outsider": dict.fromkeys(ALLOWED, 404),
    "anonymous": ANONYMOUS,
}


@pytest.mark.parametrize("role", list(EXPECTED))
@pytest.mark.parametrize("endpoint", list(ALLOWED))
@pytest.mark.django_db
def test_it_answers_each_role_as_the_matrix_says(world, endpoint, role):
    response = call(client_as(world, role), endpoint, world)
    assert response.status_code == EXPECTED[role][endpoint], response.content[:300]
    login = reverse("login")
    if role == "anonymous" and endpoint.startswith("review"):
        where = response["HX-Redirect"] if endpoint.endswith("htmx") else response["Location"]
        assert where.startswith(login)
    if role in ("reviewer", "admin") and endpoint == "review decide":
        assert response["Location"] == reverse("review", args=["test"]) + "?queue=disagreement"
    if role == "anonymous" and endpoint.startswith("api"):
        assert response["WWW-Authenticate"] == "Token"
    decided = Review.objects.exists()
    assert decided == ("decide" in endpoint and role in ("reviewer", "admin"))


@pytest.mark.parametrize(
    "url_name, method",
    [
        ("review_decide", "get"),
        ("review", "post"),
        ("api-review-decide", "get"),
        ("api-review-claim", "get"),
        ("api-gold", "post"),
    ],
)
@pytest.mark.django_db
def test_it_refuses_the_wrong_method(world, url_name, method):
    client = client_as(world, "reviewer")
    response = getattr(client, method)(reverse(url_name, args=[world["project"].slug]))
    assert response.status_code == 405


@pytest.mark.django_db
def test_it_never_decides_another_projects_item_through_this_project(world):
    client = client_as(world, "reviewer")
    foreign = world["foreign_item"]
    assert call(client, "api decide", world, item=foreign).status_code == 404
    assert call(client, "review decide", world, item=foreign).status_code == 404
    foreign.refresh_from_db()
    assert foreign.review_queue == ReviewQueue.DISAGREEMENT and not Review.objects.exists()


@pytest.mark.django_db
def test_it_lists_only_this_projects_gold(world, member):
    elsewhere = world["foreign_item"].project
    GoldLabel.objects.create(
        item=world["foreign_item"], project=elsewhere, categories=[1], source="review"
    )
    client = client_as(world, "reviewer")
    assert call(client, "api gold", world).json()["results"] == []
    assert client.get(reverse("api-gold", args=[elsewhere.slug])).status_code == 404


@pytest.mark.django_db
def test_it_keeps_project_settings_from_reviewers(world):
    client = client_as(world, "reviewer")
    slug = world["project"].slug
    assert client.get(reverse("settings", args=[slug])).status_code == 403
    assert client.post(reverse("settings", args=[slug]), {"name": "Renamed"}).status_code == 403
    assert client.get(reverse("import", args=[slug])).status_code == 403


@pytest.mark.parametrize("role, shown", [("annotator", False), ("reviewer", True), ("admin", True)])
@pytest.mark.django_db
def test_it_links_the_review_page_for_reviewers_only(world, role, shown):
    body = (
        client_as(world, role)
        .get(reverse("dashboard", args=[world["project"].slug]))
        .content.decode()
    )
    assert (f'href="{reverse("review", args=[world["project"].slug])}"' in body) == shown
