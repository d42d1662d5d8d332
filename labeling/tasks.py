"""Celery tasks: thin, take ids, call actions."""
from celery import shared_task

from . import actions
from .models import Project


@shared_task
def recount_progress(project_id: int) -> dict:
    project = Project.objects.filter(pk=project_id).first()
    return actions.recount_progress(project) if project else {}


@shared_task
def release_expired_leases() -> int:
    return actions.release_expired_leases()
