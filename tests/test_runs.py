"""Training runs in-process (modeling.runs.run, what the Celery task calls): promotion, refusals,
failures part-way, duplicates, batch predictions and the active-learning order, suspected label
errors. The same runs in a real Celery worker are in test_training_worker.py."""
import time
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError
from django.utils import timezone

from labeling import actions
from labeling.models import Item, Project, ReviewQueue, Split
from labeling.review import claim_review
from labeling.tasks import follow_up_import
from modeling import artifacts, runs, serving, training
from modeling.models import ModelVersion, Prediction, Rule

from .modeling_data import load

FAST = ["majority", "rules", "tfidf_logreg"]


@pytest.fixture
def model_algorithms():
    return FAST


pytestmark = pytest.mark.usefixtures("model_dir")


def train(project, algorithms=None, trigger=ModelVersion.Trigger.BUTTON) -> ModelVersion:
    version = runs.request_training(project, trigger, enqueue=False)
    runs.run(version.pk, algorithms=algorithms)
    version.refresh_from_db()
    return version


def temporaries(folder) -> list:
    return sorted(folder.glob("tmp-*.joblib"))


@pytest.mark.django_db
def test_it_trains_evaluates_promotes_and_stores_predictions(project, model_dir):
    load(project, gold=80, unlabeled=20)

    version = train(project)

    assert version.status == ModelVersion.Status.DONE and version.progress == 100
    assert version.active and version.promoted
    assert version.promotion_reason.startswith("Promoted: holdout weighted F1")
    assert version.algorithm in FAST and version.trained_on + version.holdout_size == 80
    assert version.holdout_size == Item.objects.filter(project=project, split=Split.HOLDOUT).count() > 0
    assert version.metrics["weighted_f1"] > 0.9
    # Beside the manual rules and the majority class, on the same holdout.
    assert set(version.baselines) == {"rules", "majority"}
    assert version.baselines["majority"]["n"] == version.metrics["n"] == version.holdout_size
    assert version.baselines["majority"]["weighted_f1"] < version.metrics["weighted_f1"]
    assert "short_text" in version.metrics["slices"] and version.metrics["calibration"]["ece"] >= 0
    assert {c["algorithm"] for c in version.selection["candidates"]} == set(FAST)
    # The artifact was published under its final name and loads only with its hash.
    assert artifacts.load_verified(version.artifact_path, version.artifact_sha256).classes_ == sorted(
        c.name for c in project.categories.all()
    )
    assert temporaries(model_dir) == []
    # One stored prediction per unlabeled item, with probabilities by category id.
    stored = Prediction.objects.filter(project=project)
    assert stored.count() == 20 == Item.objects.filter(project=project, status=Item.Status.OPEN).count()
    one = stored.first()
    assert one.model_version_id == version.pk
    assert set(one.probabilities) == {str(c.id) for c in project.categories.all()}
    assert abs(sum(one.probabilities.values()) - 1) < 0.01
    assert one.top_category_id == int(max(one.probabilities, key=one.probabilities.get))
    assert set(version.timings) >= {"snapshot", "train", "evaluate", "predict"}


@pytest.mark.django_db
def test_it_does_no_work_twice_for_the_same_training_data(project, model_dir):
    load(project)
    first = train(project)
    files = sorted(model_dir.iterdir())

    again = train(project)

    assert again.pk != first.pk and again.status == ModelVersion.Status.DONE
    assert again.promotion_reason == f"Same training data as version {first.number}; nothing new to learn."
    assert not again.active and not again.promoted and again.algorithm == "" and again.artifact_path == ""
    first.refresh_from_db()
    assert first.active
    assert sorted(model_dir.iterdir()) == files


