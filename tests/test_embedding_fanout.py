"""Sentence embeddings made in the background: a project's items without a vector cut into chunks
of consecutive ids (vectors.plan), each chunk encoded and stored once however often it is done
(vectors.embed_range), the chunks handed out as Celery tasks after an import and on the beat
schedule (tasks.embed_pending), and a real worker pair sharing them on PostgreSQL.

The encoder is the real one, as in test_embeddings_speed.py and test_runs.py (a few seconds to
load, once per process); `encoded` counts the texts it is given."""
import re
import time

import numpy as np
import pytest
from django.core.cache import cache

from labeling import actions
from labeling.models import Item
from labeling.tasks import follow_up_import
from modeling import embeddings, runs, serving, tasks, training, vectors
from modeling.models import Embedding, ModelVersion

from . import services
from .conftest import require
from .modeling_data import load

# Fixtures: a private queue and real workers on it (model_dir comes from conftest.py).
from .test_training_worker import publish, queue, start_worker, worker_env  # noqa: F401

WAIT_SECONDS = 120


@pytest.fixture(autouse=True)
def _no_planned_marks():
    # Without a Redis broker the marks live in Django's cache; ids repeat between tests.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def encoded(monkeypatch):
    """The texts the encoder was given, in order (the real encoder still encodes them)."""
    require(embeddings.available(), "the [embeddings] extra")
    texts: list[str] = []
    real = embeddings._encode_batches

    def counting(batch):
        texts.extend(batch)
        return real(batch)

    monkeypatch.setattr(embeddings, "_encode_batches", counting)
    return texts


@pytest.fixture
def sent(monkeypatch):
    """The chunk tasks embed_pending hands out, as (project id, first id, last id), not published."""
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.embed_chunk_task, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def with_embeddings(settings):
    settings.LABELLOOP = {**settings.LABELLOOP, "TRAIN_ALGORITHMS": ["tfidf_logreg", "embeddings_logreg"]}


def ids_of(project) -> list[int]:
    return list(Item.objects.filter(project=project).order_by("id").values_list("id", flat=True))


# --- planning ---------------------------------------------------------------------------------


def test_it_cuts_ids_into_runs_of_consecutive_ones():
    assert vectors.id_ranges(iter([3, 4, 9, 12, 13, 20, 21]), 3) == [[3, 9], [12, 20], [21, 21]]
    assert vectors.id_ranges([5, 6], 10) == [[5, 6]]
    assert vectors.id_ranges([], 10) == []


@pytest.mark.django_db
def test_it_plans_only_the_projects_items_without_a_current_vector(project):
    load(project, gold=6, unlabeled=6)
    other = actions.create_project("Other", "other")
    load(other, gold=0, unlabeled=4, seed=3)
    ids = ids_of(project)
    vector = vectors.to_bytes(np.ones(embeddings.DIMENSIONS, dtype=np.float32))
    Embedding.objects.create(item_id=ids[1], project=project, encoder=embeddings.encoder_name(), vector=vector)
    # Made by another encoder: to be replaced, so still missing.
    Embedding.objects.create(item_id=ids[2], project=project, encoder="some-older-encoder", vector=vector)

    missing = [i for i in ids if i != ids[1]]
    assert vectors.plan(project.pk, size=4) == [[missing[0], missing[3]], [missing[4], missing[7]], [missing[8], missing[10]]]
    assert vectors.plan(project.pk, size=100, after_id=ids[8]) == [[ids[9], ids[11]]]
    assert vectors.plan(project.pk, size=100, after_id=ids[-1]) == []


# --- one chunk --------------------------------------------------------------------------------


@pytest.mark.embeddings
@pytest.mark.django_db
def test_it_embeds_a_chunk_once_however_often_it_is_done(project, encoded):
    load(project, gold=5, unlabeled=5)
    other = actions.create_project("Other", "other")
    load(other, gold=0, unlabeled=3, seed=3)
    ids = ids_of(project)

    assert vectors.embed_range(project.pk, ids[2], ids[6]) == 5
    assert sorted(Embedding.objects.values_list("item_id", flat=True)) == ids[2:7]
    assert len(encoded) == 5

    # Again (a redelivered task, a second worker on it): nothing to encode, nothing changes.
    stored = dict(Embedding.objects.values_list("item_id", "created_at"))
    assert vectors.embed_range(project.pk, ids[2], ids[6]) == 0
    assert len(encoded) == 5 and dict(Embedding.objects.values_list("item_id", "created_at")) == stored

    # A range reaching into another project's ids leaves those items alone.
    assert vectors.embed_range(project.pk, ids[0], ids_of(other)[-1]) == 5
    assert Embedding.objects.filter(project=project).count() == 10 and not Embedding.objects.exclude(project=project)
    # Each item's text as a training run or a prediction encodes it.
    assert sorted(encoded) == sorted(training.item_text(i.title, i.text) for i in project.items.all())


