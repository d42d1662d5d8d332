import io

import pytest

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, GoldLabel, Item


def load(project, n=5):
    rows = "title,description\n" + "".join(f"Item {i},text number {i}\n" for i in range(n))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")


def category_id(project, name="computer-vision"):
    return project.categories.get(name=name).id


@pytest.mark.django_db
def test_it_leases_items_in_order_and_prefetches_one(project, member):
    load(project)
    m = member()
    stage = actions.claim_stage(m)
    assert [lease.item.title for lease in stage] == ["Item 0", "Item 1"]
    assert actions.claim_stage(m) == stage  # a reload leases nothing new


@pytest.mark.django_db
def test_it_never_leases_an_item_to_more_people_than_it_needs(project, member):
    project.annotations_per_item = 2
    project.save()
    load(project, n=1)
    Item.objects.update(open_slots=2)
    a, b, c = member(), member(), member()
    assert actions.claim_next_item(a) is not None
    assert actions.claim_next_item(b) is not None
    assert actions.claim_next_item(c) is None
    assert actions.claim_next_item(a) is None  # never twice to the same person


@pytest.mark.django_db
def test_it_stores_a_retried_submit_once(project, member):
    load(project, n=1)
    m = member()
    lease = actions.claim_next_item(m)
    first = actions.submit_annotation(m, lease.item_id, [category_id(project)], "req-1")
    again = actions.submit_annotation(m, lease.item_id, [category_id(project)], "req-1")
    assert first.pk == again.pk
    assert Annotation.objects.count() == 1
    assert GoldLabel.objects.get(item_id=lease.item_id).source == GoldLabel.Source.CONSENSUS


@pytest.mark.django_db
def test_it_undoes_the_last_submission(project, member):
    load(project, n=3)
    m = member()
    stage = actions.claim_stage(m)
    actions.submit_annotation(m, stage[0].item_id, [category_id(project)], "r1")
    lease = actions.undo_last_annotation(m)
    assert lease.item_id == stage[0].item_id
    assert actions.live_leases(project, m.user)[0].item_id == stage[0].item_id
    assert not Annotation.objects.exists() and not GoldLabel.objects.exists()
    with pytest.raises(actions.NothingToUndo):
        actions.undo_last_annotation(m)


@pytest.mark.django_db
def test_it_returns_expired_leases_to_the_pool(project, member):
    from datetime import timedelta

    from django.utils import timezone

    load(project, n=1)
    a, b = member(), member()
    actions.claim_next_item(a)
    assert actions.claim_next_item(b) is None
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert actions.claim_next_item(b) is not None


@pytest.mark.django_db
def test_it_skips_without_offering_the_item_again(project, member):
    load(project, n=1)
    m = member()
    lease = actions.claim_next_item(m)
    actions.skip_item(m, lease.item_id)
    assert actions.claim_next_item(m) is None
    assert Item.objects.get().open_slots == 1
