"""Batch inference: the promoted model's prediction for every unlabeled item, stored in chunks.

Stored predictions make suggestions a primary-key read on the annotate page, and in uncertainty
order they set the queue rank (see active_learning), so the claim stays an index range scan.
The unlabeled items are cut into chunks of consecutive ids (`plan`); each chunk is scored and
written in one transaction (`predict_range`), so any number of workers can share the work and a
chunk done twice changes nothing. modeling.runs hands the chunks out.
"""
import io
import json

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from labeling.actions import _pull_back_cursors
from labeling.models import Category, Item, Project

from . import active_learning, embeddings, serving, training, vectors
from .models import ModelVersion, Prediction


def chunk_size() -> int:
    return settings.LABELLOOP["PREDICT_CHUNK"]


def unlabeled(project: Project):
    """Items without a gold label: the ones suggestions and the queue order are for."""
    return Item.objects.filter(project=project).exclude(status=Item.Status.GOLD)


def plan(project: Project, size: int | None = None) -> list[list[int]]:
    """[first id, last id] of each run of `size` consecutive unlabeled items."""
    ids = unlabeled(project).order_by("id").values_list("id", flat=True)
    return vectors.id_ranges(ids.iterator(chunk_size=20_000), size or chunk_size())


def predict_range(version: ModelVersion, model, first_id: int, last_id: int) -> dict:
    """Score and store the unlabeled items with ids in [first_id, last_id]; in uncertainty order,
    re-rank the open ones and pull people's queue cursors back to the least confident."""
    project = version.project
    # By primary-key range alone, then this project's unlabeled items kept in Python: filtering
    # on the project in SQL let SQLite pick the (project, status) index and visit every item of
    # the project for each chunk.
    in_range = Item.objects.filter(id__gte=first_id, id__lte=last_id).order_by("id")
    rows = [
        row[:4]
        for row in in_range.values_list("id", "title", "text", "status", "project_id")
        if row[4] == project.pk and row[3] != Item.Status.GOLD
    ]
    if not rows:
        return {"predicted": 0, "reranked": 0}
    columns = category_columns(project, model.classes_)
    proba = probabilities(project.pk, model, [(row[0], training.item_text(row[1], row[2])) for row in rows])
    # Multi-label models measure doubt against their thresholds (modeling.multilabel.margins).
    margins = model.margins(proba) if getattr(model, "multilabel", False) else active_learning.margins(proba)
    reranked = 0
    # Without waiting for the disk: a chunk is recomputable, and the commit that marks it done
    # (runs._chunk_done, a normal one) flushes the log up to and including this one.
    with transaction.atomic(), serving.without_waiting_for_disk():
        stored = store(version, columns, [row[0] for row in rows], proba, margins=margins)
        if project.order == Project.Order.UNCERTAINTY:
            ranks = _rerank(rows, margins)
            reranked = len(ranks)
            if ranks:
                # People's queue cursors sit at old ranks: the least confident come next.
                least_confident = min(ranks, key=lambda pair: pair[1])[0]
                _pull_back_cursors(Item.objects.filter(pk=least_confident))
    return {"predicted": stored, "reranked": reranked}


def predict_unlabeled(version: ModelVersion, model) -> dict:
    """Every chunk, one after the other, in this process (tests and benchmarks)."""
    totals = {"predicted": 0, "reranked": 0}
    for first, last in plan(version.project):
        for key, value in predict_range(version, model, first, last).items():
            totals[key] += value
    return totals


def probabilities(project_id: int, model, items: list[tuple[int, str]]) -> np.ndarray:
    """`model.predict_proba` for (item id, text) pairs, reusing and storing item embeddings."""
    if not getattr(model, "uses_embeddings", False):
        return model.predict_proba([text for _, text in items])
    with embeddings.remember(vectors.ensure(project_id, items)):
        return model.predict_proba([text for _, text in items])


def category_columns(project: Project, classes) -> list[int | None]:
    """The category id of each of the model's classes (None for a category renamed since)."""
    ids = dict(Category.objects.filter(project=project).values_list("name", "id"))
    return [ids.get(name) for name in classes]