@pytest.mark.django_db
def test_it_takes_a_run_once_when_its_message_comes_twice(project):
    load(project)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)

    assert runs.run(version.pk) == ModelVersion.Status.DONE
    assert runs.run(version.pk) == "taken"

    version.refresh_from_db()
    assert version.attempts == 1
    assert ModelVersion.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_it_keeps_one_run_in_flight_per_project(project):
    load(project)
    queued = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    assert runs.request_training(project, ModelVersion.Trigger.COMMAND, enqueue=False) == queued
    assert ModelVersion.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_it_does_not_promote_a_worse_model(project, model_dir):
    load(project, gold=80, seed=0)
    good = train(project)
    load(project, gold=12, unlabeled=0, seed=7)  # new gold labels: different training data

    worse = train(project, algorithms=["majority"])

    assert worse.status == ModelVersion.Status.DONE
    assert not worse.active and not worse.promoted and worse.artifact_path == ""
    assert worse.promotion_reason.startswith("Not promoted: holdout weighted F1")
    assert f"below the active version {good.number}" in worse.promotion_reason
    # The serving model was re-scored on the same, larger holdout for the comparison.
    assert worse.baselines["previous"]["version"] == good.number
    assert worse.baselines["previous"]["n"] == worse.metrics["n"]
    # Paired on the same items: majority against a real model is worse beyond the holdout's noise.
    low, high = worse.baselines["previous"]["difference"]["weighted_f1"]
    assert low < worse.metrics["weighted_f1"] - worse.baselines["previous"]["weighted_f1"] < high < 0
    assert f"Minus version {good.number} in weighted F1: {low:+.3f} to {high:+.3f} (95 %), worse beyond noise." in worse.promotion_reason
    good.refresh_from_db()
    assert good.active
    assert temporaries(model_dir) == []
    assert set(Prediction.objects.values_list("model_version_id", flat=True)) == {good.pk}


@pytest.mark.django_db
def test_it_promotes_a_model_within_the_margin(project):
    load(project, gold=80)
    first = train(project)
    load(project, gold=12, unlabeled=0, seed=7)

    second = train(project)

    assert second.active and second.promoted
    assert f"against version {first.number}" in second.promotion_reason
    # How sure the difference is, paired on the same items (the two may decide every item alike).
    assert "(95 %)" in second.promotion_reason or "decide every holdout item alike" in second.promotion_reason
    first.refresh_from_db()
    assert not first.active
    assert set(Prediction.objects.values_list("model_version_id", flat=True)) == {second.pk}


@pytest.mark.django_db
def test_it_fails_part_way_without_touching_the_serving_model(project, model_dir, monkeypatch):
    load(project)
    serving_version = train(project)
    load(project, gold=12, unlabeled=0, seed=7)

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    # After the artifact is written, before promotion: the worst place to fail.
    monkeypatch.setattr(runs.evaluation, "evaluate", broken)
    failed = train(project)

    assert failed.status == ModelVersion.Status.FAILED
    assert failed.error == "RuntimeError: evaluation exploded"
    assert not failed.active and not failed.promoted and failed.artifact_path == ""
    assert failed.finished_at is not None and "train" in failed.timings
    serving_version.refresh_from_db()
    assert serving_version.active
    assert temporaries(model_dir) == []
    assert set(Prediction.objects.values_list("model_version_id", flat=True)) == {serving_version.pk}

    # A retry of the same data is allowed: the failed run gives up its snapshot key.
    monkeypatch.undo()
    retried = train(project)
    assert retried.status == ModelVersion.Status.DONE and retried.active
    failed.refresh_from_db()
    assert failed.snapshot_hash == ""


