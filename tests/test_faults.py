"""Faults that can be staged without stopping a shared service (other test runs use the same
PostgreSQL and Redis): a broker nobody listens on, and a PostgreSQL backend killed in the middle of
a request's transaction or unreachable for a moment. Every case is bounded in time.

The stopped-service versions (SIGKILL of a worker, Redis and PostgreSQL stopped and restarted) run
on private instances in tests/test_faults_stopped.py."""

import io
import socket
import threading
import time
import uuid

import psycopg2
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, Item, Role

from .broker import forget_broker_connections

PASSWORD = "pw-for-tests-1"


def closed_port() -> int:
    """A loopback port with nothing listening: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def claimed_item(membership) -> int:
    if not Item.objects.filter(project=membership.project).exists():
        import_items(membership.project, io.BytesIO(b"text\none\ntwo\nthree\n"), "items.csv")
    return actions.claim_stage(membership, depth=1)[0].item_id


def in_thread(work) -> threading.Thread:
    """Run `work` on its own database connection (as a second web worker would), closed after."""

    def run():
        try:
            work()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def submit(client, slug, item_id, category_id):
    return client.post(
        reverse("annotate_submit", args=[slug]),
        {"item": item_id, "category": category_id, "request_id": uuid.uuid4().hex},
    )


# --- the broker is unreachable -------------------------------------------------------------------


@pytest.fixture
def dead_broker():
    """Point this process's Celery app at a port nobody listens on; restore it afterwards."""
    from config.celery import app

    saved = app.conf.broker_url
    app.conf.broker_url = f"redis://127.0.0.1:{closed_port()}/0"
    forget_broker_connections(app)
    yield app
    app.conf.broker_url = saved
    forget_broker_connections(app)


@pytest.mark.django_db(transaction=True)
def test_it_keeps_labeling_while_the_broker_is_unreachable(dead_broker, project, member):
    from kombu.exceptions import OperationalError

    from labeling.tasks import recount_progress

    # The fault is real: publishing straight to this broker fails.
    with pytest.raises(OperationalError):
        recount_progress.apply_async((project.pk,))

    started = time.monotonic()
    import_items(
        project, io.BytesIO(b"text\none\ntwo\nthree\n"), "items.csv"
    )  # queues its follow-up (a recount among it) on commit
    membership = member(Role.ANNOTATOR)
    client = Client()
    client.force_login(membership.user)
    category = project.categories.first().pk
    assert (
        client.get(reverse("dashboard", args=[project.slug])).status_code == 200
    )  # may queue a recount
    for _ in range(3):
        item_id = claimed_item(membership)
        response = submit(client, project.slug, item_id, category)
        assert response.status_code == 302
    elapsed = time.monotonic() - started
    print(
        f"labeling with the broker unreachable: {elapsed:.1f} s for import + dashboard + 3 submits"
    )

    assert Annotation.objects.filter(annotator=membership.user).count() == 3
    # Each publish gives up within the connect timeout and retry policy: seconds, not minutes.
    assert elapsed < 30


# --- PostgreSQL fails under a request ------------------------------------------------------------


def _outside_connection():
    settings = connection.settings_dict
    return psycopg2.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        connect_timeout=5,
    )


def _wait_for_blocked_backend(outside, timeout=10.0) -> int:
    """The pid of a backend of the test database that waits on a row lock."""
    deadline = time.monotonic() + timeout
    with outside.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            row = cursor.fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError("the submit never reached the locked item row")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_answers_503_and_writes_nothing_when_the_backend_dies_mid_transaction(project, member):
    membership = member(Role.ANNOTATOR)
    item_id = claimed_item(membership)
    category = project.categories.first().pk
    client = Client()
    client.force_login(membership.user)
    responses = []

    # Another session holds the item row, so the submit stops after it has inserted the annotation
    # and marked the lease, inside its transaction; then that backend is killed.
    blocker = _outside_connection()
    with blocker.cursor() as cursor:
        cursor.execute("BEGIN; SELECT id FROM labeling_item WHERE id = %s FOR UPDATE", [item_id])
    thread = in_thread(lambda: responses.append(submit(client, project.slug, item_id, category)))
    outside = _outside_connection()
    outside.autocommit = True
    try:
        pid = _wait_for_blocked_backend(outside)
        with outside.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        thread.join(timeout=20)
    finally:
        blocker.rollback()
        blocker.close()
        outside.close()
    assert not thread.is_alive()

    response = responses[0]
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert b"Nothing from this request was saved" in response.content
    # Nothing half-written: no annotation, the lease still open, the item's count untouched.
    assert not Annotation.objects.filter(item_id=item_id).exists()
    assert (
        Assignment.objects.get(item_id=item_id, annotator=membership.user).status
        == Assignment.Status.LEASED
    )
    assert Item.objects.get(pk=item_id).annotation_count == 0

    # Recovery without a restart: the same client's next request gets a fresh connection.
    again = in_thread(lambda: responses.append(submit(client, project.slug, item_id, category)))
    again.join(timeout=20)
    assert responses[1].status_code == 302
    assert Annotation.objects.filter(item_id=item_id).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_answers_503_while_postgres_is_unreachable_and_recovers_after(project, member):
    membership = member(Role.ANNOTATOR)
    item_id = claimed_item(membership)
    category = project.categories.first().pk
    client = Client()
    client.force_login(membership.user)
    port = connection.settings_dict["PORT"]

    connection.close()
    connection.settings_dict["PORT"] = str(closed_port())  # as if the server were down
    try:
        started = time.monotonic()
        page = client.get(reverse("annotate", args=[project.slug]))
        api = client.get(reverse("api-projects"))
        posted = submit(client, project.slug, item_id, category)
        elapsed = time.monotonic() - started
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port

    assert page.status_code == 503 and page["Retry-After"] == "5"
    assert b"Temporarily unavailable" in page.content
    assert api.status_code == 503 and "unavailable" in api.json()["detail"]
    assert posted.status_code == 503
    assert elapsed < 15
    assert not Annotation.objects.filter(item_id=item_id).exists()

    assert client.get(reverse("annotate", args=[project.slug])).status_code == 200
    assert submit(client, project.slug, item_id, category).status_code == 302
    assert Annotation.objects.filter(item_id=item_id).count() == 1
