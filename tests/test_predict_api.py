"""Online predictions and the model versions through the REST API: who may call what, the answer's
shape, the per-process model cache, and the monitoring log (PredictLog)."""
import os

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import actions
from modeling import runs, serving
from modeling.models import ModelVersion, PredictLog

from .modeling_data import load

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("model_dir")]
PREDICT = "/api/projects/{}/predict/"
MODELS = "/api/projects/{}/models/"
NLP_TEXT = {"title": "Sentiment of text", "description": "language tokens and translation of words"}


def train(project) -> ModelVersion:
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk)
    version.refresh_from_db()
    return version


@pytest.fixture
def trained(project):
    load(project, gold=80, unlabeled=0)
    return train(project)


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.mark.parametrize("role", ["annotator", "reviewer", "admin"])
def test_it_predicts_for_every_member(project, trained, member, role):
    user = member(role).user

    response = client_for(user).post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"] == {"id": trained.pk, "number": trained.number, "algorithm": trained.algorithm}
    assert set(body["probabilities"]) == {c.name for c in project.categories.all()}
    assert abs(sum(body["probabilities"].values()) - 1) < 0.01
    assert body["top_category"] == "natural-language-processing"
    assert body["top_category"] == max(body["probabilities"], key=body["probabilities"].get)
    log = PredictLog.objects.get()
    assert log.ok and log.user == user and log.model_version_id == trained.pk and log.endpoint == "predict"
    assert 0 < log.latency_ms == body["latency_ms"]


def test_it_hides_the_project_from_outsiders(project, trained, make_user):
    outsider = make_user()
    other = actions.create_project("Other", "other")
    actions.add_member(other, outsider, "admin")

    response = client_for(outsider).post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 404
    assert client_for(outsider).post(PREDICT.format("no-such-project"), NLP_TEXT, format="json").status_code == 404
    assert not PredictLog.objects.exists()


def test_it_asks_anonymous_callers_to_authenticate(project, trained):
    response = client_for(None).post(PREDICT.format(project.slug), NLP_TEXT, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_it_accepts_only_post(project, trained, member):
    assert client_for(member().user).get(PREDICT.format(project.slug)).status_code == 405


def test_it_wants_some_text(project, trained, member):
    response = client_for(member().user).post(PREDICT.format(project.slug), {"title": " "}, format="json")
    assert response.status_code == 400
    assert "Send a title, a description, or both." in str(response.json())


def test_it_takes_text_for_description(project, trained, member):
    client = client_for(member().user)
    as_text = client.post(PREDICT.format(project.slug), {"text": NLP_TEXT["description"]}, format="json").json()
    as_description = client.post(PREDICT.format(project.slug), {"description": NLP_TEXT["description"]}, format="json").json()
    assert as_text["probabilities"] == as_description["probabilities"]


def test_it_says_when_there_is_no_model_yet(project, member):
    response = client_for(member().user).post(PREDICT.format(project.slug), NLP_TEXT, format="json")
    assert response.status_code == 409
    assert "no trained model yet" in response.json()["detail"]
    log = PredictLog.objects.get()
    assert not log.ok and log.model_version is None


def test_it_refuses_a_model_file_that_fails_its_hash_check(project, trained, member):
    with open(trained.artifact_path, "ab") as artifact:
        artifact.write(b"tampered")

    response = client_for(member().user).post(PREDICT.format(project.slug), NLP_TEXT, format="json")

    assert response.status_code == 503
    assert "does not match its recorded hash" in response.json()["detail"]
    assert not PredictLog.objects.get().ok


def test_it_keeps_the_model_in_memory_until_a_new_version_is_promoted(project, trained, member, model_dir):
    client = client_for(member().user)
    client.post(PREDICT.format(project.slug), NLP_TEXT, format="json")
    # Loaded once: with the file gone, the cached model still answers.
    artifact = trained.artifact_path
    with open(artifact, "rb") as original:
        saved = original.read()
    os.unlink(artifact)
    assert client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").status_code == 200
    with open(artifact, "wb") as restored:
        restored.write(saved)

    load(project, gold=12, unlabeled=0, seed=7)
    newer = train(project)
    assert newer.active

    answer = client.post(PREDICT.format(project.slug), NLP_TEXT, format="json").json()
    assert answer["model_version"]["number"] == newer.number
    assert list(serving._models) == [newer.pk]  # the older model left memory


def test_it_lists_versions_for_reviewers_only(project, trained, member):
    assert client_for(member("annotator").user).get(MODELS.format(project.slug)).status_code == 403
    response = client_for(member("reviewer").user).get(MODELS.format(project.slug))
    assert response.status_code == 200
    [listed] = response.json()
    assert listed["number"] == trained.number and listed["active"] is True
    assert listed["weighted_f1"] == trained.metrics["weighted_f1"]


def test_it_lets_admins_start_a_run(project, member, django_capture_on_commit_callbacks):
    load(project, gold=80, unlabeled=0)
    assert client_for(member("reviewer").user).post(MODELS.format(project.slug)).status_code == 403
    admin = client_for(member("admin").user)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = admin.post(MODELS.format(project.slug))

    assert response.status_code == 202
    assert response.json()["status"] == "queued" and response.json()["number"] == 1
    assert len(queued) == 1  # the task is published once the run's row is committed
    version = ModelVersion.objects.get()
    assert version.trigger == ModelVersion.Trigger.API
    # A second request while it is in flight returns the same run.
    assert admin.post(MODELS.format(project.slug)).json()["id"] == version.pk
