"""`make load` / `python bench/load.py`: annotators and reviewers hammering a real gunicorn over
loopback, then an audit of the database. Prints one JSON object.

    python bench/load.py                              # 20 annotators, 2 reviewers, 60 s, 10k items
    python bench/load.py --annotators 50 --reviewers 5 --seconds 300 --items 100000

Needs PostgreSQL (BENCH_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres); the
database `labelloop_load` is dropped and made afresh each run and left afterwards for inspection.
Gunicorn listens on 127.0.0.1 only; every loop is bounded by the deadline.

Each simulated person uses the REST API with a token: claim -> submit (annotators), claim ->
approve (reviewers). Afterwards the audit checks that no item is leased to more people than it
needs, nobody annotated an item twice, and the submissions the clients saw acknowledged (201)
equal the rows in the database.
"""

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import dj_database_url

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "labelloop_load"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--reviewers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=2, help="annotations needed per item")
    parser.add_argument(
        "--think-ms", type=int, default=50, help="mean pause between a person's actions"
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument(
        "--database", default=DB_NAME, help="database to drop and make afresh (one per concurrent run)"
    )
    return parser.parse_args()


def server_url() -> str:
    url = os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgres") else "postgres://postgres@127.0.0.1:5432/postgres"


def fresh_database(name: str) -> str:
    import psycopg2

    config = dj_database_url.parse(server_url())
    admin = psycopg2.connect(
        dbname=config["NAME"],
        user=config["USER"],
        password=config["PASSWORD"] or None,
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return server_url().rsplit("/", 1)[0] + "/" + name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(database_url: str, var_dir: str) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "LABELLOOP_VAR_DIR": var_dir,
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback; no proxy in front
        "CELERY_BROKER_URL": "filesystem://",  # no worker: recounts pile up harmlessly on disk
        "LOG_LEVEL": "WARNING",
    }


def seed(args) -> dict:
    """Project, people and tokens, made with the ORM in this process."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from bench import synthetic
    from labeling import actions
    from labeling.importer import import_items

    project = actions.create_project(
        "Load", "load", annotations_per_item=args.k, review_policy="all"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = synthetic.items_csv(args.items, Path(folder))
        with path.open("rb") as stream:
            import_items(project, stream, path.name)
    users = get_user_model().objects
    people = {"annotator": [], "reviewer": []}
    for role, count in (("annotator", args.annotators), ("reviewer", args.reviewers)):
        for n in range(count):
            user = users.create_user(f"{role}{n}", password=secrets.token_urlsafe(16))
            actions.add_member(project, user, role)
            people[role].append(Token.objects.create(user=user).key)
    return {
        "project": project,
        "people": people,
        "categories": list(project.categories.values_list("id", flat=True)),
    }


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)
        self.errors = defaultdict(int)
        self.statuses = defaultdict(lambda: defaultdict(int))
        self.acked = {"annotations": 0, "reviews": 0}

    def add(self, endpoint: str, status: int, ms: float) -> None:
        with self.lock:
            self.latency[endpoint].append(ms)
            self.statuses[endpoint][status] += 1
            if status >= 500 or status == 0:
                self.errors[endpoint] += 1

    def ack(self, what: str) -> None:
        with self.lock:
            self.acked[what] += 1


def call(base, token, endpoint, path, body, recorder):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as refused:
        status, payload = refused.code, refused.read()
    except OSError:
        status, payload = 0, b""
    recorder.add(endpoint, status, (time.perf_counter() - started) * 1000)
    return status, (json.loads(payload) if payload and status in (200, 201) else None)


def pause(args):
    time.sleep(random.expovariate(1000 / args.think_ms) if args.think_ms else 0)


def annotator(base, token, categories, deadline, args, recorder):
    while time.monotonic() < deadline:
        status, lease = call(base, token, "claim", "/api/projects/load/claim/", {}, recorder)
        if status == 204 or lease is None:
            time.sleep(0.2)
            continue
        pause(args)
        body = {
            "item": lease["item"]["id"],
            "categories": [str(random.choice(categories))],
            "client_request_id": uuid.uuid4().hex,
        }
        status, _ = call(base, token, "submit", "/api/projects/load/annotations/", body, recorder)
        if status == 0:  # no answer: retry once with the same id, as the browser does
            status, _ = call(
                base, token, "submit", "/api/projects/load/annotations/", body, recorder
            )
        if status == 201:
            recorder.ack("annotations")


def reviewer(base, token, deadline, args, recorder):
    while time.monotonic() < deadline:
        status, claimed = call(
            base,
            token,
            "review_claim",
            "/api/projects/load/review/claim/",
            {"queue": "review"},
            recorder,
        )
        if status != 200 or claimed is None:
            time.sleep(0.2)
            continue
        pause(args)
        body = {
            "item": claimed["item"]["id"],
            "decision": "approve",
            "client_request_id": uuid.uuid4().hex,
        }
        status, _ = call(
            base, token, "review_decide", "/api/projects/load/review/decisions/", body, recorder
        )
        if status == 201:
            recorder.ack("reviews")


def percentile(values, p):
    ordered = sorted(values)
    return (
        round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)
        if ordered
        else None
    )


def audit(project, recorder) -> dict:
    from django.db.models import Count

    from labeling.models import Annotation, Assignment, Review

    over_leased = (
        Assignment.objects.filter(
            project=project, is_honeypot=False, status__in=["leased", "submitted"]
        )
        .values("item_id", "round")
        .annotate(people=Count("annotator", distinct=True))
        .filter(people__gt=project.annotations_per_item)
        .count()
    )
    twice = (
        Annotation.objects.filter(project=project)
        .values("item_id", "annotator_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    stored = Annotation.objects.filter(project=project).count()
    reviews = Review.objects.filter(project=project).count()
    return {
        "items_over_leased": over_leased,
        "annotated_twice": twice,
        "annotations_acknowledged": recorder.acked["annotations"],
        "annotations_in_db": stored,
        "reviews_acknowledged": recorder.acked["reviews"],
        "reviews_in_db": reviews,
        "ok": over_leased == 0
        and twice == 0
        and stored == recorder.acked["annotations"]
        and reviews == recorder.acked["reviews"],
    }


def wait_until_up(base, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("gunicorn exited during start-up")
        try:
            urllib.request.urlopen(base + "/api/projects/", timeout=2).close()  # a 401 means up
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    sys.exit("gunicorn did not answer within a minute")


def main():
    args = parse_args()
    database_url = fresh_database(args.database)
    var_dir = tempfile.mkdtemp(prefix="labelloop-load-")
    env = server_env(database_url, var_dir)
    os.environ.update(
        {
            k: env[k]
            for k in (
                "DATABASE_URL",
                "LABELLOOP_VAR_DIR",
                "DJANGO_ENV",
                "SECRET_KEY",
                "ALLOWED_HOSTS",
            )
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    world = seed(args)
    seed_seconds = time.monotonic() - started

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gunicorn = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(args.workers),
            "-k",
            "gthread",
            "--threads",
            str(args.threads),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    recorder = Recorder()
    try:
        wait_until_up(base, gunicorn)
        deadline = time.monotonic() + args.seconds
        threads = [
            threading.Thread(
                target=annotator, args=(base, token, world["categories"], deadline, args, recorder)
            )
            for token in world["people"]["annotator"]
        ] + [
            threading.Thread(target=reviewer, args=(base, token, deadline, args, recorder))
            for token in world["people"]["reviewer"]
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.seconds + 60)
        elapsed = time.monotonic() - deadline + args.seconds
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gunicorn.kill()

    endpoints = {
        name: {
            "requests": len(values),
            "p50_ms": percentile(values, 50),
            "p95_ms": percentile(values, 95),
            "p99_ms": percentile(values, 99),
            "errors": recorder.errors[name],
            "statuses": dict(recorder.statuses[name]),
        }
        for name, values in sorted(recorder.latency.items())
    }
    total = sum(e["requests"] for e in endpoints.values())
    print(
        json.dumps(
            {
                "bench": "load",
                "annotators": args.annotators,
                "reviewers": args.reviewers,
                "seconds": args.seconds,
                "items": args.items,
                "k": args.k,
                "think_ms": args.think_ms,
                "gunicorn": f"{args.workers} workers x {args.threads} threads",
                "seed_seconds": round(seed_seconds, 1),
                "requests": total,
                "requests_per_second": round(total / elapsed, 1),
                "errors": sum(recorder.errors.values()),
                "endpoints": endpoints,
                "audit": audit(world["project"], recorder),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
