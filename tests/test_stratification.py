"""Iterative stratification (labeling.stratification): every label keeps its share in each subset,
groups are never split, subsets that already hold examples are topped up, results are stable."""
import random
from collections import Counter

import pytest

from labeling.stratification import Subset, stratify

LABELS = ["a", "b", "c", "d", "e"]


def random_sets(count: int, seed: int = 0) -> list[list[str]]:
    """Multi-label sets with skewed label frequencies (a common, e rare) and 1-3 labels each."""
    rng = random.Random(seed)
    return [
        rng.choices(LABELS, weights=[50, 25, 12, 8, 5], k=rng.choice([1, 1, 2, 3]))
        for _ in range(count)
    ]


def per_subset(label_sets, sides, subsets=2) -> list[Counter]:
    counts = [Counter() for _ in range(subsets)]
    for labels, side in zip(label_sets, sides, strict=True):
        counts[side].update(set(labels))
    return counts


def test_it_gives_each_label_its_share_of_the_holdout():
    label_sets = random_sets(600)
    sides = stratify(label_sets, [0.8, 0.2])
    train, holdout = per_subset(label_sets, sides)
    for label in LABELS:
        total = train[label] + holdout[label]
        assert abs(holdout[label] - 0.2 * total) <= 1.5, (label, holdout[label], total)
    assert abs(sides.count(1) - 120) <= 6


def test_it_beats_a_random_split_on_the_rarest_label():
    """What the method is for: a random 20% can miss a rare label's share badly; this cannot."""
    label_sets = [["rare"]] * 5 + [["common"]] * 95
    sides = stratify(label_sets, [0.8, 0.2])
    assert per_subset(label_sets, sides)[1]["rare"] == 1


def test_it_makes_folds_with_every_label_spread_evenly():
    label_sets = random_sets(500, seed=3)
    folds = stratify(label_sets, [1] * 5, seed=3)
    counts = per_subset(label_sets, folds, subsets=5)
    for label in LABELS:
        shares = [fold[label] for fold in counts]
        assert max(shares) - min(shares) <= 2, (label, shares)


def test_it_never_splits_a_group():
    label_sets = random_sets(300, seed=1)
    groups = [n // 3 for n in range(300)]  # near-duplicate triples
    sides = stratify(label_sets, [0.8, 0.2], groups=groups)
    by_group = {}
    for group, side in zip(groups, sides, strict=True):
        assert by_group.setdefault(group, side) == side
    assert 0 < sides.count(1) < 300


def test_it_tops_up_subsets_that_already_hold_examples():
    # The holdout already has 10 "a" and no "b": new "a" items all go to train, "b" gets its share.
    existing = [Subset(Counter({"a": 30}), 30), Subset(Counter({"a": 10}), 10)]
    label_sets = [["a"]] * 10 + [["b"]] * 10
    sides = stratify(label_sets, [0.8, 0.2], existing=existing)
    assert sides[:10] == [0] * 10
    assert sides[10:].count(1) == 2


def test_it_places_items_without_labels_by_size():
    sides = stratify([[]] * 10, [0.8, 0.2])
    assert sides.count(1) == 2


def test_it_is_stable_for_a_seed():
    label_sets = random_sets(200, seed=5)
    assert stratify(label_sets, [0.8, 0.2], seed=7) == stratify(label_sets, [0.8, 0.2], seed=7)


@pytest.mark.parametrize("proportions", [[], [0.8, -0.2], [0, 0]])
def test_it_refuses_bad_proportions(proportions):
    with pytest.raises(ValueError, match="Proportions"):
        stratify([["a"]], proportions)


def test_it_refuses_mismatched_groups_and_subsets():
    with pytest.raises(ValueError, match="group keys"):
        stratify([["a"], ["b"]], [1, 1], groups=[1])
    with pytest.raises(ValueError, match="existing subsets"):
        stratify([["a"]], [1, 1], existing=[Subset()])
