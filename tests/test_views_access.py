"""Who may open which HTML page: members by role, outsiders (members of another project), anonymous
visitors; and every endpoint refuses the wrong HTTP method."""
import pytest
from django.test import Client

from labeling import actions

HTMX = {"HTTP_HX_REQUEST": "true"}

# (name, path under /p/<slug>/, extra request headers)
MEMBER_PAGES = [
    ("dashboard", "", {}),
    ("annotate", "annotate/", {}),
    ("annotate_next", "annotate/next/", HTMX),
    ("guidelines", "guidelines/", {}),
]
ADMIN_PAGES = [("import", "import/", {}), ("settings", "settings/", {})]
POST_ACTIONS = ["annotate/submit/", "annotate/skip/", "annotate/undo/"]


@pytest.fixture
def other_project(db):
    return actions.create_project("Other project", "other")


@pytest.fixture
def visitor(project, other_project, member, make_user):
    """A logged-in client for `who`: a role in the project, an outsider, or anonymous."""

    def make(who):
        client = Client()
        if who == "outsider":
            client.force_login(member("admin", in_project=other_project).user)
        elif who != "anonymous":
            client.force_login(member(who).user)
        return client

    return make


def page(project, path):
    return f"/p/{project.slug}/{path}"


@pytest.mark.django_db
@pytest.mark.parametrize("name,path,headers", MEMBER_PAGES, ids=[p[0] for p in MEMBER_PAGES])
@pytest.mark.parametrize("who,status", [("annotator", 200), ("reviewer", 200), ("admin", 200), ("outsider", 404)])
def test_it_opens_member_pages_to_members_only(project, visitor, name, path, headers, who, status):
    assert visitor(who).get(page(project, path), **headers).status_code == status


@pytest.mark.django_db
@pytest.mark.parametrize("name,path,headers", ADMIN_PAGES, ids=[p[0] for p in ADMIN_PAGES])
@pytest.mark.parametrize("who,status", [("annotator", 403), ("reviewer", 403), ("admin", 200), ("outsider", 404)])
def test_it_opens_admin_pages_to_admins_only(project, visitor, name, path, headers, who, status):
    assert visitor(who).get(page(project, path), **headers).status_code == status


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["", "annotate/", "guidelines/", "import/", "settings/"])
def test_it_sends_anonymous_visitors_to_the_login_page(project, visitor, path):
    response = visitor("anonymous").get(page(project, path))
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/p/{project.slug}/{path}"


@pytest.mark.django_db
def test_it_sends_anonymous_visitors_of_the_project_list_to_the_login_page(visitor):
    response = visitor("anonymous").get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
@pytest.mark.parametrize("path", POST_ACTIONS)
@pytest.mark.parametrize("who,status", [("anonymous", 302), ("outsider", 404)])
def test_it_refuses_annotate_actions_from_non_members(project, visitor, path, who, status):
    response = visitor(who).post(page(project, path), {"item": "1", "category": "1", "request_id": "r"})
    assert response.status_code == status


@pytest.mark.django_db
def test_it_lets_a_superuser_administer_any_project(project, django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-for-tests-1"))
    assert client.get(page(project, "settings/")).status_code == 200


@pytest.mark.django_db
def test_it_lists_only_the_visitors_own_projects(project, other_project, visitor):
    html = visitor("annotator").get("/").content.decode()
    assert project.name in html and other_project.name not in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,path",
    [
        ("post", ""),
        ("post", "annotate/"),
        ("post", "annotate/next/"),
        ("post", "guidelines/"),
        ("get", "annotate/submit/"),
        ("get", "annotate/skip/"),
        ("get", "annotate/undo/"),
        ("put", "annotate/submit/"),
        ("delete", "annotate/undo/"),
        ("put", "import/"),
        ("delete", "settings/"),
    ],
)
def test_it_refuses_the_wrong_method(project, visitor, method, path):
    assert getattr(visitor("admin"), method)(page(project, path)).status_code == 405


@pytest.mark.django_db
def test_it_refuses_the_wrong_method_on_the_project_list(visitor):
    assert visitor("annotator").post("/").status_code == 405
