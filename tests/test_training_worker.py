"""Training runs in a real Celery worker (a subprocess on Redis, not eager mode) against the test's
own database: `manage.py train` queues a run that ends promoted with its predictions stored; a
duplicated message does nothing twice; a run that fails part-way leaves the serving model alone;
a run whose message was lost is queued again by the periodic check.

Each test uses its own queue name and model folder (see test_celery_worker.py for the approach).
"""
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from config.celery import app as celery_app
from labeling.models import Item
from modeling import runs
from modeling.models import ModelVersion, Prediction
from modeling.tasks import check_retraining, train_model_version

from . import services
from .conftest import require
from .modeling_data import load
from .test_celery_worker import env_for, manage

BIN = Path(sys.executable).parent
WAIT_SECONDS = 120
ALGORITHMS = "majority,rules,tfidf_logreg"

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def queue():
    require(services.redis_reachable(), "Redis")
    name = f"labelloop-train-{uuid.uuid4().hex[:12]}"
    yield name
    broker = redis.Redis.from_url(services.REDIS_URL)
    for key in broker.scan_iter(f"*{name}*"):
        broker.delete(key)


@pytest.fixture
def model_algorithms():
    return ALGORITHMS.split(",")


@pytest.fixture
def worker_env(queue, model_dir):
    def env(**extra) -> dict:
        return {**env_for(services.REDIS_URL, queue), "MODEL_DIR": str(model_dir), "TRAIN_ALGORITHMS": ALGORITHMS, **extra}

    return env


@pytest.fixture
def start_worker(queue, worker_env, tmp_path):
    started = []

    def start(**extra_env) -> subprocess.Popen:
        log_path = tmp_path / f"worker-{len(started)}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [
                    str(BIN / "celery"), "-A", "config", "worker", "--pool=solo", "-Q", queue, "-n", f"{queue}-{len(started)}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
                ],
                cwd=settings.BASE_DIR, env=worker_env(**extra_env), stdout=log, stderr=subprocess.STDOUT,
            )
        process.log_path = log_path
        started.append(process)
        return process

    yield start
    for process in started:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    process.terminate()  # warm shutdown: finishes the task in hand, then exits
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def publish(task, *args, queue: str) -> None:
    with celery_app.connection_for_write(services.REDIS_URL) as broker:
        task.apply_async(args, queue=queue, connection=broker)


def wait_until_finished(project, worker, number: int | None = None) -> ModelVersion:
    """The project's run `number` (default: the latest) once it is done or failed."""
    began = time.monotonic()
    while time.monotonic() - began < WAIT_SECONDS:
        versions = ModelVersion.objects.filter(project=project)
        version = versions.filter(number=number).first() if number else versions.order_by("-number").first()
        if version is not None and not version.is_running():
            return version
        if worker.poll() is not None:
            pytest.fail(f"the worker exited with {worker.returncode}:\n{worker.log_path.read_text()}")
        time.sleep(0.25)
    pytest.fail(f"no finished run after {WAIT_SECONDS}s: {list(ModelVersion.objects.values())}\n{worker.log_path.read_text()}")


def test_it_trains_a_queued_run_to_promotion_in_a_real_worker(project, start_worker, worker_env, model_dir, queue):
    load(project, gold=80, unlabeled=25)
    # Two workers share the batch predictions, one task per chunk of 10 items.
    worker = start_worker(PREDICT_CHUNK="10")
    helper = start_worker(PREDICT_CHUNK="10")
    began = time.monotonic()

    done = manage("train", "--project", project.slug, env=worker_env())

    assert done.returncode == 0, done.stderr
    assert "Queued test v1" in done.stdout
    version = wait_until_finished(project, worker)
    print(f"manage.py train → worker → promoted with predictions: {time.monotonic() - began:.2f}s; timings {version.timings}")
    assert version.status == ModelVersion.Status.DONE, version.error
    assert version.trigger == ModelVersion.Trigger.COMMAND
    assert version.active and version.promoted and version.progress == 100
    assert Path(version.artifact_path).parent == model_dir and not list(model_dir.glob("tmp-*"))
    assert Prediction.objects.filter(model_version=version).count() == 25
    assert Item.objects.filter(project=project, status=Item.Status.OPEN).count() == 25
    assert len(version.prediction_plan) == 3 and sorted(version.predicted_chunks) == [0, 1, 2]
    logs = worker.log_path.read_text() + helper.log_path.read_text()
    assert logs.count("modeling.tasks.predict_chunk_task") >= 3

    # The same message delivered again (a broker redelivery, a double click): nothing is redone.
    stop(helper)
    publish(train_model_version, version.pk, queue=queue)
    began = time.monotonic()
    while "'taken'" not in worker.log_path.read_text() and time.monotonic() - began < WAIT_SECONDS:
        time.sleep(0.25)
    assert "'taken'" in worker.log_path.read_text()
    version.refresh_from_db()
    assert version.attempts == 1 and ModelVersion.objects.filter(project=project).count() == 1


