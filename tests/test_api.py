"""The REST API end to end through APIClient with token auth: the annotator's loop, errors, and
who may call what (every endpoint × annotator, reviewer, admin, superuser, outsider, anonymous)."""
import io
from urllib.parse import urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, ImportJob, Item, Project, Split

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The default hasher takes a noticeable fraction of a second per user on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def project(project):
    # Honeypots drawn at random would make the order of items handed out unpredictable.
    Project.objects.filter(pk=project.pk).update(honeypot_percent=0)
    project.refresh_from_db()
    load(project, 3)
    return project


@pytest.fixture
def other_project(db):
    other = actions.create_project("Other project", "other", honeypot_percent=0)
    load(other, 1)
    return other


def load(project, n):
    rows = "title,description\n" + "".join(f"{project.slug} item {i},text number {i}\n" for i in range(n))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def url(slug, action=""):
    return f"/api/projects/{slug}/" + (f"{action}/" if action else "")


def submit(client, slug, item, categories, request_id="req-1"):
    body = {"item": item, "categories": categories, "client_request_id": request_id}
    return client.post(url(slug, "annotations"), body, format="json")


def category(project, name="mlops"):
    return project.categories.get(name=name)


# --- tokens -----------------------------------------------------------------------------------


def test_it_exchanges_a_username_and_password_for_a_working_token(project, member):
    user = member(username="ann").user
    response = APIClient().post("/api/auth/token/", {"username": "ann", "password": "pw-for-tests-1"}, format="json")
    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user=user).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get(url("test")).status_code == 200


def test_it_refuses_a_token_for_a_wrong_password(project, member):
    member(username="ann")
    response = APIClient().post("/api/auth/token/", {"username": "ann", "password": "wrong"}, format="json")
    assert response.status_code == 400
    assert "Unable to log in" in str(response.json())
    assert not Token.objects.exists()


def test_it_answers_a_bad_token_with_401_and_a_challenge(project):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/projects/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


# --- the annotator's loop ---------------------------------------------------------------------


def test_it_claims_submits_replays_undoes_and_skips(project, member):
    annotator = member().user
    client = client_for(annotator)
    mlops = category(project)

    claimed = client.post(url("test", "claim"))
    assert claimed.status_code == 201
    item = claimed.json()["item"]
    assert item["title"] == "test item 0"
    again = client.post(url("test", "claim"))
    assert again.status_code == 200 and again.json()["id"] == claimed.json()["id"]  # a reload leases nothing new

    stored = submit(client, "test", item["id"], [mlops.id], "key-press-1")
    assert stored.status_code == 201
    assert stored.json()["categories"] == [mlops.id]
    replay = submit(client, "test", item["id"], [mlops.id], "key-press-1")
    assert replay.status_code == 200
    assert replay.json()["id"] == stored.json()["id"]
    assert Annotation.objects.filter(annotator=annotator).count() == 1

    undone = client.post(url("test", "undo"))
    assert undone.status_code == 200
    assert undone.json()["item"]["id"] == item["id"]
    assert not Annotation.objects.exists()

    skipped = client.post(url("test", "skip"), {"item": item["id"]}, format="json")
    assert skipped.status_code == 204
    assert Item.objects.get(pk=item["id"]).open_slots == 1  # back in the pool for someone else
    following = client.post(url("test", "claim"))
    assert following.status_code == 201
    assert following.json()["item"]["title"] == "test item 1"


def test_it_answers_204_when_nothing_is_left_for_you(project, member):
    client = client_for(member().user)
    for _ in range(3):
        lease = client.post(url("test", "claim")).json()
        assert submit(client, "test", lease["item"]["id"], ["mlops"], f"r{lease['id']}").status_code == 201
    response = client.post(url("test", "claim"))
    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.parametrize("given", ["id", "id as text", "name", "NAME IN CAPITALS"])
def test_it_takes_a_category_by_id_or_by_name(project, member, given):
    client = client_for(member().user)
    mlops = category(project)
    value = {"id": mlops.id, "id as text": str(mlops.id), "name": "mlops", "NAME IN CAPITALS": "MLOPS"}[given]
    lease = client.post(url("test", "claim")).json()
    response = submit(client, "test", lease["item"]["id"], [value])
    assert response.status_code == 201
    assert Annotation.objects.get().categories == [mlops.id]


