"""Sentence embeddings stored per item: encoded once, in batches, in the background, and read back
by every later training run and batch prediction instead of running the encoder again.

Vectors are stored under the encoder's name and version (`embeddings.encoder_name()`); a vector
made by another encoder is never reused, it is replaced.

In the background, a project's items without a vector are cut into chunks of consecutive ids
(`plan`), one Celery task each (modeling.tasks), so every worker process encodes its share;
`embed_range` does one chunk. Training runs and batch predictions encode inline only what is
still missing (`ensure`).
"""
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

import numpy as np
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from labeling.models import Item

from . import embeddings, training
from .models import Embedding

# Rows encoded and committed together: a run killed part-way keeps every finished batch.
BATCH = 256
READ_CHUNK = 5000
# Items per background chunk task: about two seconds of one process's encoder, so an import of a
# few thousand items already spreads evenly over every worker process, and a killed worker loses
# little. A chunk's own database work is ~1% of that: 125 to 1,000 a chunk measured alike (bench/embeddings.py).
CHUNK = 250


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(raw) -> np.ndarray:
    return np.frombuffer(bytes(raw), dtype="<f4")


def stored(item_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Stored vectors of these items made by the current encoder, by item id."""
    return {item_id: from_bytes(raw) for item_id, raw in _current(item_ids, "item_id", "vector")}


def _current(item_ids: Sequence[int], *fields: str) -> Iterator[tuple]:
    """`fields` of the current encoder's stored vectors of these items, READ_CHUNK ids a query."""
    name = embeddings.encoder_name()
    for start in range(0, len(item_ids), READ_CHUNK):
        part = item_ids[start : start + READ_CHUNK]
        yield from Embedding.objects.filter(item_id__in=part, encoder=name).values_list(*fields)


def missing(project_id: int):
    """The project's items without a vector from the current encoder (NOT EXISTS: an anti-join,
    where NOT IN over a million ids would not fit PostgreSQL's hashed subplan)."""
    current = Embedding.objects.filter(item_id=OuterRef("pk"), encoder=embeddings.encoder_name())
    return Item.objects.filter(project_id=project_id).filter(~Exists(current))


def plan(project_id: int, size: int = CHUNK, after_id: int = 0) -> list[list[int]]:
    """[first id, last id] of each run of `size` consecutive items of the project that lack a
    vector, among ids above `after_id`."""
    ids = missing(project_id).filter(pk__gt=after_id).order_by("id").values_list("id", flat=True)
    return id_ranges(ids.iterator(chunk_size=20_000), size)


def id_ranges(ids: Iterable[int], size: int) -> list[list[int]]:
    """[first id, last id] of each run of `size` ids, for ids read in ascending order (from the
    primary key, never with OFFSET): the chunks Celery tasks share out."""
    ids, ranges = iter(ids), []
    while run := list(islice(ids, size)):
        ranges.append([run[0], run[-1]])
    return ranges


def embed_range(project_id: int, first_id: int, last_id: int) -> int:
    """Encode and store the vectors of the project's items with ids in [first_id, last_id] that
    have none from the current encoder; returns how many were encoded. Harmless twice or twice at
    once: a chunk done already finds nothing to do, and two workers on one chunk both upsert a
    vector per item (the later one stays; one row per item whatever happens)."""
    # By primary-key range alone, this project's items kept in Python (as predictions.predict_range
    # does: filtering on the project in SQL let SQLite walk the whole project for each chunk).
    in_range = Item.objects.filter(pk__gte=first_id, pk__lte=last_id).order_by("id")
    items = [
        (item_id, training.item_text(title, text))
        for item_id, title, text, owner in in_range.values_list("id", "title", "text", "project_id")
        if owner == project_id
    ]
    # Which have a vector, not the vectors: nothing here needs them.
    have = {item_id for (item_id,) in _current([item_id for item_id, _ in items], "item_id")}
    todo = [(item_id, text) for item_id, text in items if item_id not in have]
    _encode_and_store(project_id, todo)
    return len(todo)


def ensure(
    project_id: int,
    items: Sequence[tuple[int, str]],
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Vectors for (item id, text) pairs, by text: stored ones read back, the rest encoded BATCH at
    a time and stored. `on_batch(done, missing)` reports progress after each stored batch."""
    have = stored([item_id for item_id, _ in items])
    by_text = {text: have[item_id] for item_id, text in items if item_id in have}
    missing = [(item_id, text) for item_id, text in items if item_id not in have]
    by_text.update(_encode_and_store(project_id, missing, on_batch))
    return by_text


def _encode_and_store(
    project_id: int, items: list[tuple[int, str]], on_batch: Callable[[int, int], None] | None = None
) -> dict[str, np.ndarray]:
    """Encode (item id, text) pairs BATCH at a time, storing each batch as it is done; returns the
    vectors by text. `on_batch(done, total)` after each stored batch."""
    by_text: dict[str, np.ndarray] = {}
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        vectors = embeddings.encode([text for _, text in batch])
        _store(project_id, [item_id for item_id, _ in batch], vectors)
        by_text.update(zip([text for _, text in batch], vectors, strict=True))
        if on_batch is not None:
            on_batch(start + len(batch), len(items))
    return by_text


def _store(project_id: int, item_ids: list[int], vectors: np.ndarray) -> None:
    name, now = embeddings.encoder_name(), timezone.now()
    # In item order: writers that may meet on the same items (a chunk task, a training run, a
    # prediction chunk) then lock their rows in the same order and cannot deadlock.
    rows = sorted(
        (
            Embedding(item_id=item_id, project_id=project_id, encoder=name, vector=to_bytes(vector), created_at=now)
            for item_id, vector in zip(item_ids, vectors, strict=True)
        ),
        key=lambda row: row.item_id,
    )
    with transaction.atomic():
        Embedding.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["item"], update_fields=["encoder", "vector", "created_at"]
        )
