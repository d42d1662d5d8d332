"""Several reviewers working one queue at once, on PostgreSQL, each thread with its own connection:
nobody gets an item someone else holds, and every item is decided exactly once."""

import io
import threading
import uuid
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from labeling import actions, review
from labeling.importer import import_items
from labeling.models import Annotation, GoldLabel, Item, Review, ReviewQueue

REVIEWERS = 6
ITEMS = 100


def disputed_queue(project):
    """ITEMS items with two disagreeing annotations each, straight into the disagreement queue."""
    rows = "title,description\n" + "".join(f"Item {i},text {i}\n" for i in range(ITEMS))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    annotators = [actions.add_member(project, person(f"annotator{n}")) for n in range(2)]
    labels = [project.categories.get(name="mlops").id, project.categories.get(name="other").id]
    items = list(Item.objects.filter(project=project))
    Annotation.objects.bulk_create(
        Annotation(
            item=item,
            annotator=m.user,
            project=project,
            categories=[label],
            client_request_id=uuid.uuid4().hex,
        )
        for item in items
        for m, label in zip(annotators, labels, strict=True)
    )
    Item.objects.filter(project=project).update(
        status=Item.Status.COMPLETED,
        review_queue=ReviewQueue.DISAGREEMENT,
        annotation_count=2,
        open_slots=0,
    )


def person(username):
    return get_user_model().objects.create_user(username)  # no password: no hashing cost


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_never_gives_two_reviewers_the_same_item(project):
    disputed_queue(project)
    reviewers = [
        actions.add_member(project, person(f"reviewer{n}"), "reviewer") for n in range(REVIEWERS)
    ]
    category = project.categories.get(name="computer-vision").id
    start = threading.Barrier(REVIEWERS)
    claims: dict[int, list[int]] = {m.user_id: [] for m in reviewers}
    overlaps, errors = [], []
    holding: dict[int, int] = {}  # item id -> reviewer currently holding it
    lock = threading.Lock()

    def work(membership):
        try:
            start.wait()
            while True:
                item = review.claim_review(membership, ReviewQueue.DISAGREEMENT)
                if item is None:
                    return
                with lock:
                    if item.pk in holding:
                        overlaps.append((item.pk, holding[item.pk], membership.user_id))
                    holding[item.pk] = membership.user_id
                claims[membership.user_id].append(item.pk)
                review.decide_review(
                    membership, item.pk, "correct", uuid.uuid4().hex, category_ids=[category]
                )
                with lock:
                    del holding[item.pk]  # only once the decision has committed
        except Exception as exc:  # noqa: BLE001 — reported below, with the thread it happened in
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(m,)) for m in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    assert errors == []
    assert overlaps == []
    claimed = [pk for pks in claims.values() for pk in pks]
    assert len(claimed) == len(set(claimed)) == ITEMS  # each item claimed by exactly one reviewer
    assert sum(1 for pks in claims.values() if pks) >= 2  # the work really was shared
    per_item = Counter(Review.objects.values_list("item_id", flat=True))
    assert len(per_item) == ITEMS and set(per_item.values()) == {1}
    assert GoldLabel.objects.filter(source=GoldLabel.Source.REVIEW).count() == ITEMS
    assert not Item.objects.exclude(review_queue="").exists()