def test_it_takes_a_form_encoded_submit(project, member):
    client = client_for(member().user)
    lease = client.post(url("test", "claim")).json()
    body = {"item": lease["item"]["id"], "categories": ["mlops"], "client_request_id": "form-1"}
    form = urlencode(body, doseq=True)
    response = client.post(url("test", "annotations"), form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201
    assert Annotation.objects.get().client_request_id == "form-1"


def test_it_never_shows_an_annotator_that_an_item_is_a_known_gold_check(project, member):
    Project.objects.filter(pk=project.pk).update(honeypot_percent=100)
    Item.objects.filter(title="test item 2").update(status=Item.Status.GOLD, split=Split.TRAIN, open_slots=0)
    client = client_for(member().user)
    lease = client.post(url("test", "claim")).json()
    assert lease["item"]["title"] == "test item 2"
    assert "status" not in lease["item"]


def test_it_skips_a_known_gold_check_without_reopening_its_item(project, member):
    Project.objects.filter(pk=project.pk).update(honeypot_percent=100)
    gold = Item.objects.get(title="test item 2")
    Item.objects.filter(pk=gold.pk).update(status=Item.Status.GOLD, split=Split.TRAIN, open_slots=0)
    client = client_for(member().user)
    assert client.post(url("test", "claim")).json()["item"]["id"] == gold.pk
    assert client.post(url("test", "skip"), {"item": gold.pk}, format="json").status_code == 204
    assert Item.objects.get(pk=gold.pk).open_slots == 0  # a honeypot took no slot, so gives none back


# --- errors -----------------------------------------------------------------------------------


@pytest.fixture
def holding(project, member):
    """An annotator's client and the id of the item they hold."""
    membership = member()
    return client_for(membership.user), actions.claim_next_item(membership).item_id


def test_it_names_the_valid_categories_when_one_is_unknown(project, holding):
    client, item = holding
    response = submit(client, "test", item, ["robotics"])
    assert response.status_code == 400
    assert "Unknown category 'robotics'" in response.json()["detail"]
    assert "mlops" in response.json()["detail"]
    assert not Annotation.objects.exists()


def test_it_refuses_a_category_of_another_project(project, other_project, holding):
    client, item = holding
    response = submit(client, "test", item, [category(other_project).id])
    assert response.status_code == 400
    assert not Annotation.objects.exists()


def test_it_refuses_two_categories_in_a_single_label_project(project, holding):
    client, item = holding
    response = submit(client, "test", item, ["mlops", "other"])
    assert response.status_code == 400
    assert "exactly one category" in response.json()["detail"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"categories": ["mlops"], "client_request_id": "r"}, "item"),
        ({"item": "first", "categories": ["mlops"], "client_request_id": "r"}, "item"),
        ({"item": 1, "categories": [], "client_request_id": "r"}, "categories"),
        ({"item": 1, "categories": "mlops", "client_request_id": "r"}, "categories"),
        ({"item": 1, "categories": ["mlops"]}, "client_request_id"),
        ({"item": 1, "categories": ["mlops"], "client_request_id": "x" * 65}, "client_request_id"),
        ({"item": 1, "categories": ["mlops"], "client_request_id": "r", "duration_ms": -5}, "duration_ms"),
    ],
)
def test_it_says_which_field_to_fix(project, holding, body, field):
    client, _ = holding
    response = client.post(url("test", "annotations"), body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_it_answers_404_for_an_item_of_another_project(project, other_project, holding):
    client, _ = holding
    foreign = Item.objects.get(project=other_project)
    response = submit(client, "test", foreign.pk, ["mlops"])
    assert response.status_code == 404
    assert response.json()["detail"] == f"No item {foreign.pk} in project test."
    assert not Annotation.objects.exists() and not Assignment.objects.filter(item=foreign).exists()


def test_it_refuses_a_request_id_reused_for_another_item(project, member):
    membership = member()
    client = client_for(membership.user)
    first, second = actions.claim_stage(membership)
    assert submit(client, "test", first.item_id, ["mlops"], "same").status_code == 201
    response = submit(client, "test", second.item_id, ["mlops"], "same")
    assert response.status_code == 409
    assert "send a fresh one" in response.json()["detail"]
    assert Annotation.objects.count() == 1


def test_it_refuses_a_label_after_the_lease_went_to_someone_else(project, member):
    from datetime import timedelta

    from django.utils import timezone

    Project.objects.filter(pk=project.pk).update(lease_minutes=1)
    Item.objects.exclude(title="test item 0").delete()
    late, prompt = member(), member()
    lease = actions.claim_next_item(late)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert actions.claim_next_item(prompt).item_id == lease.item_id  # the expired lease was released
    response = submit(client_for(late.user), "test", lease.item_id, ["mlops"])
    assert response.status_code == 409
    assert "went to someone else" in response.json()["detail"]
    assert not Annotation.objects.exists()


def test_it_answers_409_when_there_is_nothing_to_undo(project, member):
    response = client_for(member().user).post(url("test", "undo"))
    assert response.status_code == 409
    assert response.json()["detail"] == "There is nothing to undo in this project."


@pytest.mark.parametrize("whose", ["this project's", "another project's, held there"])
def test_it_answers_404_for_skipping_an_item_you_do_not_hold(project, other_project, member, whose):
    membership = member()
    item = Item.objects.filter(project=project).first()
    if whose != "this project's":
        item = actions.claim_next_item(actions.add_member(other_project, membership.user)).item
    slots = Item.objects.get(pk=item.pk).open_slots
    response = client_for(membership.user).post(url("test", "skip"), {"item": item.pk}, format="json")
    assert response.status_code == 404
    assert Item.objects.get(pk=item.pk).open_slots == slots
    assert not Assignment.objects.filter(status=Assignment.Status.SKIPPED).exists()


@pytest.mark.parametrize("method, action", [("get", ""), ("post", "claim"), ("post", "undo"), ("post", "import")])
def test_it_answers_404_for_an_unknown_project(project, member, method, action):
    client = client_for(member("admin").user)
    response = getattr(client, method)(url("no-such-project", action))
    assert response.status_code == 404
    assert response.json()["detail"] == "No such project."


def test_it_refuses_to_skip_an_item_already_labeled(project, holding):
    client, item = holding
    submit(client, "test", item, ["mlops"])
    response = client.post(url("test", "skip"), {"item": item}, format="json")
    assert response.status_code == 409
    assert "undo" in response.json()["detail"]
    assert Annotation.objects.count() == 1


def test_it_repeats_a_skip_harmlessly(project, holding):
    client, item = holding
    for _ in range(2):
        assert client.post(url("test", "skip"), {"item": item}, format="json").status_code == 204
    assert Item.objects.get(pk=item).open_slots == 1


# --- import -----------------------------------------------------------------------------------


def upload(text: str, name="items.csv"):
    return {"file": SimpleUploadedFile(name, text.encode(), content_type="text/csv")}


def test_it_imports_a_file_and_records_it(project, member):
    client = client_for(member("admin").user)
    csv = "title,description,tag\nNew,fresh text,mlops\nSecond,more text,\nNew,fresh text,\n"
    response = client.post(url("test", "import"), upload(csv), format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert (body["created"], body["duplicates"], body["gold_labels"]) == (2, 1, 1)
    assert ImportJob.objects.get(pk=body["id"]).status == ImportJob.Status.DONE
    assert Item.objects.filter(project=project).count() == 5


def test_it_imports_nothing_from_a_file_with_one_bad_row(project, member):
    client = client_for(member("admin").user)
    response = client.post(
        url("test", "import"), upload("title,description,tag\nGood,text,mlops\nBad,text,robotics\n"), format="multipart"
    )
    assert response.status_code == 400
    assert "row 3" in response.json()["detail"] and "robotics" in response.json()["detail"]
    assert Item.objects.filter(project=project).count() == 3


def test_it_asks_for_the_file_field(project, member):
    client = client_for(member("admin").user)
    response = client.post(url("test", "import"), {"upload": "x"}, format="multipart")
    assert response.status_code == 400
    assert "'file'" in response.json()["detail"]


# --- projects ---------------------------------------------------------------------------------


def test_it_pages_projects_with_a_cursor(db, make_user, django_assert_max_num_queries):
    user = make_user()
    for i in range(53):
        actions.add_member(actions.create_project(f"P{i}", f"p{i}"), user)
    actions.create_project("Not mine", "not-mine")
    client = client_for(user)
    with django_assert_max_num_queries(6):  # one page costs the same whatever the project count
        first = client.get("/api/projects/").json()
    second = client.get(first["next"]).json()
    slugs = [p["slug"] for p in first["results"] + second["results"]]
    assert len(first["results"]) == 50 and second["next"] is None
    assert slugs == [f"p{i}" for i in range(53)]
    assert first["results"][0]["categories"][0]["name"] == "natural-language-processing"


def test_it_lists_only_the_projects_you_are_in(project, other_project, member):
    outsider = member("admin", in_project=other_project).user
    body = client_for(outsider).get("/api/projects/").json()
    assert [p["slug"] for p in body["results"]] == ["other"]


# --- who may call what ------------------------------------------------------------------------

ROLES = ["annotator", "reviewer", "admin", "superuser", "outsider", "anonymous"]
# Expected status per endpoint, in the order of ROLES.
MATRIX = {
    "list projects": [200, 200, 200, 200, 200, 401],
    "project detail": [200, 200, 200, 200, 404, 401],
    "import": [403, 403, 201, 201, 404, 401],
    "claim": [201, 201, 201, 201, 404, 401],
    "submit": [201, 201, 201, 201, 404, 401],
    "skip": [204, 204, 204, 204, 404, 401],
    "undo": [200, 200, 200, 200, 404, 401],
}


def caller(role, project, other_project, member, make_user):
    """(user, membership in `project` or None) for a role."""
    if role == "anonymous":
        return None, None
    if role == "outsider":
        return member("admin", in_project=other_project).user, None
    if role == "superuser":
        user = make_user()
        user.is_superuser = True
        user.save()
        return user, None
    membership = member(role)
    return membership.user, membership


def held_item(project, user, membership, submitted=False) -> int:
    """An item the caller holds (or has labeled); for outsiders any item of the project."""
    if user is None or membership is None and not user.is_superuser:
        return Item.objects.filter(project=project).first().pk
    membership = membership or actions.add_member(project, user, "admin")
    item_id = actions.claim_next_item(membership).item_id
    if submitted:
        actions.submit_annotation(membership, item_id, [category(project).id], "prepared")
    return item_id


def call(endpoint, client, project, user, membership):
    if endpoint == "list projects":
        return client.get("/api/projects/")
    if endpoint == "project detail":
        return client.get(url("test"))
    if endpoint == "import":
        return client.post(url("test", "import"), upload("title,description\nFresh,new text\n"), format="multipart")
    if endpoint == "claim":
        return client.post(url("test", "claim"))
    if endpoint == "submit":
        return submit(client, "test", held_item(project, user, membership), ["mlops"])
    if endpoint == "skip":
        return client.post(url("test", "skip"), {"item": held_item(project, user, membership)}, format="json")
    if endpoint == "undo":
        held_item(project, user, membership, submitted=True)
        return client.post(url("test", "undo"))
    raise AssertionError(endpoint)


CASES = [(endpoint, role, codes[i]) for endpoint, codes in MATRIX.items() for i, role in enumerate(ROLES)]


@pytest.mark.parametrize("endpoint, role, expected", CASES, ids=[f"{e}-{r}" for e, r, _ in CASES])
def test_it_lets_each_role_do_what_it_may(project, other_project, member, make_user, endpoint, role, expected):
    user, membership = caller(role, project, other_project, member, make_user)
    before = (Item.objects.count(), Assignment.objects.count(), Annotation.objects.count())
    response = call(endpoint, client_for(user), project, user, membership)
    assert response.status_code == expected, response.content
    if expected in (401, 403, 404):
        # Refused before doing anything: nothing written, and nothing about the project told.
        setup_writes = role not in ("outsider", "anonymous") and endpoint in ("submit", "skip", "undo")
        if not setup_writes:
            assert (Item.objects.count(), Assignment.objects.count(), Annotation.objects.count()) == before
        assert "test item" not in response.content.decode()


@pytest.mark.parametrize(
    "path", ["import", "claim", "annotations", "skip", "undo"],
)
def test_it_refuses_get_on_the_write_endpoints(project, member, path):
    response = client_for(member("admin").user).get(url("test", path))
    assert response.status_code == 405


def test_it_refuses_writes_to_a_project(project, member):
    client = client_for(member("admin").user)
    assert client.delete(url("test")).status_code == 405
    assert client.post(url("test"), {}, format="json").status_code == 405
    assert Project.objects.filter(slug="test").exists()
