"""The API for running a project: create it, change settings, categories, members; list filters."""
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import actions
from labeling.importer import import_items
from labeling.models import Assignment, GuidelineVersion, Membership, Project

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def admin(member):
    return member("admin").user


# --- projects ---------------------------------------------------------------------------------


def test_it_lets_a_staff_user_create_a_project_and_makes_them_its_admin(make_user):
    staff = make_user("staff")
    staff.is_staff = True
    staff.save()
    response = client_for(staff).post(
        "/api/projects/", {"name": "News", "slug": "news", "categories": ["sports", "politics"]}, format="json"
    )
    assert response.status_code == 201, response.data
    assert [(c["name"], c["shortcut"]) for c in response.data["categories"]] == [("sports", "1"), ("politics", "2")]
    assert Membership.objects.get(project__slug="news", user=staff).role == "admin"


def test_it_refuses_project_creation_to_a_user_who_is_not_staff(admin):
    response = client_for(admin).post("/api/projects/", {"name": "News", "slug": "news"}, format="json")
    assert response.status_code == 403
    assert not Project.objects.filter(slug="news").exists()


def test_it_refuses_a_slug_that_is_taken(project, make_user):
    staff = make_user()
    staff.is_staff = True
    staff.save()
    response = client_for(staff).post("/api/projects/", {"name": "Again", "slug": project.slug}, format="json")
    assert response.status_code == 400
    assert "taken" in str(response.data["slug"])


def test_it_bumps_the_guidelines_version_when_an_admin_edits_them(project, admin):
    response = client_for(admin).patch(f"/api/projects/{project.slug}/", {"guidelines": "Be careful."}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["guidelines_version"] == project.guidelines_version + 1
    assert GuidelineVersion.objects.filter(project=project, text="Be careful.").exists()


def test_it_validates_settings_like_the_settings_page(project, admin):
    response = client_for(admin).patch(
        f"/api/projects/{project.slug}/", {"review_sample_percent": 101}, format="json"
    )
    assert response.status_code == 400
    project.refresh_from_db()
    assert project.review_sample_percent != 101


def test_it_leaves_settings_to_admins(project, member):
    reviewer = member("reviewer").user
    response = client_for(reviewer).patch(f"/api/projects/{project.slug}/", {"name": "Mine"}, format="json")
    assert response.status_code == 403


# --- categories -------------------------------------------------------------------------------


def test_it_adds_a_category_on_the_next_free_key_up_to_nine(project, admin):
    client = client_for(admin)
    keys = [client.post(f"/api/projects/{project.slug}/categories/", {"name": f"extra {i}"}, format="json")
            for i in range(5)]
    assert [r.status_code for r in keys] == [201] * 5
    assert [r.data["shortcut"] for r in keys] == ["5", "6", "7", "8", "9"]
    tenth = client.post(f"/api/projects/{project.slug}/categories/", {"name": "one too many"}, format="json")
    assert tenth.status_code == 400
    assert "at most 9" in str(tenth.data)


def test_it_renames_a_category_but_not_to_a_name_in_use(project, admin):
    first, second = project.categories.all()[:2]
    client = client_for(admin)
    url = f"/api/projects/{project.slug}/categories/{first.pk}/"
    assert client.patch(url, {"name": second.name.upper()}, format="json").status_code == 400
    renamed = client.patch(url, {"name": "language"}, format="json")
    assert renamed.status_code == 200
    first.refresh_from_db()
    assert first.name == "language"


def test_it_never_touches_a_category_of_another_project(project, admin):
    other = actions.create_project("Other", "other")
    theirs = other.categories.first()
    response = client_for(admin).patch(f"/api/projects/{project.slug}/categories/{theirs.pk}/", {"name": "x"}, format="json")
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.name != "x"


# --- members ----------------------------------------------------------------------------------


def test_it_adds_changes_and_removes_a_member(project, admin, make_user):
    newcomer = make_user("newcomer")
    client = client_for(admin)
    added = client.post(f"/api/projects/{project.slug}/members/", {"username": "newcomer"}, format="json")
    assert added.status_code == 201 and added.data["role"] == "annotator"
    url = f"/api/projects/{project.slug}/members/{added.data['id']}/"
    assert client.patch(url, {"role": "reviewer"}, format="json").data["role"] == "reviewer"
    assert client.delete(url).status_code == 204
    assert not Membership.objects.filter(project=project, user=newcomer).exists()


def test_it_returns_the_items_a_removed_member_held_to_the_pool(project, admin, member):
    import_items(project, io.BytesIO(b"title,description\nOne,first text\n"), "items.csv")
    leaving = member("annotator")
    lease = actions.claim_next_item(leaving)
    assert lease is not None
    response = client_for(admin).delete(f"/api/projects/{project.slug}/members/{leaving.pk}/")
    assert response.status_code == 204
    assert not Assignment.objects.filter(pk=lease.pk).exists()
    lease.item.refresh_from_db()
    assert lease.item.open_slots == project.annotations_per_item


def test_it_refuses_to_leave_a_project_without_an_admin(project, admin):
    own = Membership.objects.get(project=project, user=admin)
    client = client_for(admin)
    assert client.patch(f"/api/projects/{project.slug}/members/{own.pk}/", {"role": "annotator"}, format="json").status_code == 409
    assert client.delete(f"/api/projects/{project.slug}/members/{own.pk}/").status_code == 409
    own.refresh_from_db()
    assert own.role == "admin"


def test_it_answers_404_for_a_member_of_another_project(project, admin, member):
    other = actions.create_project("Other", "other")
    stranger = member("annotator", in_project=other)
    response = client_for(admin).delete(f"/api/projects/{project.slug}/members/{stranger.pk}/")
    assert response.status_code == 404
    assert Membership.objects.filter(pk=stranger.pk).exists()


# --- list parameters --------------------------------------------------------------------------


def test_it_filters_members_by_role_and_pages_with_a_cursor(project, admin, member):
    for _ in range(3):
        member("annotator")
    client = client_for(admin)
    first = client.get(f"/api/projects/{project.slug}/members/", {"role": "annotator", "page_size": 2})
    assert first.status_code == 200
    assert [m["role"] for m in first.data["results"]] == ["annotator", "annotator"]
    assert "cursor=" in first.data["next"] and "offset" not in first.data["next"]
    second = client.get(first.data["next"])
    assert len(second.data["results"]) == 1


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("members/", {"user__password__startswith": "md5"}),
        ("members/", {"role__in": "admin"}),
        ("gold/", {"item__text__contains": "secret"}),
        ("categories/", {"project__slug": "other"}),
    ],
)
def test_it_refuses_a_lookup_path_that_is_not_allowed(project, admin, path, params):
    response = client_for(admin).get(f"/api/projects/{project.slug}/{path}", params)
    assert response.status_code == 400
    assert "Unknown parameter" in str(response.data)


