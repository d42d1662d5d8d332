"""Online predictions for a multi-label project: the answer carries the predicted set of categories
(each at or above its threshold, at least the top one unless the model was trained with "none of
these") and the thresholds; single-label answers keep their shape. A model is trained in-process."""
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from modeling import runs, serving, training
from modeling.models import ModelVersion

from .multilabel_data import load, multi_label_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("model_dir")]
PREDICT = "/api/projects/{}/predict/"
SINGLE_LABEL_KEYS = {"model_version", "probabilities", "top_category", "latency_ms"}
NLP_AND_VISION = {
    "title": "Sentiment of image captions",
    "description": "language tokens and translation of words beside pixels camera segmentation of photos",
}
FILLER_ONLY = {"title": "A new study", "description": "simple fast approach open source results"}


def train(project) -> ModelVersion:
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.DONE and version.active, version.error
    return version


@pytest.fixture
def multi(db):
    project = multi_label_project(honeypot_percent=0, blind_control_percent=0)
    load(project, gold=120, unlabeled=0)
    return project


def predict(project, member, text: dict) -> dict:
    user = member("annotator", in_project=project).user
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.post(PREDICT.format(project.slug), text, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_it_returns_the_categories_at_or_above_their_thresholds(multi, member):
    version = train(multi)

    body = predict(multi, member, NLP_AND_VISION)

    assert body["thresholds"] == version.params["thresholds"]
    assert set(body["thresholds"]) == set(body["probabilities"]) == {c.name for c in multi.categories.all()}
    assert set(body["categories"]) == {"natural-language-processing", "computer-vision"}
    assert body["top_category"] in body["categories"]
    for name, probability in body["probabilities"].items():  # probabilities are rounded to 4 places
        if name in body["categories"]:
            assert probability >= body["thresholds"][name] - 1e-4
        else:
            assert probability < body["thresholds"][name] + 1e-4
    # The same set the model itself predicts (the batch predictions and the CV use that rule).
    model = serving.model_for(version)
    assert body["categories"] == model.predict([training.item_text(NLP_AND_VISION["title"], NLP_AND_VISION["description"])])[0]


def test_it_gives_at_least_the_top_category_unless_the_model_allows_none(multi, member):
    version = train(multi)
    model = serving.model_for(version)  # the very object the endpoint serves from this process
    # Thresholds no probability reaches: what a text unlike every training item meets.
    model.thresholds_ = [0.99] * len(model.classes_)

    body = predict(multi, member, FILLER_ONLY)

    assert max(body["probabilities"].values()) < 0.99
    assert body["categories"] == [body["top_category"]]
    assert body["thresholds"] == dict.fromkeys(model.classes_, 0.99)

    model.allow_empty_ = True  # as if some training item had been labelled "none of these"
    assert predict(multi, member, FILLER_ONLY)["categories"] == []


def test_a_single_label_answer_is_unchanged(project, member):
    from .modeling_data import load as load_single

    load_single(project, gold=80, unlabeled=0)
    train(project)

    body = predict(project, member, NLP_AND_VISION)

    assert set(body) == SINGLE_LABEL_KEYS
    assert serving.predict(project, "Image segmentation", "pixels camera").categories is None


def test_the_schema_documents_the_multi_label_fields_as_optional(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/projects/{slug}/predict/"]["post"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    fields = component["properties"]
    assert fields["categories"]["type"] == "array" and fields["categories"]["items"]["type"] == "string"
    assert fields["thresholds"]["type"] == "object"
    assert fields["thresholds"]["additionalProperties"]["type"] == "number"
    for name in ("categories", "thresholds"):
        assert fields[name]["description"].startswith("Multi-label projects only")
    assert set(component["required"]) == SINGLE_LABEL_KEYS
