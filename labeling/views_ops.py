"""Operations page: background job history (imports, training runs, exports) with their errors,
and online inference latency and errors per model version. `/ops/` covers every project
(superusers); `/p/<slug>/ops/` one project (its admins)."""
from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from modeling.models import ModelVersion, PredictLog

from . import dashboard
from .access import get_membership
from .export import ExportJob, recent_jobs
from .models import ImportJob, Project, Role

HISTORY = 20


@require_GET
@login_required
def ops_page(request, slug=None):
    if slug is None:
        if not request.user.is_superuser:
            raise PermissionDenied("The operations page for all projects is for superusers.")
        membership, projects = None, Project.objects.all()
    else:
        membership = get_membership(request.user, slug, Role.ADMIN)
        projects = Project.objects.filter(pk=membership.project_id)
    now = timezone.now()
    logs = PredictLog.objects.filter(project__in=projects)
    context = {
        "project": membership.project if membership else None,
        "membership": membership,
        "imports": ImportJob.objects.filter(project__in=projects).select_related("project")[:HISTORY],
        "runs": ModelVersion.objects.filter(project__in=projects).select_related("project").order_by("-created_at")[:HISTORY],
        "exports": recent_jobs(membership.project, HISTORY) if membership else _all_export_jobs(),
        "inference": [
            ("Last hour", dashboard.inference_stats(logs, now - timedelta(hours=1))),
            ("Last 24 hours", dashboard.inference_stats(logs, now - timedelta(days=1))),
        ],
    }
    return render(request, "labeling/ops.html", context)


def _all_export_jobs() -> list[ExportJob]:
    """The newest export jobs of every project (their state files, newest first)."""
    paths = sorted(ExportJob.folder().glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    jobs = (ExportJob.load(path.stem) for path in paths[: HISTORY * 2])
    return [job for job in jobs if job is not None][:HISTORY]
