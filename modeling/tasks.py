"""Celery tasks of the modeling loop: thin, take ids, call modeling.runs.

`train_model_version` trains, evaluates and promotes, then hands the batch predictions out as one
`predict_chunk_task` per chunk of unlabeled items, so every worker process shares them.
`train_model_version` is safe to deliver twice (runs.start takes a run once) and to lose a worker
in the middle of (acks_late + reject_on_worker_lost: the message goes back to the queue, and a
run left behind is picked up again by `check_retraining`). A database outage is retried with
exponential backoff; any other failure is recorded on the run by runs.run itself.
"""
import logging

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.conf import settings
from django.db import OperationalError

from labeling.models import Project
from labeling.tasks import RefreshTask

from . import runs

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
