"""The project dashboard and the ops page: numbers for a fixed fixture, query counts, access."""
import io
import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from labeling import actions, dashboard, review
from labeling.importer import import_items
from labeling.models import ImportJob, Item, ReviewPolicy
from modeling.models import ModelVersion, PredictLog


@pytest.fixture(autouse=True)
def _fresh_cache():
    # The dashboard caches its live figures per minute; each test starts from nothing.
    cache.clear()
    yield
    cache.clear()


def cat(project, name):
    return project.categories.get(name=name).id


def label_next(membership, name):
    lease = actions.claim_next_item(membership)
    assert lease is not None, f"{membership.user} got no item"
    actions.submit_annotation(membership, lease.item_id, [cat(membership.project, name)], uuid.uuid4().hex)
    return lease.item_id


@pytest.fixture
def world(project, member):
    """10 items, k = 2: 4 agreed (consensus gold), 2 disputed (one corrected by a reviewer, one
    still queued), 1 half-labeled, 3 untouched."""
    project.annotations_per_item = 2
    project.review_policy = ReviewPolicy.DISAGREEMENTS
    project.honeypot_percent = 0
    project.save()
    rows = "title,description\n" + "".join(f"Item {i},text number {i}\n" for i in range(10))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    ann, bob, rev = member(username="ann"), member(username="bob"), member("reviewer", username="rita")
    for _ in range(4):
        label_next(ann, "mlops")
        label_next(bob, "mlops")
    for _ in range(2):
        label_next(ann, "mlops")
        label_next(bob, "other")
    label_next(ann, "computer-vision")
    disputed = review.claim_review(rev, "disagreement")
    review.decide_review(rev, disputed.id, "correct", uuid.uuid4().hex, category_ids=[cat(project, "other")])
    actions.recount_progress(project)
    project.refresh_from_db()
    return {"project": project, "ann": ann, "bob": bob, "reviewer": rev}


def client_for(membership):
    client = Client()
    client.force_login(membership.user)
    return client


def dashboard_url(project):
    return reverse("dashboard", args=[project.slug])


@pytest.mark.django_db
def test_it_counts_the_fixture_in_the_background_figures(world):
    progress = world["project"].progress
    assert (progress["items"], progress["open"], progress["completed"], progress["gold"]) == (10, 4, 1, 5)
    assert progress["annotations"] == 13
    assert progress["annotations_needed"] == 7  # 1 for the half-labeled item, 2 each for 3 untouched
    assert progress["gold_by_source"] == {"consensus": 4, "review": 1}
    labels = {c.name: progress["gold_labels"].get(str(c.id), 0) for c in world["project"].categories.all()}
    assert labels == {"natural-language-processing": 0, "computer-vision": 0, "mlops": 4, "other": 1}
    (week,) = progress["agreement_weeks"]
    assert (week["agreed"], week["items"]) == (4, 6)


@pytest.mark.django_db
def test_it_shows_progress_pace_throughput_labels_agreement_and_queues(world):
    response = client_for(world["ann"]).get(dashboard_url(world["project"]))
    assert response.status_code == 200
    ctx = response.context
    assert (ctx["reviewed"], ctx["left"], ctx["annotations_needed"]) == (1, 4, 7)
    assert [(r["annotator"], r["day"], r["week"]) for r in ctx["throughput"]] == [("ann", 7, 7), ("bob", 6, 6)]
    assert ctx["pace"] == pytest.approx(13 / 24)
    assert ctx["time_left"] == "about 13 hours"  # 7 annotations at 13 a day
    assert dict(ctx["queues"]) == {"to review": 0, "disagreements": 1, "suspected errors": 0}
    assert [(b.label, b.value, b.width_class) for b in ctx["label_bars"]] == [
        ("natural-language-processing", 0, "w-0"), ("computer-vision", 0, "w-0"), ("mlops", 4, "w-80"), ("other", 1, "w-20"),
    ]
    assert [(b.note, b.width_class) for b in ctx["agreement_bars"]] == [("4 of 6", "w-65")]
    html = response.content.decode()
    assert 'class="bar ok w-50"' in html  # 5 of 10 items are gold
    assert "about 13 hours" in html and "style=" not in html


@pytest.mark.django_db
def test_it_renders_in_a_fixed_number_of_queries(world, django_assert_max_num_queries):
    client = client_for(world["ann"])
    # session, user, membership, categories, then (cache cold) review queues and throughput
    with django_assert_max_num_queries(6):
        assert client.get(dashboard_url(world["project"])).status_code == 200
    with django_assert_max_num_queries(4):  # live figures cached for a minute
        assert client.get(dashboard_url(world["project"])).status_code == 200


