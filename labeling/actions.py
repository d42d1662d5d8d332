"""Every write to the labeling domain goes through a function here: one durable transaction each.

HTML views, API views, commands and tasks call these and never sequence the steps themselves.

The queue's guarantees, on PostgreSQL and SQLite alike:
- an item is never leased to more people than it still needs (`Item.open_slots`, a CHECK >= 0);
- never twice to the same person (unique (item, annotator) on Assignment and on Annotation);
- a retried submit with the same client request id creates nothing new.
On PostgreSQL the claim locks one row with FOR UPDATE SKIP LOCKED, so concurrent claims pass each
other; on SQLite every write transaction starts IMMEDIATE (see settings), so writers are serialised.
On PostgreSQL the claim and the common submit run as one statement each (`pg_queue`): the same
steps and locks, without a round trip per step.
"""
import random
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, F, Min, OuterRef
from django.utils import timezone

from config import metrics

from . import pg_queue
from .models import (
    Annotation,
    Assignment,
    DEFAULT_CATEGORIES,
    Category,
    GoldLabel,
    GuidelineVersion,
    Item,
    Membership,
    Project,
    ReviewPolicy,
    ReviewQueue,
    Role,
    Split,
)


class QueueError(Exception):
    """A request the queue refuses; the message says what happened and what to do."""


class LeaseLost(QueueError):
    pass


class NothingToUndo(QueueError):
    pass


def _lease_expiry(project: Project, now):
    return now + timedelta(minutes=project.lease_minutes)


# --- claiming ---------------------------------------------------------------------------------


def live_leases(project: Project, user) -> list[Assignment]:
    return list(
        Assignment.objects.filter(project=project, annotator=user, status=Assignment.Status.LEASED)
        .select_related("item")
        .order_by("leased_at", "id")
    )


def claim_stage(membership: Membership, depth: int | None = None) -> list[Assignment]:
    """The person's live leases, topped up to `depth`: the item on screen and those prefetched."""
    depth = depth or settings.LABELLOOP["PREFETCH_DEPTH"]
    leases = live_leases(membership.project, membership.user)
    while len(leases) < depth:
        lease = claim_next_item(membership)
        if lease is None:
            break
        leases.append(lease)
    return leases


def claim_next_item(membership: Membership, now=None) -> Assignment | None:
    """Lease the next item this person may annotate, or None when the queue is empty for them.

    At the project's honeypot rate the next item is instead a known-gold check, chosen at random
    from gold training items this person has never seen."""
    now = now or timezone.now()
    if random.random() * 100 < membership.project.honeypot_percent:
        lease = _claim_honeypot(membership, now)
        if lease is not None:
            return lease
    lease = _claim_after(membership, membership.queue_cursor, now)
    if lease is None:
        # Items behind the cursor can free up again (an expired lease, a rejected review);
        # only an empty-looking queue pays for looking back, and for releasing stale leases.
        release_expired_leases(now=now, project=membership.project)
        lease = _claim_after(membership, None, now)
    return lease


def _claim_after(membership: Membership, cursor: int | None, now) -> Assignment | None:
    project, user = membership.project, membership.user
    if pg_queue.available():  # the same steps as below, in one statement
        return pg_queue.claim_after(membership, cursor, now, _lease_expiry(project, now))
    with transaction.atomic(durable=True):
        candidates = Item.objects.filter(project=project, open_slots__gt=0).exclude(
            Exists(Assignment.objects.filter(item=OuterRef("pk"), annotator=user, round=OuterRef("round")))
        )
        if cursor is not None:
            candidates = candidates.filter(rank__gt=cursor)
        # The whole row, locked: the card shows it, so no second query fetches it after commit.
        item = candidates.order_by("rank").select_for_update(skip_locked=True, of=("self",)).first()
        if item is None:
            return None
        Item.objects.filter(pk=item.pk).update(open_slots=F("open_slots") - 1)
        item.open_slots -= 1
        lease = Assignment.objects.create(
            item=item, annotator=user, project=project, round=item.round,
            leased_at=now, expires_at=_lease_expiry(project, now),
        )
        Membership.objects.filter(pk=membership.pk).update(queue_cursor=item.rank)
        membership.queue_cursor = item.rank
    return lease


