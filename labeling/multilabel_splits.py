"""The gold holdout of a multi-label project: iterative stratification per category.

Called by `review.assign_splits` for each batch of gold items without a split, inside its
transaction (which holds the project's row lock, so one assigner at a time). The same promises as
the single-label split: an item's split, once made, never changes, and near-duplicates (same
letters and digits) always share one side, including a side chosen in an earlier batch.
"""
from collections.abc import Sequence

from .models import GoldLabel, Item, Project, Split, near_dup_key
from .stratification import Subset, stratify

SIDES = [Split.TRAIN, Split.HOLDOUT]  # the subset order given to `stratify`
_IN_CHUNK = 500  # keys per IN (...) query: well under SQLite's bound-parameter limit


def holdings(project: Project) -> list[Subset]:
    """Examples per category already on each side (in SIDES order), from the gold labels."""
    subsets = {side: Subset() for side in SIDES}
    rows = GoldLabel.objects.filter(project=project).exclude(item__split=Split.NONE).values_list(
        "categories", "item__split"
    )
    for categories, split in rows.iterator(chunk_size=10000):
        _add(subsets[split], categories)
    return [subsets[side] for side in SIDES]


def assign(project: Project, pending: Sequence[Item], held: list[Subset]) -> list[str]:
    """Choose, store and return the split of each pending item (`item.gold` loaded); `held` is
    updated with them so the next batch tops up from there."""
    for item in pending:
        item.near_dup_key = item.near_dup_key or near_dup_key(item.title, item.text)
    chosen = _twin_splits(project, {item.near_dup_key for item in pending})
    for item in pending:
        if item.near_dup_key in chosen:  # counted first, so the stratified ones make up for them
            _add(held[SIDES.index(chosen[item.near_dup_key])], item.gold.categories)
    free = [item for item in pending if item.near_dup_key not in chosen]
    sides = stratify(
        [item.gold.categories for item in free],
        [100 - project.holdout_percent, project.holdout_percent],
        groups=[item.near_dup_key for item in free],
        existing=held,
        seed=project.pk,
    )
    for item, side in zip(free, sides, strict=True):
        chosen[item.near_dup_key] = SIDES[side]
        _add(held[side], item.gold.categories)
    for item in pending:
        Item.objects.filter(pk=item.pk).update(split=chosen[item.near_dup_key], near_dup_key=item.near_dup_key)
    return [chosen[item.near_dup_key] for item in pending]


def _twin_splits(project: Project, keys: set[str]) -> dict[str, str]:
    """The split already taken by each near-duplicate group that has one."""
    found: dict[str, str] = {}
    keys = sorted(keys)
    for start in range(0, len(keys), _IN_CHUNK):
        rows = (
            Item.objects.filter(project=project, near_dup_key__in=keys[start : start + _IN_CHUNK])
            .exclude(split=Split.NONE)
            .values_list("near_dup_key", "split")
        )
        found.update(rows)
    return found


def _add(subset: Subset, categories) -> None:
    subset.labels.update(set(categories))
    subset.size += 1