@pytest.mark.django_db
def test_it_never_counts_items_on_a_page_view(world):
    client = client_for(world["ann"])
    with CaptureQueriesContext(connection) as queries:
        client.get(dashboard_url(world["project"]))
    item_table = Item._meta.db_table
    assert not [q["sql"] for q in queries if f'FROM "{item_table}"' in q["sql"] and "review_queue" not in q["sql"]]


@pytest.mark.django_db
def test_it_marks_figures_older_than_a_minute_stale():
    now = timezone.now()
    assert dashboard.is_stale({}, now)
    assert dashboard.is_stale({"counted_at": (now - timedelta(minutes=2)).isoformat()}, now)
    assert not dashboard.is_stale({"counted_at": (now - timedelta(seconds=10)).isoformat()}, now)


def test_it_rounds_bar_widths_to_classes_in_steps_of_five():
    assert [dashboard.Bar("x", 0, s).width_class for s in (0, 0.024, 0.026, 0.5, 0.999, 1.7)] == [
        "w-0", "w-0", "w-5", "w-50", "w-100", "w-100",
    ]


@pytest.mark.django_db
def test_it_hides_the_dashboard_from_outsiders_and_anonymous_people(project, make_user):
    outsider = Client()
    outsider.force_login(make_user())
    assert outsider.get(dashboard_url(project)).status_code == 404
    assert Client().get(dashboard_url(project)).status_code == 302
    assert outsider.post(dashboard_url(project)).status_code in (404, 405)


@pytest.mark.django_db
def test_it_shows_an_empty_project_without_figures(project, member):
    response = client_for(member()).get(dashboard_url(project))
    assert response.status_code == 200
    assert "Figures appear once the background worker has counted them" in response.content.decode()


# --- ops ----------------------------------------------------------------------------------------


def ops_url(project=None):
    return reverse("project_ops", args=[project.slug]) if project else reverse("ops")


@pytest.mark.django_db
def test_it_lets_only_admins_and_superusers_see_operations(project, member, make_user, django_user_model):
    assert client_for(member("annotator")).get(ops_url(project)).status_code == 403
    assert client_for(member("reviewer")).get(ops_url(project)).status_code == 403
    assert client_for(member("admin")).get(ops_url(project)).status_code == 200
    admin_client = client_for(member("admin"))
    assert admin_client.get(ops_url()).status_code == 403  # all projects: superusers only
    root = Client()
    root.force_login(django_user_model.objects.create_superuser("root", password="pw-for-tests-1"))
    assert root.get(ops_url()).status_code == 200
    assert root.get(ops_url(project)).status_code == 200
    assert Client().get(ops_url()).status_code == 302


@pytest.mark.django_db
def test_it_shows_failed_jobs_with_their_error_and_inference_percentiles(project, member):
    ImportJob.objects.create(project=project, filename="bad.csv", status=ImportJob.Status.FAILED, error="row 7: no text")
    failed = ModelVersion.objects.create(
        project=project, number=1, status=ModelVersion.Status.FAILED, error="ValueError: one class only"
    )
    now = timezone.now()
    for ms in range(1, 101):  # 1..100 ms, the last five failed
        PredictLog.objects.create(project=project, model_version=failed, endpoint="predict", latency_ms=ms, ok=ms <= 95)
    PredictLog.objects.create(
        project=project, model_version=failed, endpoint="predict", latency_ms=999, created_at=now - timedelta(hours=3)
    )
    response = client_for(member("admin")).get(ops_url(project))
    html = response.content.decode()
    assert "row 7: no text" in html and "ValueError: one class only" in html
    (hour,), (day,) = [stats for _, stats in response.context["inference"]]
    assert (hour["requests"], hour["errors"], hour["p50"], hour["p95"]) == (100, 5, 51, 95)
    assert (day["requests"], day["p95"]) == (101, 96)


# --- healing: the beat schedule recounts stale figures -------------------------------------------


@pytest.mark.django_db
def test_it_recounts_projects_whose_figures_are_stale_on_the_beat_schedule(
    project, django_capture_on_commit_callbacks, settings
):
    from config.celery import app
    from labeling import tasks

    entry = settings.CELERY_BEAT_SCHEDULE["recount-stale-progress"]
    assert entry["task"] == "labeling.tasks.recount_stale_progress" and entry["task"] in app.tasks
    assert entry["schedule"] <= tasks.RECOUNT_EVERY.total_seconds()  # a stale project waits one period at most
    fresh = actions.create_project("Fresh", "fresh")
    actions.recount_progress(fresh)
    old = actions.create_project("Old", "old")
    old.progress = {"items": 3, "counted_at": (timezone.now() - timedelta(minutes=11)).isoformat()}
    old.save()

    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert tasks.recount_stale_progress() == 2  # `project` was never counted, `old` long ago
    assert len(queued) == 2
