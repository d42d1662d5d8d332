"""Bench: single-label claim + submit beside multi-label, in one run; one JSON object per line.

    .venv/bin/python bench/multilabel.py

Multi-label support must not make single-label projects slower. Two projects of the same
synthetic items (bench/synthetic.py), one single-label and one multi-label (with "none of these"),
on a fresh database, without honeypots (each claim would draw one at random); the annotator's loop (`claim_stage` + `submit_annotation`, the calls the
annotate page makes) is timed on both, pair by pair in turn, so a busy neighbour slows both alike:
  {"name": "multilabel_claim_submit", "mode": "single"|"multi", "p50_ms", "p95_ms", "queries_per_pair", ...}
  {"name": "multilabel_vs_single", "p50_ratio", "p95_ratio", "same_queries_per_pair", ...}
The single-label project is then measured again by bench/suite.py's own `claim_submit` (the
`make bench` figure), so the two can be read side by side:
  {"name": "claim_submit", ...}  (bench/suite.py's record, with "source": "bench/suite.py")
Last, the multi-label agreement figures on synthetic sets (exact set, MASI alpha, per category):
  {"name": "multilabel_agreement", "annotations", "exact_set_s", "masi_alpha_s", "per_category_s"}

Environment (all optional):
  BENCH_ML_ITEMS=10000    items per project
  BENCH_ML_PAIRS=1000     claim + submit pairs per project (after 20 warm-up pairs)
  BENCH_ML_K=1            annotations per item
  BENCH_ML_BACKEND=sqlite|postgres (default sqlite: var/bench/multilabel.sqlite3; postgres: the
                          database labelloop_bench_multilabel at BENCH_POSTGRES_URL's server)
  BENCH_ML_AGREEMENT_ITEMS=25000  items (two labels each) for the agreement figures; 0 skips them
  BENCH_CODE_ROOT=/path   import the application from another checkout (e.g. an export of the
                          previous commit) to compare the single-label figures before and after
"""
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_ROOT = Path(os.environ.get("BENCH_CODE_ROOT") or ROOT).resolve()
sys.path.insert(0, str(CODE_ROOT))
if CODE_ROOT != ROOT:
    sys.path.insert(1, str(ROOT))  # this script's helpers (bench/) when the other tree lacks them

BENCH_DIR = ROOT / "var" / "bench"
SQLITE_PATH = BENCH_DIR / "multilabel.sqlite3"
POSTGRES_DB = "labelloop_bench_multilabel"
WARMUP = 20


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw.replace("_", "")) if raw else default
    except ValueError:
        sys.exit(f"{name}={raw!r} is not a whole number.")


def fresh_database() -> str:
    backend = os.environ.get("BENCH_ML_BACKEND", "sqlite")
    if backend == "sqlite":
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{SQLITE_PATH}"
    if backend != "postgres":
        sys.exit(f"BENCH_ML_BACKEND={backend!r}: use sqlite or postgres.")
    from bench.run import postgres_connect, postgres_server_url

    server_url = postgres_server_url()
    server = postgres_connect(server_url)
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DB}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{POSTGRES_DB}"')
    server.close()
    return f"{server_url.rpartition('/')[0]}/{POSTGRES_DB}"


