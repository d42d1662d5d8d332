"""HTML views (htmx). Each view checks access, calls one action, renders a page or a partial."""
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import actions
from .access import get_membership, projects_for
from .forms import ImportForm, ProjectSettingsForm
from .importer import import_with_history
from .models import Assignment, Role


@require_GET
@login_required
def home(request):
    projects = projects_for(request.user).order_by("name")
    roles = dict(request.user.memberships.values_list("project_id", "role"))
    rows = [(p, roles.get(p.id, Role.ADMIN)) for p in projects]
    return render(request, "labeling/home.html", {"rows": rows})


@require_GET
@login_required
def dashboard(request, slug):
    membership = get_membership(request.user, slug)
    project = membership.project
    return render(
        request,
        "labeling/dashboard.html",
        {"project": project, "membership": membership, "progress": project.progress},
    )


# --- annotate ---------------------------------------------------------------------------------


def _card_context(membership, lease: Assignment | None) -> dict:
    return {
        "project": membership.project,
        "lease": lease,
        "item": lease.item if lease else None,
        "categories": list(membership.project.categories.all()),
        # Generated when the card is drawn: a retried POST of this card reuses it, so the
        # server stores the label once however often the browser resends.
        "request_id": uuid.uuid4().hex,
    }


@require_GET
@login_required
def annotate(request, slug):
    membership = get_membership(request.user, slug)
    leases = actions.claim_stage(membership)
    return render(request, "labeling/annotate.html", _stage_context(membership, leases))


def _stage_context(membership, leases):
    current = leases[0] if leases else None
    following = leases[1] if len(leases) > 1 else None
    categories = list(membership.project.categories.all())
    cards = []
    for lease in (current, following):
        context = _card_context(membership, lease)
        context["categories"] = categories
        cards.append(context)
    return {
        "project": membership.project,
        "membership": membership,
        "current": cards[0],
        "following": cards[1],
        "categories": categories,
    }


def _holding(values) -> set[int]:
    """Item ids the browser already holds (on screen or prefetched)."""
    return {int(x) for x in values if x.isdigit()}


def _card_not_held(request, membership, holding: set[int]):
    """The next card the browser does not hold yet: after a submit or skip the browser shows its
    prefetched card at once, and this one becomes the new prefetch."""
    leases = actions.claim_stage(membership, depth=len(holding) + 1)
    lease = next((lease for lease in leases if lease.item_id not in holding), None)
    return render(request, "labeling/_item.html", _card_context(membership, lease))


@require_GET
@login_required
def annotate_next(request, slug):
    """One card for an empty slot (htmx), e.g. after a failed submit."""
    membership = get_membership(request.user, slug)
    return _card_not_held(request, membership, _holding(request.GET.getlist("holding")))


def _queue_error(request, slug, exc):
    if request.htmx:
        return HttpResponse(str(exc), status=409, content_type="text/plain")
    messages.error(request, str(exc))
    return redirect("annotate", slug=slug)


@require_POST
@login_required
def annotate_submit(request, slug):
    membership = get_membership(request.user, slug)
    try:
        actions.submit_annotation(
            membership,
            item_id=int(request.POST.get("item", "0") or 0),
            category_ids=[c for c in request.POST.getlist("category") if c.isdigit()],
            client_request_id=request.POST.get("request_id", ""),
            duration_ms=_int_or_zero(request.POST.get("duration_ms")),
        )
    except actions.QueueError as exc:
        return _queue_error(request, slug, exc)
    if request.htmx:
        return _card_not_held(request, membership, _holding(request.POST.getlist("holding")))
    return redirect("annotate", slug=slug)


@require_POST
@login_required
def annotate_skip(request, slug):
    membership = get_membership(request.user, slug)
    actions.skip_item(membership, int(request.POST.get("item", "0") or 0))
    if request.htmx:
        return _card_not_held(request, membership, _holding(request.POST.getlist("holding")))
    return redirect("annotate", slug=slug)


@require_POST
@login_required
def annotate_undo(request, slug):
    membership = get_membership(request.user, slug)
    try:
        lease = actions.undo_last_annotation(membership)
    except actions.QueueError as exc:
        return _queue_error(request, slug, exc)
    if request.htmx:
        others = [other for other in actions.live_leases(membership.project, membership.user) if other.pk != lease.pk]
        return render(request, "labeling/_stage.html", _stage_context(membership, [lease, *others]))
    return redirect("annotate", slug=slug)


def _int_or_zero(raw) -> int:
    try:
        return max(0, int(float(raw)))
    except (TypeError, ValueError):
        return 0


@require_GET
@login_required
def guidelines(request, slug):
    membership = get_membership(request.user, slug)
    template = "labeling/guidelines.html#guidelines" if request.htmx else "labeling/guidelines.html"
    return render(request, template, {"project": membership.project, "membership": membership})


# --- admin pages ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def import_page(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    project = membership.project
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        job = import_with_history(project, upload, upload.name, user=request.user, size=upload.size)
        if job.error:
            messages.error(request, f"Nothing was imported from {job.filename}: {job.error}")
        else:
            messages.success(
                request,
                f"Imported {job.created:,} items from {job.filename} ({job.duplicates:,} duplicates "
                f"skipped, {job.gold_labels:,} gold labels).",
            )
        return redirect("import", slug=slug)
    jobs = project.imports.all()[:20]
    return render(request, "labeling/import.html", {"project": project, "membership": membership, "form": form, "jobs": jobs})


@require_http_methods(["GET", "POST"])
@login_required
def settings_page(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    project = membership.project
    form = ProjectSettingsForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        actions.update_project_settings(project, form, editor=request.user)
        messages.success(request, "Settings saved.")
        return redirect("settings", slug=slug)
    return render(request, "labeling/settings.html", {"project": project, "membership": membership, "form": form})

