"""Reviewer page (htmx, keyboard first): one item of a QA queue at a time, every annotation of its
current round beside it, and approve / correct / reject. Works without JavaScript: the decision
form posts and redirects back to the same queue."""

import uuid
from collections import Counter, defaultdict
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event

from . import review
from .access import get_membership
from .actions import QueueError
from .models import Annotation, GoldLabel, Item, Review, ReviewQueue, Role
from .views import login_required_htmx


@require_GET
@login_required_htmx
@vary_on_headers("HX-Request")
def review_page(request, slug):
    """The reviewer's queue: the full page, or (htmx) just the card (after a failed decision)."""
    membership = get_membership(request.user, slug, Role.REVIEWER)
    counts = review.queue_counts(membership.project)
    queue = _chosen_queue(membership, request.GET.get("queue"), counts)
    item = review.claim_review(membership, queue)
    context = _page_context(membership, queue, item, counts)
    template = "labeling/_review_item.html" if request.htmx else "labeling/review.html"
    return render(request, template, context)


@require_POST
@login_required_htmx
def review_decide(request, slug):
    membership = get_membership(request.user, slug, Role.REVIEWER)
    queue = _queue_or_default(request.POST.get("queue"))
    try:
        decision, category_ids = _decision_from(membership.project, request.POST)
        decided = review.decide_review(
            membership,
            item_id=_int_or_zero(request.POST.get("item")),
            decision=decision,
            client_request_id=request.POST.get("request_id", "")[:64],
            category_ids=category_ids,
            note=request.POST.get("note", ""),
            duration_ms=_int_or_zero(request.POST.get("duration_ms")),
        )
    except review.ItemNotFound as exc:
        raise Http404(str(exc)) from None
    except QueueError as exc:
        if request.htmx:
            return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
        messages.error(request, str(exc))
        return redirect(_queue_url(slug, queue))
    done = _decided_message(membership.project, decided)
    if not request.htmx:
        messages.success(request, done)
        return redirect(_queue_url(slug, queue))
    counts = review.queue_counts(membership.project)
    item = review.claim_review(membership, queue)
    response = render(
        request, "labeling/_review_item.html", _page_context(membership, queue, item, counts)
    )
    return trigger_client_event(response, "review:decided", {"message": done})


# --- helpers ----------------------------------------------------------------------------------


def _chosen_queue(membership, raw, counts) -> str:
    """The queue asked for; else the one holding this reviewer's item; else the first with work."""
    if raw in review.QUEUES:
        return raw
    held = review.held_review(membership)
    if held is not None:
        return held.review_queue
    return next((q for q in review.QUEUES if counts[q]), ReviewQueue.REVIEW)


def _ticked_set(project, post) -> list[int]:
    ticked = [int(c) for c in post.getlist("correct_set") if c.isdigit()]
    none_of_these = post.get("none_of_these") == "1"
    if ticked and none_of_these:
        raise QueueError("Tick categories or “none of these”, not both.")
    if not ticked and not none_of_these:
        also = " or “none of these” (key 0)" if project.accepts_empty_label() else ""
        raise QueueError(f"Tick at least one category{also}, then press Enter to correct the label.")
    return ticked


def _queue_or_default(raw) -> str:
    return raw if raw in review.QUEUES else ReviewQueue.REVIEW


def _queue_url(slug, queue) -> str:
    return reverse("review", args=[slug]) + "?" + urlencode({"queue": queue})


def _decision_from(project, post) -> tuple[str, list[int] | None]:
    """A category key means "correct to that category"; otherwise the decision button pressed.
    Multi-label: "correct" takes the ticked set, which (like on the annotate page) is empty only
    when "none of these" is ticked explicitly."""
    if project.is_multi_label and post.get("decision") == Review.Decision.CORRECT:
        return Review.Decision.CORRECT, _ticked_set(project, post)
    correct_to = [c for c in post.getlist("correct_to") if c.isdigit()]
    if correct_to:
        return Review.Decision.CORRECT, [int(c) for c in correct_to]
    return post.get("decision", ""), None


def _int_or_zero(raw) -> int:
    try:
        return max(0, int(float(raw)))
    except (TypeError, ValueError, OverflowError):
        return 0


def _decided_message(project, decided: Review) -> str:
    names = dict(project.categories.values_list("id", "name"))
    labels = ", ".join(names.get(c, str(c)) for c in decided.categories)
    if decided.decision == Review.Decision.REJECT:
        return f"Rejected item {decided.item_id}: it goes back for fresh annotations."
    labels = labels or "none of these"
    if decided.decision == Review.Decision.APPROVE:
        return f"Approved item {decided.item_id} as {labels}."
    return f"Corrected item {decided.item_id} to {labels}."


