"""Bench: the modeling loop, one JSON object per line on stdout.

    BENCH_BACKEND=sqlite|postgres .venv/bin/python bench/modeling.py

Measures, through the app's own code:
  fit             TF-IDF + logistic regression fitted on BENCH_GOLD texts (default 100,000): the old
                  fixed setting (word and character n-grams) beside the word-only settings that
                  cross-validation now tries first;
  retrain_run     a whole training run (modeling.runs.run: snapshot, selection by cross-validation
                  on a sample, fit on all, holdout evaluation with baselines, label-error check,
                  promotion) on BENCH_GOLD gold items, TRAIN_ALGORITHMS=tfidf_logreg;
  batch_predict   BENCH_PREDICT open items (default 1,000,000) in uncertainty order scored, stored
                  (Prediction rows) and re-ranked: in this process (modeling.predictions; on
                  PostgreSQL with COPY and, for comparison, the multi-row INSERTs used before), then as
                  a training run hands them out, one Celery task per chunk, to BENCH_WORKERS
                  worker processes (default 2; Redis at BENCH_REDIS_URL);
  online_predict  POST /api/projects/<slug>/predict/ through the full Django stack (token auth,
                  PredictLog row), BENCH_REQUESTS times (default 500): client-side and logged latency;
  embeddings      sentence embeddings computed and stored (modeling.vectors.ensure), items/s, with the
                  package's default max_seq_length (256, used before) and the configured one.
Targets (issue 4): retrain ≤ 15 s, batch predictions for 1M items ≤ 60 s, online p95 ≤ 10 ms,
embeddings ≥ 150 items/s per worker.

Data: synthetic 30-word items (bench/synthetic.py's vocabulary) with a learnable label: each
category has its own 200 topic words, four of which appear in each of its texts. Built once in
var/bench/modeling.sqlite3 or the PostgreSQL database labelloop_bench_modeling, reused later.
Wall-clock figures on a busy machine say little: CPU seconds of this process are printed beside them.
"""
import json
import os
import random
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import synthetic