def _claim_honeypot(membership: Membership, now) -> Assignment | None:
    project, user = membership.project, membership.user
    start = random.getrandbits(62) if project.order == Project.Order.RANDOM else 0
    honeypots = Item.objects.filter(project=project, status=Item.Status.GOLD, split=Split.TRAIN)
    unseen = honeypots.exclude(Exists(Assignment.objects.filter(item=OuterRef("pk"), annotator=user)))
    # A gold label a reviewer is re-checking (suspected error) is no answer to score people on.
    unseen = unseen.filter(review_queue=ReviewQueue.NONE)
    if project.order != Project.Order.RANDOM:
        # Sequential ranks are dense: draw the starting point between the first and the last
        # honeypot, read from both ends of their index. (Min/Max over the unseen ones visited every
        # gold item, a cost that grew with the project.)
        ranks = honeypots.order_by("rank").values_list("rank", flat=True)
        low = ranks.first()
        if low is None:
            return None
        start = random.randint(low, ranks.last())
    # Whole rows: the card shows the item, so no second query fetches it after the lease.
    item = (
        unseen.filter(rank__gte=start).order_by("rank").first()
        or unseen.filter(rank__lt=start).order_by("rank").first()
    )
    if item is None:
        return None
    try:
        with transaction.atomic(durable=True):
            lease = Assignment.objects.create(
                item=item, annotator=user, project=project, round=item.round, is_honeypot=True,
                leased_at=now, expires_at=_lease_expiry(project, now),
            )
    except IntegrityError:
        return None  # the same check was just handed out in another tab
    return lease


def release_expired_leases(now=None, project: Project | None = None, batch: int = 1000) -> int:
    """Return abandoned items to the pool. Returns how many leases were released."""
    now = now or timezone.now()
    released = 0
    while True:
        with transaction.atomic(durable=True):
            expired = Assignment.objects.filter(status=Assignment.Status.LEASED, expires_at__lte=now)
            if project is not None:
                expired = expired.filter(project=project)
            rows = list(
                expired.select_for_update(skip_locked=True).values_list("id", "item_id", "is_honeypot")[:batch]
            )
            if not rows:
                return released
            Assignment.objects.filter(id__in=[r[0] for r in rows]).delete()
            freed = Counter(item_id for _, item_id, honeypot in rows if not honeypot)
            # Items in id order: several people can release at once (claim_next_item does, on an
            # empty-looking queue), and two of them updating the same items in different orders
            # deadlock.
            for item_id in sorted(freed):
                Item.objects.filter(pk=item_id).update(open_slots=F("open_slots") + freed[item_id])
            _pull_back_cursors(Item.objects.filter(pk__in=list(freed)))
            released += len(rows)


def _pull_back_cursors(items) -> None:
    """Items freed behind people's queue cursors are served next, not after the whole queue."""
    for row in items.values("project_id").annotate(low=Min("rank")).order_by():
        behind = Membership.objects.filter(project_id=row["project_id"], queue_cursor__gte=row["low"])
        # Locked in id order first, for the same reason as the items above.
        ids = list(behind.order_by("pk").select_for_update().values_list("pk", flat=True))
        Membership.objects.filter(pk__in=ids).update(queue_cursor=row["low"] - 1)


# --- submitting -------------------------------------------------------------------------------


