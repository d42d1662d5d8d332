"""Bench: batch predictions for 1M items on PostgreSQL as installed and as tuned for production,
side by side in one run, one JSON object per line on stdout (each says which in "postgres_settings").

    .venv/bin/python bench/postgres_settings.py

Runs bench/modeling.py's batch section (BENCH_ONLY=batch, the way predictions are made now) twice:
  default     the server at BENCH_POSTGRES_URL, on its own settings (this machine's: the package's
              shared_buffers 128MB, max_wal_size 1GB);
  production  a private cluster this script starts with PRODUCTION below, initialised once under
              var/bench/pg-production and kept (its 1.1M-item database is built once, ~3 min),
              stopped at the end. Durability is untouched: fsync and full-page writes stay on.

Re-ranking rewrites every open item's row, and its indexes are keyed by random values (content
hash, uncertainty rank): with 128MB of shared buffers the backends spend most of that time reading
and evicting pages and the checkpoints that 1GB of WAL forces write full-page images again.
"""
import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "var" / "bench" / "pg-production"
DEFAULT_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/labelloop_bench_modeling")
# What a database server with 16GB of memory or more is usually given (PostgreSQL's own guidance:
# a quarter of memory for shared buffers); README.md, "Production", says the same.
PRODUCTION = {
    "shared_buffers": "4GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "wal_compression": "on",
}


def main() -> None:
    run_batch_bench(DEFAULT_URL, "default")
    binaries = postgres_binaries()
    if binaries is None:
        print('{"name": "batch_predict", "postgres_settings": "production", "skipped": "no PostgreSQL server binaries"}')
        return
    port = free_port()
    cluster = PrivateCluster(binaries, DATA, port)
    cluster.start(PRODUCTION)
    try:
        run_batch_bench(f"postgres://postgres@127.0.0.1:{port}/labelloop_bench_modeling", "production")
    finally:
        cluster.stop()


def run_batch_bench(url: str, label: str) -> None:
    env = {
        **os.environ, "BENCH_BACKEND": "postgres", "BENCH_POSTGRES_URL": url, "BENCH_ONLY": "batch",
        "BENCH_BATCH_OLD_WAY": "0", "BENCH_POSTGRES_SETTINGS": label,
    }
    subprocess.run([sys.executable, str(ROOT / "bench" / "modeling.py")], env=env, cwd=ROOT, check=True)


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateCluster:
    """A cluster of this bench's own, run as the postgres user when we are root (initdb refuses
    root), trust auth on loopback only."""

    def __init__(self, binaries: Path, data: Path, port: int):
        self.bin, self.data, self.port = binaries, data, port
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *command: str) -> None:
        subprocess.run([*self.as_owner, *command], check=True, capture_output=True, timeout=600)

    def start(self, settings: dict[str, str]) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            if self.as_owner:
                shutil.chown(self.data, "postgres", "postgres")
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = " ".join(
            [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.data}"]
            + [f"-c {name}={value}" for name, value in settings.items()]
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


if __name__ == "__main__":
    main()
