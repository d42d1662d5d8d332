"""Bench: project dashboard render time at 1M items and 100k annotations.

    BENCH_BACKEND=sqlite|postgres BENCH_ITEMS=1000000 BENCH_ANNOTATIONS=100000 .venv/bin/python bench/dashboard.py

Builds (once, then reuses) a project with bulk inserts in its own bench database
(var/bench/dashboard.sqlite3 or PostgreSQL labelloop_bench_dashboard): BENCH_ITEMS items, of
which BENCH_ANNOTATIONS / 2 have two annotations each (k = 2) spread over the last 10 days by 20
annotators; 90 % of those agree and are gold by consensus, the rest wait in the disagreement
queue. Then times, through Django's test client as a logged-in member:
  - the background recount (labeling.tasks.recount_progress), once;
  - the dashboard with its live figures cached (the common case), and with them cold (the first
    view each minute: review queue counts and 7-day throughput are queried).
One JSON line each: {"name":"dashboard","case":...,"p50_ms":...,"p95_ms":...,"queries":...}.
Target: ≤ 300 ms at 1M items and 100k annotations.
"""
import json
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ITEMS = int(os.environ.get("BENCH_ITEMS", "1000000"))
ANNOTATIONS = int(os.environ.get("BENCH_ANNOTATIONS", "100000"))
RUNS = int(os.environ.get("BENCH_RUNS", "40"))
BACKEND = os.environ.get("BENCH_BACKEND", "sqlite")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/labelloop_bench_dashboard")
SLUG = f"bench-dashboard-{ITEMS}-{ANNOTATIONS}"
ANNOTATORS = 20


def configure_database() -> None:
    from bench.export import _create_postgres_database

    if BACKEND == "postgres":
        _create_postgres_database(PG_URL)
        os.environ["DATABASE_URL"] = PG_URL
    elif BACKEND == "sqlite":
        path = Path(os.environ.get("BENCH_SQLITE_PATH", ROOT / "var" / "bench" / "dashboard.sqlite3"))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    else:
        sys.exit(f"BENCH_BACKEND={BACKEND!r}: use sqlite or postgres.")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")


def build_project():
    """The bench project, made once and reused (progress['bench_ready'] marks a finished build)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from labeling import actions
    from labeling.models import Annotation, GoldLabel, Item, Project, ReviewQueue, content_hash

    project = Project.objects.filter(slug=SLUG).first()
    # Ready: marked at the end of the build, or recounted since (a recount replaces the marker).
    if project is not None and (project.progress.get("bench_ready") or project.progress.get("items") == ITEMS):
        return project
    if project is not None:
        project.delete()  # a half-built one from an interrupted run
    project = actions.create_project(SLUG, SLUG, annotations_per_item=2, honeypot_percent=0)
    categories = list(project.categories.values_list("id", flat=True))
    users = [get_user_model().objects.get_or_create(username=f"bench-dash-{n}")[0] for n in range(ANNOTATORS)]
    for user in users:
        actions.add_member(project, user)
    rng, now, annotated, batch = random.Random(7), timezone.now(), ANNOTATIONS // 2, 10_000
    for start in range(0, ITEMS, batch):
        with transaction.atomic():
            items = []
            for n in range(start, min(ITEMS, start + batch)):
                title, text = f"Bench item {n}", f"synthetic text number {n} for the dashboard bench"
                done = n < annotated
                disputed = done and n % 10 == 0
                items.append(Item(
                    project=project, title=title, text=text, content_hash=content_hash(title, text), rank=n,
                    open_slots=0 if done else 2, annotation_count=2 if done else 0,
                    status=(Item.Status.COMPLETED if disputed else Item.Status.GOLD) if done else Item.Status.OPEN,
                    review_queue=ReviewQueue.DISAGREEMENT if disputed else ReviewQueue.NONE,
                ))
            Item.objects.bulk_create(items, batch_size=2000)
            annotations, golds = [], []
            for item in (i for i in items if i.rank < annotated):
                first, second = rng.sample(users, 2)
                label = [rng.choice(categories)]
                other = [c for c in categories if c != label[0]][:1] if item.status == Item.Status.COMPLETED else label
                at = now - timedelta(seconds=rng.uniform(0, 10 * 24 * 3600))
                annotations += [
                    Annotation(item=item, annotator=user, project=project, categories=labels,
                               client_request_id=f"{item.pk}-{user.pk}", duration_ms=1500, created_at=at)
                    for user, labels in ((first, label), (second, other))
                ]
                if item.status == Item.Status.GOLD:
                    golds.append(GoldLabel(item=item, project=project, categories=label,
                                           source=GoldLabel.Source.CONSENSUS, decided_at=at))
            Annotation.objects.bulk_create(annotations, batch_size=2000)
            GoldLabel.objects.bulk_create(golds, batch_size=2000)
    Project.objects.filter(pk=project.pk).update(progress={"bench_ready": True})
    project.refresh_from_db()
    return project


def timed(client, url, runs: int, before=None) -> tuple[list[float], int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], 0
    for _ in range(runs):
        if before:
            before()
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        queries = len(captured)
    return times, queries


def line(case: str, times: list[float], queries: int, **extra) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return json.dumps({
        "name": "dashboard", "case": case, "backend": BACKEND, "items": ITEMS, "annotations": ANNOTATIONS,
        "runs": len(times), "p50_ms": round(statistics.median(times), 1), "p95_ms": round(p95, 1),
        "queries": queries, "target_ms": 300, **extra,
    })


def main() -> None:
    configure_database()
    import django

    django.setup()
    from django.core.cache import cache
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from labeling import actions
    from labeling.models import Membership

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    project = build_project()
    if BACKEND == "postgres":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # fresh statistics after the bulk load, as autovacuum keeps them
    print(f"# bench project ready in {time.perf_counter() - started:.1f}s", file=sys.stderr)

    started = time.perf_counter()
    progress = actions.recount_progress(project)  # what the Celery task does, once a minute at most
    recount_s = time.perf_counter() - started
    print(json.dumps({"name": "dashboard_recount", "backend": BACKEND, "items": progress["items"],
                      "annotations": progress["annotations"], "seconds": round(recount_s, 3)}), flush=True)
    project.refresh_from_db()
    # The view queues a recount when the figures are a minute old; the bench must not publish.
    cache.set(f"dashboard:recount-queued:{project.pk}", 1, 3600)

    member = Membership.objects.filter(project=project).select_related("user").first()
    client = Client(HTTP_HOST="localhost")  # one of the default ALLOWED_HOSTS
    client.force_login(member.user)
    url = reverse("dashboard", args=[project.slug])
    client.get(url)  # warm-up: templates compiled, connection open
    times, queries = timed(client, url, RUNS)
    print(line("live figures cached", times, queries), flush=True)
    times, queries = timed(client, url, max(10, RUNS // 4), before=lambda: cache.delete(f"dashboard:live:{project.pk}"))
    print(line("live figures cold (first view each minute)", times, queries), flush=True)


if __name__ == "__main__":
    main()
