"""Our own Prometheus metrics, next to the request/database ones django-prometheus keeps.

Actions increment them after their transaction commits, so a rolled-back write counts nothing.
Other code calls, for example:

    metrics.TRAINING_RUNS.labels(status="done").inc()
    metrics.PREDICT_LATENCY.labels(endpoint="predict").observe(seconds)

`/metrics` answers requests from loopback, or with `Authorization: Bearer <METRICS_TOKEN>` when
that setting is non-empty; anyone else gets 403. Each process keeps its own figures (set
PROMETHEUS_MULTIPROC_DIR to aggregate several gunicorn workers, see prometheus_client's docs).
"""
import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponseForbidden
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import Counter, Histogram

ANNOTATIONS = Counter("labelloop_annotations_submitted", "Annotations stored (retries not counted).")
REVIEWS = Counter("labelloop_reviews_decided", "Review decisions stored, by decision.", ["decision"])
TRAINING_RUNS = Counter("labelloop_training_runs", "Training runs that reached a final status.", ["status"])
PREDICT_LATENCY = Histogram(
    "labelloop_predict_latency_seconds",
    "Online inference latency.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def annotation_submitted() -> None:
    ANNOTATIONS.inc()


def review_decided(decision: str) -> None:
    REVIEWS.labels(decision=decision).inc()


def training_run_finished(status: str) -> None:
    TRAINING_RUNS.labels(status=status).inc()


def predict_observed(seconds: float, endpoint: str = "predict") -> None:
    PREDICT_LATENCY.labels(endpoint=endpoint).observe(seconds)


def _from_loopback(request) -> bool:
    if not getattr(settings, "METRICS_LOOPBACK", True):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _has_token(request) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "")
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def metrics_view(request):
    """Prometheus scrape endpoint: loopback, or a bearer token (METRICS_TOKEN)."""
    if not (_from_loopback(request) or _has_token(request)):
        return HttpResponseForbidden("Metrics are served to loopback or with the METRICS_TOKEN bearer token.\n")
    return ExportToDjangoView(request)