BACKEND = os.environ.get("BENCH_BACKEND", "sqlite")
GOLD = int(os.environ.get("BENCH_GOLD", "100000"))
PREDICT = int(os.environ.get("BENCH_PREDICT", "1000000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "500"))
EMBED = int(os.environ.get("BENCH_EMBED", "1000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
# 0: batch predictions only as they are made now (no word-pairs + multi-row INSERT comparison).
BATCH_OLD_WAY = os.environ.get("BENCH_BATCH_OLD_WAY", "1") == "1"
SERVER_LABEL = os.environ.get("BENCH_POSTGRES_SETTINGS", "")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/labelloop_bench_modeling")
TOPIC_WORDS = 200


def configure() -> None:
    if BACKEND == "postgres":
        _create_postgres_database(PG_URL)
        os.environ["DATABASE_URL"] = PG_URL
    elif BACKEND == "sqlite":
        path = ROOT / "var" / "bench" / "modeling.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    else:
        sys.exit(f"BENCH_BACKEND={BACKEND!r}: use sqlite or postgres.")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Kept between runs with the bench database, so its serving model stays loadable.
    os.environ["MODEL_DIR"] = str(ROOT / "var" / "bench" / f"models-{BACKEND}")
    os.environ["TRAIN_ALGORITHMS"] = "tfidf_logreg"
    # The online measurement goes through Django's test client, whose host is "testserver".
    os.environ["ALLOWED_HOSTS"] = ",".join(filter(None, [os.environ.get("ALLOWED_HOSTS", ""), "testserver"]))


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


def emit(record: dict) -> None:
    # bench/postgres_settings.py runs this bench on two servers and says which in every line.
    label = {"postgres_settings": SERVER_LABEL} if SERVER_LABEL else {}
    print(json.dumps({"backend": BACKEND, **label, **record}), flush=True)


# --- data -------------------------------------------------------------------------------------


def learnable_rows(count: int, seed: int):
    """(title, text, category) with 4 of the category's topic words among 26 shared words."""
    words = synthetic.vocabulary()
    rng = random.Random(seed)
    topics = {c: words[i * TOPIC_WORDS : (i + 1) * TOPIC_WORDS] for i, c in enumerate(synthetic.CATEGORIES)}
    shared = words[len(topics) * TOPIC_WORDS :]
    for n in range(count):
        category = synthetic.CATEGORIES[n % len(synthetic.CATEGORIES)]
        body = rng.choices(shared, k=26) + rng.choices(topics[category], k=4)
        rng.shuffle(body)
        yield " ".join(rng.choices(shared, k=4)) + f" {seed}-{n}", " ".join(body), category


def build(slug: str, gold: int, open_items: int):
    """A project with `gold` gold items (20% holdout) and `open_items` open ones, made once."""
    from django.db import transaction

    from labeling import actions
    from labeling.models import GoldLabel, Item, Project, content_hash

    project = Project.objects.filter(slug=slug).first()
    if project is not None and project.progress.get("bench_ready"):
        return project
    if project is not None:
        project.delete()
    project = actions.create_project(slug, slug, order=Project.Order.UNCERTAINTY, honeypot_percent=0)
    ids = dict(project.categories.values_list("name", "id"))
    batch, rank = 10_000, 0
    for is_gold, count, seed in ((True, gold, 1), (False, open_items, 2)):
        source = learnable_rows(count, seed)
        while rows := list(islice(source, batch)):
            with transaction.atomic():
                items = []
                for title, text, _ in rows:
                    rank += 1
                    items.append(Item(
                        project=project, title=title, text=text, content_hash=content_hash(title, text), rank=rank,
                        status=Item.Status.GOLD if is_gold else Item.Status.OPEN, open_slots=0 if is_gold else 1,
                        split=("holdout" if rank % 5 == 0 else "train") if is_gold else "",
                    ))
                Item.objects.bulk_create(items, batch_size=2000)
                if is_gold:
                    GoldLabel.objects.bulk_create(
                        [GoldLabel(item=item, project=project, categories=[ids[row[2]]], source="import")
                         for item, row in zip(items, rows, strict=True)],
                        batch_size=2000,
                    )
    Project.objects.filter(pk=project.pk).update(progress={"bench_ready": True})
    project.refresh_from_db()
    return project


def texts_of(project) -> tuple[list[str], list[str]]:
    from labeling.models import GoldLabel

    names = dict(project.categories.values_list("id", "name"))
    rows = GoldLabel.objects.filter(project=project).values_list("item__title", "item__text", "categories")
    texts, labels = [], []
    for title, text, categories in rows.iterator(chunk_size=10000):
        texts.append(f"{title} {text}")
        labels.append(names[categories[0]])
    return texts, labels


# --- measurements -----------------------------------------------------------------------------


def timed(function, *args, **kwargs):
    started, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - started, 3), round(time.process_time() - cpu, 3)


# TF-IDF settings side by side: the one fixed setting before cross-validation chose among them,
# then the word-only settings the grid now offers first.
FIT_SETTINGS = (
    ("old fixed setting: words 1-2 + chars 2-5", {"word_ngrams": (1, 2), "char_ngrams": (2, 5)}),
    ("words 1-2", {"word_ngrams": (1, 2), "char_ngrams": None}),
    ("words 1", {"word_ngrams": (1, 1), "char_ngrams": None}),
)


def bench_fit(texts, labels) -> None:
    from modeling import training

    for config, params in FIT_SETTINGS:
        _, seconds, cpu = timed(training.make_estimator("tfidf_logreg", params).fit, texts, labels)
        emit({"name": "fit", "algorithm": "tfidf_logreg", "features": config, "items": len(texts),
              "seconds": seconds, "cpu_seconds": cpu, "target_seconds": 15})


def bench_retrain(project) -> None:
    from modeling import runs
    from modeling.models import ModelVersion

    ModelVersion.objects.filter(project=project).delete()  # the same data would be "nothing new"
    version = runs.request_training(project, ModelVersion.Trigger.COMMAND, enqueue=False)
    status, seconds, cpu = timed(runs.run, version.pk)
    version.refresh_from_db()
    emit({
        "name": "retrain_run", "gold": version.trained_on + version.holdout_size, "status": status,
        "algorithm": version.algorithm, "params": version.params, "weighted_f1": version.metrics.get("weighted_f1"),
        "seconds": seconds, "cpu_seconds": cpu, "steps": version.timings, "error": version.error, "target_seconds": 15,
    })


def bench_batch_predict(project, texts, labels) -> None:
    """In this one process, then fanned out to BENCH_WORKERS Celery worker processes (one task
    per chunk, as a training run does) to show how it scales with workers."""
    from modeling import predictions, training
    from modeling.models import Prediction

    # New: the setting cross-validation chooses on this data (retrain_run) and COPY; old: the
    # word-only setting of before (word pairs) and multi-row INSERTs.
    tried = [
        ("words 1", {"word_ngrams": (1, 1), "char_ngrams": None}, "copy"),
        ("words 1-2", {"word_ngrams": (1, 2), "char_ngrams": None}, "multi-row insert"),
    ][: 2 if BATCH_OLD_WAY else 1]
    for config, params, writes in tried:
        if writes == "copy" and not predictions._uses_copy():
            continue  # SQLite: multi-row inserts only
        model = training.make_estimator("tfidf_logreg", params).fit(texts[:20000], labels[:20000])
        limit = PREDICT
        _limit_open_items(project, limit)
        _shift_ranks(project)
        version = _fresh_version(project, model)
        uses_copy = predictions._uses_copy
        if writes != "copy":
            predictions._uses_copy = lambda: False  # the statements used before COPY
        try:
            stats, seconds, cpu = timed(predictions.predict_unlabeled, version, model)
        finally:
            predictions._uses_copy = uses_copy
        emit({
            "name": "batch_predict", "features": config, "writes": writes, "processes": 1,
            "items": stats["predicted"], "reranked": stats["reranked"], "seconds": seconds, "cpu_seconds": cpu,
            "items_per_s": round(stats["predicted"] / seconds),
            "seconds_per_million": round(seconds * 1_000_000 / max(stats["predicted"], 1), 1),
            "target_seconds_per_million": 60,
        })
        if WORKERS and config == "words 1":
            _bench_fan_out(project, model)
        _limit_open_items(project, None)
    Prediction.objects.filter(project=project).delete()


def _limit_open_items(project, limit):
    """Keep only the first `limit` open items unlabeled (the rest are parked as gold without a
    split, which batch prediction skips); None brings the parked ones back."""
    from labeling.models import Item

    if limit is None:
        Item.objects.filter(project=project, status=Item.Status.GOLD, split="").update(status=Item.Status.OPEN)
        return
    beyond = list(
        Item.objects.filter(project=project, status=Item.Status.OPEN).order_by("id").values_list("id", flat=True)[limit : limit + 1]
    )
    if beyond:
        Item.objects.filter(project=project, status=Item.Status.OPEN, id__gte=beyond[0]).update(status=Item.Status.GOLD)


def _shift_ranks(project) -> None:
    """Every open item one rank further: the same model scored twice gives the same ranks, which
    re-ranking leaves alone; a new model moves nearly all of them, which is what is measured."""
    from django.db.models import F

    from labeling.models import Item

    Item.objects.filter(project=project, status=Item.Status.OPEN).update(rank=F("rank") + 1)


def _fresh_version(project, model):
    from modeling import artifacts
    from modeling.models import ModelVersion, Prediction

    Prediction.objects.filter(project=project).delete()
    ModelVersion.objects.filter(project=project).delete()
    path, sha = artifacts.write_temporary(model)
    final = artifacts.publish(path, f"bench-{sha[:12]}.joblib")
    return ModelVersion.objects.create(
        project=project, number=1, algorithm="tfidf_logreg", status="done", active=True,
        artifact_path=str(final), artifact_sha256=sha,
    )


def _bench_fan_out(project, model) -> None:
    import uuid

    from django.db import connection
    from django.utils import timezone

    from bench.workers import celery_workers
    from config.celery import app as celery_app
    from modeling import predictions
    from modeling.models import ModelVersion
    from modeling.tasks import predict_chunk_task

    broker = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    queue = f"labelloop-bench-{uuid.uuid4().hex[:8]}"
    _shift_ranks(project)
    version = _fresh_version(project, model)
    plan = predictions.plan(project)
    ModelVersion.objects.filter(pk=version.pk).update(
        status="predicting", prediction_plan=plan, predicted_chunks=[], started_at=timezone.now(),
        timings={"predict_started": time.time(), "predicted": 0, "reranked": 0},
    )
    connection.close()  # SQLite: no open transaction of ours while the workers write
    with celery_workers(broker, queue, count=WORKERS, pool="solo", DB_CONN_MAX_AGE="0"):
        started = time.perf_counter()
        with celery_app.connection_for_write(broker) as conn:
            for index in range(len(plan)):
                predict_chunk_task.apply_async((version.pk, index), queue=queue, connection=conn)
        while ModelVersion.objects.filter(pk=version.pk, status="predicting").exists():
            time.sleep(0.2)
        seconds = round(time.perf_counter() - started, 3)
    version.refresh_from_db()
    emit({
        "name": "batch_predict", "features": "words 1", "writes": "copy" if predictions._uses_copy() else "multi-row insert",
        "processes": WORKERS, "items": version.timings.get("predicted"),
        "chunks": len(plan), "seconds": seconds, "items_per_s": round(version.timings.get("predicted", 0) / seconds),
        "seconds_per_million": round(seconds * 1_000_000 / max(version.timings.get("predicted", 1), 1), 1),
        "target_seconds_per_million": 60, "errors": version.error,
    })


def bench_online(project) -> None:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from labeling import actions
    from modeling import runs
    from modeling.models import ModelVersion, PredictLog

    if not _serving_model_loads(project):
        ModelVersion.objects.filter(project=project).delete()
        version = runs.request_training(project, ModelVersion.Trigger.COMMAND, enqueue=False)
        runs.run(version.pk)
    user, _ = get_user_model().objects.get_or_create(username="bench-predict")
    actions.add_member(project, user, "annotator")
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    rows = list(learnable_rows(REQUESTS + 20, seed=9))
    url = f"/api/projects/{project.slug}/predict/"
    for title, text, _ in rows[:20]:  # warm up: the model is loaded once per process
        assert client.post(url, {"title": title, "description": text}, format="json").status_code == 200
    PredictLog.objects.filter(project=project).delete()
    latencies = []
    for title, text, _ in rows[20:]:
        started = time.perf_counter()
        response = client.post(url, {"title": title, "description": text}, format="json")
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content
    logged = sorted(PredictLog.objects.filter(project=project).values_list("latency_ms", flat=True))
    emit({
        "name": "online_predict", "requests": len(latencies), "algorithm": ModelVersion.objects.get(project=project, active=True).algorithm,
        "p50_ms": round(statistics.median(latencies), 2), "p95_ms": round(_percentile(latencies, 95), 2),
        "max_ms": round(max(latencies), 2), "logged_p50_ms": round(statistics.median(logged), 2),
        "logged_p95_ms": round(_percentile(logged, 95), 2), "target_p95_ms": 10,
    })


def _serving_model_loads(project) -> bool:
    from modeling import serving

    active = serving.active_version(project.pk)
    try:
        return active is not None and serving.model_for(active) is not None
    except serving.ModelUnavailable:
        return False


def _percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_embeddings(project) -> None:
    from labeling.models import Item
    from modeling import embeddings, training, vectors
    from modeling.models import Embedding

    if not embeddings.available():
        emit({"name": "embeddings", "skipped": "the [embeddings] extra is not installed"})
        return
    _, load_seconds, _ = timed(embeddings.encoder)
    items = [
        (pk, training.item_text(title, text))
        for pk, title, text in Item.objects.filter(project=project).order_by("id").values_list("id", "title", "text")[:EMBED]
    ]
    encoder = embeddings.encoder()
    configured = encoder.max_seq_length
    # The package's default length first (what was used before), then the configured one.
    for max_seq_length in dict.fromkeys([256, configured]):
        encoder.max_seq_length = max_seq_length
        Embedding.objects.filter(item_id__in=[pk for pk, _ in items]).delete()
        _, seconds, cpu = timed(vectors.ensure, project.pk, items)
        _, reread, _ = timed(vectors.ensure, project.pk, items)
        emit({
            "name": "embeddings", "items": len(items), "max_seq_length": max_seq_length,
            "batch_size": embeddings.BATCH_SIZE, "torch_threads": _torch_threads(),
            "encoder_load_seconds": load_seconds, "seconds": seconds, "cpu_seconds": cpu,
            "items_per_s": round(len(items) / seconds, 1), "stored_reread_seconds": reread, "target_items_per_s": 150,
        })
    encoder.max_seq_length = configured


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    configure()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    gold_project = build(f"bench-modeling-gold-{GOLD}", GOLD, 0)
    open_project = build(f"bench-modeling-open-{PREDICT}", 20_000, PREDICT)
    emit({"name": "setup", "seconds": round(time.perf_counter() - started, 1), "gold": GOLD, "open": PREDICT})
    texts, labels = texts_of(gold_project)
    if not ONLY or "fit" in ONLY:
        bench_fit(texts, labels)
    if not ONLY or "retrain" in ONLY:
        bench_retrain(gold_project)
    if not ONLY or "batch" in ONLY:
        bench_batch_predict(open_project, texts, labels)
    if not ONLY or "online" in ONLY:
        bench_online(gold_project)
    if not ONLY or "embeddings" in ONLY:
        bench_embeddings(gold_project)


if __name__ == "__main__":
    main()