@pytest.mark.embeddings
@pytest.mark.django_db
def test_a_training_run_reuses_the_vectors_made_in_the_background(project, encoded, settings, tmp_path):
    settings.LABELLOOP = {**settings.LABELLOOP, "MODEL_DIR": str(tmp_path / "models")}
    serving.forget_all()
    load(project, gold=60, unlabeled=10)
    for first, last in vectors.plan(project.pk, size=25):
        vectors.embed_range(project.pk, first, last)
    assert len(encoded) == 70
    encoded.clear()

    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk, algorithms=["embeddings_logreg"])

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.DONE and version.algorithm == "embeddings_logreg", version.error
    assert encoded == []  # every gold and unlabeled item's vector was read back
    serving.forget_all()


# --- handing the chunks out -------------------------------------------------------------------


@pytest.mark.django_db
def test_it_hands_out_one_task_per_chunk_and_not_again_while_they_are_queued(project, sent, with_embeddings):
    load(project, gold=0, unlabeled=7)
    ids = ids_of(project)

    assert tasks.embed_pending(project.pk, size=3) == 3
    assert sent == [(project.pk, ids[0], ids[2]), (project.pk, ids[3], ids[5]), (project.pk, ids[6], ids[6])]

    # The next beat tick, the chunks still queued: nothing is sent twice.
    assert tasks.embed_pending(size=3) == 0
    # A second import: only its own items.
    load(project, gold=0, unlabeled=2, seed=9)
    assert tasks.embed_pending(project.pk, size=3) == 1
    assert sent[-1] == (project.pk, ids[-1] + 1, ids_of(project)[-1])

    # Past EMBED_PLANNED_SECONDS (a lost message, a broker restart), what is still missing goes out again.
    cache.clear()
    assert tasks.embed_pending(size=3) == 3 and len(sent) == 7


@pytest.mark.django_db
def test_it_hands_out_nothing_when_no_algorithm_uses_embeddings(project, sent, settings, monkeypatch):
    load(project, gold=0, unlabeled=3)
    settings.LABELLOOP = {**settings.LABELLOOP, "TRAIN_ALGORITHMS": ["majority", "tfidf_logreg"]}
    assert tasks.embed_pending() == 0

    settings.LABELLOOP = {**settings.LABELLOOP, "TRAIN_ALGORITHMS": ["embeddings_logreg"]}
    monkeypatch.setattr(embeddings, "available", lambda: False)
    assert tasks.embed_pending() == 0 and sent == []


