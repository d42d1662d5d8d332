"""The queue's guarantees under real concurrency: 20 threads, each a different annotator with its
own database connection, claim and submit until the pool is empty.

Guarantees checked: no item gets more than k annotations, none two from one person, every submit a
thread saw acknowledged is stored (client count == database count), every item ends with exactly k,
and no item's free-slot counter is ever seen below zero (a monitor samples it during the run).
On PostgreSQL (marked `postgres`) the claim is FOR UPDATE SKIP LOCKED; the same test runs on the
SQLite file database, where writers are serialised (BEGIN IMMEDIATE, 30 s busy timeout).
"""
import io
import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

import pytest
from django.db import connection
from django.db.models import Count, Max, Min

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, Item, Membership

from .conftest import is_postgres

THREADS = 20
ITEMS = 200
# Each annotator walks away from at most this many items in the abandoning variant.
MAX_ABANDONED = 3

VARIANTS = {
    # name: (k, lease minutes, share of claims an annotator abandons)
    "k2": (2, 10, 0.0),
    # Zero-minute leases expire the moment they are handed out: every claim that finds the queue
    # empty releases everyone's leases, so submits race releases and re-claims all the time.
    "k2-expiring-leases-some-abandoned": (2, 0, 0.1),
    "k1": (1, 10, 0.0),
}


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Tally:
    acknowledged: int = 0
    abandoned: int = 0
    lost: int = 0
    claim_seconds: list = field(default_factory=list)
    submit_seconds: list = field(default_factory=list)


def annotate_until_empty(membership_id, category_ids, abandon_rate, start, tally: Tally, errors: list):
    """One annotator: claim, then submit (or walk away), until the queue is empty for them."""
    rng = random.Random(membership_id)
    try:
        membership = Membership.objects.select_related("project", "user").get(pk=membership_id)
        start.wait()
        while True:
            began = time.perf_counter()
            lease = actions.claim_next_item(membership)
            tally.claim_seconds.append(time.perf_counter() - began)
            if lease is None:
                return
            if tally.abandoned < MAX_ABANDONED and rng.random() < abandon_rate:
                tally.abandoned += 1
                continue
            began = time.perf_counter()
            try:
                actions.submit_annotation(
                    membership, lease.item_id, [rng.choice(category_ids)], f"lease-{lease.pk}-item-{lease.item_id}"
                )
            except actions.LeaseLost:
                tally.lost += 1  # its lease expired and the slot went to someone else: not acknowledged
            else:
                tally.acknowledged += 1
            tally.submit_seconds.append(time.perf_counter() - began)
    except Exception as exc:  # noqa: BLE001 — reported by the test, with the thread's name
        errors.append(f"{threading.current_thread().name}: {exc!r}")
    finally:
        connection.close()


def watch_counters(k, stop, seen: dict):
    """Sample the lowest free-slot count and the highest annotation count while the threads run."""
    try:
        while not stop.is_set():
            row = Item.objects.aggregate(low=Min("open_slots"), high=Max("annotation_count"))
            seen["lowest_open_slots"] = min(seen["lowest_open_slots"], row["low"])
            seen["highest_annotation_count"] = max(seen["highest_annotation_count"], row["high"])
            seen["samples"] += 1
            time.sleep(0.01)
    finally:
        connection.close()


def run_pool(project, make_user, variant):
    k, lease_minutes, abandon_rate = VARIANTS[variant]
    project.annotations_per_item, project.lease_minutes, project.honeypot_percent = k, lease_minutes, 0
    project.save()
    rows = "title,description\n" + "".join(f"Item {i},text number {i}\n" for i in range(ITEMS))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    category_ids = list(project.categories.values_list("id", flat=True))
    members = [actions.add_member(project, make_user()) for _ in range(THREADS)]

    start, stop = threading.Barrier(THREADS + 1), threading.Event()
    tallies, errors = {m.pk: Tally() for m in members}, []
    seen = {"lowest_open_slots": k, "highest_annotation_count": 0, "samples": 0}
    workers = [
        threading.Thread(
            target=annotate_until_empty, name=f"annotator-{i}",
            args=(m.pk, category_ids, abandon_rate, start, tallies[m.pk], errors),
        )
        for i, m in enumerate(members)
    ]
    monitor = threading.Thread(target=watch_counters, args=(k, stop, seen))
    for thread in workers:
        thread.start()
    monitor.start()
    start.wait()
    began = time.perf_counter()
    for thread in workers:
        thread.join(timeout=300)
    elapsed = time.perf_counter() - began
    stop.set()
    monitor.join(timeout=30)
    assert not any(thread.is_alive() for thread in workers + [monitor]), "a thread is stuck"
    assert errors == []

    # SKIP LOCKED can make the queue look empty to one claim while another claim holds the last
    # row's lock, so a thread may stop a moment early; one more pass per annotator finds what is left.
    swept = 0
    for membership in Membership.objects.filter(project=project).select_related("project", "user"):
        while (lease := actions.claim_next_item(membership)) is not None:
            actions.submit_annotation(membership, lease.item_id, [category_ids[0]], f"sweep-{lease.pk}")
            swept += 1

    claims = sorted(s for t in tallies.values() for s in t.claim_seconds)
    submits = sorted(s for t in tallies.values() for s in t.submit_seconds)
    report = {
        "backend": connection.vendor, "variant": variant, "threads": THREADS, "items": ITEMS, "k": k,
        "seconds": round(elapsed, 2),
        "acknowledged": sum(t.acknowledged for t in tallies.values()),
        "abandoned": sum(t.abandoned for t in tallies.values()),
        "lost_leases": sum(t.lost for t in tallies.values()),
        "swept_after": swept,
        "claim_ms_p50": round(1000 * statistics.median(claims), 1),
        "claim_ms_p95": round(1000 * claims[int(0.95 * (len(claims) - 1))], 1),
        "submit_ms_p50": round(1000 * statistics.median(submits), 1),
        "submit_ms_p95": round(1000 * submits[int(0.95 * (len(submits) - 1))], 1),
        **seen,
    }
    print(json.dumps(report))
    return k, report


def assert_queue_guarantees(project, k, report):
    annotations = Annotation.objects.filter(project=project)
    assert annotations.count() == report["acknowledged"] + report["swept_after"], "an acknowledged submit is missing"
    per_item = annotations.values("item").annotate(n=Count("id")).values_list("n", flat=True)
    assert max(per_item) <= k, "an item got more than k annotations"
    twice = annotations.values("item", "annotator").annotate(n=Count("id")).filter(n__gt=1)
    assert not twice.exists(), "one person labeled an item twice"
    items = Item.objects.filter(project=project)
    assert items.count() == ITEMS
    assert set(per_item) == {k} and len(per_item) == ITEMS, "an item did not get exactly k annotations"
    assert set(items.values_list("annotation_count", flat=True)) == {k}
    assert set(items.values_list("open_slots", flat=True)) == {0}
    assert not Assignment.objects.filter(project=project, status=Assignment.Status.LEASED).exists()
    assert report["lowest_open_slots"] >= 0 and report["highest_annotation_count"] <= k
    assert report["samples"] > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_it_keeps_the_queue_guarantees_under_20_threads_on_postgresql(project, make_user, variant):
    assert is_postgres()
    k, report = run_pool(project, make_user, variant)
    assert_queue_guarantees(project, k, report)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_it_keeps_the_queue_guarantees_under_20_threads_on_sqlite(project, make_user, variant):
    if connection.vendor != "sqlite":
        pytest.skip("runs in the SQLite pass")
    k, report = run_pool(project, make_user, variant)
    assert_queue_guarantees(project, k, report)
