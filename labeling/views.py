"""HTML views (htmx). Each view checks access, calls one action, renders a page or a partial.

Every page works without JavaScript: forms have real actions, and a plain POST is answered with a
redirect; htmx requests get the partial they swap in."""
import re
import uuid
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from modeling import suggestions

from . import actions
from .access import get_membership, projects_for
from .forms import ProjectSettingsForm
from .models import Annotation, Assignment, Role


@require_GET
@login_required
def home(request):
    projects = projects_for(request.user).order_by("name")
    roles = dict(request.user.memberships.values_list("project_id", "role"))
    rows = [(p, roles.get(p.id, Role.ADMIN)) for p in projects]
    return render(request, "labeling/home.html", {"rows": rows})


# --- annotate ---------------------------------------------------------------------------------
#
# The annotator's loop. The page holds two cards: the item on screen and the next one, prefetched.
# A label (or skip) is posted from the card on screen; the htmx answer is the card after the one
# the browser still holds (`holding`), which refills the slot just left. A plain form post (no
# JavaScript) gets a redirect back to the page, which shows the person's oldest live lease.


def login_required_htmx(view):
    """`login_required`, except that an htmx request from an expired session is told to load the
    login page (HX-Redirect) instead of following a redirect and swapping a login form into a card."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            back_to = request.htmx.current_url_abs_path or reverse("home")
            return HttpResponseClientRedirect(f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': back_to})}")
        return redirect_to_login(request.get_full_path())

    return wrapper


@require_GET
@login_required_htmx
@never_cache  # a page from the back/forward cache would show cards already labeled
def annotate(request, slug):
    membership = get_membership(request.user, slug)
    leases = actions.claim_stage(membership)
    return render(request, "labeling/annotate.html", _page_context(membership, leases))


@require_GET
@login_required_htmx
@vary_on_headers("HX-Request")
def annotate_next(request, slug):
    """One card for a slot the browser has to refill, e.g. after a refused submit."""
    if not request.htmx:
        return redirect("annotate", slug=slug)
    membership = get_membership(request.user, slug)
    return _card_not_held(request, membership, _holding(request.GET))


@require_POST
@login_required_htmx
def annotate_submit(request, slug):
    membership = get_membership(request.user, slug)
    item_id = _int_or_zero(request.POST.get("item"))
    try:
        actions.submit_annotation(
            membership,
            item_id=item_id,
            category_ids=_chosen_categories(membership.project, request.POST),
            client_request_id=request.POST.get("request_id", "")[:64],
            duration_ms=_int_or_zero(request.POST.get("duration_ms")),
            # What the card showed, worked out again here: never taken from the browser.
            **suggestions.for_submit(membership, item_id),
        )
    except actions.QueueError as exc:
        return _queue_error(request, slug, exc)
    return _next_card_or_page(request, membership)


@require_POST
@login_required_htmx
def annotate_skip(request, slug):
    membership = get_membership(request.user, slug)
    actions.skip_item(membership, _int_or_zero(request.POST.get("item")))
    return _next_card_or_page(request, membership)


@require_POST
@login_required_htmx
def annotate_undo(request, slug):
    """Bring back the last label's item, on screen first; htmx gets the whole stage redrawn."""
    membership = get_membership(request.user, slug)
    try:
        actions.undo_last_annotation(membership)
    except actions.QueueError as exc:
        return _queue_error(request, slug, exc)
    if not request.htmx:
        messages.info(request, "Your last label was taken back; the item is on screen again.")
        return redirect("annotate", slug=slug)
    # The undone lease is now the person's oldest, so it comes first.
    leases = actions.claim_stage(membership)
    return render(request, "labeling/_stage.html", _stage_context(membership, leases, _categories(membership)))


def _chosen_categories(project, post) -> list[str]:
    """The ticked or pressed categories. In a multi-label project an empty set must be said
    explicitly ("none of these", where allowed), so a stray Enter never stores an empty label."""
    chosen = [c for c in post.getlist("category") if c.isdigit()]
    if not project.is_multi_label:
        return chosen
    none_of_these = post.get("none_of_these") == "1"
    if none_of_these and chosen:
        raise actions.QueueError("Tick categories or “none of these”, not both.")
    if not chosen and not none_of_these:
        also = " or “none of these” (key 0)" if project.accepts_empty_label() else ""
        raise actions.QueueError(f"Tick at least one category{also} (keys 1–9), then press Enter.")
    return chosen


