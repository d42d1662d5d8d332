"""The predict request's database work: how many queries one call costs, and that the shortcut
(token, membership and active version in one query; the log row in one statement; model
metadata kept per process) still sees a promotion or a removed membership on the very next
request and keeps the access rules."""
import datetime

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from labeling import actions
from labeling.models import Membership
from modeling import serving
from modeling.models import ModelVersion, PredictLog

from .modeling_data import load
from .test_predict_api import NLP_TEXT, PREDICT, client_for, train

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("model_dir")]


def test_a_warm_predict_with_a_token_costs_one_lookup_and_the_log_row(project, member):
    load(project, gold=80, unlabeled=0)
    train(project)
    client = client_for(member().user)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200  # loads the model

    with CaptureQueriesContext(connection) as queries:
        response = client.post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 200
    # Token with membership and active version id; the log row (prepared statements on
    # PostgreSQL, prepared by the first request). No savepoint, no SET LOCAL.
    assert len(queries) == 2, [q["sql"] for q in queries]


def test_the_request_after_a_promotion_uses_the_new_version(project, member):
    load(project, gold=80, unlabeled=0)
    first = train(project)
    client = client_for(member().user)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").json()["model_version"]["id"] == first.pk

    # Promote a different version behind the process's back (as another worker's run would).
    load(project, gold=12, unlabeled=0, seed=7)
    second = train(project)
    ModelVersion.objects.filter(pk=second.pk).update(active=False)
    ModelVersion.objects.filter(pk=first.pk).update(active=True)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").json()["model_version"]["id"] == first.pk
    ModelVersion.objects.filter(pk=first.pk).update(active=False)
    ModelVersion.objects.filter(pk=second.pk).update(active=True)

    body = client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").json()

    assert body["model_version"] == {"id": second.pk, "number": second.number, "algorithm": second.algorithm}


def test_no_active_version_still_answers_409_after_a_model_was_served(project, member):
    load(project, gold=80, unlabeled=0)
    version = train(project)
    client = client_for(member().user)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200
    ModelVersion.objects.filter(pk=version.pk).update(active=False)

    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 409


def test_a_signed_in_non_member_gets_404(project, make_user):
    response = client_for(make_user()).post(PREDICT.format(project.slug), NLP_TEXT, format="json")
    assert response.status_code == 404


def test_a_removed_membership_shows_on_the_next_request(project, member):
    load(project, gold=80, unlabeled=0)
    train(project)
    membership = member()
    client = client_for(membership.user)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200

    membership.delete()

    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 404


def test_a_token_for_another_project_gets_404(project, member):
    load(project, gold=80, unlabeled=0)
    train(project)
    other = actions.create_project("Other", "other")
    client = client_for(member(in_project=other).user)

    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 404
    assert client.post(PREDICT.format("no-such-project"), NLP_TEXT, format="json").status_code == 404
    assert not PredictLog.objects.exists()


def test_a_wrong_token_gets_401_as_from_drf(project, member):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}
    assert response["WWW-Authenticate"] == "Token"


def test_an_inactive_users_token_gets_401(project, member):
    membership = member()
    client = client_for(membership.user)
    membership.user.is_active = False
    membership.user.save()

    response = client.post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted."}


def test_a_browser_session_still_predicts(project, member):
    load(project, gold=80, unlabeled=0)
    version = train(project)
    user = member().user
    client = APIClient()
    client.force_login(user)

    response = client.post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["model_version"]["id"] == version.pk
    assert PredictLog.objects.get().user == user


def test_a_superuser_outside_the_project_predicts_as_its_admin(project, make_user):
    load(project, gold=80, unlabeled=0)
    train(project)
    admin = make_user()
    admin.is_superuser = True
    admin.save()

    response = client_for(admin).post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 200, response.content
    assert Membership.objects.get(user=admin, project=project).role == "admin"


def test_the_log_row_has_the_time_of_the_request(project, member):
    load(project, gold=80, unlabeled=0)
    train(project)
    before = timezone.now()

    client_for(member().user).post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    log = PredictLog.objects.get()
    assert before <= log.created_at <= timezone.now() + datetime.timedelta(seconds=1)
    assert log.created_at.tzinfo is not None


@pytest.mark.django_db(transaction=True)
def test_the_log_row_alone_does_not_wait_for_the_disk(project):
    """Outside a transaction the log row's own commit runs with synchronous_commit off, and the
    setting ends with that commit: the connection's next transaction waits for the disk again."""
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    relaxed_before = _runs_of_relaxed_log_statement()

    serving._insert_log_row(project.pk, None, "predict", 1.5, True, None)

    assert _runs_of_relaxed_log_statement() == relaxed_before + 1
    assert PredictLog.objects.filter(endpoint="predict", latency_ms=1.5).exists()
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)
        relaxed = serving._log_insert_sql() + serving._WITHOUT_WAITING_FOR_DISK
        cursor.execute(relaxed, [project.pk, None, "t", 1, True, timezone.now(), None])
        assert cursor.fetchone() == ("off",)  # in force when the statement's transaction commits
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)


def test_a_log_row_inside_a_transaction_commits_with_it_at_its_durability(project):
    relaxed_before = _runs_of_relaxed_log_statement()

    with transaction.atomic():
        serving._insert_log_row(project.pk, None, "predict", 1.5, True, None)

    assert _runs_of_relaxed_log_statement() == relaxed_before
    assert PredictLog.objects.filter(endpoint="predict", latency_ms=1.5).exists()


@pytest.mark.django_db(transaction=True)
def test_a_new_connection_prepares_its_statements_again(project, member):
    load(project, gold=80, unlabeled=0)
    train(project)
    client = client_for(member().user)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200

    connection.close()  # as CONN_MAX_AGE or a database restart would

    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200
    assert PredictLog.objects.filter(ok=True).count() == 2


def _runs_of_relaxed_log_statement() -> int:
    """How often this connection ran its prepared log INSERT that turns synchronous_commit off."""
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements"
            " WHERE statement LIKE %s",
            ["%synchronous_commit%"],
        )
        return cursor.fetchone()[0]


def test_without_prepared_statements_it_answers_the_same(project, member, settings):
    settings.LABELLOOP = {**settings.LABELLOOP, "PREPARED_STATEMENTS": False}  # behind PgBouncer
    load(project, gold=80, unlabeled=0)
    train(project)
    client = client_for(member().user)
    executed_before = _runs_of_prepared_statements()

    for _ in range(2):
        assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200

    assert PredictLog.objects.filter(ok=True).count() == 2
    assert _runs_of_prepared_statements() == executed_before  # (this connection may hold some from earlier tests)


def _runs_of_prepared_statements() -> int:
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements WHERE name LIKE %s",
            ["labelloop_%"],
        )
        return cursor.fetchone()[0]
