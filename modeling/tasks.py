"""Celery tasks of the modeling loop: thin, take ids, call modeling.runs.

`train_model_version` trains, evaluates and promotes, then hands the batch predictions out as one
`predict_chunk_task` per chunk of unlabeled items, so every worker process shares them.
`train_model_version` is safe to deliver twice (runs.start takes a run once) and to lose a worker
in the middle of (acks_late + reject_on_worker_lost: the message goes back to the queue, and a
run left behind is picked up again by `check_retraining`). A database outage is retried with
exponential backoff; any other failure is recorded on the run by runs.run itself.

Sentence embeddings are made in the background too: `embed_pending` (after an import commits, from
labeling.tasks.follow_up_import, and on the beat schedule) hands out one `embed_chunk_task` per
chunk of items without a vector, so every worker process encodes its share and later runs and
predictions find them stored.
"""
import functools
import hashlib
import logging

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import OperationalError, connection

from labeling.models import Project
from labeling.tasks import RefreshTask

from . import embeddings, runs, vectors

log = logging.getLogger(__name__)


class TrainTask(DjangoTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Retries used up (the database stayed unreachable): mark the run failed if we can."""
        if isinstance(exc, OperationalError) and args:
            try:
                version = runs.ModelVersion.objects.get(pk=args[0])
                runs.fail(version, f"The database was unreachable through every retry ({exc}); start a new run.")
            except Exception:  # noqa: BLE001 — still unreachable: the periodic check cleans up
                log.warning("Run %s: could not record its failure", args[0])


@shared_task(
    base=TrainTask,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.LABELLOOP["TRAIN_SOFT_TIME_LIMIT"],
    time_limit=settings.LABELLOOP["TRAIN_TIME_LIMIT"],
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
)
def train_model_version(version_id: int) -> str:
    return runs.run(version_id, fan_out=True)


@shared_task(
    base=DjangoTask,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.LABELLOOP["TRAIN_SOFT_TIME_LIMIT"],
    time_limit=settings.LABELLOOP["TRAIN_TIME_LIMIT"],
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
)
def predict_chunk_task(version_id: int, index: int) -> str:
    """One chunk of a promoted run's batch predictions (see runs.predict_chunk)."""
    return runs.predict_chunk(version_id, index)


@shared_task(base=RefreshTask)
def check_retraining(project_id: int | None = None) -> list[int]:
    """Queue a run for every project (or one) with `retrain_every` new gold labels, and re-queue
    runs that were lost or whose worker died. Cheap: an indexed count per project."""
    queued = [version.pk for project in _projects(project_id) if (version := runs.retrain_if_due(project))]
    if project_id is None:
        runs.recover_stale_runs()
    return queued


@shared_task(base=RefreshTask)
def scheduled_retraining() -> list[int]:
    """The nightly run, for every project whose gold labels changed since its last run."""
    return [version.pk for project in _projects(None) if (version := runs.scheduled_retrain(project))]


def _projects(project_id: int | None):
    projects = Project.objects.all() if project_id is None else Project.objects.filter(pk=project_id)
    return projects.only("id", "slug", "retrain_every").iterator()


# --- background embeddings --------------------------------------------------------------------

# How long chunks handed out are trusted to be queued or in hand, so the next beat tick or import
# plans only items above them: the broker's visibility timeout, after which Redis hands out again
# a message whose worker died. Past it, everything still missing is planned again (lost messages).
EMBED_PLANNED_SECONDS = 3600
# A chunk (vectors.CHUNK items) takes seconds; minutes mean a machine too busy to be useful.
EMBED_CHUNK_SOFT_TIME_LIMIT = 300


@shared_task(
    base=DjangoTask,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=EMBED_CHUNK_SOFT_TIME_LIMIT,
    time_limit=EMBED_CHUNK_SOFT_TIME_LIMIT + 60,
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
)
def embed_chunk_task(project_id: int, first_id: int, last_id: int) -> dict:
    """Vectors for one chunk of a project's items (see vectors.embed_range); harmless twice."""
    return {"embedded": vectors.embed_range(project_id, first_id, last_id)}


@shared_task(base=RefreshTask)
def embed_pending(project_id: int | None = None, size: int | None = None) -> int:
    """Hand out one `embed_chunk_task` per `size` items (default vectors.CHUNK) without a vector,
    for every project (or one), when training runs use embeddings. Returns how many were sent.

    Items in chunks sent less than EMBED_PLANNED_SECONDS ago are not planned again: a beat tick
    while an import's chunks are still queued sends nothing, a second import only its new items."""
    if not _embeddings_wanted():
        return 0
    return sum(_send_chunks(project.pk, size or vectors.CHUNK) for project in _projects(project_id))


def _embeddings_wanted() -> bool:
    """What a training run decides (runs._walk): embeddings only for the embedding algorithms."""
    return embeddings.available() and runs.uses_embeddings(runs.allowed_algorithms())


def _send_chunks(project_id: int, size: int) -> int:
    marks, key = _planned_marks(), _planned_key(project_id)
    chunks = vectors.plan(project_id, size, after_id=int(marks.get(key) or 0))
    for first, last in chunks:
        embed_chunk_task.delay(project_id, first, last)
        # After each publish: if the broker fails half-way, the chunks not sent are planned again.
        marks.set(key, last, timeout=EMBED_PLANNED_SECONDS)
    return len(chunks)


def _planned_marks():
    """Where the highest id handed out is noted, seen by beat and every worker process: the
    broker's Redis; with another broker (the embedded filesystem one), Django's cache."""
    url = settings.CELERY_BROKER_URL
    return _redis_marks(url) if url.startswith(("redis://", "rediss://")) else caches["default"]


@functools.cache
def _redis_marks(url: str) -> RedisCache:
    return RedisCache(url, {"OPTIONS": {"socket_timeout": 3, "socket_connect_timeout": 2}})


def _planned_key(project_id: int) -> str:
    """Per project, and per deployment sharing the Redis (queue, database) and encoder: a mark
    says nothing about another database's ids or another encoder's vectors."""
    db = connection.settings_dict
    scope = hashlib.sha256(f"{db['HOST']}|{db['PORT']}|{db['NAME']}|{embeddings.encoder_name()}".encode())
    return f"labelloop:embed-planned:{settings.CELERY_TASK_DEFAULT_QUEUE}:{scope.hexdigest()[:16]}:{project_id}"
