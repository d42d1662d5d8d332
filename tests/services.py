"""Which outside services the tests can reach. `python tests/services.py postgres` exits 0 if reachable.

Under CI=true a test that needs an unreachable service fails; elsewhere it is skipped with a reason.
"""
import os
import sys

import dj_database_url

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def postgres_reachable(url: str = POSTGRES_URL) -> bool:
    import psycopg2

    config = dj_database_url.parse(url)
    try:
        psycopg2.connect(
            dbname=config["NAME"], user=config["USER"], password=config["PASSWORD"] or None,
            host=config["HOST"], port=config["PORT"] or 5432, connect_timeout=3,
        ).close()
    except psycopg2.OperationalError:
        return False
    return True


def redis_reachable(url: str = REDIS_URL) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.exceptions.RedisError:
        return False


def chromium_present() -> bool:
    return os.access(CHROMIUM, os.X_OK)


if __name__ == "__main__":
    check = {"postgres": postgres_reachable, "redis": redis_reachable, "chromium": chromium_present}[sys.argv[1]]
    sys.exit(0 if check() else 1)
