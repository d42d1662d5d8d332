"""The load test in small (`make load` is the full one: 50 annotators + 5 reviewers, 300 s, 100k
items): bench/load.py against a real gunicorn on PostgreSQL, then its audit of the database.

What must hold under concurrency is asserted, not the timings (the machine is shared): no item
leased to more people than it needs, nobody annotating an item twice, every acknowledged
submission and review stored (client count = database count), and no 5xx or dropped connection.
"""
import json
import os
import subprocess
import sys

import dj_database_url
import psycopg2
import pytest
from django.conf import settings

from . import services
from .conftest import require

# Runs once, in the PostgreSQL pass; it brings its own database and server either way.
pytestmark = pytest.mark.postgres


@pytest.fixture
def database_name():
    name = f"labelloop_load_short{os.environ.get('TEST_DB_SUFFIX', '')}_{os.getpid()}"
    yield name
    config = dj_database_url.parse(services.POSTGRES_URL)
    admin = psycopg2.connect(
        dbname=config["NAME"], user=config["USER"], password=config["PASSWORD"] or None,
        host=config["HOST"] or "127.0.0.1", port=config["PORT"] or 5432, connect_timeout=5,
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_it_keeps_every_invariant_under_a_short_load(database_name):
    require(services.postgres_reachable(), "PostgreSQL")
    env = {**os.environ, "BENCH_POSTGRES_URL": services.POSTGRES_URL}
    env.pop("DATABASE_URL", None)  # load.py makes its own database on that server
    done = subprocess.run(
        [
            sys.executable, "bench/load.py", "--annotators", "8", "--reviewers", "2", "--seconds", "20",
            "--items", "2000", "--k", "2", "--workers", "2", "--threads", "4", "--database", database_name,
        ],
        cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{\n"):])
    print(json.dumps({k: report[k] for k in ("requests", "requests_per_second", "errors", "audit")}))

    audit = report["audit"]
    assert audit["items_over_leased"] == 0
    assert audit["annotated_twice"] == 0
    assert audit["annotations_acknowledged"] == audit["annotations_in_db"] > 0
    assert audit["reviews_acknowledged"] == audit["reviews_in_db"] > 0
    assert audit["ok"]
    server_errors = {
        endpoint: {status: n for status, n in figures["statuses"].items() if int(status) >= 500 or int(status) == 0}
        for endpoint, figures in report["endpoints"].items()
    }
    assert not any(server_errors.values()), server_errors
    assert report["errors"] == 0
