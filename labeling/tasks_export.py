"""Celery task for gold exports too big to stream in one web request (see labeling.export).

Registered with the worker by an import in labeling/tasks.py (Celery autodiscovers `tasks` only).
"""
import functools

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.db import transaction
from kombu.exceptions import OperationalError

from .export import ExportError, ExportJob, ExportSpec, create_job, run_job


class QueueUnreachable(ExportError):
    """The broker did not take the job; nothing runs."""


@shared_task(base=DjangoTask)
def run_export_job(job_id: str) -> str:
    job = run_job(job_id)
    return job.status if job else "missing"


def queue_export(spec: ExportSpec, user=None) -> ExportJob:
    """Record a job and hand it to the worker once the caller's transaction commits (at once in
    autocommit, as in a view). With the broker down the job is marked failed and
    `QueueUnreachable` says so: the export never silently runs inside the web request instead."""
    job = create_job(spec, user)
    transaction.on_commit(functools.partial(_publish, job))
    return job


def _publish(job: ExportJob) -> None:
    try:
        run_export_job.delay(job.id)
    except OperationalError:
        job.status = ExportJob.FAILED
        job.error = (
            "The background worker's queue is unreachable, so the export could not start. "
            "Try again shortly."
        )
        job.save()
        raise QueueUnreachable(job.error) from None
