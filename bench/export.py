"""Bench: gold export speed (rows/s) for CSV and JSON Lines, full and labels-only shapes.

    BENCH_ITEMS=1000000 BENCH_BACKEND=sqlite|postgres .venv/bin/python bench/export.py

Builds (once, then reuses) a project of BENCH_ITEMS gold items, the same synthetic 30-word items
as the other benches (bench/synthetic.py), in its own bench database (var/bench/export.sqlite3 or
the PostgreSQL database labelloop_bench_export, kept between runs). BENCH_ANNOTATED_PERCENT of
them (default 10) are gold by consensus of two annotators, so the full export also reads and
writes annotation provenance. Each export writes a real file and is timed end to end (query,
formatting, writing), in wall-clock and in this process's CPU time. One JSON line each:
{"name":"export","format":"csv","shape":"full","backend":...,"items":N,"rows_per_s":...,...}.
Target: at least 100,000 rows/s at 1M items (Label Studio: about 510 tasks/s).
"""
import json
import os
import random
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import synthetic

ITEMS = int(os.environ.get("BENCH_ITEMS", "1000000"))
BACKEND = os.environ.get("BENCH_BACKEND", "sqlite")
ANNOTATED_PERCENT = int(os.environ.get("BENCH_ANNOTATED_PERCENT", "10"))
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/labelloop_bench_export")
SLUG = f"bench-export-{ITEMS}-{ANNOTATED_PERCENT}"

def configure_database() -> None:
    if BACKEND == "postgres":
        _create_postgres_database(PG_URL)
        os.environ["DATABASE_URL"] = PG_URL
    elif BACKEND == "sqlite":
        path = Path(os.environ.get("BENCH_SQLITE_PATH", ROOT / "var" / "bench" / "export.sqlite3"))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    else:
        sys.exit(f"BENCH_BACKEND={BACKEND!r}: use sqlite or postgres.")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")


def _create_postgres_database(url: str) -> None:
    import dj_database_url
    import psycopg2

    config = dj_database_url.parse(url)
    conn = psycopg2.connect(
        dbname="postgres", user=config["USER"], password=config["PASSWORD"] or None,
        host=config["HOST"], port=config["PORT"] or 5432,
    )
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{config["NAME"]}"')
    conn.close()


def build_project():
    """The bench project, made once per (items, annotated share) and reused on later runs."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from labeling import actions
    from labeling.models import Annotation, GoldLabel, Item, Project, content_hash

    project = Project.objects.filter(slug=SLUG).first()
    if project is not None and project.progress.get("bench_ready"):
        return project
    if project is not None:
        project.delete()  # a half-built one from an interrupted run
    project = actions.create_project(SLUG, SLUG)
    categories = list(project.categories.values_list("id", flat=True))
    annotators = [
        get_user_model().objects.get_or_create(username=f"bench-annotator-{n}")[0] for n in range(2)
    ]
    rng = random.Random(7)
    source = synthetic.rows(ITEMS)
    batch = 10_000
    for start in range(0, ITEMS, batch):
        with transaction.atomic():
            items = [
                Item(
                    project=project, external_id=external_id, title=title, text=text,
                    content_hash=content_hash(title, text), rank=n, open_slots=0,
                    annotation_count=2, status=Item.Status.GOLD,
                    split="holdout" if n % 5 == 0 else "train",
                )
                for n, (external_id, title, text, _tag) in enumerate(islice(source, batch), start)
            ]
            Item.objects.bulk_create(items, batch_size=2000)
            golds, annotations = [], []
            for item in items:
                label = [rng.choice(categories)]
                consensus = rng.random() * 100 < ANNOTATED_PERCENT
                golds.append(GoldLabel(
                    item=item, project=project, categories=label,
                    source=GoldLabel.Source.CONSENSUS if consensus else GoldLabel.Source.IMPORT,
                ))
                if consensus:
                    shown = rng.random() < 0.8  # the rest were blind controls
                    annotations += [
                        Annotation(
                            item=item, annotator=user, project=project, categories=label,
                            client_request_id=f"{item.pk}-{user.pk}", duration_ms=1500,
                            suggestion_shown=shown, model_version_id=1 if shown else None,
                        )
                        for user in annotators
                    ]
            GoldLabel.objects.bulk_create(golds, batch_size=2000)
            Annotation.objects.bulk_create(annotations, batch_size=2000)
    Project.objects.filter(pk=project.pk).update(progress={"bench_ready": True})
    project.refresh_from_db()
    return project


def measure(project, fmt: str, labels_only: bool) -> dict:
    from labeling.export import ExportSpec, export_to_path

    spec = ExportSpec(project, fmt, "all", labels_only)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"export.{fmt}"
        started, cpu = time.perf_counter(), time.process_time()
        rows = export_to_path(spec, path)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        size = path.stat().st_size
    return {
        "name": "export",
        "format": fmt,
        "shape": "labels" if labels_only else "full",
        "backend": BACKEND,
        "items": ITEMS,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        # This process's CPU time: on a busy machine the wall clock also counts other programs'
        # turns; on an idle one the two agree (SQLite runs inside this process).
        "cpu_seconds": round(cpu_seconds, 3),
        "rows_per_cpu_s": round(rows / cpu_seconds),
        "mb": round(size / 1e6, 1),
    }


def main() -> None:
    configure_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    project = build_project()
    if BACKEND == "postgres":
        # Fresh statistics, as autovacuum keeps them on a real server: a bulk load leaves the
        # planner thinking the tables are empty.
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"# bench project ready in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    formats = os.environ.get("BENCH_EXPORT_FORMATS", "csv,jsonl").split(",")
    for fmt in formats:
        for labels_only in (False, True):
            print(json.dumps(measure(project, fmt, labels_only)), flush=True)


if __name__ == "__main__":
    main()