def _page_context(membership, queue: str, item: Item | None, counts: dict) -> dict:
    project = membership.project
    categories = list(project.categories.all())
    context = {
        "project": project,
        "membership": membership,
        "queue": queue,
        "queue_label": ReviewQueue(queue).label,
        "tabs": [(q, ReviewQueue(q).label, counts[q]) for q in review.QUEUES],
        "categories": categories,
        "item": item,
        # Drawn with the card: a resent POST of this card reuses it, so it is decided once.
        "request_id": uuid.uuid4().hex,
    }
    if item is not None:
        context.update(_item_context(item, queue, {c.id: c for c in categories}))
    if project.is_multi_label and item is not None and not context["can_approve"]:
        # The single-label hint says "press a number"; here a number only ticks a box.
        context["approve_reason"] = context["approve_reason"].replace(
            "choose the label with a number key", "tick the right categories (number keys) and press Enter"
        )
    return context


def _item_context(item: Item, queue: str, by_id: dict) -> dict:
    annotations = list(
        Annotation.objects.filter(item=item, is_honeypot=False)
        .select_related("annotator", "suggested_category")
        .order_by("round", "created_at", "id")
    )
    current = [
        _annotation_row(a, by_id) for a in annotations if a.round == item.round and not a.rejected
    ]
    # Only a suspected error already has a gold label: the other queues hold items before gold.
    gold = None
    if queue == ReviewQueue.SUSPECTED:
        gold = GoldLabel.objects.filter(item=item).select_related("decided_by").first()
    can_approve, reason = _approval(queue, current, gold, by_id)
    return {
        "annotations": current,
        "history": _history(item, annotations, by_id),
        "gold": gold,
        "gold_labels": _names(gold.categories, by_id) if gold else [],
        "can_approve": can_approve,
        "approve_reason": reason,
    }


def _names(category_ids, by_id) -> list[str]:
    if not category_ids:
        return ["none of these"]  # an empty set is an answer only where the project allows it
    return [by_id[c].name if c in by_id else f"#{c}" for c in category_ids]


def _annotation_row(annotation: Annotation, by_id: dict) -> dict:
    return {
        "annotator": annotation.annotator.get_username(),
        "labels": _names(annotation.categories, by_id),
        "key": tuple(sorted(annotation.categories)),
        "suggestion_shown": annotation.suggestion_shown,
        "suggested": annotation.suggested_category.name if annotation.suggested_category else "",
        "probabilities": _top_probabilities(annotation.suggestion, by_id),
        "seconds": round(annotation.duration_ms / 1000, 1),
        "guidelines_version": annotation.guidelines_version,
        "created_at": annotation.created_at,
    }


def _top_probabilities(suggestion, by_id, top: int = 3) -> list[tuple[str, int]]:
    """The suggestion's probabilities as shown to the annotator, largest first (percent)."""
    if not isinstance(suggestion, dict):
        return []
    rows = []
    for key, probability in suggestion.items():
        try:
            category, value = by_id.get(int(key)), float(probability)
        except (TypeError, ValueError):
            continue
        if category is not None:
            rows.append((category.name, round(value * 100)))
    return sorted(rows, key=lambda row: -row[1])[:top]


def _approval(queue: str, current: list[dict], gold, by_id) -> tuple[bool, str]:
    """Whether `a` may approve, and if not, why (the page shows the reason)."""
    if queue == ReviewQueue.SUSPECTED:
        if gold is None:
            return False, "There is no gold label to keep: choose the label with a number key."
        return True, f"Approving keeps the gold label {', '.join(_names(gold.categories, by_id))}."
    if not current:
        return False, "No annotations in this round: choose the label with a number key."
    votes = Counter(row["key"] for row in current)
    if len(votes) == 1:
        return True, f"All {len(current)} annotations agree on {', '.join(current[0]['labels'])}."
    spread = "; ".join(f"{', '.join(_names(key, by_id))} ×{n}" for key, n in votes.most_common())
    return (
        False,
        f"The annotations disagree ({spread}): choose the label with a number key, or reject.",
    )


def _history(item: Item, annotations: list[Annotation], by_id: dict) -> list[dict]:
    """Earlier rounds a reviewer rejected, newest first, each with the rejecting review."""
    earlier = defaultdict(list)
    for annotation in annotations:
        if annotation.round < item.round or annotation.rejected:
            earlier[annotation.round].append(_annotation_row(annotation, by_id))
    if not earlier:
        return []
    rejections = {
        r.round: r
        for r in Review.objects.filter(item=item, decision=Review.Decision.REJECT).select_related(
            "reviewer"
        )
    }
    return [
        {"round": number + 1, "annotations": rows, "review": rejections.get(number)}
        for number, rows in sorted(earlier.items(), reverse=True)
    ]
