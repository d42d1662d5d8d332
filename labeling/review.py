"""Review actions: claim an item from a QA queue, decide it (approve / correct / reject), and the
gold holdout split. Every write is one durable transaction, like `labeling.actions`.

Guarantees: two reviewers never hold the same item (row lock with SKIP LOCKED on PostgreSQL,
IMMEDIATE transactions on SQLite, and the lease is checked again when the decision arrives);
a retried decision with the same request id records nothing new.
"""
from collections import defaultdict
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from config import metrics

from . import multilabel_splits
from .actions import QueueError, _pull_back_cursors, _validated_categories, make_gold
from .models import (
    Annotation,
    GoldLabel,
    Item,
    Membership,
    Project,
    Review,
    ReviewQueue,
    Split,
    near_dup_key,
)

QUEUES = [ReviewQueue.REVIEW, ReviewQueue.DISAGREEMENT, ReviewQueue.SUSPECTED]


class ReviewError(QueueError):
    pass


class ItemNotFound(ReviewError):
    """The item is not in this project (callers answer 404, never reveal other projects' items)."""


# --- claiming ---------------------------------------------------------------------------------


def held_review(membership: Membership, queue: str | None = None) -> Item | None:
    """The item this reviewer already holds (a reload must not lease a second one)."""
    held = Item.objects.filter(
        project=membership.project, review_leased_to=membership.user, review_lease_expires__gt=timezone.now()
    ).exclude(review_queue=ReviewQueue.NONE)
    if queue:
        held = held.filter(review_queue=queue)
    return held.first()


