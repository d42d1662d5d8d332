"""The predict request's database work: how many queries one call costs, and that the shortcut
(active version found with the membership, model metadata kept per process) still sees a
promotion on the very next request and keeps the access rules."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from modeling.models import ModelVersion

from .modeling_data import load
from .test_predict_api import NLP_TEXT, PREDICT, client_for, model_dir, train  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def test_a_warm_predict_costs_three_queries_and_the_log_row(project, member):
    load(project, gold=80, unlabeled=0)
    train(project)
    client = client_for(member().user)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200  # loads the model

    with CaptureQueriesContext(connection) as queries:
        response = client.post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 200
    # Token, membership with the active version id, the log row (and its SET LOCAL on PostgreSQL);
    # the test's transaction turns the log's own into a savepoint, which is not counted.
    statements = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= (4 if connection.vendor == "postgresql" else 3), statements


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
