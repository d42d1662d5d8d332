"""The import page (admins): upload a file, watch its progress, see past imports.

The import runs inside the upload's request (all or nothing); its progress bar polls
`import_progress` with htmx meanwhile (see labeling/import_progress.py). Without JavaScript the
form still posts and the page still answers with the result."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from .access import get_membership
from .forms import ImportForm
from .import_progress import (
    CountingReader,
    ImportProgress,
    ProgressUploadHandler,
    Reporter,
    new_token,
    sweep,
)
from .importer import import_with_history
from .models import Role


@require_http_methods(["GET", "POST"])
@login_required
@csrf_exempt  # only so the progress handler goes in before the body is read; checked just below
def import_page(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)  # before a byte of the body is read
    reporter = None
    if request.method == "POST":
        progress = ImportProgress.load(request.GET.get("progress", "")) or _new_progress(request, membership)
        if progress is not None and progress.project_id == membership.project_id and progress.user_id == request.user.pk:
            reporter = Reporter(progress)
            request.upload_handlers.insert(0, ProgressUploadHandler(reporter, request))
    return csrf_protect(_import_page)(request, membership, reporter)


def _new_progress(request, membership) -> ImportProgress | None:
    token = request.GET.get("progress", "")
    progress = ImportProgress(token=token, project_id=membership.project_id, user_id=request.user.pk)
    try:
        progress.save()
    except ValueError:  # no token, or not one of ours: an import without a progress bar
        return None
    return progress


def _import_page(request, membership, reporter):
    project = membership.project
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        stream = CountingReader(upload, upload.size, reporter) if reporter else upload
        try:
            job = import_with_history(project, stream, upload.name, user=request.user, size=upload.size)
        except Exception:
            if reporter:
                reporter.update("failed", message="The import failed unexpectedly; nothing was imported.", force=True)
            raise
        if job.error:
            messages.error(request, f"Nothing was imported from {job.filename}: {job.error}")
        else:
            messages.success(
                request,
                f"Imported {job.created:,} items from {job.filename} ({job.duplicates:,} duplicates "
                f"skipped, {job.gold_labels:,} gold labels).",
            )
        if reporter:
            reporter.update("failed" if job.error else "done", message=job.error, force=True)
        return redirect("import", slug=project.slug)
    if reporter:  # no file, or a refused form: the bar must not keep waiting
        reporter.update("failed", message="No file was received; choose one and import again.", force=True)
    sweep()
    jobs = list(project.imports.all()[:20])
    context = {
        "project": project, "membership": membership, "form": form, "jobs": jobs,
        "last_failed": jobs[0] if jobs and jobs[0].status == jobs[0].Status.FAILED else None,
        "progress_token": new_token(), "progress": None,
    }
    return render(request, "labeling/import.html", context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def import_progress(request, slug, token):
    """The progress panel alone, polled by htmx every second until the import ends."""
    membership = get_membership(request.user, slug, Role.ADMIN)
    if not request.htmx:
        return redirect("import", slug=slug)
    progress = ImportProgress.load(token)
    if progress is not None and (progress.project_id != membership.project_id or progress.user_id != request.user.pk):
        progress = None  # someone else's import: show nothing of it
    # No file yet: the upload has not reached the server (or this token is unknown).
    context = {"project": membership.project, "progress": progress, "progress_token": token, "polling": True}
    return render(request, "labeling/import.html#progress", context)