def submit_annotation(
    membership: Membership,
    item_id: int,
    category_ids: list[int],
    client_request_id: str,
    duration_ms: int = 0,
    suggestion_shown: bool = False,
    suggested_category_id: int | None = None,
    model_version_id: int | None = None,
    suggestion: dict | None = None,
) -> Annotation:
    """Record one person's label for one item. A retry with the same request id returns the
    annotation the first attempt stored and creates nothing."""
    project, user = membership.project, membership.user
    if not client_request_id:
        raise QueueError("A submission needs a client request id (any unique string per keypress).")
    category_ids = _validated_categories(project, category_ids)
    annotation = Annotation(
        item_id=item_id,
        annotator=user,
        project=project,
        categories=category_ids,
        client_request_id=client_request_id,
        duration_ms=max(0, min(int(duration_ms or 0), 24 * 3600 * 1000)),
        suggestion_shown=suggestion_shown,
        suggested_category_id=suggested_category_id,
        model_version_id=model_version_id,
        suggestion=suggestion,
        guidelines_version=project.guidelines_version,
    )
    try:
        with transaction.atomic(durable=True):
            # PostgreSQL stores the common case (a live lease) in one statement; anything else,
            # and SQLite, takes the steps one by one.
            item = pg_queue.submit_on_live_lease(annotation) if pg_queue.available() else None
            if item is None:
                item = _submit_in_steps(project, user, annotation)
            if not annotation.is_honeypot:
                _complete_if_done(project, item)
    except (IntegrityError, QueueError) as refused:
        # A retry of a stored keypress is refused by the write itself (its lease is already
        # submitted, or a concurrent retry's unique request id won the race): hand back what the
        # first attempt stored. Looking only here keeps the common submit one query shorter.
        previous = _earlier_submission(user, client_request_id, item_id)
        if previous is not None:
            return previous
        if isinstance(refused, IntegrityError):
            raise QueueError("You have already labeled this item.") from None
        raise
    metrics.annotation_submitted()  # after commit: retries and rollbacks count nothing
    return annotation


def _submit_in_steps(project: Project, user, annotation: Annotation) -> Item | None:
    """Store the annotation on its lease, whatever state the lease is in (or refuse); returns
    the item's new count, status and round (None for a honeypot, which changes no counts)."""
    lease = _lease_for_submit(project, user, annotation.item_id)
    annotation.round, annotation.is_honeypot = lease.round, lease.is_honeypot
    annotation.save(force_insert=True)
    Assignment.objects.filter(pk=lease.pk).update(status=Assignment.Status.SUBMITTED)
    return None if lease.is_honeypot else _record_annotation_on_item(project, annotation.item_id)


def _validated_categories(project: Project, category_ids: list[int]) -> list[int]:
    ids = sorted({int(c) for c in category_ids})
    if not ids and project.accepts_empty_label():
        return ids  # "none of these": an answer in this project
    if not ids:
        raise QueueError(_NO_CATEGORY[project.mode])
    if project.mode == Project.Mode.SINGLE and len(ids) != 1:
        raise QueueError("This project is single-label: choose exactly one category.")
    known = set(Category.objects.filter(project=project, id__in=ids).values_list("id", flat=True))
    unknown = [c for c in ids if c not in known]
    if unknown:
        raise QueueError(f"Unknown category id(s) {unknown} for project {project.slug}.")
    return ids


_NO_CATEGORY = {
    Project.Mode.SINGLE: "Choose a category.",
    Project.Mode.MULTI: "Tick at least one category: this project does not allow “none of these”.",
}


def _earlier_submission(user, client_request_id: str, item_id: int) -> Annotation | None:
    previous = Annotation.objects.filter(annotator=user, client_request_id=client_request_id).first()
    if previous is not None and previous.item_id != int(item_id):
        raise QueueError("This request id was already used for another item; send a fresh one.")
    return previous


def _lease_for_submit(project: Project, user, item_id: int) -> Assignment:
    lease = (
        Assignment.objects.select_for_update(of=("self",))  # the lease only; the item stays claimable
        .select_related("item")  # its current round, in the same query
        .filter(project=project, annotator=user, item_id=item_id)
        .order_by("-round")
        .first()
    )
    if lease is not None:
        current_round = lease.item.round
    else:
        current_round = Item.objects.filter(pk=item_id, project=project).values_list("round", flat=True).first()
    if current_round is None:
        raise QueueError(f"No item {item_id} in project {project.slug}.")
    if lease is not None and lease.round != current_round and not lease.is_honeypot:
        lease = None  # a reviewer rejected that round; this is a fresh turn at the item
    if lease is not None:
        if lease.status == Assignment.Status.SUBMITTED:
            raise QueueError("You have already labeled this item.")
        if lease.status == Assignment.Status.SKIPPED:
            raise QueueError("You skipped this item; it is no longer yours to label.")
        return lease
    # The lease expired and was released. Accept the work if the item still has a free slot.
    now = timezone.now()
    taken = Item.objects.filter(pk=item_id, project=project, open_slots__gt=0).update(
        open_slots=F("open_slots") - 1
    )
    if not taken:
        raise LeaseLost(
            "Your lease on this item expired and it went to someone else; your label was not "
            "stored. Carry on with the next item."
        )
    return Assignment.objects.create(
        item_id=item_id, annotator=user, project=project, round=current_round,
        leased_at=now, expires_at=_lease_expiry(project, now),
    )


