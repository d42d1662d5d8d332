"""The project dashboard: progress, pace, throughput, label distribution, agreement, queues."""
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import dashboard
from .access import get_membership
from .tasks import recount_progress


@require_GET
@login_required
def dashboard_page(request, slug):
    membership = get_membership(request.user, slug)
    project = membership.project
    figures = dashboard.summary(project)
    if figures["stale"]:
        ask_for_recount(project)
    return render(request, "labeling/dashboard.html", {"project": project, "membership": membership, **figures})


def ask_for_recount(project) -> None:
    """Stored figures older than a minute: queue one recount (at most one a minute per project,
    however many people look), never count here."""
    if cache.add(f"dashboard:recount-queued:{project.pk}", 1, 60):
        recount_progress.delay_on_commit(project.pk)