def test_it_refuses_an_ordering_that_is_not_allowed(project, admin):
    response = client_for(admin).get(f"/api/projects/{project.slug}/members/", {"ordering": "user__password"})
    assert response.status_code == 400
    assert "Order by one of" in str(response.data["ordering"])


def test_it_answers_a_broken_cursor_with_400(project, admin):
    response = client_for(admin).get("/api/projects/", {"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert "cursor" in response.data


def test_it_lists_only_the_projects_you_are_in(project, admin):
    actions.create_project("Other", "other")
    response = client_for(admin).get("/api/projects/")
    assert [p["slug"] for p in response.data["results"]] == [project.slug]


def test_it_runs_the_readme_walkthrough_from_token_to_export(make_user):
    """The README's "API in five minutes", step by step."""
    alice = make_user("alice", password="pw-for-tests-1")
    alice.is_staff = True
    alice.save()
    make_user("bob")
    token = APIClient().post("/api/auth/token/", {"username": "alice", "password": "pw-for-tests-1"}).data["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    created = client.post(
        "/api/projects/",
        {"name": "Repos", "slug": "repos", "categories": ["nlp", "vision", "mlops", "other"]},
        format="json",
    )
    assert created.status_code == 201
    assert client.post("/api/projects/repos/members/", {"username": "bob"}, format="json").status_code == 201
    upload = SimpleUploadedFile("items.csv", b"title,description\nA pipeline,Deploy and monitor models\n")
    assert client.post("/api/projects/repos/import/", {"file": upload}, format="multipart").status_code == 201
    item = client.post("/api/projects/repos/claim/").data["item"]["id"]
    label = {"item": item, "categories": ["mlops"], "client_request_id": f"r-{item}"}
    assert client.post("/api/projects/repos/annotations/", label, format="json").status_code == 201
    assert client.post("/api/projects/repos/undo/").status_code == 200
    assert client.post("/api/projects/repos/annotations/", {**label, "client_request_id": "r-2"}, format="json").status_code == 201
    export = client.get("/api/projects/repos/export/", {"format": "csv", "split": "all"})
    assert export.status_code == 200
    assert b"A pipeline" in b"".join(export.streaming_content)  # one label is gold when k is 1
