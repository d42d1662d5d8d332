"""Pointing this process's Celery app at another broker for a test, and back."""


def forget_broker_connections(app) -> None:
    """Forget the connection pool and the producer pool built on it: after an earlier test
    published, both point at the old broker and would keep publishing there. Never close them:
    kombu's registry hands the same pools back once the old broker URL is restored, and a closed
    one fails every later publish with "Acquire on closed pool"."""
    app._pool = None
    app.amqp._producer_pool = None