def _record_annotation_on_item(project: Project, item_id: int) -> Item:
    """Count the annotation on its item; returns the item's new count, status and round."""
    fields = ["id", "status", "annotation_count", "round"]  # the model's field order, for from_db
    if not connection.features.can_return_columns_from_insert:  # SQLite before 3.35
        Item.objects.filter(pk=item_id).update(annotation_count=F("annotation_count") + 1)
        return Item.objects.only(*fields).get(pk=item_id)
    with connection.cursor() as cursor:
        # The new values in the same statement: no second query reads back the row just written.
        cursor.execute(
            f"UPDATE {Item._meta.db_table} SET annotation_count = annotation_count + 1 WHERE id = %s "
            "RETURNING status, annotation_count, round",
            [item_id],
        )
        return Item.from_db(connection.alias, fields, [item_id, *cursor.fetchone()])


def _complete_if_done(project: Project, item: Item) -> None:
    if item.annotation_count >= project.annotations_per_item and item.status == Item.Status.OPEN:
        _complete_item(project, item)


def _complete_item(project: Project, item: Item) -> None:
    """All k annotations are in: gold by consensus where the review policy allows it, otherwise
    the item waits in a review queue (disagreements always do)."""
    labels = list(
        Annotation.objects.filter(item=item, round=item.round, is_honeypot=False).values_list("categories", flat=True)
    )
    agreed = all(sorted(lab) == sorted(labels[0]) for lab in labels)
    if agreed and not _needs_review(project):
        make_gold(project, item, labels[0], GoldLabel.Source.CONSENSUS)
        return
    queue = ReviewQueue.REVIEW if agreed else ReviewQueue.DISAGREEMENT
    Item.objects.filter(pk=item.pk).update(status=Item.Status.COMPLETED, review_queue=queue)


def make_gold(project: Project, item: Item, categories, source: str, decided_by=None, review=None) -> GoldLabel:
    """Record the item's final label with its provenance; the holdout split, once made, stays."""
    gold = GoldLabel(
        item=item,
        project=project,
        categories=sorted(categories),
        source=source,
        decided_by=decided_by,
        decided_at=timezone.now(),
        guidelines_version=project.guidelines_version,
        review=review,
    )
    # One INSERT ... ON CONFLICT (item) DO UPDATE: update_or_create would take a savepoint, a
    # locking SELECT and a write, four round trips on the submit that completes an item.
    GoldLabel.objects.bulk_create(
        [gold], update_conflicts=True, unique_fields=["item"], update_fields=_GOLD_DECISION_FIELDS
    )
    Item.objects.filter(pk=item.pk).update(
        status=Item.Status.GOLD, review_queue=ReviewQueue.NONE, review_leased_to=None, review_lease_expires=None
    )
    return gold


_GOLD_DECISION_FIELDS = ["project", "categories", "source", "decided_by", "decided_at", "guidelines_version", "review"]


def _needs_review(project: Project) -> bool:
    if project.review_policy == ReviewPolicy.ALL:
        return True
    if project.review_policy == ReviewPolicy.SAMPLE:
        return random.random() * 100 < project.review_sample_percent
    return False


# --- skip and undo ----------------------------------------------------------------------------


def skip_item(membership: Membership, item_id: int) -> None:
    """Give the item back to the pool; this person will not be offered it again."""
    with transaction.atomic(durable=True):
        lease = Assignment.objects.filter(
            project=membership.project, annotator=membership.user, item_id=item_id, status=Assignment.Status.LEASED
        )
        # A honeypot lease took no slot, so skipping it gives none back.
        held_slot = lease.filter(is_honeypot=False).exists()
        changed = lease.update(status=Assignment.Status.SKIPPED)
        if changed and held_slot:
            Item.objects.filter(pk=item_id).update(open_slots=F("open_slots") + 1)