def store(
    version: ModelVersion, columns: list[int | None], item_ids: list[int], proba: np.ndarray, batch: int = 1000,
    margins: np.ndarray | None = None,
) -> int:
    """Insert or replace the Prediction rows of these items (INSERT ... ON CONFLICT (item) DO
    UPDATE). Hand-written because building a model instance per row cost more than scoring the
    row (about 100 us against 65 us); on PostgreSQL the rows arrive by COPY.

    The upsert, not DELETE + COPY straight into the table: replacing a row keeps its item, so the
    item's foreign key is not checked again (a new row is checked at commit, ~12 us), and two
    workers given the same chunk wait for each other instead of one failing on the unique item."""
    known = [i for i, c in enumerate(columns) if c is not None]
    if not known:
        return 0
    proba = np.asarray(proba, dtype=float)
    margins = active_learning.margins(proba) if margins is None else margins
    best_known = np.asarray(known)[proba[:, known].argmax(axis=1)]
    rounded = np.round(proba[:, known], 4).tolist()
    keys = [json.dumps(str(columns[i])) for i in known]
    as_json = ["{" + ", ".join(f"{key}: {p!r}" for key, p in zip(keys, row, strict=True)) + "}" for row in rounded]
    tops = [columns[top] for top in best_known.tolist()]
    margins = np.asarray(margins, dtype=float).tolist()
    now = timezone.now()
    table = connection.ops.quote_name(Prediction._meta.db_table)
    columns_sql = "item_id, project_id, model_version_id, probabilities, top_category_id, margin, created_at"
    upsert = (
        "ON CONFLICT (item_id) DO UPDATE SET "
        "project_id = excluded.project_id, model_version_id = excluded.model_version_id, "
        "probabilities = excluded.probabilities, top_category_id = excluded.top_category_id, "
        "margin = excluded.margin, created_at = excluded.created_at"
    )
    if _uses_copy():
        # One f-string per row: formatting value by value took 34 ms of CPU a chunk of 5,000 (as
        # much as the upsert in the database), this 18 ms.
        fixed, stamp = f"{version.project_id}\t{version.pk}", now.isoformat()
        text = "".join(
            f"{item_id}\t{fixed}\t{probs}\t{top}\t{margin!r}\t{stamp}\n"
            for item_id, probs, top, margin in zip(item_ids, as_json, tops, margins, strict=True)
        )
        incoming = _copy_to_scratch(
            "labelloop_incoming_predictions",
            "item_id bigint, project_id bigint, model_version_id bigint, probabilities jsonb, "
            "top_category_id bigint, margin double precision, created_at timestamptz",
            text,
        )
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} ({columns_sql}) SELECT {columns_sql} FROM {incoming} {upsert}")
        return len(item_ids)
    stamp = connection.ops.adapt_datetimefield_value(now)
    rows = [
        (item_id, version.project_id, version.pk, probs, top, margin, stamp)
        for item_id, probs, top, margin in zip(item_ids, as_json, tops, margins, strict=True)
    ]
    with connection.cursor() as cursor:
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(part))
            cursor.execute(
                f"INSERT INTO {table} ({columns_sql}) VALUES {values} {upsert}",
                [value for row in part for value in row],
            )
    return len(rows)


def _uses_copy() -> bool:
    return connection.vendor == "postgresql"


def _copy_to_scratch(name: str, columns_ddl: str, text: str) -> str:
    """PostgreSQL: COPY text (tab-separated lines) into a temporary table of this session,
    emptied first.

    COPY moves a chunk's rows in one round trip with no SQL to parse per row; the INSERT or
    UPDATE that reads them back is one set-based statement. Profiled on single chunks of 5,000,
    storing took about half the time of multi-row INSERTs (re-ranking the same); bench/modeling.py
    measures both side by side. The table outlives the transaction (sessions are reused by
    persistent connections), hence the TRUNCATE. Values must not contain tabs, newlines or
    backslashes (ours are numbers, JSON of numbers and timestamps)."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({columns_ddl})")
        cursor.execute(f"TRUNCATE {name}")
        cursor.copy_expert(f"COPY {name} FROM STDIN", io.StringIO(text))
    return name


def _rerank(rows: list[tuple], margins: np.ndarray) -> list[tuple[int, int]]:
    """New queue ranks of the open items among `rows`; returns the (item id, rank) pairs set."""
    ranks = [
        (item_id, active_learning.uncertainty_rank(float(margin), item_id))
        for (item_id, _, _, status), margin in zip(rows, margins, strict=True)
        if status == Item.Status.OPEN
    ]
    set_ranks(ranks)
    return ranks


def set_ranks(ranks: list[tuple[int, int]], batch: int = 2000) -> int:
    """Set Item.rank for (item id, rank) pairs: one UPDATE ... FROM (VALUES ...) per batch, the
    same statement on PostgreSQL and SQLite (both name VALUES columns column1, column2); on
    PostgreSQL the pairs arrive by COPY instead. Returns how many items moved.

    Items already at their rank are left alone: rank is in the queue indexes, so every update
    writes a new row version and an entry in each index (the dearest step of a chunk: about
    30 us of database CPU per item), and a chunk done again then writes nothing."""
    table = connection.ops.quote_name(Item._meta.db_table)
    if _uses_copy() and ranks:
        text = "".join(f"{item_id}\t{rank}\n" for item_id, rank in ranks)
        incoming = _copy_to_scratch("labelloop_incoming_ranks", "id bigint, rank bigint", text)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET rank = v.rank FROM {incoming} AS v "
                f"WHERE {table}.id = v.id AND {table}.rank <> v.rank"
            )
            return cursor.rowcount
    moved = 0
    with connection.cursor() as cursor:
        for start in range(0, len(ranks), batch):
            part = ranks[start : start + batch]
            values = ", ".join(["(%s, %s)"] * len(part))
            cursor.execute(
                f"UPDATE {table} SET rank = v.column2 FROM (VALUES {values}) AS v "
                f"WHERE {table}.id = v.column1 AND {table}.rank <> v.column2",
                [value for pair in part for value in pair],
            )
            moved += cursor.rowcount
    return moved
