"""Benchmark settings from the environment (BENCH_ITEMS=1_000_000 and the like)."""
import os
import sys


def env_int(name: str, default: int) -> int:
    """A whole number from the environment (underscores allowed); a clear exit on anything else."""
    raw = os.environ.get(name, "")
    try:
        return int(raw.replace("_", "")) if raw else default
    except ValueError:
        sys.exit(f"{name}={raw!r} is not a whole number.")
