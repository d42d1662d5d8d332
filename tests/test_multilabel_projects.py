"""Multi-label projects: the mode is chosen wherever a project is created (API, import command,
action, Django admin) and fixed once the project has items; "none of these" only in multi-label."""
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import actions
from labeling.forms import MODE_FIXED
from labeling.importer import import_items
from labeling.models import Project

pytestmark = pytest.mark.django_db


def api_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def staff(make_user):
    user = make_user("staff")
    user.is_staff = True
    user.save()
    return user


@pytest.fixture
def admin(member):
    return member("admin").user


def add_items(project, n=2):
    rows = "title,description\n" + "".join(f"Item {i},text {i}\n" for i in range(n))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")


# --- creation ---------------------------------------------------------------------------------


def test_it_creates_a_multi_label_project_through_the_api(staff):
    response = api_for(staff).post(
        "/api/projects/", {"name": "Tags", "slug": "tags", "mode": "multi", "allow_none_of_these": True}, format="json"
    )
    assert response.status_code == 201, response.data
    assert (response.data["mode"], response.data["allow_none_of_these"]) == ("multi", True)
    project = Project.objects.get(slug="tags")
    assert project.is_multi_label and project.accepts_empty_label()


def test_it_creates_single_label_projects_by_default(staff):
    response = api_for(staff).post("/api/projects/", {"name": "Plain", "slug": "plain"}, format="json")
    assert response.status_code == 201
    assert (response.data["mode"], response.data["allow_none_of_these"]) == ("single", False)


def test_it_refuses_none_of_these_on_a_single_label_project_at_creation(staff):
    response = api_for(staff).post(
        "/api/projects/", {"name": "X", "slug": "x", "mode": "single", "allow_none_of_these": True}, format="json"
    )
    assert response.status_code == 400
    assert "multi-label" in str(response.data["allow_none_of_these"])
    assert not Project.objects.filter(slug="x").exists()


def test_it_refuses_an_unknown_mode(staff):
    response = api_for(staff).post("/api/projects/", {"name": "X", "slug": "x", "mode": "several"}, format="json")
    assert response.status_code == 400
    assert "mode" in response.data
    with pytest.raises(ValueError, match="Unknown mode"):
        actions.create_project("X", "x", mode="several")
    assert not Project.objects.filter(slug="x").exists()


def test_the_create_action_refuses_none_of_these_without_multi_label():
    with pytest.raises(ValueError, match="multi-label"):
        actions.create_project("X", "x", allow_none_of_these=True)
    assert not Project.objects.filter(slug="x").exists()


def test_the_import_command_creates_the_project_in_the_mode_asked(tmp_path):
    data = tmp_path / "items.csv"
    data.write_text('title,description,labels\nA,text a,"[""mlops"", ""other""]"\nB,text b,\n')
    call_command("import_items", str(data), project="tagged", create=True, mode="multi", stdout=io.StringIO())
    project = Project.objects.get(slug="tagged")
    assert project.mode == Project.Mode.MULTI
    assert project.items.count() == 2
    # An existing project keeps its mode: asking for another one is an error, not a silent change.
    with pytest.raises(CommandError, match="multi-label; --mode single cannot change it"):
        call_command("import_items", str(data), project="tagged", create=True, mode="single", stdout=io.StringIO())
    # Without --mode the existing project is used as it is.
    call_command("import_items", str(data), project="tagged", create=True, stdout=io.StringIO())
    assert Project.objects.get(slug="tagged").mode == Project.Mode.MULTI


def test_the_import_command_refuses_none_of_these_for_single_label(tmp_path):
    data = tmp_path / "items.csv"
    data.write_text("title,description\nA,text a\n")
    with pytest.raises(CommandError, match="multi-label"):
        call_command("import_items", str(data), project="p1", create=True, allow_none_of_these=True, stdout=io.StringIO())
    assert not Project.objects.filter(slug="p1").exists()


# --- the mode is fixed once there are items ---------------------------------------------------


def test_it_lets_an_admin_change_the_mode_while_the_project_is_empty(project, admin):
    response = api_for(admin).patch(f"/api/projects/{project.slug}/", {"mode": "multi"}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["mode"] == "multi"


def test_it_refuses_with_400_a_mode_change_once_the_project_has_items(project, admin):
    add_items(project)
    response = api_for(admin).patch(f"/api/projects/{project.slug}/", {"mode": "multi"}, format="json")
    assert response.status_code == 400
    assert response.data["mode"] == [MODE_FIXED]
    project.refresh_from_db()
    assert project.mode == Project.Mode.SINGLE
    # Sending the mode it already has is no change and is fine.
    same = api_for(admin).patch(f"/api/projects/{project.slug}/", {"mode": "single", "name": "Renamed"}, format="json")
    assert same.status_code == 200, same.data


def test_it_refuses_none_of_these_in_settings_of_a_single_label_project(project, admin):
    response = api_for(admin).patch(f"/api/projects/{project.slug}/", {"allow_none_of_these": True}, format="json")
    assert response.status_code == 400
    assert "multi-label" in str(response.data["allow_none_of_these"])
    project.refresh_from_db()
    assert not project.allow_none_of_these


def test_an_admin_turns_none_of_these_on_in_a_multi_label_project(admin):
    project = actions.create_project("Tags", "tags", mode=Project.Mode.MULTI)
    actions.add_member(project, admin, "admin")
    add_items(project)
    response = api_for(admin).patch("/api/projects/tags/", {"allow_none_of_these": True}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["allow_none_of_these"] is True


def settings_post(project, **changes) -> dict:
    fields = {
        "name": project.name, "mode": project.mode, "guidelines": "", "annotations_per_item": 1,
        "order": project.order, "lease_minutes": 30, "review_policy": project.review_policy,
        "review_sample_percent": 10,
    }
    return {**fields, **changes}


def test_the_settings_page_explains_why_the_mode_cannot_change(project, admin):
    add_items(project)
    client = Client()
    client.force_login(admin)
    page = client.get(f"/p/{project.slug}/settings/").content.decode()
    assert 'name="mode"' in page and "The mode is fixed once a project has items" in page

    response = client.post(f"/p/{project.slug}/settings/", settings_post(project, mode="multi"))
    assert response.status_code == 200  # the form again, with the error
    assert "The mode is fixed once a project has items" in response.content.decode()
    project.refresh_from_db()
    assert project.mode == Project.Mode.SINGLE


def test_the_settings_page_saves_mode_and_none_of_these_on_an_empty_project(project, admin):
    client = Client()
    client.force_login(admin)
    response = client.post(
        f"/p/{project.slug}/settings/", settings_post(project, mode="multi", allow_none_of_these="on")
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.accepts_empty_label()


def test_the_django_admin_makes_the_mode_read_only_once_there_are_items(project, make_user):
    superuser = make_user("root")
    superuser.is_staff = superuser.is_superuser = True
    superuser.save()
    client = Client()
    client.force_login(superuser)
    url = f"/admin/labeling/project/{project.pk}/change/"
    assert '<select name="mode"' in client.get(url).content.decode()
    add_items(project)
    page = client.get(url).content.decode()
    assert '<select name="mode"' not in page and "single-label" in page
    assert '<select name="mode"' in client.get("/admin/labeling/project/add/").content.decode()
