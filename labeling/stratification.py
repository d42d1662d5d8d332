"""Iterative stratification of multi-label data (Sechidis, Tsoumakas and Vlahavas, 2011).

Stratifying on whole label sets fails for multi-label data: most sets are rare, so each stratum
holds an item or two. Iterative stratification balances every label on its own instead: take the
label with the fewest examples still to place, give each of its examples to the subset that
most lacks that label (ties: the subset that lacks the most examples overall, then chance), and
repeat. Rare labels are placed first, while every subset still has room for them.

Two additions for our holdout, neither in the paper:
- `groups`: examples with the same key (near-duplicates) are placed together, as one unit whose
  labels are counted once per member;
- `existing`: what each subset already holds. Splits are made once and never changed, so new
  gold items top each label up towards its target share instead of being split on their own.

Pure Python on plain lists; `iterative-stratification` on PyPI implements the paper for
scikit-learn's K-fold interface, but has neither groups nor subsets that already hold examples.
"""
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class Subset:
    """What a subset already holds: examples per label, and examples in all."""

    labels: Counter = field(default_factory=Counter)
    size: int = 0


def stratify(
    label_sets: Sequence[Sequence[Hashable]],
    proportions: Sequence[float],
    *,
    groups: Sequence[Hashable] | None = None,
    existing: Sequence[Subset] | None = None,
    seed: int = 0,
) -> list[int]:
    """The subset index (into `proportions`) of each example.

    `proportions` are relative shares, e.g. [0.8, 0.2] for train and holdout, or [1] * 5 for five
    folds. Examples are taken in the order given among equals, so a label-independent order (a
    content hash) keeps the result free of any bias in how the items arrived."""
    if not proportions or min(proportions) < 0 or sum(proportions) <= 0:
        raise ValueError(f"Proportions must be non-negative with a positive sum, not {list(proportions)}.")
    if groups is not None and len(groups) != len(label_sets):
        raise ValueError(f"{len(label_sets)} label sets but {len(groups)} group keys.")
    if existing is not None and len(existing) != len(proportions):
        raise ValueError(f"{len(proportions)} proportions but {len(existing)} existing subsets.")
    units, members = _units(label_sets, groups)
    placed = _place(units, proportions, existing or [Subset() for _ in proportions], random.Random(seed))
    result = [0] * len(label_sets)
    for unit, subset in enumerate(placed):
        for index in members[unit]:
            result[index] = subset
    return result


def _units(label_sets, groups) -> tuple[list[tuple[Counter, int]], list[list[int]]]:
    """(label counts, size) of each unit (a group, or an example on its own) and its examples."""
    keys = groups if groups is not None else range(len(label_sets))
    unit_of: dict = {}
    units: list[tuple[Counter, int]] = []
    members: list[list[int]] = []
    for index, (labels, key) in enumerate(zip(label_sets, keys, strict=True)):
        if key not in unit_of:
            unit_of[key] = len(units)
            units.append((Counter(), 0))
            members.append([])
        unit = unit_of[key]
        counts, size = units[unit]
        counts.update(set(labels))
        units[unit] = (counts, size + 1)
        members[unit].append(index)
    return units, members


def _place(units, proportions, existing: Sequence[Subset], rng: random.Random) -> list[int]:
    shares = [p / sum(proportions) for p in proportions]
    pending = Counter()
    for counts, _ in units:
        pending.update(counts)
    # How many examples of each label, and in all, each subset still lacks to reach its share.
    all_labels = set(pending).union(*(subset.labels for subset in existing))
    wanted = [
        {label: share * (pending[label] + sum(s.labels[label] for s in existing)) - subset.labels[label]
         for label in all_labels}
        for share, subset in zip(shares, existing, strict=True)
    ]
    total = sum(size for _, size in units) + sum(subset.size for subset in existing)
    wanted_size = [share * total - subset.size for share, subset in zip(shares, existing, strict=True)]
    waiting: dict = {}
    for unit, (counts, _) in enumerate(units):
        for label in counts:
            waiting.setdefault(label, []).append(unit)
    placed: list[int | None] = [None] * len(units)

    def put(unit: int, label=None) -> None:
        def need(j: int) -> tuple[float, float]:
            # Rounded: shares such as 0.2 leave float dust that would turn ties into choices.
            return (round(wanted[j][label], 9) if label is not None else 0.0, round(wanted_size[j], 9))

        top = max(need(j) for j in range(len(shares)))
        ties = [j for j in range(len(shares)) if need(j) == top]
        subset = ties[0] if len(ties) == 1 else rng.choice(ties)
        placed[unit] = subset
        counts, size = units[unit]
        for other, count in counts.items():
            wanted[subset][other] -= count
        wanted_size[subset] -= size

    while True:
        left = {label: [u for u in units_of if placed[u] is None] for label, units_of in waiting.items()}
        left = {label: units_of for label, units_of in left.items() if units_of}
        if not left:
            break
        # The rarest label still to place first (ties broken by name, for a stable result).
        label = min(left, key=lambda name: (len(left[name]), str(name)))
        for unit in left[label]:
            put(unit, label)
        del waiting[label]
    for unit, subset in enumerate(placed):
        if subset is None:  # no labels at all: only the subsets' sizes matter
            put(unit)
    return placed
