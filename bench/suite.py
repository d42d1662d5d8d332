"""The measurements, run inside one Django process per backend (see bench/run.py).

Everything measured goes through the real code: `labeling.importer.import_items`, the queue
actions (`claim_stage`, `submit_annotation`) and the htmx submit view through Django's test
client. Only the side-by-side `claim_query` lines run hand-written SQL, on purpose: they show what
`ORDER BY random()`, `OFFSET` and counting would cost on the same table.

Environment (all optional):
  BENCH_PAIRS=2000        claim + submit pairs for the single annotator, per project size
  BENCH_HTTP_PAIRS=1000   htmx submits through the full Django stack, per project size
  BENCH_ANNOTATORS=50     concurrent annotators (processes, one connection each)
  BENCH_PAIRS_EACH=30     claim + submit pairs per concurrent annotator
  BENCH_THINK_MS=3000     a concurrent annotator's mean reading time between pairs; the crowd is
                          also run flat out (0 ms) to show the saturation throughput
  BENCH_K=3               annotations each item needs
  BENCH_QUIET_WAIT_S=60   longest wait for a busy machine to calm down before a timed section
"""
import json
import multiprocessing
import os
import random
import re
import time
import uuid
import warnings
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.db.models import Count, Exists, F, OuterRef
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import get_resolver, reverse
from django.utils import timezone

from bench import synthetic
from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, Item, Membership
from labeling.review import assign_splits

BENCH_DIR = Path(__file__).resolve().parent.parent / "var" / "bench"
WARMUP = 20
TARGET_IMPORT_PER_S = 50_000
TARGET_CLAIM_P95_MS = 15.0


def setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw.replace("_", "")) if raw else default