def main() -> int:
    """The parent: a fresh database, then the measurements in a child process (Django reads
    DATABASE_URL once, at start-up)."""
    if sys.argv[1:2] == ["--child"]:
        return child()
    from bench import synthetic

    synthetic.items_csv(env_int("BENCH_ML_ITEMS", 10_000), BENCH_DIR)  # before any clock starts
    env = {**os.environ, "DATABASE_URL": fresh_database(), "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run([sys.executable, __file__, "--child"], cwd=ROOT, env=env, check=False).returncode


# --- the child --------------------------------------------------------------------------------


def child() -> int:
    import warnings

    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import override_settings

    warnings.filterwarnings("ignore", message="No directory at")
    call_command("migrate", verbosity=0)
    with override_settings(DEBUG=False):
        measure()
    return 0


def measure() -> None:
    from bench import suite

    items, pairs, k = env_int("BENCH_ML_ITEMS", 10_000), env_int("BENCH_ML_PAIRS", 1000), env_int("BENCH_ML_K", 1)
    single = project_of("single", items, k)
    multi = project_of("multi", items, k)
    suite.wait_for_quiet(60)
    single_figures, multi_figures = interleaved(single, multi, pairs)
    suite.emit(single_figures)
    suite.emit(multi_figures)
    suite.emit({
        "name": "multilabel_vs_single", "items": items, "pairs": pairs, "k": k,
        "p50_ratio": ratio(multi_figures["p50_ms"], single_figures["p50_ms"]),
        "p95_ratio": ratio(multi_figures["p95_ms"], single_figures["p95_ms"]),
        "same_queries_per_pair": single_figures["queries_per_pair"] == multi_figures["queries_per_pair"],
        "code_root": str(CODE_ROOT),
    })
    # bench/suite.py's own measurement of the single-label loop, on the same project (fresh user).
    suite.wait_for_quiet(60)
    original_emit = suite.emit
    suite.emit = lambda record: original_emit({**record, "source": "bench/suite.py", "mode": "single"})
    try:
        suite.claim_submit(connection_vendor(), single, items, pairs)
    finally:
        suite.emit = original_emit
    agreement_items = env_int("BENCH_ML_AGREEMENT_ITEMS", 25_000)
    if agreement_items:
        suite.wait_for_quiet(60)
        agreement_timings(agreement_items)


def connection_vendor() -> str:
    from django.db import connection

    return connection.vendor


def project_of(mode: str, items: int, k: int):
    from bench import synthetic
    from labeling import actions
    from labeling.importer import import_items
    from labeling.review import assign_splits

    extra = {"allow_none_of_these": True} if mode == "multi" and _has_allow_none() else {}
    # No honeypots: each claim would draw one at random, and the two loops must do the same work.
    project = actions.create_project(
        f"Bench {mode}", f"bench-{mode}", mode=mode, annotations_per_item=k, honeypot_percent=0, **extra
    )
    path = synthetic.items_csv(items, BENCH_DIR)
    with path.open("rb") as stream:
        import_items(project, stream, path.name, size=path.stat().st_size)
    assign_splits(project)  # gold training items become honeypot candidates, as after a real import
    return project


def _has_allow_none() -> bool:
    from labeling.models import Project

    return any(f.name == "allow_none_of_these" for f in Project._meta.get_fields())


def interleaved(single, multi, pairs: int) -> tuple[dict, dict]:
    """Claim + submit on both projects in turn, pair by pair: the same machine state for both."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench import suite
    from labeling import actions

    loops = {}
    for project in (single, multi):
        membership = actions.add_member(project, suite.make_user(f"bench-ml-{project.mode}"))
        loops[project.mode] = Loop(membership)
    queries = {}
    for mode, loop in loops.items():
        with CaptureQueriesContext(connection) as captured:
            for _ in range(WARMUP):
                loop.pair()
        queries[mode] = round(len(captured.captured_queries) / WARMUP, 1)
    for _ in range(pairs):
        for loop in loops.values():
            loop.timed_pair()
    return tuple(
        {
            "name": "multilabel_claim_submit", "mode": mode, "backend": connection.vendor,
            "items": project.items.count(), "pairs": len(loops[mode].both), "k": project.annotations_per_item,
            **suite.percentiles(loops[mode].both),
            **suite.prefixed("claim", suite.percentiles(loops[mode].claims)),
            **suite.prefixed("submit", suite.percentiles(loops[mode].submits)),
            "queries_per_pair": queries[mode],
            "mean_categories_per_label": round(statistics.mean(loops[mode].sizes), 2) if loops[mode].sizes else None,
        }
        for mode, project in (("single", single), ("multi", multi))
    )


class Loop:
    """One annotator's loop on one project. Multi-label labels are sets of one to three categories
    (now and then "none of these"); single-label labels are one category."""

    def __init__(self, membership):
        self.membership = membership
        self.multi = membership.project.mode == "multi"
        self.none_allowed = getattr(membership.project, "allow_none_of_these", False)
        self.category_ids = list(membership.project.categories.values_list("id", flat=True))
        self.rng = random.Random(5)
        self.claims, self.submits, self.both, self.sizes = [], [], [], []

    def label(self) -> list[int]:
        if not self.multi:
            return [self.rng.choice(self.category_ids)]
        if self.none_allowed and self.rng.random() < 0.05:
            return []
        return self.rng.sample(self.category_ids, self.rng.choice([1, 1, 2, 3]))

    def pair(self) -> tuple[float, float] | None:
        from labeling import actions

        started = time.perf_counter()
        leases = actions.claim_stage(self.membership)
        claimed = time.perf_counter()
        if not leases:
            return None
        label = self.label()
        actions.submit_annotation(self.membership, leases[0].item_id, label, uuid.uuid4().hex)
        self.last_size = len(label)
        return claimed - started, time.perf_counter() - claimed

    def timed_pair(self) -> None:
        timing = self.pair()
        if timing is None:
            return
        self.claims.append(timing[0])
        self.submits.append(timing[1])
        self.both.append(sum(timing))
        self.sizes.append(self.last_size)


def ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def agreement_timings(items: int) -> None:
    """The agreement page's multi-label figures on synthetic sets: 9 categories, 20 annotators,
    two labels per item, each label the item's true set with one category flipped 30% of the time."""
    from bench import suite

    try:
        from labeling.agreement import agreement_report
        from labeling.agreement_multilabel import masi_alpha, multilabel_agreement
    except ImportError:
        return  # an older checkout (BENCH_CODE_ROOT) without multi-label agreement
    rng = random.Random(1)
    categories = list(range(1, 10))
    rows = []
    for item in range(items):
        truth = {c for c in categories if rng.random() < 0.2}
        for annotator in rng.sample(range(20), 2):
            labels = set(truth)
            if rng.random() < 0.3:
                labels ^= {rng.choice(categories)}
            rows.append((item, annotator, tuple(sorted(labels))))
    timings = {}
    for name, run in (
        ("exact_set_s", lambda: agreement_report(rows)),
        ("masi_alpha_s", lambda: masi_alpha(rows)),
        ("per_category_s", lambda: multilabel_agreement(rows, categories)),
    ):
        started = time.perf_counter()
        result = run()
        timings[name] = round(time.perf_counter() - started, 2)
        if name == "masi_alpha_s":
            timings["masi_alpha"] = round(result.value, 4)
    timings["per_category_s"] = round(timings["per_category_s"] - timings["masi_alpha_s"], 2)
    suite.emit({
        "name": "multilabel_agreement", "annotations": len(rows), "items": items, "categories": 9,
        "distinct_sets": len({label for _, _, label in rows}), **timings,
    })


if __name__ == "__main__":
    sys.exit(main())
