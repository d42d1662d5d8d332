"""How batch predictions are written (modeling.predictions.store and set_ranks): a chunk done
again changes nothing, an item's prediction is replaced and never duplicated, and predictions
still go with the model version, category or project they belong to (Django deletes them: the
table keeps no database constraint on those keys, see modeling.models.Prediction)."""
import pytest

from labeling.models import Category, Item, Project
from modeling import predictions, runs, serving
from modeling.models import ModelVersion, Prediction

from .modeling_data import load


@pytest.fixture
def model_algorithms():
    return ["tfidf_logreg"]


pytestmark = pytest.mark.usefixtures("model_dir")


@pytest.fixture
def trained(project):
    """An uncertainty-order project with 20 open items, trained once (predictions stored)."""
    Project.objects.filter(pk=project.pk).update(order=Project.Order.UNCERTAINTY)
    project.refresh_from_db()
    load(project, gold=80, unlabeled=20)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.DONE and version.active
    return version


def stored(project) -> list[tuple]:
    return sorted(
        Prediction.objects.filter(project=project).values_list("item_id", "model_version_id", "top_category_id", "margin")
    )


def open_ranks(project) -> dict[int, int]:
    return dict(Item.objects.filter(project=project, status=Item.Status.OPEN).values_list("id", "rank"))


def predict_again(version: ModelVersion) -> dict:
    model = serving.model_for(version)
    first, last = version.prediction_plan[0][0], version.prediction_plan[-1][1]
    return predictions.predict_range(version, model, first, last)


@pytest.mark.django_db
def test_it_changes_nothing_when_a_chunk_is_done_again(trained):
    project = trained.project
    before, ranks = stored(project), open_ranks(project)
    assert len(before) == 20

    assert predict_again(trained) == {"predicted": 20, "reranked": 20}

    assert stored(project) == before
    assert open_ranks(project) == ranks


@pytest.mark.django_db
def test_it_moves_only_the_items_whose_rank_changed(trained):
    ranks = open_ranks(trained.project)
    first, second = sorted(ranks)[:2]

    assert predictions.set_ranks(list(ranks.items())) == 0
    assert predictions.set_ranks([(first, ranks[first] + 1), (second, ranks[second])]) == 1

    assert open_ranks(trained.project) == {**ranks, first: ranks[first] + 1}


@pytest.mark.django_db
def test_it_replaces_an_items_prediction_with_the_next_models(trained):
    project = trained.project
    ModelVersion.objects.filter(pk=trained.pk).update(active=False)
    successor = ModelVersion.objects.create(
        project=project, number=trained.number + 1, algorithm=trained.algorithm, status=ModelVersion.Status.DONE,
        active=True, artifact_path=trained.artifact_path, artifact_sha256=trained.artifact_sha256,
        prediction_plan=trained.prediction_plan,
    )

    predict_again(successor)

    rows = stored(project)
    assert len(rows) == len({item_id for item_id, *_ in rows}) == 20
    assert {version_id for _, version_id, _, _ in rows} == {successor.pk}


@pytest.mark.django_db
def test_deleting_a_model_version_deletes_its_predictions(trained):
    trained.delete()
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_deleting_a_category_deletes_the_predictions_pointing_to_it(trained):
    top = Prediction.objects.filter(project=trained.project).values_list("top_category_id", flat=True).first()
    others = Prediction.objects.exclude(top_category_id=top).count()

    Category.objects.filter(pk=top).delete()

    assert not Prediction.objects.filter(top_category_id=top).exists()
    assert Prediction.objects.count() == others


@pytest.mark.django_db
def test_deleting_a_project_deletes_its_predictions(trained, project):
    Project.objects.filter(pk=project.pk).delete()
    assert not Prediction.objects.exists()