def wait_for_quiet(limit_s: float) -> None:
    """Other work on the machine inflates every latency: give it up to `limit_s` seconds to drop
    below one runnable process per core before a timed section starts."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] > (os.cpu_count() or 1) and time.monotonic() < deadline:
        time.sleep(2)


def emit(record: dict) -> None:
    # The machine's load when the figure was taken: a busy neighbour inflates every latency.
    record["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)


def percentiles(samples_s: list[float]) -> dict:
    """p50/p95/p99/max in milliseconds (nearest rank)."""
    if not samples_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples_s)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))] * 1000, 3)

    return {"p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99), "max_ms": round(ordered[-1] * 1000, 3)}


def prefixed(prefix: str, figures: dict) -> dict:
    return {f"{prefix}_{key}": value for key, value in figures.items()}


def make_user(username: str):
    user = get_user_model()(username=username)
    user.set_unusable_password()  # no password hashing: 50 users would cost seconds of PBKDF2
    user.save()
    return user


def label_for(item_id: int, annotator_number: int, category_ids: list[int]) -> int:
    """Annotators agree on nine items in ten (consensus gold), disagree on the tenth (review)."""
    if item_id % 10 == 0:
        return category_ids[(item_id + annotator_number) % len(category_ids)]
    return category_ids[item_id % len(category_ids)]


# --- import -----------------------------------------------------------------------------------


def import_project(backend: str, size: int, k: int):
    project = actions.create_project(f"Bench {size}", f"bench-{size}", annotations_per_item=k)
    path = synthetic.items_csv(size, BENCH_DIR)
    started = time.perf_counter()
    with path.open("rb") as stream:
        result = import_items(project, stream, path.name, size=path.stat().st_size)
    seconds = time.perf_counter() - started
    analyze_s = refresh_statistics()
    # Gold items become honeypot candidates once split, as after a real import (not counted in
    # the import's figures, but timed: it runs in the background after every import).
    split_started = time.perf_counter()
    assign_splits(project)
    split_s = round(time.perf_counter() - split_started, 2)
    refresh_statistics()
    emit({
        "name": "import", "backend": backend, "items": size,
        "items_per_s": round(result.created / seconds), "seconds": round(seconds, 2),
        "created": result.created, "duplicates": result.duplicates, "gold_labels": result.gold_labels,
        "mb": round(path.stat().st_size / 1e6, 1), "target_items_per_s": TARGET_IMPORT_PER_S,
        "analyze_s": analyze_s, "assign_splits_s": split_s,
    })
    return project


def refresh_statistics() -> float | None:
    """Gather PostgreSQL's planner statistics, as autovacuum would soon after a big write. (The
    server on the development machines runs with autovacuum off; without statistics the planner
    may, for example, answer the claim's NOT EXISTS by reading the person's whole history.)
    Returns the seconds it took; None on SQLite, whose planner needs none here."""
    if connection.vendor != "postgresql":
        return None
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return round(time.perf_counter() - started, 2)


# --- one annotator, actions called directly ---------------------------------------------------


def claim_submit(backend: str, project, size: int, pairs: int) -> dict:
    membership = actions.add_member(project, make_user(f"bench-solo-{size}"))
    category_ids = list(project.categories.values_list("id", flat=True))
    claims, submits, both, honeypot_claims = [], [], [], []
    honeypots = 0
    with CaptureQueriesContext(connection) as queries:
        for _ in range(WARMUP):
            _one_pair(membership, category_ids, 0)
    queries_per_pair = round(len(queries.captured_queries) / WARMUP, 1)
    claim_queries, submit_queries = _queries_per_action(membership, category_ids)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(pairs):
        timing = _one_pair(membership, category_ids, 0)
        if timing is None:
            break
        claim_s, submit_s, honeypot = timing
        if honeypot:
            honeypot_claims.append(claim_s)
        claims.append(claim_s)
        submits.append(submit_s)
        both.append(claim_s + submit_s)
        honeypots += honeypot
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    record = {
        "name": "claim_submit", "backend": backend, "items": size, "pairs": len(both),
        "items_per_s": round(len(both) / elapsed, 1), **percentiles(both),
        # Python's own share (ORM, driver), less sensitive to a busy machine than wall time.
        "client_cpu_ms_per_pair": round(cpu / max(1, len(both)) * 1000, 2),
        **prefixed("claim", percentiles(claims)), **prefixed("submit", percentiles(submits)),
        "honeypots": honeypots, "honeypot_claim_p50_ms": percentiles(honeypot_claims)["p50_ms"],
        "queries_per_pair": queries_per_pair, "claim_queries": claim_queries, "submit_queries": submit_queries,
        "k": project.annotations_per_item,
        **queue_violations(project), "target_p95_ms": TARGET_CLAIM_P95_MS,
    }
    emit(record)
    return record


def _one_pair(membership, category_ids, annotator_number):
    """Claim (topping the stage up, as the annotate page does) and label the item on screen."""
    started = time.perf_counter()
    leases = actions.claim_stage(membership)
    claimed = time.perf_counter()
    if not leases:
        return None
    lease = leases[0]
    actions.submit_annotation(
        membership, lease.item_id, [label_for(lease.item_id, annotator_number, category_ids)], uuid.uuid4().hex
    )
    return claimed - started, time.perf_counter() - claimed, int(lease.is_honeypot)


def _queries_per_action(membership, category_ids) -> tuple[int, int]:
    """Round trips (BEGIN and COMMIT count) of one claim that leases an item, and of its submit."""
    while True:
        with CaptureQueriesContext(connection) as claim:
            lease = actions.claim_next_item(membership)
        if lease is None or not lease.is_honeypot:
            break
        actions.submit_annotation(membership, lease.item_id, [category_ids[0]], uuid.uuid4().hex)
    if lease is None:
        return len(claim.captured_queries), 0
    with CaptureQueriesContext(connection) as submit:
        actions.submit_annotation(
            membership, lease.item_id, [label_for(lease.item_id, 0, category_ids)], uuid.uuid4().hex
        )
    return len(claim.captured_queries), len(submit.captured_queries)


# --- one annotator through the htmx endpoint ----------------------------------------------------

CARD = re.compile(rb'data-item-id="(\d+)"')


def claim_submit_http(backend: str, project, size: int, pairs: int) -> dict:
    """The browser's loop: POST the label for the card on screen (holding the prefetched one);
    the response is the next card. Django's test client: every middleware, the session, the
    view, the template; no socket."""
    user = make_user(f"bench-http-{size}")
    actions.add_member(project, user)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    page = client.get(reverse("annotate", args=[project.slug]))
    current, following = [int(x) for x in CARD.findall(page.content)[:2]]
    category_ids = list(project.categories.values_list("id", flat=True))
    url = reverse("annotate_submit", args=[project.slug])
    samples, failures = [], 0
    for n in range(WARMUP + pairs):
        started = time.perf_counter()
        response = client.post(url, {
            "item": current, "holding": following, "request_id": uuid.uuid4().hex,
            "category": label_for(current, 1, category_ids), "duration_ms": 900,
        }, HTTP_HX_REQUEST="true")
        elapsed = time.perf_counter() - started
        found = CARD.search(response.content)
        if response.status_code != 200 or found is None:
            failures += 1
            break
        if n >= WARMUP:
            samples.append(elapsed)
        current, following = following, int(found.group(1))
    record = {
        "name": "claim_submit_http", "backend": backend, "items": size, "pairs": len(samples),
        "path": "POST annotate_submit (htmx) -> next card, Django test client",
        "items_per_s": round(len(samples) / sum(samples), 1) if samples else 0, **percentiles(samples),
        "failures": failures, "target_p95_ms": TARGET_CLAIM_P95_MS,
    }
    emit(record)
    return record


# --- many annotators at once ------------------------------------------------------------------


def claim_submit_concurrent(backend: str, project, size: int, annotators: int, pairs_each: int, think_ms: int) -> dict:
    memberships = [
        actions.add_member(project, make_user(f"bench-crowd-{think_ms}-{n}")).pk for n in range(annotators)
    ]
    category_ids = list(project.categories.values_list("id", flat=True))
    connections.close_all()  # every process opens its own connection after the fork
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(annotators), context.Queue()
    workers = [
        context.Process(target=_annotator, args=(pk, n, pairs_each, think_ms, category_ids, barrier, results))
        for n, pk in enumerate(memberships)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    samples = [s for outcome in outcomes for s in outcome["samples"]]
    span = max(o["ended"] for o in outcomes) - min(o["started"] for o in outcomes)
    record = {
        "name": "claim_submit_concurrent", "backend": backend, "items": size, "annotators": annotators,
        "think_ms": think_ms,
        "pairs": len(samples), "items_per_s": round(len(samples) / span, 1), **percentiles(samples),
        "errors": sum(o["errors"] for o in outcomes),
        "error_examples": sorted({e for o in outcomes for e in o["error_examples"]})[:3],
        "k": project.annotations_per_item, **queue_violations(project), "target_p95_ms": TARGET_CLAIM_P95_MS,
    }
    emit(record)
    return record


def _annotator(membership_pk, number, pairs, think_ms, category_ids, barrier, results) -> None:
    membership = Membership.objects.select_related("project", "user").get(pk=membership_pk)
    outcome = {"samples": [], "errors": 0, "error_examples": []}
    reading = random.Random(number)
    barrier.wait()
    outcome["started"] = time.time()
    for _ in range(pairs):
        if think_ms:
            time.sleep(think_ms * reading.uniform(0.5, 1.5) / 1000)
        started = time.perf_counter()
        try:
            timing = _one_pair(membership, category_ids, number)
        except Exception as exc:  # noqa: BLE001 — counted and reported, the run goes on
            outcome["errors"] += 1
            outcome["error_examples"].append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        if timing is None:
            break
        outcome["samples"].append(time.perf_counter() - started)
    outcome["ended"] = time.time()
    connections.close_all()
    results.put(outcome)


# --- correctness ------------------------------------------------------------------------------


def queue_violations(project) -> dict:
    """The queue's guarantees, checked from the rows: nobody over-leases an item, nobody gets an
    item twice, and every item's free-slot count matches its leases."""
    k = project.annotations_per_item
    taken = Assignment.objects.filter(project=project, is_honeypot=False, round=F("item__round")).exclude(
        status=Assignment.Status.SKIPPED
    )
    over_leased = taken.values("item").annotate(n=Count("id")).filter(n__gt=k).count()
    twice = (
        Assignment.objects.filter(project=project).values("item", "annotator", "round")
        .annotate(n=Count("id")).filter(n__gt=1).count()
    )
    labels_over_k = (
        Annotation.objects.filter(project=project, is_honeypot=False, rejected=False).values("item", "round")
        .annotate(n=Count("id")).filter(n__gt=k).count()
    )
    held = dict(taken.values("item").annotate(n=Count("id")).values_list("item", "n"))
    mismatched = sum(
        1 for item_id, slots in Item.objects.filter(pk__in=list(held)).values_list("id", "open_slots")
        if slots != k - held[item_id]
    )
    untouched_wrong = (
        Item.objects.filter(project=project, status=Item.Status.OPEN)
        .exclude(open_slots=k)
        .exclude(Exists(Assignment.objects.filter(item=OuterRef("pk"))))
        .count()
    )
    return {
        "duplicate_assignments": over_leased + twice + labels_over_k,
        "over_leased_items": over_leased, "leased_twice_to_one_person": twice,
        "items_labelled_over_k": labels_over_k, "slot_mismatches": mismatched + untouched_wrong,
    }


