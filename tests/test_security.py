"""Security guarantees, each proved against the real views: login lockout (django-axes), session
rotation and ending, safe `next=` redirects, escaped output of hostile text, an enforced CSP and
downloads that are never rendered as HTML. See SECURITY.md for the list."""

import io
import json

import pytest
from django.contrib.auth import SESSION_KEY
from django.urls import reverse

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Item, Review, Role
from modeling.models import Rule

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-1"
LOGIN = "/accounts/login/"


def post_login(client, username, password, next_path=""):
    data = {"username": username, "password": password}
    if next_path:
        data["next"] = next_path
    return client.post(LOGIN, data)


# --- login lockout ---------------------------------------------------------------------------


def test_it_locks_a_username_out_after_five_failures_even_with_the_right_password(
    client, make_user, settings
):
    make_user("alice")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert (
            post_login(client, "alice", "wrong").status_code == 200
        )  # the form again, with an error
    locked = post_login(client, "alice", "wrong")
    assert locked.status_code == 429
    assert b"Too many failed log-ins" in locked.content
    assert b"15 minutes" in locked.content

    right = post_login(client, "alice", PASSWORD)
    assert right.status_code == 429
    assert SESSION_KEY not in client.session


def test_it_locks_only_that_username_from_that_address(client, make_user, settings):
    make_user("alice")
    make_user("bob")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        post_login(client, "alice", "wrong")
    response = post_login(client, "bob", PASSWORD)
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(_id("bob"))


def test_it_forgets_failures_after_a_successful_login(client, make_user, settings):
    make_user("alice")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        post_login(client, "alice", "wrong")
    assert post_login(client, "alice", PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        post_login(client, "alice", "wrong")
    assert post_login(client, "alice", PASSWORD).status_code == 302


def test_it_locks_the_api_token_endpoint_too(client, make_user, settings):
    make_user("alice")
    url = reverse("api-token")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(url, {"username": "alice", "password": "wrong"})
    response = client.post(url, {"username": "alice", "password": PASSWORD})
    assert response.status_code != 200
    assert b'"token"' not in response.content


def _id(username):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username).pk


# --- sessions --------------------------------------------------------------------------------


def test_it_rotates_the_session_key_at_login(client, make_user):
    make_user("alice")
    client.get(LOGIN)
    client.session.save()
    before = client.session.session_key
    assert before
    post_login(client, "alice", PASSWORD)
    after = client.session.session_key
    assert after and after != before


def test_it_ends_the_session_at_logout(client, make_user):
    make_user("alice")
    post_login(client, "alice", PASSWORD)
    old_key = client.session.session_key
    client.post(reverse("logout"))
    from django.contrib.sessions.models import Session

    assert not Session.objects.filter(session_key=old_key).exists()
    assert client.get(reverse("home")).status_code == 302


def test_it_signs_out_a_deactivated_user_on_the_next_request(client, member):
    membership = member(Role.ANNOTATOR, username="alice")
    post_login(client, "alice", PASSWORD)
    assert client.get(reverse("home")).status_code == 200
    user = membership.user
    user.is_active = False
    user.save()
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    api = client.get(reverse("api-projects"))
    assert api.status_code in (401, 403)


def test_it_signs_out_everywhere_when_the_password_changes(client, member):
    membership = member(Role.ANNOTATOR, username="alice")
    post_login(client, "alice", PASSWORD)
    membership.user.set_password("a-new-password-2")
    membership.user.save()
    assert client.get(reverse("home")).status_code == 302


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "https:evil.example",
        "/\\evil.example",
        "http://evil.example@testserver.evil.example/",
    ],
)
def test_it_redirects_next_only_to_this_site(client, make_user, target):
    make_user("alice")
    response = post_login(client, "alice", PASSWORD, next_path=target)
    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_it_follows_a_local_next(client, member):
    member(Role.ANNOTATOR, username="alice")
    response = post_login(client, "alice", PASSWORD, next_path="/p/test/")
    assert response["Location"] == "/p/test/"


# --- hostile text is escaped everywhere ------------------------------------------------------


# Each payload names where it was placed, so a failure says which field leaked.
def payload(where: str) -> str:
    return f"\"'><img src=x onerror=alert('{where}')><script>alert('{where}')</script>"


