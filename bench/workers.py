"""Real Celery workers for a bench, on a private queue of a Redis broker, started and stopped
around the timed work (their start-up, Django and scikit-learn imports, is never part of it)."""
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 120


@contextlib.contextmanager
def celery_workers(
    broker: str, queue: str, count: int = 1, concurrency: int = 1, pool: str = "prefork", **env
):
    """`count` `celery worker` processes (each with `concurrency` pool processes) taking only
    `queue`, with `env` added to this process's environment, ready when this yields them.
    Afterwards they are stopped (warm, then killed after a minute) and the queue's keys are
    deleted from the broker."""
    env = {
        **os.environ, "CELERY_BROKER_URL": broker, "CELERY_TASK_DEFAULT_QUEUE": queue,
        "PYTHONUNBUFFERED": "1", **env,
    }
    workers = []
    try:
        for n in range(count):
            workers.append(_start(env, queue, f"{queue}-{n}", concurrency, pool))
        for worker in workers:
            _wait_until_ready(worker)
        yield workers
    finally:
        for worker in workers:
            worker.terminate()  # warm shutdown
        for worker in workers:
            _reap(worker)
        keys = redis.Redis.from_url(broker)
        for key in keys.scan_iter(f"*{queue}*"):
            keys.delete(key)


def _start(env: dict, queue: str, name: str, concurrency: int, pool: str) -> subprocess.Popen:
    handle, log = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
    with os.fdopen(handle, "w") as out:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", f"--pool={pool}",
             f"--concurrency={concurrency}", "-Q", queue, "-n", f"{name}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    worker.log_path = Path(log)
    return worker


def _wait_until_ready(worker: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while "ready." not in worker.log_path.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"a bench worker did not start:\n{worker.log_path.read_text()}")
        time.sleep(0.2)


def _reap(worker: subprocess.Popen) -> None:
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:  # still busy after a minute: it is only a bench worker
        worker.kill()
        worker.wait()
    worker.log_path.unlink(missing_ok=True)