def test_it_leaves_the_serving_model_alone_when_a_run_fails_in_the_worker(project, start_worker, model_dir, queue, tmp_path):
    load(project, gold=80, unlabeled=10)
    first_worker = start_worker()
    serving_version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    publish(train_model_version, serving_version.pk, queue=queue)
    serving_version = wait_until_finished(project, first_worker)
    assert serving_version.active, serving_version.error
    stop(first_worker)
    served_files = sorted(model_dir.iterdir())

    # A worker whose model folder cannot be written (a file stands in its place): training
    # succeeds, writing the artifact fails. New gold labels make it a genuinely new run.
    load(project, gold=12, unlabeled=0, seed=7)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    broken_worker = start_worker(MODEL_DIR=str(blocked))
    failing = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    publish(train_model_version, failing.pk, queue=queue)
    failing = wait_until_finished(project, broken_worker, failing.number)

    assert failing.status == ModelVersion.Status.FAILED
    assert "FileExistsError" in failing.error or "NotADirectoryError" in failing.error, failing.error
    assert not failing.active and not failing.promoted and failing.artifact_path == ""
    serving_version.refresh_from_db()
    assert serving_version.active
    assert sorted(model_dir.iterdir()) == served_files  # nothing added, nothing left behind
    assert set(Prediction.objects.values_list("model_version_id", flat=True)) == {serving_version.pk}


def test_it_queues_a_lost_run_again_from_the_periodic_check(project, start_worker, queue):
    load(project, gold=60, unlabeled=5)
    # Requested while the broker was down: the run exists, its message never left.
    lost = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    ModelVersion.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    worker = start_worker()

    publish(check_retraining, queue=queue)

    version = wait_until_finished(project, worker, lost.number)
    assert version.status == ModelVersion.Status.DONE and version.active, version.error


def test_it_trains_after_an_import_brings_enough_gold_labels(project, start_worker, worker_env, tmp_path):
    from labeling.models import Project

    from .modeling_data import csv_bytes, rows

    Project.objects.filter(pk=project.pk).update(retrain_every=50)
    labelled = tmp_path / "labelled.csv"
    labelled.write_bytes(csv_bytes(rows(70, seed=4)))
    worker = start_worker()

    done = manage("import_items", "--project", project.slug, str(labelled), env=worker_env())

    assert done.returncode == 0, done.stderr
    version = wait_until_finished(project, worker)
    assert version.trigger == ModelVersion.Trigger.GOLD_COUNT
    assert version.status == ModelVersion.Status.DONE and version.active, version.error


def test_it_hands_out_again_the_prediction_chunks_of_a_stuck_run(project, start_worker, queue, settings):
    settings.LABELLOOP = {**settings.LABELLOOP, "PREDICT_CHUNK": 10}
    load(project, gold=80, unlabeled=25)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk)
    # As if the chunk tasks had been lost with a broker that crashed: promoted, but stuck predicting.
    Prediction.objects.all().delete()
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.PREDICTING, predicted_chunks=[], started_at=timezone.now() - timedelta(hours=1)
    )
    worker = start_worker()

    publish(check_retraining, queue=queue)

    version = wait_until_finished(project, worker, version.number)
    assert version.status == ModelVersion.Status.DONE and version.active
    assert sorted(version.predicted_chunks) == [0, 1, 2] and version.timings["republished"] == 1
    assert Prediction.objects.filter(model_version=version).count() == 25
