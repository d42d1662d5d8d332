"""Gold export, for admins: the export page (HTML) and the export endpoints of the API.

An export up to EXPORT_ASYNC_ROWS rows streams straight back (StreamingHttpResponse, a chunk of
rows at a time); a bigger one runs as a Celery job that writes a file, and the page follows its
progress (htmx polling) until the download link appears.
"""
import tempfile

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from .access import get_membership
from .api import BAD_INPUT, NO_SUCH_PROJECT, NOT_SIGNED_IN, ROLE_TOO_LOW, ErrorSerializer
from .export import (
    CONTENT_TYPES,
    FORMATS,
    SPLITS,
    ExportError,
    ExportJob,
    ExportSpec,
    byte_chunks,
    count_gold,
    recent_jobs,
    write_export,
)
from .models import Role
from .tasks_export import QueueUnreachable, queue_export


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="csv")
    split = forms.ChoiceField(
        choices=[("all", "all gold items"), ("train", "train"), ("holdout", "holdout")], initial="all"
    )
    labels_only = forms.BooleanField(
        required=False, label="Labels only (id, title, description, tag: the shape training scripts read)"
    )

    def spec(self, project) -> ExportSpec:
        data = self.cleaned_data
        return ExportSpec(project, data["format"], data["split"], data["labels_only"])


def _threshold() -> int:
    return settings.LABELLOOP["EXPORT_ASYNC_ROWS"]


def download_now(spec: ExportSpec):
    """The export as a response: streamed (CSV, JSON Lines) or, for Parquet, written to a
    temporary file first (its footer comes last, so it cannot stream)."""
    filename = spec.filename()
    if spec.format == "parquet":
        scratch = tempfile.TemporaryFile()  # noqa: SIM115  FileResponse closes it (and so deletes it)
        write_export(spec, scratch)
        scratch.seek(0)
        return FileResponse(
            scratch, as_attachment=True, filename=filename, content_type=CONTENT_TYPES["parquet"]
        )
    response = StreamingHttpResponse(byte_chunks(spec), content_type=CONTENT_TYPES[spec.format])
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _job_download(job: ExportJob):
    if job.status != ExportJob.DONE or not job.data_path.is_file():
        raise Http404("This export is not ready (or has been cleaned up); start it again.")
    return FileResponse(
        job.data_path.open("rb"),  # FileResponse closes it when sent
        as_attachment=True,
        filename=job.download_name,
        content_type=CONTENT_TYPES[job.format],
    )


def _project_job(project, job_id: str) -> ExportJob:
    job = ExportJob.load(job_id)
    if job is None or job.project_id != project.pk:
        raise Http404("No such export.")
    return job


# --- HTML -------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def export_page(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    project = membership.project
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            spec = form.spec(project)
            if count_gold(project, spec.split) <= _threshold():
                return download_now(spec)
            job = queue_export(spec, request.user)
        except ExportError as exc:
            messages.error(request, str(exc))
            return redirect("export", slug=slug)
        return redirect("export_job", slug=slug, job_id=job.id)
    return render(request, "labeling/export.html", _page_context(membership, form))


def _page_context(membership, form, job=None) -> dict:
    project = membership.project
    return {
        "project": project,
        "membership": membership,
        "form": form,
        "counts": {split: count_gold(project, split) for split in SPLITS},
        "threshold": _threshold(),
        "jobs": recent_jobs(project),
        "job": job,
    }


@require_GET
@login_required
def export_job(request, slug, job_id):
    """A job's progress: the whole page, or (htmx polling) just its progress panel."""
    membership = get_membership(request.user, slug, Role.ADMIN)
    job = _project_job(membership.project, job_id)
    if request.htmx:
        return render(request, "labeling/export.html#job", {"project": membership.project, "job": job})
    return render(request, "labeling/export.html", _page_context(membership, ExportForm(), job))


@require_GET
@login_required
def export_job_download(request, slug, job_id):
    membership = get_membership(request.user, slug, Role.ADMIN)
    return _job_download(_project_job(membership.project, job_id))


# --- API --------------------------------------------------------------------------------------