# --- the alternatives, side by side -------------------------------------------------------------


def claim_query_alternatives(backend: str, project, size: int, user) -> list[dict]:
    """The same question -- the next claimable item this person has not seen -- asked four ways
    on the same table. Read-only; nothing is leased."""
    item, assignment = Item._meta.db_table, Assignment._meta.db_table
    random_fn = "random()" if connection.vendor == "postgresql" else "RANDOM()"
    where = (
        f"i.project_id = %s AND i.open_slots > 0 AND NOT EXISTS (SELECT 1 FROM {assignment} a "
        f"WHERE a.item_id = i.id AND a.annotator_id = %s AND a.round = i.round)"
    )
    middle = size // 2
    cursor_rank = Item.objects.filter(project=project).order_by("rank").values_list("rank", flat=True)[middle]
    ways = [
        ("indexed_cursor", f"SELECT i.id FROM {item} i WHERE {where} AND i.rank > %s ORDER BY i.rank LIMIT 1",
         [project.pk, user.pk, cursor_rank], 200),
        ("order_by_random", f"SELECT i.id FROM {item} i WHERE {where} ORDER BY {random_fn} LIMIT 1",
         [project.pk, user.pk], 10),
        ("offset", f"SELECT i.id FROM {item} i WHERE {where} ORDER BY i.rank LIMIT 1 OFFSET %s",
         [project.pk, user.pk, middle], 10),
        ("count_claimable", f"SELECT count(*) FROM {item} i WHERE {where}", [project.pk, user.pk], 10),
    ]
    records = []
    for method, sql, params, runs in ways:
        samples = []
        with connection.cursor() as cursor:
            for n in range(runs + 2):
                started = time.perf_counter()
                cursor.execute(sql, params)
                cursor.fetchall()
                if n >= 2:  # two warm-up runs: caches hot, as on a busy server
                    samples.append(time.perf_counter() - started)
        record = {"name": "claim_query", "backend": backend, "items": size, "method": method, "runs": runs,
                  **percentiles(samples)}
        emit(record)
        records.append(record)
    return records