def undo_last_annotation(membership: Membership) -> Assignment:
    """Take back this person's latest label in the project; the item is theirs again, first in line."""
    project, user = membership.project, membership.user
    with transaction.atomic(durable=True):
        annotation = (
            Annotation.objects.select_for_update()
            .filter(project=project, annotator=user)
            .order_by("-created_at", "-id")
            .first()
        )
        if annotation is None:
            raise NothingToUndo("There is nothing to undo in this project.")
        if not annotation.is_honeypot:
            _take_back_from_item(annotation)
        annotation.delete()
        now = timezone.now()
        first_live = (
            Assignment.objects.filter(project=project, annotator=user, status=Assignment.Status.LEASED)
            .order_by("leased_at")
            .values_list("leased_at", flat=True)
            .first()
        )
        lease = Assignment.objects.select_for_update().get(
            item_id=annotation.item_id, annotator=user, round=annotation.round
        )
        lease.status = Assignment.Status.LEASED
        # Ordered before the other live leases, so the undone item is the one on screen.
        lease.leased_at = min(now, first_live - timedelta(milliseconds=1)) if first_live else now
        lease.expires_at = _lease_expiry(project, now)
        lease.save(update_fields=["status", "leased_at", "expires_at"])
    return lease


def _take_back_from_item(annotation: Annotation) -> None:
    item = Item.objects.select_for_update().get(pk=annotation.item_id)
    if annotation.rejected or item.round != annotation.round:
        raise NothingToUndo("A reviewer already sent that item back for fresh labels; it cannot be undone.")
    gold = GoldLabel.objects.filter(item=item).first()
    if gold is not None and gold.source != GoldLabel.Source.CONSENSUS:
        raise NothingToUndo("That item has already been reviewed; ask a reviewer to change it.")
    if item.review_leased_to_id is not None and item.review_queue != ReviewQueue.NONE:
        raise NothingToUndo("A reviewer is looking at that item right now; it cannot be undone.")
    if gold is not None:
        gold.delete()
    Item.objects.filter(pk=item.pk).update(
        annotation_count=F("annotation_count") - 1, status=Item.Status.OPEN, review_queue=ReviewQueue.NONE
    )


# --- projects and members ---------------------------------------------------------------------


def create_project(name: str, slug: str, categories: list[str] | None = None, owner=None, **settings_) -> Project:
    """A project with its categories on keys 1..9; `owner`, if given, becomes its first admin."""
    names = categories or DEFAULT_CATEGORIES
    if len(names) > 9:
        raise ValueError("A project has at most 9 categories (keys 1..9).")
    _check_mode(settings_.get("mode", Project.Mode.SINGLE), settings_.get("allow_none_of_these", False))
    with transaction.atomic():
        project = Project.objects.create(name=name, slug=slug, **settings_)
        GuidelineVersion.objects.create(project=project, version=project.guidelines_version, text=project.guidelines)
        Category.objects.bulk_create(
            Category(project=project, name=n, shortcut=str(i + 1), order=i) for i, n in enumerate(names)
        )
        if owner is not None:
            Membership.objects.create(project=project, user=owner, role=Role.ADMIN)
    return project


def _check_mode(mode: str, allow_none_of_these: bool) -> None:
    if mode not in Project.Mode.values:
        raise ValueError(f"Unknown mode {mode!r}; use {' or '.join(Project.Mode.values)}.")
    if allow_none_of_these and mode != Project.Mode.MULTI:
        raise ValueError("Only a multi-label project can allow “none of these”.")


def add_member(project: Project, user, role: str = Role.ANNOTATOR) -> Membership:
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


class MembershipError(Exception):
    """A membership change that would leave the project without an admin."""


def change_role(membership: Membership, role: str) -> Membership:
    with transaction.atomic(durable=True):
        _keep_an_admin(membership, losing=role != Role.ADMIN)
        Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.role = role
    return membership


