"""The annotator's hot path on PostgreSQL: a claim, and the common submit, as one statement each.

The ORM spells a claim as five round trips (BEGIN, the locking SELECT, two UPDATEs and an INSERT,
COMMIT) and a submit as seven; on a busy two-core server every round trip is a context switch
each way, and that, not the work, was most of the p95. PostgreSQL's data-modifying CTEs do the
same steps, in the same order and under the same locks, in one statement: the claim runs on its
own in autocommit (one round trip, one commit), the submit inside the caller's transaction.

Only `labeling.actions` calls these; the rules (who may claim what, what a submit may do) stay
there, and every case these statements do not cover falls back to the ORM path in actions.
SQLite keeps the ORM path: it runs in-process, so a statement costs no round trip.
"""
from functools import cache

from django.db import connection

from .models import Annotation, Assignment, Item, Membership


def available() -> bool:
    return connection.vendor == "postgresql"


# --- claim ----------------------------------------------------------------------------------------


@cache
def _claim_sql(after_cursor: bool) -> str:
    item, lease, member = Item._meta.db_table, Assignment._meta.db_table, Membership._meta.db_table
    columns = ", ".join(f"taken.{f.column}" for f in Item._meta.concrete_fields)
    # picked: the indexed SKIP LOCKED claim (item_claimable); taken: its slot; leased: the lease
    # (unique (item, annotator, round) is still the last line of defence); moved: the cursor.
    return f"""
        WITH picked AS (
            SELECT i.id FROM {item} i
            WHERE i.project_id = %(project)s AND i.open_slots > 0
              {"AND i.rank > %(cursor)s" if after_cursor else ""}
              AND NOT EXISTS (
                  SELECT 1 FROM {lease} a
                  WHERE a.item_id = i.id AND a.annotator_id = %(user)s AND a.round = i.round
              )
            ORDER BY i.rank
            LIMIT 1
            FOR UPDATE OF i SKIP LOCKED
        ), taken AS (
            UPDATE {item} i SET open_slots = i.open_slots - 1
            FROM picked WHERE i.id = picked.id
            RETURNING i.*
        ), leased AS (
            INSERT INTO {lease} (item_id, annotator_id, project_id, status, round, is_honeypot, leased_at, expires_at)
            SELECT taken.id, %(user)s, %(project)s, %(status)s, taken.round, false, %(now)s, %(expires)s
            FROM taken
            RETURNING id
        ), moved AS (
            UPDATE {member} m SET queue_cursor = taken.rank FROM taken WHERE m.id = %(membership)s
        )
        SELECT leased.id AS lease_id, {columns} FROM taken, leased
    """


def claim_after(membership: Membership, cursor: int | None, now, expires) -> Assignment | None:
    """Lease the first claimable item after `cursor` (anywhere when None), or None; moves the
    person's queue cursor to it. One statement, so it commits on its own."""
    project, user = membership.project, membership.user
    params = {
        "project": project.pk, "user": user.pk, "cursor": cursor, "status": Assignment.Status.LEASED,
        "now": now, "expires": expires, "membership": membership.pk,
    }
    # raw() turns the row into an Item with the field converters applied (meta is JSON).
    rows = list(Item.objects.raw(_claim_sql(cursor is not None), params))
    if not rows:
        return None
    item = rows[0]
    membership.queue_cursor = item.rank
    lease = Assignment(
        id=item.lease_id, item=item, annotator=user, project=project, status=Assignment.Status.LEASED,
        round=item.round, is_honeypot=False, leased_at=now, expires_at=expires,
    )
    _mark_saved(lease)
    return lease


# --- submit ---------------------------------------------------------------------------------------


@cache
def _submit_sql() -> str:
    item, lease, annotation = Item._meta.db_table, Assignment._meta.db_table, Annotation._meta.db_table
    columns = ", ".join(f.column for f in _annotation_fields())
    placeholders = ", ".join(["%s"] * len(_annotation_fields()))
    # lease: the person's latest lease of the item, if it is live and of the item's current round
    # (a honeypot's round never moves), marked submitted; locked first, as the ORM path locks it.
    # stored: the annotation (its unique constraints turn a retry into an IntegrityError).
    # counted: the item's annotation count, locked second; a honeypot changes no counts.
    return f"""
        WITH lease AS (
            UPDATE {lease} a SET status = %s
            FROM {item} i
            WHERE a.id = (
                    SELECT id FROM {lease}
                    WHERE project_id = %s AND annotator_id = %s AND item_id = %s
                    ORDER BY round DESC
                    LIMIT 1
                )
              AND a.status = %s AND i.id = a.item_id AND (a.round = i.round OR a.is_honeypot)
            RETURNING a.round, a.is_honeypot
        ), stored AS (
            INSERT INTO {annotation} ({columns}, round, is_honeypot)
            SELECT {placeholders}, lease.round, lease.is_honeypot FROM lease
            RETURNING id
        ), counted AS (
            UPDATE {item} i SET annotation_count = i.annotation_count + 1
            FROM lease WHERE i.id = %s AND NOT lease.is_honeypot
            RETURNING i.annotation_count, i.status, i.round
        )
        SELECT stored.id, lease.round, lease.is_honeypot, counted.annotation_count, counted.status, counted.round
        FROM lease CROSS JOIN stored LEFT JOIN counted ON true
    """


@cache
def _annotation_fields() -> list:
    """The Annotation columns the submit writes from the unsaved instance (round and honeypot
    come from the lease)."""
    return [
        f for f in Annotation._meta.concrete_fields if not f.primary_key and f.name not in ("round", "is_honeypot")
    ]


def submit_on_live_lease(annotation: Annotation) -> Item | None:
    """Store `annotation` (unsaved; item, annotator and project set) on its author's live lease
    of the current round, in the caller's transaction. Returns the item's new count, status and
    round (an Item with only those fields) once stored, or None, having written nothing, when
    there is no such lease (a retry, a skipped item, an expired lease, a new round): the ORM path
    sorts those out. For a honeypot the Item has no count (it changes none)."""
    values = [f.get_db_prep_save(f.pre_save(annotation, add=True), connection) for f in _annotation_fields()]
    params = [
        Assignment.Status.SUBMITTED,
        annotation.project_id, annotation.annotator_id, annotation.item_id,
        Assignment.Status.LEASED,
        *values,
        annotation.item_id,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_submit_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    annotation.pk, annotation.round, annotation.is_honeypot, count, status, round_ = row
    _mark_saved(annotation)
    # from_db takes the values in the model's field order.
    return Item.from_db(
        connection.alias, ["id", "status", "annotation_count", "round"], [annotation.item_id, status, count, round_]
    )


def _mark_saved(instance) -> None:
    """An instance built from values a statement just wrote: saved, in this database."""
    instance._state.adding = False
    instance._state.db = connection.alias
