"""Celery tasks: thin, take ids, call actions. Queue them with `delay_on_commit`."""
import functools
import logging
from datetime import timedelta

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from kombu.exceptions import OperationalError

from . import actions
from .models import Project
from .tasks_export import run_export_job  # noqa: F401  (registers it: Celery autodiscovers `tasks` only)

log = logging.getLogger(__name__)


class RefreshTask(DjangoTask):
    """A task whose work is done again later anyway (a recount, a sweep): queueing it never fails
    or holds up the caller. With the broker down the message is dropped and logged; the broker's
    connect and socket timeouts (settings) bound how long a publish can wait."""

    def delay_on_commit(self, *args, **kwargs) -> None:
        transaction.on_commit(functools.partial(self._publish_or_log, args, kwargs))

    def _publish_or_log(self, args, kwargs) -> None:
        try:
            self.apply_async(args, kwargs)
        except OperationalError as exc:
            log.warning(
                "Could not queue %s%r, the broker is unreachable (%s); it runs again later.", self.name, args, exc
            )


@shared_task(base=RefreshTask)
def recount_progress(project_id: int) -> dict:
    project = Project.objects.filter(pk=project_id).first()
    return actions.recount_progress(project) if project else {}


@shared_task(base=RefreshTask)
def follow_up_import(project_id: int, new_items: bool, new_gold: bool) -> dict:
    """What an import leaves to the workers: the dashboard's recount, the new items' sentence
    embeddings handed out as chunk tasks, and, when it brought gold labels, the check that may
    start a training run. Each is also done by its beat task, so a lost message heals."""
    from modeling import tasks as modeling  # modeling builds on labeling, not the other way round

    done = {"progress": recount_progress(project_id)}
    if new_items:
        done["embedding_chunks"] = modeling.embed_pending(project_id)
    if new_gold:
        done["runs_queued"] = modeling.check_retraining(project_id)
    return done


@shared_task(base=RefreshTask)
def recount_stale_progress() -> int:
    """On the beat schedule: queue a recount for every project whose figures are older than
    RECOUNT_EVERY, so the dashboard's aggregates heal even when nobody opens it (a lost recount
    message, a write path that forgot to ask). Returns how many were queued."""
    stale = [pk for pk, progress in Project.objects.values_list("pk", "progress") if _is_stale(progress)]
    for pk in stale:
        recount_progress.delay_on_commit(pk)
    return len(stale)


RECOUNT_EVERY = timedelta(minutes=10)


def _is_stale(progress: dict) -> bool:
    counted_at = parse_datetime((progress or {}).get("counted_at") or "")
    return counted_at is None or timezone.now() - counted_at >= RECOUNT_EVERY


@shared_task(base=RefreshTask)
def release_expired_leases() -> int:
    return actions.release_expired_leases()