@pytest.mark.django_db
def test_an_import_hands_out_its_new_items_embeddings_from_its_one_follow_up_message(
    project, django_capture_on_commit_callbacks, sent, with_embeddings
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        load(project, gold=0, unlabeled=3)
    # The import's only message, published once it commits.
    assert [(c.func.__self__.name, c.args) for c in queued] == [
        ("labeling.tasks.follow_up_import", ((project.pk,), {"new_items": True, "new_gold": False}))
    ]
    ids = ids_of(project)
    done = follow_up_import(project.pk, new_items=True, new_gold=False)  # what the worker runs
    assert sent == [(project.pk, ids[0], ids[2])] and done["embedding_chunks"] == 1
    assert done["progress"]["items"] == 3  # and the dashboard's recount

    with django_capture_on_commit_callbacks(execute=False) as queued:
        load(project, gold=0, unlabeled=3)  # the same rows: duplicates, nothing new to embed
    assert [c.args for c in queued] == [((project.pk,), {"new_items": False, "new_gold": False})]
    assert "embedding_chunks" not in follow_up_import(project.pk, new_items=False, new_gold=False)
    assert len(sent) == 1


def test_the_beat_schedule_catches_up_on_missing_embeddings(settings):
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["embed-pending"]
    assert entry["task"] == "modeling.tasks.embed_pending" and entry["task"] in app.tasks
    # A tick never waits for marks to expire longer than one period past them.
    assert entry["schedule"] <= tasks.EMBED_PLANNED_SECONDS
    assert tasks.embed_chunk_task.acks_late and tasks.embed_chunk_task.reject_on_worker_lost


# --- real workers -----------------------------------------------------------------------------


def chunk_results(log: str) -> list[int]:
    """What each embed_chunk_task a worker finished returned: how many items it encoded."""
    return [int(n) for n in re.findall(r"embed_chunk_task\[[^\]]+\] succeeded in [\d.]+s: \{'embedded': (\d+)\}", log)]


def logs_of(workers) -> str:
    return "".join(w.log_path.read_text() for w in workers)


def wait_until(condition, workers, what: str) -> float:
    """Seconds until `condition()` holds; fails if a worker dies or after WAIT_SECONDS."""
    began = time.monotonic()
    while not condition():
        for worker in workers:
            if worker.poll() is not None:
                pytest.fail(f"a worker exited with {worker.returncode}:\n{worker.log_path.read_text()}")
        if time.monotonic() - began > WAIT_SECONDS:
            pytest.fail(f"{what} after {WAIT_SECONDS}s:\n{logs_of(workers)}")
        time.sleep(0.2)
    return time.monotonic() - began


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.embeddings
@pytest.mark.django_db(transaction=True)
def test_real_workers_share_the_chunks_and_embed_every_item_once(project, start_worker, queue):  # noqa: F811 (fixtures)
    require(services.postgres_reachable(), "PostgreSQL")
    require(embeddings.available(), "the [embeddings] extra")
    load(project, gold=20, unlabeled=40)
    items = Item.objects.filter(project=project).count()
    # The Procfile's worker is one process per core; here two single-process workers, so each
    # one's log says which chunks it did. TRAIN_ALGORITHMS empty: every algorithm, embeddings too.
    workers = [start_worker(TRAIN_ALGORITHMS=""), start_worker(TRAIN_ALGORITHMS="")]
    wait_until(lambda: all("ready." in w.log_path.read_text() for w in workers), workers, "workers not ready")

    publish(tasks.embed_pending, project.pk, 10, queue=queue)
    seconds = wait_until(lambda: not vectors.missing(project.pk).exists(), workers, "items without vectors")

    rows = Embedding.objects.filter(project=project)
    assert rows.count() == items == 60
    assert set(rows.values_list("encoder", flat=True)) == {embeddings.encoder_name()}
    # The last task's result line follows its commit.
    wait_until(lambda: len(chunk_results(logs_of(workers))) >= 6, workers, "chunks not logged")
    done = [chunk_results(w.log_path.read_text()) for w in workers]
    print(f"6 chunks over 2 workers: {done}, all stored {seconds:.1f}s after sending (encoder loads included)")
    assert sum(len(d) for d in done) == 6 and all(done), done  # both workers took chunks
    assert sum(sum(d) for d in done) == 60  # each item encoded by exactly one chunk

    # The next beat tick finds nothing to send; a redelivered chunk finds nothing to do.
    first, last = vectors.id_ranges(Item.objects.filter(project=project).order_by("id").values_list("id", flat=True), 10)[0]
    publish(tasks.embed_pending, queue=queue)
    publish(tasks.embed_chunk_task, project.pk, first, last, queue=queue)
    dispatched = re.compile(r"embed_pending\[[^\]]+\] succeeded in [\d.]+s: (\d+)")
    wait_until(lambda: len(dispatched.findall(logs_of(workers))) == 2 and len(chunk_results(logs_of(workers))) == 7,
               workers, "the second dispatch or the redelivered chunk not done")
    logs = logs_of(workers)
    assert sorted(dispatched.findall(logs)) == ["0", "6"], logs
    results = chunk_results(logs)
    assert len(results) == 7 and sum(results) == 60  # the redelivered chunk encoded nothing
    assert rows.count() == 60


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.embeddings
@pytest.mark.django_db(transaction=True)
def test_an_import_in_another_process_ends_with_every_item_embedded(project, start_worker, worker_env, tmp_path):  # noqa: F811 (fixtures)
    from .modeling_data import csv_bytes, rows
    from .test_celery_worker import manage

    require(services.postgres_reachable(), "PostgreSQL")
    require(embeddings.available(), "the [embeddings] extra")
    items_file = tmp_path / "items.csv"
    items_file.write_bytes(csv_bytes(rows(30, seed=5, labeled=False)))
    worker = start_worker(TRAIN_ALGORITHMS="")

    done = manage("import_items", "--project", project.slug, str(items_file), env=worker_env(TRAIN_ALGORITHMS=""))

    assert done.returncode == 0, done.stderr
    wait_until(lambda: not vectors.missing(project.pk).exists(), [worker], "items without vectors")
    assert Embedding.objects.filter(project=project).count() == Item.objects.filter(project=project).count() == 30