def _page_context(membership, leases) -> dict:
    project = membership.project
    categories = _categories(membership)
    return {
        "project": project,
        "membership": membership,
        "categories": categories,
        "labeled_today": _labeled_today(membership),
        "progress": project.progress or {},
        "progress_counted_at": parse_datetime((project.progress or {}).get("counted_at") or ""),
        "guidelines_html": guidelines_html(project.guidelines),
        **_stage_context(membership, leases, categories),
    }


def _stage_context(membership, leases, categories) -> dict:
    current = leases[0] if leases else None
    following = leases[1] if len(leases) > 1 else None
    return {
        "project": membership.project,
        "categories": categories,
        "current": _card_context(membership, current, categories),
        "following": _card_context(membership, following, categories) if following else None,
    }


def _card_context(membership, lease: Assignment | None, categories) -> dict:
    return {
        "project": membership.project,
        "item": lease.item if lease else None,
        "categories": categories,
        # Generated when the card is drawn: a retried POST of this card reuses it, so the
        # server stores the label once however often the browser resends it.
        "request_id": uuid.uuid4().hex,
        "suggestion": suggestions.for_card(membership, lease, categories),
    }


def _categories(membership) -> list:
    return list(membership.project.categories.all())


def _labeled_today(membership) -> int:
    """This person's labels in this project since midnight: an index range over one person's day
    (annotation_latest), never a count over the project."""
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return Annotation.objects.filter(
        annotator=membership.user, project=membership.project, created_at__gte=midnight
    ).count()


def _holding(params) -> set[int]:
    """Item ids the browser holds besides the card being replaced (on screen, prefetched or in
    flight). Capped, so a client cannot make the server lease more than the prefetch depth."""
    ids = {int(x) for x in params.getlist("holding") if x.isdigit()}
    return set(sorted(ids)[: settings.LABELLOOP["PREFETCH_DEPTH"] - 1])


def _card_not_held(request, membership, holding: set[int]):
    """The next card the browser does not hold yet: after a submit or skip the browser shows its
    prefetched card at once, and this one becomes the new prefetch."""
    leases = actions.claim_stage(membership, depth=len(holding) + 1)
    lease = next((lease for lease in leases if lease.item_id not in holding), None)
    return render(request, "labeling/_item.html", _card_context(membership, lease, _categories(membership)))


def _next_card_or_page(request, membership):
    if request.htmx:
        return _card_not_held(request, membership, _holding(request.POST))
    return redirect("annotate", slug=membership.project.slug)


def _queue_error(request, slug, exc):
    if request.htmx:
        return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
    messages.error(request, str(exc))
    return redirect("annotate", slug=slug)


def _int_or_zero(raw) -> int:
    try:
        return max(0, int(float(raw)))
    except (TypeError, ValueError, OverflowError):
        return 0


# --- guidelines -------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def guidelines_html(text: str) -> str:
    """The small part of Markdown that guidelines use (paragraphs, `#` headings, `-` lists,
    **bold**, `code`) as HTML. Each line is escaped before any tag is added, so guidelines can
    never inject markup."""
    html, paragraph, bullets = [], [], []

    def flush():
        if paragraph:
            html.append("<p>" + "<br>".join(paragraph) + "</p>")
            paragraph.clear()
        if bullets:
            html.append("<ul>" + "".join(f"<li>{b}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in (text or "").splitlines():
        heading, bullet = _HEADING.match(line), _BULLET.match(line)
        if not line.strip():
            flush()
        elif heading:
            flush()
            html.append(f"<h3>{_inline(heading.group(2))}</h3>")
        elif bullet:
            if paragraph:
                flush()
            bullets.append(_inline(bullet.group(1)))
        else:
            if bullets:
                flush()
            paragraph.append(_inline(line.strip()))
    flush()
    return mark_safe("".join(html))  # noqa: S308 — built only from escaped text


def _inline(line: str) -> str:
    escaped = str(escape(line))
    return _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", escaped))


@require_GET
@login_required_htmx
@vary_on_headers("HX-Request")
def guidelines(request, slug):
    membership = get_membership(request.user, slug)
    template = "labeling/guidelines.html#guidelines" if request.htmx else "labeling/guidelines.html"
    context = {"project": membership.project, "membership": membership, "guidelines_html": guidelines_html(membership.project.guidelines)}
    return render(request, template, context)


# --- admin pages ------------------------------------------------------------------------------


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

