"""`make bench`: measure import, the annotator's claim + submit, and concurrency; one JSON object
per line on stdout.

Environment:
  BENCH_ITEMS=N                  project size (default 100000); the claim is also measured at 10k
  BENCH_BACKEND=sqlite|postgres  one database (default: both when PostgreSQL is reachable)
  BENCH_POSTGRES_URL             server to use (default: DATABASE_URL if it is PostgreSQL, else
                                 postgres://postgres@127.0.0.1:5432/postgres)
  BENCH_DB_SUFFIX                appended to the bench databases' names, so runs side by side on
                                 one server do not drop each other's database
  BENCH_PAIRS, BENCH_HTTP_PAIRS, BENCH_ANNOTATORS, BENCH_PAIRS_EACH, BENCH_K: see bench/suite.py

Each backend runs in its own process on a fresh database (Django reads DATABASE_URL once, at
start-up): var/bench/bench.sqlite3 and the PostgreSQL database `labelloop_bench`, both migrated
from scratch. They are left in place afterwards for inspection.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
_SUFFIX = "".join(c for c in os.environ.get("BENCH_DB_SUFFIX", "") if c.isalnum() or c == "_")
SQLITE_PATH = BENCH_DIR / f"bench{_SUFFIX}.sqlite3"
POSTGRES_DB = f"labelloop_bench{_SUFFIX}"

sys.path.insert(0, str(ROOT))

from bench import synthetic  # noqa: E402
from bench.env import env_int  # noqa: E402


def postgres_server_url() -> str:
    url = os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgres") else "postgres://postgres@127.0.0.1:5432/postgres"


def postgres_connect(url: str, dbname: str | None = None):
    import dj_database_url
    import psycopg2

    config = dj_database_url.parse(url)
    return psycopg2.connect(
        dbname=dbname or config["NAME"] or "postgres", user=config["USER"], password=config["PASSWORD"] or None,
        host=config["HOST"], port=config["PORT"] or 5432, connect_timeout=3,
    )


def postgres_reachable(url: str) -> bool:
    import psycopg2

    try:
        postgres_connect(url).close()
    except psycopg2.OperationalError:
        return False
    return True


def fresh_postgres(url: str) -> str:
    """Drop and recreate the bench database; returns its URL."""
    server = postgres_connect(url)
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DB}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{POSTGRES_DB}"')
    server.close()
    base, _, _ = url.rpartition("/")
    return f"{base}/{POSTGRES_DB}"


def fresh_sqlite() -> str:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{SQLITE_PATH}"


def chosen_backends() -> list[str]:
    wanted = os.environ.get("BENCH_BACKEND", "").strip().lower()
    if wanted in ("sqlite", "postgres"):
        return [wanted]
    if wanted not in ("", "both"):
        sys.exit(f"BENCH_BACKEND={wanted!r}: use sqlite, postgres or leave it unset for both.")
    if postgres_reachable(postgres_server_url()):
        return ["sqlite", "postgres"]
    print(f"PostgreSQL at {postgres_server_url()} is unreachable: SQLite only.", file=sys.stderr)
    return ["sqlite"]


def run_backend(backend: str) -> int:
    """The child process: Django set up on the fresh database named by DATABASE_URL."""
    import django

    django.setup()
    from bench import suite

    suite.run(backend, env_int("BENCH_ITEMS", 100_000))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--backend"]:
        return run_backend(sys.argv[2])
    items = env_int("BENCH_ITEMS", 100_000)
    for size in synthetic.sizes_for(items):
        synthetic.items_csv(size, BENCH_DIR)  # generated before any clock starts
    failed = 0
    for backend in chosen_backends():
        url = fresh_sqlite() if backend == "sqlite" else fresh_postgres(postgres_server_url())
        env = {**os.environ, "DATABASE_URL": url, "BENCH_ITEMS": str(items), "DJANGO_SETTINGS_MODULE": "config.settings"}
        done = subprocess.run([sys.executable, __file__, "--backend", backend], cwd=ROOT, env=env)
        if done.returncode:
            print(f"bench on {backend} failed (exit {done.returncode}).", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
