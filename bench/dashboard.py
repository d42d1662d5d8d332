"""Bench: project dashboard and model page render time at 1M items and 100k annotations.

    BENCH_BACKEND=sqlite|postgres BENCH_ITEMS=1000000 BENCH_ANNOTATIONS=100000 .venv/bin/python bench/dashboard.py

Builds (once, then reuses) a project with bulk inserts in its own bench database
(var/bench/dashboard.sqlite3 or PostgreSQL labelloop_bench_dashboard): BENCH_ITEMS items, of
which BENCH_ANNOTATIONS / 2 have two annotations each (k = 2) spread over the last 10 days by 20
annotators; 90 % of those agree and are gold by consensus, the rest wait in the disagreement
queue. Then times, through Django's test client as a logged-in member:
  - the background recount (labeling.tasks.recount_progress), once;
  - the dashboard with its live figures cached (the common case), and with them cold (the first
    view each minute: review queue counts and 7-day throughput are queried).
  - the model page (12 finished versions with full holdout reports; half the annotations made
    with a suggestion shown; its influence report comes from the recount) with the gold-label
    pace cached and cold (the first view every ten minutes: an indexed count);
  - its three SVG charts, drawn (the first view of a new version) and from the cache.
One JSON line each: {"name":"dashboard"|"model_page"|"model_chart","case":...,"p50_ms":...,"p95_ms":...,"queries":...}.
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


VERSIONS = 12


def ensure_model_history(project):
    """Twelve finished versions with full holdout reports (the last one serving), and the second
    half of the annotations made with its suggestion shown: what the model page reads. Once."""
    from labeling.models import Annotation
    from modeling.models import ModelVersion

    if ModelVersion.objects.filter(project=project).exists():
        return
    rng = random.Random(11)
    names = list(project.categories.values_list("name", flat=True))
    for number in range(1, VERSIONS + 1):
        f1 = 0.9 - 0.3 / number + rng.uniform(-0.004, 0.004)
        matrix = [[rng.randint(0, 80) + (900 if i == j else 0) for j in range(len(names))] for i in range(len(names))]
        bins = [{"lower": i / 10, "upper": (i + 1) / 10, "count": 0 if i < 3 else 100 * i,
                 "mean_confidence": None if i < 3 else i / 10 + 0.05, "accuracy": None if i < 3 else min(1, i / 10 + 0.03)}
                for i in range(10)]
        ModelVersion.objects.create(
            project=project, number=number, status=ModelVersion.Status.DONE, algorithm="tfidf_logreg",
            trained_on=4000 * number, holdout_size=10_000, active=number == VERSIONS, promoted=True,
            promotion_reason="Not worse than the serving version.",
            metrics={"accuracy": f1, "weighted_f1": f1, "macro_f1": f1 - 0.03,
                     "per_class": {n: {"precision": f1, "recall": f1, "f1": f1, "support": 2500} for n in names},
                     "confusion_matrix": {"labels": names, "matrix": matrix},
                     "calibration": {"ece": 0.04, "bins": bins},
                     "slices": {"short_text": {"n": 800, "accuracy": f1 - 0.05, "weighted_f1": f1 - 0.05}}},
            baselines={"rules": {"weighted_f1": 0.52, "accuracy": 0.55, "macro_f1": 0.5},
                       "majority": {"weighted_f1": 0.1, "accuracy": 0.25, "macro_f1": 0.1}},
        )
    active = ModelVersion.objects.get(project=project, active=True)
    first = project.categories.order_by("order").first()
    middle = Annotation.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)[ANNOTATIONS // 2]
    Annotation.objects.filter(project=project, pk__gte=middle).update(
        suggestion_shown=True, suggested_category=first, model_version_id=active.pk
    )


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


def line(case: str, times: list[float], queries: int, name: str = "dashboard", **extra) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return json.dumps({
        "name": name, "case": case, "backend": BACKEND, "items": ITEMS, "annotations": ANNOTATIONS,
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

    ensure_model_history(project)
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
    client.session_user = member.user
    url = reverse("dashboard", args=[project.slug])
    client.get(url)  # warm-up: templates compiled, connection open
    times, queries = timed(client, url, RUNS)
    print(line("live figures cached", times, queries), flush=True)
    times, queries = timed(client, url, max(10, RUNS // 4), before=lambda: cache.delete(f"dashboard:live:{project.pk}"))
    print(line("live figures cold (first view each minute)", times, queries), flush=True)
    bench_model_page(project, client)


def bench_model_page(project, client) -> None:
    from django.core.cache import cache
    from django.urls import reverse

    from labeling.models import Membership, Role
    from modeling import charts

    Membership.objects.filter(project=project, user=client.session_user).update(role=Role.REVIEWER)
    url = reverse("model", args=[project.slug])
    client.get(url)  # warm-up, and the per-minute figures cached
    times, queries = timed(client, url, RUNS)
    print(line("gold pace cached", times, queries, name="model_page"), flush=True)

    times, queries = timed(client, url, max(5, RUNS // 8), before=lambda: cache.delete(f"model-page:gold-pace:{project.pk}"))
    print(line("gold pace cold (first view every ten minutes)", times, queries, name="model_page"), flush=True)
    for chart in charts.CHARTS:
        chart_url = reverse("model_chart", args=[project.slug, "dark", chart])
        times, queries = timed(client, chart_url, max(5, RUNS // 8), before=cache.clear)
        print(line(f"{chart}: drawn", times, queries, name="model_chart"), flush=True)
        times, queries = timed(client, chart_url, RUNS)
        print(line(f"{chart}: from the cache", times, queries, name="model_chart"), flush=True)


if __name__ == "__main__":
    main()
