"""Who may call what: every API endpoint × every kind of caller, with the status each one gets.

The rows are checked against the URL resolver, so an API endpoint added without a row here fails
`test_it_has_a_row_for_every_api_endpoint`. Write calls send a body that is empty or invalid on
purpose: a caller who is allowed in gets the validation answer (400) and nothing changes, a caller
who is not gets 401 (anonymous), 404 (not in the project) or 403 (role too low).
"""
import io
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import actions
from labeling.importer import import_items
from labeling.models import Category, Membership, Project

pytestmark = pytest.mark.django_db

ROLES = ("annotator", "reviewer", "admin", "outsider", "anonymous")


def members_only(ok):
    return (ok, ok, ok, 404, 401)


def reviewers(ok):
    return (403, ok, ok, 404, 401)


def admins(ok):
    return (403, 403, ok, 404, 401)


def public(ok):
    return (ok,) * 5


P = "api/projects/<slug:slug>/"
# route -> method -> (body, expected status for annotator, reviewer, admin, outsider, anonymous)
MATRIX = {
    "api/auth/token/": {"POST": ({}, public(400))},
    "api/schema/": {"GET": (None, public(200))},
    "api/docs/": {"GET": (None, public(200))},
    "api/projects/": {
        "GET": (None, (200, 200, 200, 200, 401)),
        # Creating a project is for staff users, whatever their roles in projects.
        "POST": ({}, (403, 403, 403, 403, 401)),
    },
    P: {"GET": (None, members_only(200)), "PATCH": ({"annotations_per_item": 0}, admins(400))},
    P + "categories/": {"GET": (None, members_only(200)), "POST": ({}, admins(400))},
    P + "categories/<int:category_id>/": {"PATCH": ({}, admins(400))},
    P + "members/": {"GET": (None, admins(200)), "POST": ({}, admins(400))},
    P + "members/<int:member_id>/": {"PATCH": ({}, admins(400)), "DELETE": (None, admins(204))},
    P + "import/": {"POST": ({}, admins(400))},
    P + "claim/": {"POST": (None, members_only(201))},
    P + "annotations/": {"POST": ({}, members_only(400))},
    P + "skip/": {"POST": ({}, members_only(400))},
    P + "undo/": {"POST": (None, members_only(409))},
    P + "review/queues/": {"GET": (None, reviewers(200))},
    P + "review/claim/": {"POST": ({"queue": "nope"}, reviewers(400))},
    P + "review/decisions/": {"POST": ({}, reviewers(400))},
    P + "gold/": {"GET": (None, reviewers(200))},
    P + "export/": {"GET": ({"format": "nope"}, admins(400))},
    P + "exports/": {"POST": ({"format": "nope"}, admins(400))},
    # No such job: the admin passes the access check and learns only that.
    P + "exports/<str:job_id>/": {"GET": (None, admins(404))},
    P + "exports/<str:job_id>/download/": {"GET": (None, admins(404))},
    P + "predict/": {"POST": ({}, members_only(400))},
    P + "models/": {"GET": (None, reviewers(200)), "POST": (None, admins(202))},
}


def api_routes(patterns=None, prefix=""):
    """(route, view) for every URL under /api/ the resolver knows."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from api_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and route.startswith("api/"):
            yield route, entry.callback


def methods_of(view) -> set[str]:
    handler = getattr(view, "cls", None) or getattr(view, "view_class", None)
    return {m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(handler, m)}


def test_it_has_a_row_for_every_api_endpoint():
    served = {(route, method) for route, view in api_routes() for method in methods_of(view)}
    rows = {(route, method) for route, methods in MATRIX.items() for method in methods}
    assert served - rows == set(), "API endpoints without a row in the authorization matrix"
    assert rows - served == set(), "matrix rows for endpoints that do not exist"


@pytest.fixture
def world(project, member, make_user):
    actions.create_project("Other", "other")
    callers = {
        "annotator": member("annotator").user,
        "reviewer": member("reviewer").user,
        "admin": member("admin").user,
        "outsider": actions.add_member(Project.objects.get(slug="other"), make_user(), "admin").user,
    }
    import_items(project, io.BytesIO(b"title,description\nAn item,Some text about models\n"), "items.csv")
    return callers


def url_for(route: str, project) -> str:
    ids = {
        "category_id": str(Category.objects.filter(project=project).first().pk),
        "member_id": str(Membership.objects.get(project=project, role="annotator").pk),
        "job_id": "no-such-job",
        "slug": project.slug,
    }
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: ids[m.group(1)], route)


CASES = [
    pytest.param(route, method, role, body, expected[i], id=f"{method} {route} as {role}")
    for route, methods in MATRIX.items()
    for method, (body, expected) in methods.items()
    for i, role in enumerate(ROLES)
]


@pytest.mark.parametrize(("route", "method", "role", "body", "expected"), CASES)
def test_it_answers_each_caller_with_the_expected_status(world, project, route, method, role, body, expected):
    client = APIClient()
    if role != "anonymous":
        token, _ = Token.objects.get_or_create(user=world[role])
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    call = getattr(client, method.lower())
    if method == "GET":
        response = call(url_for(route, project), body or {})
    else:
        # The import takes a file upload; every other write takes JSON.
        response = call(url_for(route, project), body, format="multipart" if route.endswith("import/") else "json")
    assert response.status_code == expected, getattr(response, "data", response)