@pytest.mark.django_db
def test_it_says_when_the_soft_time_limit_stopped_a_run(project, model_dir, monkeypatch):
    load(project)

    def slow(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(runs.training, "select", slow)
    version = train(project)

    assert version.status == ModelVersion.Status.FAILED
    assert "TRAIN_SOFT_TIME_LIMIT" in version.error
    assert not ModelVersion.objects.filter(active=True).exists()
    assert temporaries(model_dir) == []


@pytest.mark.django_db
def test_it_hands_the_run_back_to_the_queue_when_the_database_fails(project, monkeypatch):
    load(project)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)

    def outage(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(runs.training, "select", outage)
    with pytest.raises(OperationalError):  # the task's autoretry takes it from here
        runs.run(version.pk)

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.QUEUED and version.attempts == 1
    monkeypatch.undo()
    assert runs.run(version.pk) == ModelVersion.Status.DONE


@pytest.mark.django_db
def test_it_skips_a_run_without_enough_gold_labels(project, model_dir):
    load(project, gold=6, unlabeled=5)

    version = train(project)

    assert version.status == ModelVersion.Status.DONE and not version.active
    assert version.promotion_reason.startswith("Not enough gold labels to train")
    assert list(model_dir.glob("*.joblib")) == []


@pytest.mark.django_db
def test_it_uses_the_projects_rules_for_the_rules_baseline(project):
    load(project)
    for category in project.categories.all():
        Rule.objects.create(project=project, category=category, pattern=f"zzz-{category.name}")
    version = train(project)
    # No rule matches any text: the rules baseline falls back to the majority class.
    assert version.baselines["rules"]["accuracy"] == version.baselines["majority"]["accuracy"]

    Rule.objects.all().delete()
    load(project, gold=8, unlabeled=0, seed=9)
    with_defaults = train(project)
    # No rules at all: the built-in keyword lists of the default categories.
    assert with_defaults.baselines["rules"]["accuracy"] > with_defaults.baselines["majority"]["accuracy"]


@pytest.mark.django_db
def test_it_orders_open_items_least_confident_first_in_uncertainty_order(project, member):
    Project.objects.filter(pk=project.pk).update(order=Project.Order.UNCERTAINTY)
    project.refresh_from_db()
    load(project, gold=80, unlabeled=30)
    annotator = member()
    for _ in range(3):
        actions.claim_next_item(annotator)  # the cursor moves past the first items
    annotator.refresh_from_db()

    version = train(project)

    open_items = Item.objects.filter(project=project, status=Item.Status.OPEN).select_related("prediction")
    by_rank = sorted(open_items, key=lambda item: item.rank)
    margins = [item.prediction.margin for item in by_rank]
    assert margins == sorted(margins)
    assert version.timings["reranked"] == 30
    # Cursors are pulled back so everyone's next claim starts at the least confident item.
    annotator.refresh_from_db()
    assert annotator.queue_cursor < by_rank[0].rank
    someone_new = member()
    Project.objects.filter(pk=project.pk).update(honeypot_percent=0)
    someone_new.project.refresh_from_db()
    assert actions.claim_next_item(someone_new).item_id == by_rank[0].pk


@pytest.mark.django_db
def test_it_keeps_the_import_order_outside_uncertainty_order(project):
    load(project, gold=80, unlabeled=10)
    before = dict(Item.objects.filter(project=project).values_list("id", "rank"))
    train(project)
    assert dict(Item.objects.filter(project=project).values_list("id", "rank")) == before


@pytest.mark.django_db
def test_it_sends_suspected_label_errors_to_review_most_suspicious_first(project, member):
    load(project, gold=120, unlabeled=0, mislabel=12)
    wrong = set(
        Item.objects.filter(project=project, external_id__in=[f"gold-0-{n}" for n in range(12)]).values_list("id", flat=True)
    )

    version = train(project)

    suspected = list(
        Item.objects.filter(project=project, review_queue=ReviewQueue.SUSPECTED).order_by("rank")
    )
    assert version.timings["suspected"] == len(suspected) > 0
    assert all(item.split == Split.TRAIN and item.status == Item.Status.GOLD for item in suspected)
    # Most of what is flagged was mislabeled on purpose, and the top suspect certainly was.
    assert suspected[0].pk in wrong
    assert len({item.pk for item in suspected} & wrong) >= 0.6 * len(suspected)
    # Reviewers take them from their queue in that order.
    assert claim_review(member("reviewer"), ReviewQueue.SUSPECTED) == suspected[0]


@pytest.mark.django_db
def test_on_a_big_training_set_it_checks_the_labels_of_the_selection_sample(project, monkeypatch):
    load(project, gold=120, unlabeled=0, mislabel=12)
    monkeypatch.setattr(runs, "SELECTION_SAMPLE", 50)
    fitted = []
    monkeypatch.setattr(runs.training, "score_candidate", counting(training.score_candidate, fitted))

    version = train(project)

    assert 40 < version.selection["selection_sample"] <= 50 < version.trained_on
    # The label check reused the selection's out-of-fold probabilities: no cross-validation of its own.
    assert len(fitted) == len(version.selection["candidates"])
    assert version.timings["suspected"] == Item.objects.filter(project=project, review_queue=ReviewQueue.SUSPECTED).count()


def counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(args[:2])
        return function(*args, **kwargs)
    return counted


@pytest.mark.django_db
def test_it_queues_a_run_after_enough_new_gold_labels(project):
    Project.objects.filter(pk=project.pk).update(retrain_every=50)
    project.refresh_from_db()
    load(project, gold=40, unlabeled=0)
    assert runs.retrain_if_due(project) is None

    load(project, gold=12, unlabeled=0, seed=5)
    due = runs.retrain_if_due(project)

    assert due is not None and due.trigger == ModelVersion.Trigger.GOLD_COUNT
    assert due.status == ModelVersion.Status.QUEUED
    runs.run(due.pk)
    assert runs.retrain_if_due(project) is None  # nothing new since that run


@pytest.mark.django_db
def test_an_import_of_gold_labels_queues_a_run_once_enough_are_new(project, django_capture_on_commit_callbacks):
    Project.objects.filter(pk=project.pk).update(retrain_every=50)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        load(project, gold=52, unlabeled=0)
    assert [c.args for c in queued] == [((project.pk,), {"new_items": True, "new_gold": True})]

    done = follow_up_import(project.pk, new_items=True, new_gold=True)  # what the worker runs

    due = ModelVersion.objects.get(project=project)
    assert done["runs_queued"] == [due.pk] and due.trigger == ModelVersion.Trigger.GOLD_COUNT
    assert follow_up_import(project.pk, new_items=False, new_gold=True)["runs_queued"] == []  # one is queued


@pytest.mark.django_db
def test_it_gives_up_on_a_run_that_never_finishes(project):
    load(project)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    long_ago = timezone.now() - timedelta(hours=2)
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.TRAINING, started_at=long_ago, attempts=runs.MAX_ATTEMPTS
    )

    assert runs.recover_stale_runs() == []

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.FAILED
    assert "never finished" in version.error