def claim_review(membership: Membership, queue: str, now=None) -> Item | None:
    """Lease the next item of `queue` to this reviewer, or None when the queue is empty."""
    if queue not in QUEUES:
        raise ReviewError(f"Unknown review queue {queue!r}; use one of {', '.join(QUEUES)}.")
    held = held_review(membership, queue)
    if held is not None:
        return held
    now = now or timezone.now()
    project, user = membership.project, membership.user
    with transaction.atomic(durable=True):
        item = (
            Item.objects.filter(project=project, review_queue=queue)
            .filter(Q(review_leased_to__isnull=True) | Q(review_lease_expires__lte=now))
            # Nobody reviews their own label.
            .exclude(Exists(Annotation.objects.filter(item=OuterRef("pk"), annotator=user, round=OuterRef("round"))))
            .order_by("rank")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if item is None:
            return None
        # One item per reviewer: an item held in another queue (the reviewer switched tabs) goes
        # back at once instead of staying locked away from everyone until its lease runs out.
        # Only live leases: expired ones are free already and may be locked by another claim.
        Item.objects.filter(project=project, review_leased_to=user, review_lease_expires__gt=now).update(
            review_leased_to=None, review_lease_expires=None
        )
        item.review_leased_to = user
        item.review_lease_expires = now + timedelta(minutes=project.lease_minutes)
        item.save(update_fields=["review_leased_to", "review_lease_expires"])
    return item


def queue_counts(project: Project) -> dict[str, int]:
    """Items waiting in each review queue (index-only counts over the partial review index)."""
    counts = dict.fromkeys(QUEUES, 0)
    rows = (
        Item.objects.filter(project=project)
        .exclude(review_queue=ReviewQueue.NONE)
        .values_list("review_queue")
        .annotate(n=Count("id"))
    )
    counts.update(dict(rows))
    return counts


# --- deciding ---------------------------------------------------------------------------------


def decide_review(
    membership: Membership,
    item_id: int,
    decision: str,
    client_request_id: str,
    category_ids: list[int] | None = None,
    note: str = "",
    duration_ms: int = 0,
) -> Review:
    """Approve (the annotations agree), correct (to `category_ids`) or reject (back to the pool)."""
    project, user = membership.project, membership.user
    if decision not in Review.Decision.values:
        raise ReviewError(f"Unknown decision {decision!r}; use approve, correct or reject.")
    if not client_request_id:
        raise ReviewError("A decision needs a client request id (any unique string per keypress).")
    previous = _earlier_decision(user, client_request_id, item_id)
    if previous is not None:
        return previous
    if decision == Review.Decision.CORRECT:
        category_ids = _validated_categories(project, category_ids or [])
    try:
        with transaction.atomic(durable=True):
            item = _locked_for_review(project, user, item_id)
            final = _final_categories(item, decision, category_ids)
            review = Review.objects.create(
                item=item, project=project, reviewer=user, decision=decision, categories=final or [],
                queue=item.review_queue, round=item.round, note=note.strip()[:5000],
                client_request_id=client_request_id, guidelines_version=project.guidelines_version,
                duration_ms=max(0, min(int(duration_ms or 0), 24 * 3600 * 1000)),  # fits the column
            )
            if decision == Review.Decision.REJECT:
                _return_to_pool(project, item)
            else:
                make_gold(project, item, final, GoldLabel.Source.REVIEW, decided_by=user, review=review)
    except IntegrityError:
        previous = _earlier_decision(user, client_request_id, item_id)
        if previous is None:
            raise
        return previous
    metrics.review_decided(decision)  # after commit: retries count nothing
    return review


def _earlier_decision(user, client_request_id: str, item_id: int) -> Review | None:
    previous = Review.objects.filter(reviewer=user, client_request_id=client_request_id).first()
    if previous is not None and previous.item_id != int(item_id):
        raise ReviewError("This request id was already used for another item; send a fresh one.")
    return previous


def _locked_for_review(project: Project, user, item_id: int) -> Item:
    item = Item.objects.select_for_update().filter(pk=item_id, project=project).first()
    if item is None:
        raise ItemNotFound(f"No item {item_id} in project {project.slug}.")
    if item.review_queue == ReviewQueue.NONE:
        raise ReviewError("This item is no longer waiting for review (someone decided it already).")
    # The claim never offers people their own labels; a decision sent by item id must not either.
    if Annotation.objects.filter(item=item, annotator=user, round=item.round, is_honeypot=False).exists():
        raise ReviewError("You labeled this item yourself; another reviewer must decide it.")
    now = timezone.now()
    held_by_other = (
        item.review_leased_to_id not in (None, user.pk)
        and item.review_lease_expires is not None
        and item.review_lease_expires > now
    )
    if held_by_other:
        raise ReviewError("Another reviewer holds this item; take the next one from the queue.")
    return item


def _final_categories(item: Item, decision: str, category_ids: list[int] | None) -> list[int] | None:
    if decision == Review.Decision.CORRECT:
        return category_ids
    if decision == Review.Decision.REJECT:
        return None
    if item.review_queue == ReviewQueue.SUSPECTED:
        gold = GoldLabel.objects.filter(item=item).first()
        if gold is None:
            raise ReviewError("This item has no gold label to approve; correct it instead.")
        return gold.categories
    labels = current_labels(item)
    if not labels or any(sorted(lab) != sorted(labels[0]) for lab in labels):
        raise ReviewError("The annotations disagree, so there is nothing to approve: press a number to choose the label.")
    return sorted(labels[0])


def current_labels(item: Item) -> list[list[int]]:
    return list(
        Annotation.objects.filter(item=item, round=item.round, is_honeypot=False, rejected=False).values_list(
            "categories", flat=True
        )
    )


def _return_to_pool(project: Project, item: Item) -> None:
    """Rejected: the round's annotations stay as history, the item starts a fresh round."""
    Annotation.objects.filter(item=item, round=item.round, is_honeypot=False).update(rejected=True)
    GoldLabel.objects.filter(item=item).delete()
    Item.objects.filter(pk=item.pk).update(
        round=F("round") + 1,
        annotation_count=0,
        open_slots=project.annotations_per_item,
        status=Item.Status.OPEN,
        review_queue=ReviewQueue.NONE,
        review_leased_to=None,
        review_lease_expires=None,
    )
    _pull_back_cursors(Item.objects.filter(pk=item.pk))


# --- the gold holdout -------------------------------------------------------------------------


def assign_splits(project: Project, batch: int = 5000) -> dict[str, int]:
    """Put every gold item without a split into train or holdout, once and for good.

    Stratified: within each label, items go to the holdout while its share of that label is below
    the project's holdout percentage. Near-duplicates (same letters and digits) follow the split
    their group already has, so the same text never sits on both sides. Runs in the background
    (after imports, before training), never on the annotation hot path.
    """
    assigned = {Split.TRAIN: 0, Split.HOLDOUT: 0}
    tallies = held = None
    while True:
        with transaction.atomic(durable=True):
            Project.objects.select_for_update().filter(pk=project.pk).first()  # one assigner at a time
            pending = list(
                Item.objects.filter(project=project, status=Item.Status.GOLD, split=Split.NONE)
                .select_related("gold")
                .only("id", "title", "text", "near_dup_key", "gold__categories")
                .order_by("content_hash")[:batch]  # a stable, label-independent order
            )
            if not pending:
                return assigned
            if project.mode == Project.Mode.MULTI:  # per-category iterative stratification
                held = held or multilabel_splits.holdings(project)
                for split in multilabel_splits.assign(project, pending, held):
                    assigned[split] += 1
                continue
            tallies = tallies or _split_tallies(project)
            for item in pending:
                split = _choose_split(project, item, tallies)
                Item.objects.filter(pk=item.pk).update(split=split, near_dup_key=item.near_dup_key)
                assigned[split] += 1


def _split_tallies(project: Project) -> dict:
    tallies = defaultdict(lambda: {Split.TRAIN: 0, Split.HOLDOUT: 0})
    rows = GoldLabel.objects.filter(project=project).exclude(item__split=Split.NONE).values_list(
        "categories", "item__split"
    )
    for categories, split in rows.iterator(chunk_size=10000):
        tallies[tuple(categories)][split] += 1
    return tallies


def _choose_split(project: Project, item: Item, tallies) -> str:
    item.near_dup_key = item.near_dup_key or near_dup_key(item.title, item.text)
    twin = (
        Item.objects.filter(project=project, near_dup_key=item.near_dup_key)
        .exclude(split=Split.NONE)
        .values_list("split", flat=True)
        .first()
    )
    stratum = tallies[tuple(item.gold.categories)]
    if twin:
        split = twin
    else:
        total = stratum[Split.TRAIN] + stratum[Split.HOLDOUT] + 1
        split = Split.HOLDOUT if stratum[Split.HOLDOUT] + 1 <= total * project.holdout_percent / 100 else Split.TRAIN
    stratum[split] += 1
    return split