def remove_member(membership: Membership) -> None:
    """Take someone out of a project; items they hold go back to the pool right away."""
    with transaction.atomic(durable=True):
        _keep_an_admin(membership, losing=True)
        membership.delete()
        # Their labels stay (they were given in good faith); their live leases end now.
        Assignment.objects.filter(
            project=membership.project, annotator=membership.user, status=Assignment.Status.LEASED
        ).update(expires_at=timezone.now())
    release_expired_leases(project=membership.project)


def _keep_an_admin(membership: Membership, losing: bool) -> None:
    if not losing or membership.role != Role.ADMIN:
        return
    admins = Membership.objects.select_for_update().filter(project=membership.project, role=Role.ADMIN)
    if not admins.exclude(pk=membership.pk).exists():
        raise MembershipError(f"{membership.user} is the last admin of {membership.project.name}; make someone else admin first.")


def add_category(project: Project, name: str) -> Category:
    """A new category on the first free key 1..9 (a project has at most 9)."""
    with transaction.atomic(durable=True):
        Project.objects.select_for_update().filter(pk=project.pk).first()  # one writer per project
        taken = list(Category.objects.filter(project=project).values_list("shortcut", "order"))
        free = [k for k in "123456789" if k not in {key for key, _ in taken}]
        if not free:
            raise ValueError("A project has at most 9 categories (keys 1..9).")
        if Category.objects.filter(project=project, name__iexact=name).exists():
            raise ValueError(f"There is already a category named {name!r}.")
        order = max((o for _, o in taken), default=-1) + 1
        return Category.objects.create(project=project, name=name, shortcut=free[0], order=order)


def rename_category(category: Category, name: str) -> Category:
    with transaction.atomic(durable=True):
        if Category.objects.filter(project_id=category.project_id, name__iexact=name).exclude(pk=category.pk).exists():
            raise ValueError(f"There is already a category named {name!r}.")
        category.name = name
        category.save(update_fields=["name"])
    return category


def recount_progress(project: Project) -> dict:
    """Refresh the project's progress figures (run by a Celery task, not on page views)."""
    from . import dashboard  # it reads review queues, which import this module
    counts = dict(
        Item.objects.filter(project=project).values_list("status").annotate(n=Count("id"))
    )
    progress = {
        "items": sum(counts.values()),
        "open": counts.get(Item.Status.OPEN, 0),
        "completed": counts.get(Item.Status.COMPLETED, 0),
        "gold": counts.get(Item.Status.GOLD, 0),
        "annotations": Annotation.objects.filter(project=project).count(),
        "counted_at": timezone.now().isoformat(),
        **dashboard.slow_aggregates(project),  # the dashboard's whole-table figures, counted here too
    }
    Project.objects.filter(pk=project.pk).update(progress=progress)
    return progress


def update_project_settings(project: Project, form, editor=None) -> Project:
    """Save the settings form; changed guidelines start a new guidelines version, so every later
    annotation and gold label records which text was in force."""
    with transaction.atomic(durable=True):
        before = Project.objects.select_for_update().get(pk=project.pk)
        project = form.save(commit=False)
        if project.guidelines != before.guidelines:
            project.guidelines_version = before.guidelines_version + 1
            GuidelineVersion.objects.create(
                project=project, version=project.guidelines_version, text=project.guidelines, created_by=editor
            )
        k_changed = project.annotations_per_item != before.annotations_per_item
        project.save()
        if k_changed:
            _reopen_slots_for_new_k(project, project.annotations_per_item - before.annotations_per_item)
    return project


def _reopen_slots_for_new_k(project: Project, delta: int) -> None:
    """A changed k changes how many more annotations each open item needs."""
    open_items = Item.objects.filter(project=project, status=Item.Status.OPEN)
    if delta > 0:
        open_items.update(open_slots=F("open_slots") + delta)
        return
    # Never below zero: leases already out keep their slot and finish normally.
    shrink = -delta
    open_items.filter(open_slots__lt=shrink).update(open_slots=0)
    open_items.filter(open_slots__gte=shrink).update(open_slots=F("open_slots") - shrink)