@pytest.mark.django_db
def test_it_takes_over_a_run_whose_worker_died(project):
    load(project)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.TRAINING, started_at=timezone.now())
    assert runs.run(version.pk) == "taken"  # still running elsewhere, as far as anyone knows

    ModelVersion.objects.filter(pk=version.pk).update(started_at=timezone.now() - timedelta(hours=2), attempts=1)
    assert runs.run(version.pk) == ModelVersion.Status.DONE
    version.refresh_from_db()
    assert version.attempts == 2 and version.active


@pytest.mark.django_db
def test_it_runs_again_a_run_whose_heartbeat_stopped_long_before_the_hard_limit(project, settings, monkeypatch):
    load(project)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    beat = timedelta(seconds=settings.LABELLOOP["RUN_HEARTBEAT_SECONDS"])
    started = timezone.now() - beat * runs.DEAD_AFTER_BEATS * 2  # well within the hard limit
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.TRAINING, started_at=started, alive_at=timezone.now() - beat, attempts=1
    )
    queued = []
    monkeypatch.setattr(runs, "enqueue_run", queued.append)
    assert runs.recover_stale_runs() == [] and runs.run(version.pk) == "taken"  # still beating

    ModelVersion.objects.filter(pk=version.pk).update(alive_at=timezone.now() - beat * (runs.DEAD_AFTER_BEATS + 1))
    assert runs.recover_stale_runs() == [version.pk] == queued
    assert runs.run(version.pk) == ModelVersion.Status.DONE
    version.refresh_from_db()
    assert version.attempts == 2 and version.active


@pytest.mark.django_db(transaction=True)
def test_a_run_beats_from_a_thread_of_its_own_while_it_works_and_stops_with_it(project, settings):
    settings.LABELLOOP = {**settings.LABELLOOP, "RUN_HEARTBEAT_SECONDS": 1}
    load(project)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.TRAINING)
    entered = timezone.now()

    with runs.heartbeat(version.pk):
        time.sleep(2.5)  # the run's work: two beats

    last_beat = ModelVersion.objects.get(pk=version.pk).alive_at
    assert last_beat is not None and last_beat > entered
    time.sleep(1.5)
    assert ModelVersion.objects.get(pk=version.pk).alive_at == last_beat  # no beat once the work is over


def test_it_builds_whole_word_patterns_for_keyword_rules():
    assert training.compile_pattern(training.keyword_pattern("c++")).search("written in c++ today")
    assert not training.compile_pattern(training.keyword_pattern("gan")).search("organ")