class _FileFormatNegotiation(DefaultContentNegotiation):
    """Here `?format=` names the export's file format, not one of DRF's renderers."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _ExportQuery(serializers.Serializer):
    format = serializers.ChoiceField(choices=FORMATS, default="csv")
    split = serializers.ChoiceField(choices=SPLITS, default="all")
    labels_only = serializers.BooleanField(default=False)

    def spec(self, project) -> ExportSpec:
        data = self.validated_data
        return ExportSpec(project, data["format"], data["split"], data["labels_only"])


_EXPORT_PARAMETERS = [
    OpenApiParameter("format", str, enum=list(FORMATS), default="csv", description="File format."),
    OpenApiParameter("split", str, enum=list(SPLITS), default="all", description="Which gold items."),
    OpenApiParameter(
        "labels_only", bool, default=False,
        description="Only id, title, description, tag (what training scripts and the importer read).",
    ),
]


class ExportJobSerializer(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.ChoiceField(choices=["queued", "running", "done", "failed"])
    format = serializers.ChoiceField(choices=FORMATS)
    split = serializers.ChoiceField(choices=SPLITS)
    labels_only = serializers.BooleanField()
    rows = serializers.IntegerField(help_text="Rows written so far.")
    total = serializers.IntegerField(help_text="Rows the export will have.")
    percent = serializers.IntegerField()
    error = serializers.CharField()
    created_at = serializers.CharField()
    finished_at = serializers.CharField()
    download_url = serializers.CharField(allow_null=True, help_text="Set once the job is done.")


def _job_data(request, slug: str, job: ExportJob) -> dict:
    data = {name: getattr(job, name) for name in ExportJobSerializer._declared_fields if name != "download_url"}
    data["download_url"] = (
        request.build_absolute_uri(reverse("api-export-job-download", args=[slug, job.id]))
        if job.status == ExportJob.DONE else None
    )
    return data


_ERROR = ErrorSerializer
# Every export endpoint is for a project's admins.
_ACCESS = {401: NOT_SIGNED_IN, 403: ROLE_TOO_LOW, 404: NO_SUCH_PROJECT}


class ExportDownload(APIView):
    content_negotiation_class = _FileFormatNegotiation

    @extend_schema(
        parameters=_EXPORT_PARAMETERS,
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
            400: BAD_INPUT,
            409: OpenApiResponse(_ERROR, description="Too big to stream: POST to the exports endpoint instead."),
            **_ACCESS,
        },
        description=(
            "Download the gold dataset, one row per gold item. Exports of up to EXPORT_ASYNC_ROWS rows "
            "(50,000 by default) stream straight back; bigger ones answer 409: run them as a job with "
            "POST /api/projects/{slug}/exports/. Admins only."
        ),
    )
    def get(self, request, slug):
        project = get_membership(request.user, slug, Role.ADMIN).project
        query = _ExportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            spec = query.spec(project)
        except ExportError as exc:
            return Response({"detail": str(exc)}, status=400)
        rows = count_gold(project, spec.split)
        if rows > _threshold():
            return Response(
                {"detail": f"This export has {rows:,} rows, more than the {_threshold():,} a direct download "
                           f"serves. POST the same parameters to /api/projects/{slug}/exports/ to run it as a "
                           "job, then download it when its status is done."},
                status=status.HTTP_409_CONFLICT,
            )
        return download_now(spec)


class ExportJobs(APIView):
    @extend_schema(
        request=_ExportQuery,
        responses={
            202: ExportJobSerializer, 400: BAD_INPUT,
            503: OpenApiResponse(_ERROR, description="The job queue is unreachable; nothing was started."),
            **_ACCESS,
        },
        description=(
            "Start an export job of any size (JSON or form body: format, split, labels_only). Poll the "
            "job until its status is done, then fetch its download_url. Admins only."
        ),
    )
    def post(self, request, slug):
        project = get_membership(request.user, slug, Role.ADMIN).project
        query = _ExportQuery(data=request.data)
        query.is_valid(raise_exception=True)
        try:
            job = queue_export(query.spec(project), request.user)
        except QueueUnreachable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        except ExportError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(_job_data(request, slug, job), status=status.HTTP_202_ACCEPTED)


class ExportJobDetail(APIView):
    @extend_schema(
        responses={
            200: ExportJobSerializer,
            **_ACCESS,
            404: OpenApiResponse(_ERROR, description="No such project or export."),
        }
    )
    def get(self, request, slug, job_id):
        project = get_membership(request.user, slug, Role.ADMIN).project
        return Response(_job_data(request, slug, _project_job(project, job_id)))


class ExportJobDownload(APIView):
    content_negotiation_class = _FileFormatNegotiation

    @extend_schema(
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
            **_ACCESS,
            404: OpenApiResponse(_ERROR, description="No such project or export, or the export is not done."),
        },
    )
    def get(self, request, slug, job_id):
        project = get_membership(request.user, slug, Role.ADMIN).project
        return _job_download(_project_job(project, job_id))