def claim_plans(backend: str, project, size: int) -> None:
    """EXPLAIN ANALYZE of every query that reads (SELECT, WITH) in one claim + submit pair on
    PostgreSQL (and of the honeypot claim's), for the annotator with thousands of labels behind
    them, so an index that stops being used shows up here first."""
    membership = Membership.objects.select_related("project", "user").get(
        project=project, user__username=f"bench-solo-{size}"
    )
    category_ids = list(project.categories.values_list("id", flat=True))
    with CaptureQueriesContext(connection) as captured:
        _one_pair(membership, category_ids, 0)
        actions._claim_honeypot(membership, timezone.now())
    plans = []
    for query in captured.captured_queries:
        sql = query["sql"]
        # WITH: the one-statement claim and submit (labeling/pg_queue.py); EXPLAIN ANALYZE runs
        # them, inside a transaction that is rolled back.
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        plans.append(_explain(sql))
    slowest = max(plans, key=lambda p: p["ms"]) if plans else None
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
    emit({
        "name": "claim_plan", "backend": backend, "items": size, "selects": len(plans),
        "server_autovacuum": autovacuum,
        "seq_scans": sum(1 for p in plans if p["seq_scan"]),
        "slowest_ms": slowest["ms"] if slowest else None,
        "plans": plans,
    })


