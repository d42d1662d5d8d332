"""Honeypots: known-gold training items mixed into an annotator's queue, indistinguishable from
normal items, recorded apart, changing nothing about the item."""

import io
import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, GoldLabel, Item, ReviewQueue, Split
from labeling.review import assign_splits


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def setup(project, gold=3, open_items=3, holdout_percent=0, honeypot_percent=100):
    project.honeypot_percent = honeypot_percent
    project.holdout_percent = holdout_percent
    project.save()
    rows = ["title,description,tag"]
    rows += [f"Known {i},a labeled text {i},mlops" for i in range(gold)]
    rows += [f"Fresh {i},an unlabeled text {i}," for i in range(open_items)]
    import_items(project, io.BytesIO("\n".join(rows).encode()), "items.csv")
    assign_splits(project)


def snapshot(item_id):
    item = Item.objects.get(pk=item_id)
    gold = GoldLabel.objects.get(item_id=item_id)
    return (
        item.status,
        item.annotation_count,
        item.open_slots,
        item.round,
        item.review_queue,
        gold.categories,
        gold.source,
        gold.decided_at,
    )


@pytest.mark.django_db
def test_it_gives_annotators_gold_training_items_as_honeypots_and_changes_nothing(project, member):
    setup(project)
    annotator = member()
    lease = actions.claim_next_item(annotator)
    assert lease.is_honeypot
    assert (lease.item.status, lease.item.split) == (Item.Status.GOLD, Split.TRAIN)
    before = snapshot(lease.item_id)

    wrong = project.categories.get(name="other").id
    annotation = actions.submit_annotation(annotator, lease.item_id, [wrong], uuid.uuid4().hex)
    assert annotation.is_honeypot
    assert snapshot(lease.item_id) == before  # counts, status, queue and gold untouched
    assert Annotation.objects.filter(is_honeypot=False).count() == 0


@pytest.mark.django_db
def test_it_never_uses_holdout_items_as_honeypots(project, member):
    setup(project, holdout_percent=100)
    assert Item.objects.filter(split=Split.HOLDOUT).count() == 3
    annotator = member()
    leases = [actions.claim_next_item(annotator) for _ in range(3)]
    assert [lease.is_honeypot for lease in leases] == [False, False, False]
    assert {lease.item.title for lease in leases} == {"Fresh 0", "Fresh 1", "Fresh 2"}


@pytest.mark.django_db
def test_it_never_repeats_a_honeypot_and_then_serves_normal_items(project, member):
    setup(project, gold=2, open_items=2)
    annotator = member()
    titles = []
    for _ in range(4):
        lease = actions.claim_next_item(annotator)
        titles.append((lease.item.title, lease.is_honeypot))
        actions.submit_annotation(
            annotator, lease.item_id, [project.categories.first().id], uuid.uuid4().hex
        )
    assert sorted(titles) == [
        ("Fresh 0", False),
        ("Fresh 1", False),
        ("Known 0", True),
        ("Known 1", True),
    ]
    assert actions.claim_next_item(annotator) is None
    assert Item.objects.get(title="Fresh 0").annotation_count == 1  # normal items do count


@pytest.mark.django_db
def test_it_serves_honeypots_at_the_projects_rate(project, member):
    import random

    setup(project, gold=150, open_items=150, honeypot_percent=20)
    annotator = member()
    random.seed(7)
    leases = [actions.claim_next_item(annotator) for _ in range(120)]
    share = sum(lease.is_honeypot for lease in leases) / len(leases)
    assert 0.1 <= share <= 0.3, share


def card(html: str, item: Item) -> str:
    """The item's card with what differs from item to item (id, texts, request id) blanked."""
    start = html.index(f'data-item-id="{item.id}"')
    start = html.rindex("<article", 0, start)
    block = html[start : html.index("</article>", start)]
    block = block.replace(item.title, "TITLE").replace(item.text, "TEXT")
    for pattern in (
        r'data-item-id="\d+"',
        r"item-title-\d+",
        r'name="item" value="\d+"',
        r'class="item-ref">[^<]*<',
    ):
        block = re.sub(pattern, "ITEM", block)
    return re.sub(r"[0-9a-f]{32}", "REQUEST", block)


@pytest.mark.django_db
def test_it_shows_a_honeypot_exactly_like_a_normal_item(project, member):
    setup(project, gold=1, open_items=1)
    annotator = member()
    client = Client()
    client.force_login(annotator.user)
    html = client.get(reverse("annotate", args=[project.slug])).content.decode()
    leases = {
        lease.is_honeypot: lease
        for lease in Assignment.objects.filter(annotator=annotator.user).select_related("item")
    }
    assert set(leases) == {True, False}  # the page holds one of each: the check and the next item
    honeypot, normal = leases[True].item, leases[False].item
    assert card(html, honeypot) == card(html, normal)
    lowered = html.lower()
    assert (
        "honeypot" not in lowered
        and "gold" not in lowered
        and "suggest" not in card(html, honeypot).lower()
    )

    claim = Client()
    claim.force_login(member().user)
    payload = claim.post(reverse("api-claim", args=[project.slug])).json()
    assert "status" not in payload["item"] and "is_honeypot" not in str(payload)


@pytest.mark.django_db
def test_it_records_a_honeypot_label_sent_from_the_page(project, member):
    setup(project, gold=1, open_items=0)
    annotator = member()
    client = Client()
    client.force_login(annotator.user)
    client.get(reverse("annotate", args=[project.slug]))
    item = Item.objects.get()
    before = snapshot(item.id)
    response = client.post(
        reverse("annotate_submit", args=[project.slug]),
        {
            "item": item.id,
            "category": project.categories.get(name="mlops").id,
            "request_id": "hp-1",
        },
    )
    assert response.status_code == 302
    annotation = Annotation.objects.get()
    assert annotation.is_honeypot and annotation.annotator == annotator.user
    assert snapshot(item.id) == before


@pytest.mark.django_db
def test_it_never_uses_a_gold_label_under_review_as_a_honeypot(project, member):
    setup(project, gold=2, open_items=1)
    suspect = Item.objects.get(title="Known 0")
    Item.objects.filter(pk=suspect.pk).update(review_queue=ReviewQueue.SUSPECTED)
    annotator = member()
    leases = [actions.claim_next_item(annotator) for _ in range(2)]
    assert [(lease.item.title, lease.is_honeypot) for lease in leases] == [
        ("Known 1", True),
        ("Fresh 0", False),
    ]
    assert actions.claim_next_item(annotator) is None  # the suspected one is never handed out
