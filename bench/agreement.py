"""Bench: every agreement figure, with bootstrap intervals, for 100k annotations; one JSON line.

    .venv/bin/python bench/agreement.py

Synthetic labels (generated before the clock starts): BENCH_AGREEMENT_ITEMS items (default 50,000)
each labeled by BENCH_AGREEMENT_RATERS (default 2) of BENCH_AGREEMENT_ANNOTATORS annotators
(default 20, so every pair of annotators shares items), 4 categories, each annotator right about
80% of the time. Timed: `labeling.agreement.agreement_report` end to end on the plain rows, as the
agreement page calls it (percent agreement, Cohen's kappa per pair, Fleiss' kappa, Krippendorff's
alpha, each annotator's kappa with the others, 200 bootstrap resamples).
Prints {"name":"agreement","annotations":100000,"seconds":...,"meets_target":...}; target <= 5 s.

With BENCH_AGREEMENT_BACKEND=sqlite|postgres it also times what the agreement page waits for,
`labeling.annotator_stats.project_agreement` (the streamed ORM read plus the computation), on the
same labels stored in a bench database (var/bench/agreement.sqlite3 or the PostgreSQL database
labelloop_bench_agreement at BENCH_POSTGRES_URL's server; built once, reused): a second line
{"name":"agreement_page_data","backend":...,"seconds":...}.
"""
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.env import env_int  # noqa: E402
from labeling.agreement import RESAMPLES, agreement_report

ROOT = Path(__file__).resolve().parent.parent

TARGET_SECONDS = 5.0
CATEGORIES = 4


def synthetic_rows(items: int, raters: int, annotators: int, seed: int = 7) -> list[tuple[int, int, int]]:
    if raters > annotators:
        sys.exit(f"{raters} raters per item need at least as many annotators (got {annotators}).")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, CATEGORIES, items)
    # `raters` distinct annotators per item: the first `raters` of a random permutation.
    who = np.argsort(rng.random((items, annotators)), axis=1)[:, :raters]
    right = rng.random((items, raters)) < 0.8
    noise = rng.integers(0, CATEGORIES, (items, raters))
    label = np.where(right, truth[:, None], noise)
    item = np.repeat(np.arange(items), raters)
    return list(zip(item.tolist(), who.ravel().tolist(), label.ravel().tolist(), strict=True))


def configure_database(backend: str) -> None:
    if backend == "sqlite":
        path = ROOT / "var" / "bench" / "agreement.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    elif backend == "postgres":
        server = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        os.environ["DATABASE_URL"] = _postgres_database(server, "labelloop_bench_agreement")
    else:
        sys.exit(f"BENCH_AGREEMENT_BACKEND={backend!r}: use sqlite or postgres (or leave it unset).")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _postgres_database(server_url: str, name: str) -> str:
    import dj_database_url
    import psycopg2

    config = dj_database_url.parse(server_url)
    conn = psycopg2.connect(
        dbname="postgres", user=config["USER"], password=config["PASSWORD"] or None,
        host=config["HOST"], port=config["PORT"] or 5432,
    )
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{server_url.rpartition('/')[0]}/{name}"


def stored_project(rows, slug: str):
    """The labels as a project's annotations (single-label, gold = the majority's first label),
    bulk-inserted once: this measures reading them, not the queue that wrote them."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from labeling import actions
    from labeling.models import Annotation, GoldLabel, Item, Project

    project = Project.objects.filter(slug=slug).first()
    if project is not None and project.progress.get("bench_ready"):
        return project
    if project is not None:
        project.delete()  # half-built by an interrupted run
    project = actions.create_project(slug, slug)
    categories = list(project.categories.values_list("id", flat=True))
    people = {}
    for annotator in sorted({r[1] for r in rows}):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-agreement-{annotator}")
        people[annotator] = user
    with transaction.atomic():
        items = {}
        for item_id in sorted({r[0] for r in rows}):
            items[item_id] = Item(
                project=project, title=f"Item {item_id}", text=f"text {item_id}",
                content_hash=uuid.uuid4().hex, rank=item_id, open_slots=0, annotation_count=2,
                status=Item.Status.GOLD,
            )
        Item.objects.bulk_create(items.values(), batch_size=5000)
        gold = {}
        annotations = []
        for item_id, annotator, label in rows:
            gold.setdefault(item_id, label)
            annotations.append(Annotation(
                item=items[item_id], annotator=people[annotator], project=project,
                categories=[categories[label]], client_request_id=uuid.uuid4().hex, duration_ms=2500,
            ))
        Annotation.objects.bulk_create(annotations, batch_size=5000)
        GoldLabel.objects.bulk_create(
            (GoldLabel(item=items[i], project=project, categories=[categories[label]],
                       source=GoldLabel.Source.CONSENSUS) for i, label in gold.items()),
            batch_size=5000,
        )
    Project.objects.filter(pk=project.pk).update(progress={"bench_ready": True})
    return project


def measure_page_data(backend: str, rows, slug: str) -> dict:
    configure_database(backend)
    from labeling import annotator_stats

    project = stored_project(rows, slug)
    started = time.perf_counter()
    figures = annotator_stats.project_agreement(project)
    seconds = time.perf_counter() - started
    return {
        "name": "agreement_page_data", "backend": backend, "annotations": figures.report.annotations,
        "annotators": len(figures.annotators), "seconds": round(seconds, 3), "target_seconds": TARGET_SECONDS,
        "meets_target": seconds <= TARGET_SECONDS,
    }


def main() -> int:
    items = env_int("BENCH_AGREEMENT_ITEMS", 50_000)
    raters = env_int("BENCH_AGREEMENT_RATERS", 2)
    annotators = env_int("BENCH_AGREEMENT_ANNOTATORS", 20)
    rows = synthetic_rows(items, raters, annotators)
    started = time.perf_counter()
    report = agreement_report(rows)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "name": "agreement", "annotations": len(rows), "items": items, "raters_per_item": raters,
        "annotators": annotators, "pairs": len(report.pairs), "resamples": RESAMPLES,
        "seconds": round(seconds, 3), "target_seconds": TARGET_SECONDS,
        "meets_target": seconds <= TARGET_SECONDS,
        "fleiss_kappa": report.fleiss_kappa.to_dict()["value"],
        "krippendorff_alpha": report.krippendorff_alpha.to_dict()["value"],
    }), flush=True)
    backend = os.environ.get("BENCH_AGREEMENT_BACKEND", "").strip().lower()
    if backend:
        slug = f"bench-agreement-{items}-{raters}-{annotators}"
        print(json.dumps(measure_page_data(backend, rows, slug)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