def _explain(sql: str) -> dict:
    with transaction.atomic():  # FOR UPDATE takes locks: roll them back
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0][0]
        transaction.set_rollback(True)
    nodes = []

    def walk(node):
        label = node["Node Type"]
        if "Index Name" in node:
            label += f" using {node['Index Name']}"
        elif "Relation Name" in node:
            label += f" on {node['Relation Name']}"
        nodes.append(label)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return {
        "sql": re.sub(r"\s+", " ", sql)[:160], "ms": round(plan["Execution Time"], 3),
        "planning_ms": round(plan["Planning Time"], 3),
        "seq_scan": any(n.startswith("Seq Scan") for n in nodes), "nodes": nodes,
    }


# --- the run ----------------------------------------------------------------------------------


def run(backend: str, items: int) -> None:
    # Whitenoise warns that collectstatic never ran; the bench serves no static files.
    warnings.filterwarnings("ignore", message="No directory at")
    call_command("migrate", verbosity=0)
    # Load every view module as a running web worker has at start-up: otherwise the first import
    # pays for loading scikit-learn (its gold labels queue modeling.tasks), several seconds that
    # are this process's start-up, not the import's.
    get_resolver().url_patterns  # noqa: B018
    # Production settings for what matters here (no per-query logging); testserver-free host.
    with override_settings(DEBUG=False):
        _run(backend, items)


def _run(backend: str, items: int) -> None:
    k = setting("BENCH_K", 3)
    sizes = synthetic.sizes_for(items)

    def quiet() -> None:
        wait_for_quiet(setting("BENCH_QUIET_WAIT_S", 60))

    projects = {}
    for size in sizes:
        quiet()
        projects[size] = import_project(backend, size, k)
    solo = {}
    for size in sizes:
        quiet()
        solo[size] = claim_submit(backend, projects[size], size, setting("BENCH_PAIRS", 2000))
        quiet()
        claim_submit_http(backend, projects[size], size, setting("BENCH_HTTP_PAIRS", 1000))
    big = projects[items]
    quiet()
    claim_query_alternatives(backend, big, items, make_user(f"bench-probe-{items}"))
    refresh_statistics()  # the labels written since the import, as autovacuum would
    if connection.vendor == "postgresql":
        claim_plans(backend, big, items)
    for think_ms in (setting("BENCH_THINK_MS", 3000), 0):
        quiet()
        claim_submit_concurrent(
            backend, big, items, setting("BENCH_ANNOTATORS", 50), setting("BENCH_PAIRS_EACH", 30), think_ms
        )
    small, large = solo[sizes[0]], solo[sizes[-1]]
    emit({
        "name": "claim_growth", "backend": backend, "items": items, "small_items": sizes[0],
        "p95_ms_small": small["p95_ms"], "p95_ms_large": large["p95_ms"],
        "p95_ratio": round(large["p95_ms"] / small["p95_ms"], 2) if small["p95_ms"] else None,
        "cpu_ms_per_pair_small": small["client_cpu_ms_per_pair"], "cpu_ms_per_pair_large": large["client_cpu_ms_per_pair"],
        "meets_p95_target": large["p95_ms"] is not None and large["p95_ms"] <= TARGET_CLAIM_P95_MS,
    })
