"""Sentence embeddings stored per item: encoded once, in batches, in the background, and read back
by every later training run and batch prediction instead of running the encoder again.

Vectors are stored under the encoder's name and version (`embeddings.encoder_name()`); a vector
made by another encoder is never reused, it is replaced.
"""
from collections.abc import Callable, Sequence

import numpy as np
from django.db import transaction
from django.utils import timezone

from . import embeddings
from .models import Embedding

# Rows encoded and committed together: a run killed part-way keeps every finished batch.
BATCH = 256
READ_CHUNK = 5000


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(raw) -> np.ndarray:
    return np.frombuffer(bytes(raw), dtype="<f4")


def stored(item_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Stored vectors of these items made by the current encoder, by item id."""
    name = embeddings.encoder_name()
    found: dict[int, np.ndarray] = {}
    for start in range(0, len(item_ids), READ_CHUNK):
        rows = Embedding.objects.filter(item_id__in=item_ids[start : start + READ_CHUNK], encoder=name)
        found.update((item_id, from_bytes(raw)) for item_id, raw in rows.values_list("item_id", "vector"))
    return found


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
    for start in range(0, len(missing), BATCH):
        batch = missing[start : start + BATCH]
        vectors = embeddings.encode([text for _, text in batch])
        _store(project_id, [item_id for item_id, _ in batch], vectors)
        by_text.update(zip([text for _, text in batch], vectors, strict=True))
        if on_batch is not None:
            on_batch(start + len(batch), len(missing))
    return by_text


def _store(project_id: int, item_ids: list[int], vectors: np.ndarray) -> None:
    name, now = embeddings.encoder_name(), timezone.now()
    rows = [
        Embedding(item_id=item_id, project_id=project_id, encoder=name, vector=to_bytes(vector), created_at=now)
        for item_id, vector in zip(item_ids, vectors, strict=True)
    ]
    with transaction.atomic():
        Embedding.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["item"], update_fields=["encoder", "vector", "created_at"]
        )