RAW_MARKERS = ("<img src=x onerror=", "<script>alert(")
FIELDS = ("project", "guidelines", "category", "title", "text", "note", "rule")


@pytest.fixture
def hostile_project(make_user):
    guidelines = payload("guidelines") + "</textarea><svg onload=alert('guidelines')>"
    project = actions.create_project(
        payload("project"),
        "hostile",
        categories=[payload("category"), "plain"],
        guidelines=guidelines,
    )
    rows = "\n".join(
        json.dumps({"id": f"x{i}", "title": payload("title"), "text": payload("text") + f" {i}"})
        for i in range(6)
    )
    import_items(project, io.BytesIO(rows.encode()), "hostile.jsonl")
    admin = make_user("boss")
    actions.add_member(project, admin, Role.ADMIN)
    # An item back in the review queue after a rejection whose note is hostile: the review page
    # shows that note in the item's history.
    item = Item.objects.filter(project=project).first()
    annotator = make_user("worker")
    actions.add_member(project, annotator, Role.ANNOTATOR)
    category = project.categories.first()
    Annotation.objects.create(
        item=item, annotator=annotator, project=project, categories=[category.pk], client_request_id="a1"
    )
    Review.objects.create(
        item=item,
        project=project,
        reviewer=admin,
        decision=Review.Decision.REJECT,
        round=0,
        note=payload("note"),
        client_request_id="r1",
    )
    Annotation.objects.create(
        item=item, annotator=annotator, project=project, categories=[category.pk], client_request_id="a2", round=1
    )
    Item.objects.filter(pk=item.pk).update(round=1, review_queue="review", status=Item.Status.COMPLETED)
    Rule.objects.create(
        project=project, category=project.categories.first(), pattern=payload("rule")
    )
    return project, admin


def hostile_pages(slug):
    return [
        reverse("home"),
        reverse("dashboard", args=[slug]),
        reverse("annotate", args=[slug]),
        reverse("annotate_next", args=[slug]),
        reverse("guidelines", args=[slug]),
        reverse("import", args=[slug]),
        reverse("settings", args=[slug]),
        reverse("review", args=[slug]),
        reverse("agreement", args=[slug]),
        reverse("export", args=[slug]),
    ]


def test_it_escapes_hostile_text_on_every_page(client, hostile_project):
    project, admin = hostile_project
    client.force_login(admin)
    seen = ""
    for url in hostile_pages(project.slug):
        # The next-card fragment is htmx-only; the others are full pages.
        headers = {"HX-Request": "true"} if url.endswith("/next/") else {}
        response = client.get(url, headers=headers)
        assert response.status_code == 200, url
        body = response.content.decode()
        for marker in RAW_MARKERS + ("<svg onload=",):
            assert marker not in body, f"{url} shows {marker!r} unescaped"
        seen += body
    # The pages do show the hostile text (escaped): otherwise this test would prove nothing.
    for where in ("project", "guidelines", "category", "title", "text", "note"):
        assert f"&lt;script&gt;alert(&#x27;{where}&#x27;)&lt;/script&gt;" in seen, (
            f"{where} never shown"
        )


def test_it_escapes_hostile_text_in_the_api(client, hostile_project):
    project, admin = hostile_project
    client.force_login(admin)
    response = client.get(reverse("api-project", args=[project.slug]))
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["name"] == payload("project")  # data, not markup: JSON is never rendered


# --- headers ---------------------------------------------------------------------------------


def test_it_enforces_a_content_security_policy_on_html(client, member):
    membership = member(Role.ADMIN)
    client.force_login(membership.user)
    for url in (
        reverse("login"),
        reverse("home"),
        reverse("dashboard", args=["test"]),
        reverse("annotate", args=["test"]),
    ):
        response = client.get(url)
        assert "Content-Security-Policy-Report-Only" not in response.headers
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "'unsafe-inline'" not in policy
        assert "object-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_it_serves_exports_as_attachments_never_as_html(client, hostile_project, fmt):
    project, admin = hostile_project
    client.force_login(admin)
    response = client.get(reverse("api-export", args=[project.slug]), {"format": fmt})
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert "html" not in response["Content-Type"]
    assert response["X-Content-Type-Options"] == "nosniff"
