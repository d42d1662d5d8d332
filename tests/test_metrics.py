"""/metrics: Prometheus text with django-prometheus's figures and our counters; loopback or token."""
import io
import uuid

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from labeling import actions, review
from labeling.importer import import_items
from labeling.models import ReviewPolicy


def scrape(client=None, **extra) -> dict:
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def label_next(membership, name, request_id=None):
    lease = actions.claim_next_item(membership)
    category = membership.project.categories.get(name=name).id
    request_id = request_id or uuid.uuid4().hex
    actions.submit_annotation(membership, lease.item_id, [category], request_id)
    return lease.item_id, category, request_id


@pytest.fixture
def loaded(project):
    project.annotations_per_item = 2
    project.review_policy = ReviewPolicy.DISAGREEMENTS
    project.honeypot_percent = 0
    project.save()
    rows = "title,description\n" + "".join(f"Item {i},text number {i}\n" for i in range(3))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    return project


@pytest.mark.django_db
def test_it_counts_a_submitted_annotation_once_even_when_retried(loaded, member):
    annotator = member()
    before = value(scrape(), "labelloop_annotations_submitted_total")
    item_id, category, request_id = label_next(annotator, "mlops")
    actions.submit_annotation(annotator, item_id, [category], request_id)  # a retry: nothing new
    assert value(scrape(), "labelloop_annotations_submitted_total") == before + 1


@pytest.mark.django_db
def test_it_counts_review_decisions_by_decision(loaded, member):
    a, b, reviewer = member(), member(), member("reviewer")
    label_next(a, "mlops")
    label_next(b, "other")
    before = value(scrape(), "labelloop_reviews_decided_total", decision="correct")
    item = review.claim_review(reviewer, "disagreement")
    review.decide_review(reviewer, item.id, "correct", "r-1", category_ids=[loaded.categories.get(name="other").id])
    review.decide_review(reviewer, item.id, "correct", "r-1", category_ids=[loaded.categories.get(name="other").id])
    assert value(scrape(), "labelloop_reviews_decided_total", decision="correct") == before + 1


@pytest.mark.django_db
def test_it_exposes_django_prometheus_and_the_helpers_for_training_and_predict(db):
    from config import metrics

    before = scrape()
    metrics.training_run_finished("failed")
    metrics.predict_observed(0.02)
    after = scrape()
    assert value(after, "labelloop_training_runs_total", status="failed") == value(
        before, "labelloop_training_runs_total", status="failed"
    ) + 1
    assert value(after, "labelloop_predict_latency_seconds_count", endpoint="predict") == value(
        before, "labelloop_predict_latency_seconds_count", endpoint="predict"
    ) + 1
    assert any(name.startswith("django_http_requests") for name, _ in after)


@pytest.mark.django_db
def test_it_refuses_other_hosts_without_the_token(settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert scrape(REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert scrape(REMOTE_ADDR="::1")


@pytest.mark.django_db
def test_it_refuses_loopback_when_told_a_proxy_sits_in_front(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_LOOPBACK = False
    assert Client().get("/metrics").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403  # no token set: none accepted
