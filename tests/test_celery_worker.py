"""Our tasks in a real Celery worker (a subprocess on Redis, not eager mode) against the test's own
database, and imports that keep working when the broker is down or hangs.

Each test gets its own queue name, so workers of other test runs on the same Redis never take its
messages (and it never takes theirs). The worker is told the test database through DATABASE_URL:
on SQLite the test file, on PostgreSQL test_<name><suffix>.
"""
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from labeling import actions
from labeling.importer import import_items
from labeling.models import Item
from labeling.tasks import recount_progress

from . import services
from .conftest import require

BIN = Path(sys.executable).parent
WAIT_SECONDS = 60


def database_url_of_test_db() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def env_for(broker_url: str, queue: str) -> dict:
    return {
        **os.environ,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "DATABASE_URL": database_url_of_test_db(),
        "DB_CONN_MAX_AGE": "0",  # hold no connection open that would stop the test database being dropped
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def queue():
    require(services.redis_reachable(), "Redis")
    name = f"labelloop-test-{uuid.uuid4().hex[:12]}"
    yield name
    broker = redis.Redis.from_url(services.REDIS_URL)
    for key in broker.scan_iter(f"*{name}*"):
        broker.delete(key)


@pytest.fixture
def worker(queue, tmp_path):
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(BIN / "celery"), "-A", "config", "worker", "--pool=solo", "-Q", queue, "-n", f"{queue}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
            ],
            cwd=settings.BASE_DIR, env=env_for(services.REDIS_URL, queue), stdout=log, stderr=subprocess.STDOUT,
        )
    process.log_path = log_path
    yield process
    process.terminate()  # warm shutdown: finishes the task in hand, then exits
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_progress(project, worker, expected: dict) -> float:
    """Seconds until the worker has written `expected` into project.progress; fails after WAIT_SECONDS."""
    began = time.monotonic()
    while time.monotonic() - began < WAIT_SECONDS:
        project.refresh_from_db(fields=["progress"])
        if {key: project.progress.get(key) for key in expected} == expected:
            return time.monotonic() - began
        if worker.poll() is not None:
            pytest.fail(f"the worker exited with {worker.returncode}:\n{worker.log_path.read_text()}")
        time.sleep(0.2)
    pytest.fail(f"no progress after {WAIT_SECONDS}s: {project.progress}\n{worker.log_path.read_text()}")


def load(project, n):
    rows = "title,description\n" + "".join(f"Item {i},text number {i}\n" for i in range(n))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_it_recounts_progress_in_a_real_worker(project, member, worker, queue):
    load(project, 5)
    annotator = member()
    lease = actions.claim_next_item(annotator)
    actions.submit_annotation(annotator, lease.item_id, [project.categories.first().id], "r1")
    assert project.progress == {}

    with celery_app.connection_for_write(services.REDIS_URL) as broker:
        recount_progress.apply_async((project.pk,), queue=queue, connection=broker)
    seconds = wait_for_progress(project, worker, {"items": 5, "open": 4, "completed": 0, "gold": 1, "annotations": 1})
    print(f"recount_progress: queued to done in {seconds:.2f}s (worker start-up included)")
    assert "succeeded" in worker.log_path.read_text()


def manage(*args, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env,
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def items_file(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("title,description\n" + "".join(f"Row {i},words of row {i}\n" for i in range(7)))
    return path


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_it_queues_a_recount_when_an_import_commits(project, worker, queue, items_file):
    began = time.monotonic()
    done = manage("import_items", "--project", project.slug, str(items_file), env=env_for(services.REDIS_URL, queue))
    assert done.returncode == 0, done.stderr
    wait_for_progress(project, worker, {"items": 7, "open": 7})
    print(f"import command (a new process) → delay_on_commit → worker recount: {time.monotonic() - began:.2f}s")


def import_seconds(output: str) -> float:
    return float(re.search(r"in ([\d.]+)s\.", output).group(1))


@pytest.mark.django_db(transaction=True)
def test_it_imports_when_the_broker_refuses_connections(project, items_file):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    done = manage("import_items", "--project", project.slug, str(items_file), env=env_for(dead, "unused"))
    assert done.returncode == 0, done.stderr
    assert Item.objects.filter(project=project).count() == 7
    assert "Could not queue labeling.tasks.follow_up_import" in done.stderr
    print(f"import with a refusing broker: {import_seconds(done.stdout):.2f}s")
    assert import_seconds(done.stdout) < 5


@pytest.fixture
def silent_broker():
    """A TCP server that accepts connections and never answers: a hung broker."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_it_imports_when_the_broker_hangs(project, items_file, silent_broker):
    done = manage("import_items", "--project", project.slug, str(items_file), env=env_for(silent_broker, "unused"))
    assert done.returncode == 0, done.stderr
    assert Item.objects.filter(project=project).count() == 7
    assert "Could not queue labeling.tasks.follow_up_import" in done.stderr
    # One publish (the import's follow-up), bounded by the broker's 3 s socket timeout
    # (settings), not by TCP's minutes.
    print(f"import with a hung broker: {import_seconds(done.stdout):.2f}s")
    assert done.stderr.count("Could not queue") == 1
    assert import_seconds(done.stdout) < 8
