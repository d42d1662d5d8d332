"""The gold holdout: stratified, frozen once assigned, near-duplicates always on one side."""

import csv
import io
import uuid
from collections import Counter, defaultdict

import pytest

from labeling import actions
from labeling.importer import import_items
from labeling.models import GoldLabel, Item, Split
from labeling.review import assign_splits


@pytest.fixture(autouse=True)
def no_honeypots(project):
    """Claims in these tests must get the item just imported, never a known-gold check."""
    project.honeypot_percent = 0
    project.save()


def import_gold(project, rows):
    """rows: (title, text, label); label None imports the item without a gold label."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["title", "description", "tag"])
    writer.writerows((title, text, label or "") for title, text, label in rows)
    import_items(project, io.BytesIO(out.getvalue().encode()), "gold.csv")


def labelled(label, n, start=0):
    return [
        (f"{label} item {i}", f"words about {label} number {i}", label)
        for i in range(start, start + n)
    ]


def splits(project):
    return dict(Item.objects.filter(project=project).values_list("id", "split"))


def holdout_by_label(project, categories):
    names = {c.id: c.name for c in categories}
    counts = defaultdict(Counter)
    for labels, split in GoldLabel.objects.filter(project=project).values_list(
        "categories", "item__split"
    ):
        counts[names[labels[0]]][split] += 1
    return counts


@pytest.mark.django_db
def test_it_holds_out_about_a_fifth_of_each_label(project):
    import_gold(
        project, labelled("mlops", 50) + labelled("other", 25) + labelled("computer-vision", 10)
    )
    assigned = assign_splits(project)
    assert assigned == {Split.TRAIN: 68, Split.HOLDOUT: 17}
    counts = holdout_by_label(project, project.categories.all())
    for label, n in (("mlops", 50), ("other", 25), ("computer-vision", 10)):
        assert counts[label][Split.HOLDOUT] + counts[label][Split.TRAIN] == n
        assert abs(counts[label][Split.HOLDOUT] - n * 0.2) <= 1, (label, counts[label])


@pytest.mark.django_db
def test_it_follows_the_projects_holdout_percent(project):
    project.holdout_percent = 50
    project.save()
    import_gold(project, labelled("mlops", 40))
    assign_splits(project)
    assert Item.objects.filter(split=Split.HOLDOUT).count() == 20


@pytest.mark.django_db
def test_it_never_changes_an_assigned_split_on_a_rerun(project):
    import_gold(project, labelled("mlops", 30) + labelled("other", 30))
    assign_splits(project)
    before = splits(project)
    project.holdout_percent = 90  # even a changed setting does not move items already split
    project.save()
    assert assign_splits(project) == {Split.TRAIN: 0, Split.HOLDOUT: 0}
    assert splits(project) == before


@pytest.mark.django_db
def test_it_keeps_old_splits_and_stays_stratified_when_new_gold_arrives(project, member):
    import_gold(project, labelled("mlops", 20) + labelled("other", 10))
    assign_splits(project)
    before = {k: v for k, v in splits(project).items()}
    import_gold(project, labelled("mlops", 30, start=20) + labelled("other", 15, start=10))
    # ...and one more gold label decided by people (k=1 consensus).
    import_gold(project, [("fresh", "an item labeled in the app", None)])
    annotator = member()
    lease = actions.claim_next_item(annotator)
    actions.submit_annotation(
        annotator, lease.item_id, [project.categories.get(name="other").id], uuid.uuid4().hex
    )

    assigned = assign_splits(project)
    assert assigned[Split.TRAIN] + assigned[Split.HOLDOUT] == 46
    after = splits(project)
    assert {k: after[k] for k in before} == before
    assert after[lease.item_id] in (Split.TRAIN, Split.HOLDOUT)
    counts = holdout_by_label(project, project.categories.all())
    assert abs(counts["mlops"][Split.HOLDOUT] - 50 * 0.2) <= 1
    assert abs(counts["other"][Split.HOLDOUT] - 26 * 0.2) <= 1


@pytest.mark.django_db
def test_it_never_puts_near_duplicates_on_both_sides(project):
    rows = []
    for i in range(40):
        label = ("mlops", "other", "computer-vision")[i % 3]
        rows.append((f"Deep Learning, part {i}!", f"A model; trained on {i} GPUs.", label))
        # The same words, other punctuation and case: a near-duplicate, not an exact duplicate.
        rows.append((f"deep learning part {i}", f"a model trained on {i} gpus", "other"))
    import_gold(project, rows)
    assert Item.objects.count() == 80  # the importer kept both of every pair
    assign_splits(project)
    groups = defaultdict(set)
    for key, split in Item.objects.values_list("near_dup_key", "split"):
        groups[key].add(split)
    assert len(groups) == 40
    assert all(len(sides) == 1 for sides in groups.values()), groups
    assert 8 <= Item.objects.filter(split=Split.HOLDOUT).count() <= 24  # the holdout is not empty


@pytest.mark.django_db
def test_it_puts_a_late_near_duplicate_on_its_twins_side(project, member):
    project.holdout_percent = 100
    project.save()
    import_gold(project, [("Vision Transformers!", "Patches, attention.", "computer-vision")])
    assign_splits(project)
    assert Item.objects.get().split == Split.HOLDOUT

    project.holdout_percent = 0
    project.save()
    import_gold(project, [("vision transformers", "patches attention", None)])
    annotator = member()
    lease = actions.claim_next_item(annotator)
    actions.submit_annotation(
        annotator, lease.item_id, [project.categories.get(name="mlops").id], uuid.uuid4().hex
    )
    assign_splits(project)
    assert Item.objects.get(pk=lease.item_id).split == Split.HOLDOUT  # not train, despite 0%