@pytest.mark.embeddings
@pytest.mark.django_db
def test_it_encodes_each_item_once_and_reuses_stored_embeddings(project, monkeypatch):
    from modeling import embeddings
    from modeling.models import Embedding

    from .conftest import require

    require(embeddings.available(), "the [embeddings] extra")
    encoded = []
    real_encode = embeddings._encode_batches

    def counting(texts):
        encoded.extend(texts)
        return real_encode(texts)

    monkeypatch.setattr(embeddings, "_encode_batches", counting)
    load(project, gold=60, unlabeled=10)

    first = train(project, algorithms=["embeddings_logreg"])

    assert first.active and first.algorithm == "embeddings_logreg", first.error
    items = Item.objects.filter(project=project)
    assert Embedding.objects.filter(project=project).count() == items.count() == 70
    assert len(encoded) == len(set(encoded)) == 70  # every text once: folds, candidates, holdout, predictions
    stored_at = dict(Embedding.objects.values_list("item_id", "created_at"))

    encoded.clear()
    load(project, gold=8, unlabeled=0, seed=7)
    second = train(project, algorithms=["embeddings_logreg"])

    assert second.status == ModelVersion.Status.DONE, second.error
    assert len(encoded) == 8  # only the new items; the stored vectors were read back
    assert {k: v for k, v in Embedding.objects.values_list("item_id", "created_at") if k in stored_at} == stored_at
    # The serving model scores a new text through the same encoder (not stored: it is no item).
    assert serving.predict(project, "Image segmentation", "pixels and camera").top_category == "computer-vision"


@pytest.mark.django_db
def test_it_predicts_in_chunks_each_once(project, settings):
    settings.LABELLOOP = {**settings.LABELLOOP, "PREDICT_CHUNK": 7}
    load(project, gold=80, unlabeled=20)

    version = train(project)

    assert version.status == ModelVersion.Status.DONE and version.progress == 100
    assert len(version.prediction_plan) == 3 and sorted(version.predicted_chunks) == [0, 1, 2]
    assert version.timings["predicted"] == 20 and version.timings["predict"] >= 0
    assert "predict_started" not in version.timings
    assert Prediction.objects.filter(model_version=version).count() == 20
    # A chunk asked for again (a redelivered task) does nothing.
    assert runs.predict_chunk(version.pk, 1) == "done already"


@pytest.mark.django_db
def test_it_finishes_a_run_whose_prediction_chunk_failed_and_keeps_it_serving(project, settings, monkeypatch):
    settings.LABELLOOP = {**settings.LABELLOOP, "PREDICT_CHUNK": 10}
    load(project, gold=80, unlabeled=20)
    real = runs.predictions.predict_range

    def second_chunk_breaks(version, model, first, last):
        if first != version.prediction_plan[0][0]:
            raise MemoryError("out of memory")
        return real(version, model, first, last)

    monkeypatch.setattr(runs.predictions, "predict_range", second_chunk_breaks)
    version = train(project)

    assert version.status == ModelVersion.Status.DONE and version.active
    assert "Predictions for items" in version.error and "MemoryError: out of memory" in version.error
    assert Prediction.objects.count() == 10 and version.timings["predicted"] == 10


@pytest.mark.django_db
def test_it_does_not_train_again_a_run_that_was_predicting(project):
    load(project, gold=80, unlabeled=5)
    version = train(project)
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.PREDICTING, started_at=timezone.now() - timedelta(hours=2)
    )
    assert runs.run(version.pk) == "taken"  # its missing chunks are handed out again instead


@pytest.mark.django_db
def test_it_trains_from_the_command_line_and_waits_for_the_outcome(project):
    import json
    from io import StringIO

    from django.core.management import CommandError, call_command

    load(project)
    out = StringIO()
    call_command("train", "--project", project.slug, "--wait", "--algorithms", "majority,tfidf_logreg", "--json", stdout=out)

    outcome = json.loads(out.getvalue())
    assert outcome["status"] == "done" and outcome["active"] and outcome["version"] == 1
    assert outcome["algorithm"] in ("majority", "tfidf_logreg") and outcome["weighted_f1"] > 0.9
    assert ModelVersion.objects.get().trigger == ModelVersion.Trigger.COMMAND
    with pytest.raises(CommandError, match="No project"):
        call_command("train", "--project", "nope")
    with pytest.raises(CommandError, match="Unknown or unavailable algorithm"):
        call_command("train", "--project", project.slug, "--wait", "--algorithms", "gpt-5")
