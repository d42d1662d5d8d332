"""The model page's server-drawn charts, the retraining cadence advice and the page's query count."""
import re
import xml.etree.ElementTree as ET

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from modeling import cadence, charts, runs
from modeling.models import ModelVersion

from .modeling_data import load

HTMX = {"HTTP_HX_REQUEST": "true"}
SVG = "{http://www.w3.org/2000/svg}"


pytestmark = pytest.mark.usefixtures("model_dir")


def client_of(membership) -> Client:
    client = Client()
    client.force_login(membership.user)
    return client


def chart_url(project, theme, chart):
    return f"/p/{project.slug}/model/charts/{theme}/{chart}.svg"


def version(project, number, trained_on, f1, rules=0.5, active=False, **metrics):
    return ModelVersion.objects.create(
        project=project, number=number, status=ModelVersion.Status.DONE, trained_on=trained_on, active=active,
        metrics={"weighted_f1": f1, "macro_f1": f1 - 0.05, **metrics},
        baselines={"rules": {"weighted_f1": rules}, "majority": {"weighted_f1": 0.1}},
    )


def texts(svg: bytes) -> list[str]:
    return [t.text for t in ET.fromstring(svg).iter(f"{SVG}text") if t.text]


@pytest.fixture
def trained(project):
    load(project, gold=80, unlabeled=5)
    run = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(run.pk)
    run.refresh_from_db()
    return run


# --- the charts ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_draws_the_serving_versions_charts_as_svg_in_both_themes(project, member, trained):
    reviewer = client_of(member("reviewer"))
    page = reviewer.get(f"/p/{project.slug}/model/").content.decode()
    for chart in charts.CHARTS:
        light, dark = chart_url(project, "light", chart), chart_url(project, "dark", chart)
        assert f'src="{light}?v=' in page and f'media="(prefers-color-scheme: dark)" srcset="{dark}?v=' in page
        drawn = {theme: reviewer.get(chart_url(project, theme, chart)) for theme in charts.THEMES}
        for response in drawn.values():
            assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
            root = ET.fromstring(response.content)  # well-formed
            assert root.tag == f"{SVG}svg" and root.get("viewBox") and root.get("width") is None
        # Each theme draws in its own palette, on no background of its own.
        assert charts.PALETTES["light"].fg in drawn["light"].content.decode()
        assert charts.PALETTES["dark"].fg in drawn["dark"].content.decode()
        assert charts.PALETTES["dark"].fg not in drawn["light"].content.decode()
    labels = trained.metrics["confusion_matrix"]["labels"]
    confusion = reviewer.get(chart_url(project, "light", "confusion")).content
    cells = [t for t in texts(confusion) if re.fullmatch(r"[\d,]+", t)]
    assert sorted(int(c.replace(",", "")) for c in cells) == sorted(n for row in trained.metrics["confusion_matrix"]["matrix"] for n in row)
    assert {charts._short(label) for label in labels} <= set(texts(confusion))
    history = texts(reviewer.get(chart_url(project, "light", "f1-history")).content)
    rules_f1 = trained.baselines["rules"]["weighted_f1"]
    assert f"keyword rules ({rules_f1:.3f})" in history and f"v{trained.number}" in " ".join(history)
    reliability = texts(reviewer.get(chart_url(project, "dark", "reliability")).content)
    assert f"expected calibration error {trained.metrics['calibration']['ece']:.3f}" in reliability


@pytest.mark.django_db
def test_it_lets_the_svg_style_itself_but_run_nothing(project, member, trained):
    response = client_of(member("reviewer")).get(chart_url(project, "light", "confusion"), {"v": charts.version_key(trained)})
    policy = response["Content-Security-Policy"]
    assert "style-src 'unsafe-inline'" in policy and "script-src 'none'" in policy and "default-src 'none'" in policy
    assert response["Cache-Control"] == "private, max-age=604800"
    stale = client_of(member("reviewer")).get(chart_url(project, "light", "confusion"), {"v": "old"})
    assert stale["Cache-Control"] == "private, max-age=0"


@pytest.mark.django_db
def test_it_draws_a_chart_once_per_version_and_theme(project, member, trained, monkeypatch):
    reviewer = client_of(member("reviewer"))
    drawn = []
    real = charts.confusion_svg
    monkeypatch.setattr(charts, "confusion_svg", lambda *a: drawn.append(a) or real(*a))
    first = reviewer.get(chart_url(project, "light", "confusion")).content
    assert reviewer.get(chart_url(project, "light", "confusion")).content == first
    reviewer.get(chart_url(project, "dark", "confusion"))
    assert len(drawn) == 2  # light once, dark once
    newer = version(project, trained.number + 1, 200, 0.9, confusion_matrix={"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]})
    ModelVersion.objects.filter(pk=trained.pk).update(active=False)
    ModelVersion.objects.filter(pk=newer.pk).update(active=True)
    assert "a" in texts(reviewer.get(chart_url(project, "light", "confusion")).content)
    assert len(drawn) == 3


@pytest.mark.django_db
def test_it_has_no_charts_before_a_model_and_refuses_unknown_ones(project, member):
    reviewer = client_of(member("reviewer"))
    page = reviewer.get(f"/p/{project.slug}/model/").content.decode()
    assert "/charts/" not in page and "after two finished versions" in page
    assert reviewer.get(chart_url(project, "light", "f1-history")).status_code == 404
    version(project, 1, 100, 0.8, active=True)  # no confusion matrix, no calibration
    assert reviewer.get(chart_url(project, "light", "f1-history")).status_code == 200
    assert reviewer.get(chart_url(project, "light", "confusion")).status_code == 404
    assert reviewer.get(chart_url(project, "light", "reliability")).status_code == 404
    assert reviewer.get(chart_url(project, "sepia", "f1-history")).status_code == 404
    assert reviewer.get(chart_url(project, "light", "pie")).status_code == 404


@pytest.mark.django_db
def test_it_shows_charts_to_reviewers_and_admins_only(project, member, make_user):
    version(project, 1, 100, 0.8, active=True)
    assert client_of(member("annotator")).get(chart_url(project, "light", "f1-history")).status_code == 403
    outsider = Client()
    outsider.force_login(make_user())
    assert outsider.get(chart_url(project, "light", "f1-history")).status_code == 404
    assert Client().get(chart_url(project, "light", "f1-history")).status_code == 302
    assert client_of(member("admin")).post(chart_url(project, "light", "f1-history")).status_code == 405


def test_it_plots_finished_versions_oldest_first_with_the_latest_rules_line():
    done = [
        ModelVersion(number=3, status="done", trained_on=300, metrics={"weighted_f1": 0.8}, baselines={"rules": {"weighted_f1": 0.55}}),
        ModelVersion(number=2, status="failed", metrics={}),
        ModelVersion(number=1, status="done", trained_on=100, metrics={"weighted_f1": 0.7}, baselines={"rules": {"weighted_f1": 0.5}}, active=True),
    ]
    points = charts.history_points(done)
    assert [(p["number"], p["weighted_f1"], p["active"]) for p in points] == [(1, 0.7, True), (3, 0.8, False)]
    svg = texts(charts.f1_history_svg(points, charts.PALETTES["dark"]))
    assert "keyword rules (0.550)" in svg and "v1" in svg and "v3" in svg
    for number, v in enumerate(done):
        v.pk, v.created_at = number + 10, timezone.now()
    assert charts.chart_keys(done, done[2]) == {"f1-history": f"{charts.version_key(done[0])}-{charts.version_key(done[2])}"}


# --- cadence advice -----------------------------------------------------------------------------


def test_it_says_retraining_is_enough_when_the_last_three_retrains_barely_moved_f1():
    advice = cadence.retraining_advice([(100, 0.70), (200, 0.850), (300, 0.852), (400, 0.849), (500, 0.851)], 40, 50)
    assert advice.verdict == "enough"
    assert "The last 3 retrains moved F1 by < 0.005" in advice.message
    assert advice.suggested_every == 500  # a week of labels (280), rounded up to 1-2-5
    assert "Retraining every 500 labels is enough" in advice.message and "about every 12 days" in advice.message


def test_it_waits_for_three_retrains_before_calling_the_curve_flat():
    advice = cadence.retraining_advice([(100, 0.850), (200, 0.851)], 40, 50)
    assert advice.verdict == "steady"
    assert advice.message.startswith("The last retrain moved F1 by < 0.005; after 3 retrains")


def test_it_says_retrain_more_often_while_f1_still_rises():
    advice = cadence.retraining_advice([(100, 0.60), (600, 0.70), (1100, 0.78), (1600, 0.84)], 200, 500)
    assert advice.verdict == "more_often"
    assert advice.per_100 == pytest.approx(0.016)
    assert advice.suggested_every == 100  # 0.01 F1 every ~63 labels, never under 50, rounded to 100
    assert "about +0.016 per 100 new gold labels" in advice.message
    assert "every 100 labels instead of every 500 labels" in advice.message and "about every 12 hours" in advice.message


def test_it_keeps_the_cadence_when_it_already_matches_the_curve():
    advice = cadence.retraining_advice([(100, 0.60), (150, 0.62), (200, 0.64)], 200, 50)
    assert advice.verdict == "steady" and "the current cadence (every 50 labels) suits" in advice.message


def test_it_warns_when_f1_falls_and_says_nothing_without_history_or_new_labels():
    falling = cadence.retraining_advice([(100, 0.80), (200, 0.78), (300, 0.76)], 50, 50)
    assert falling.verdict == "falling" and "F1 fell by 0.040 over the last 2 retrains" in falling.message
    assert cadence.retraining_advice([(100, 0.8)], 50, 50).verdict == "no_history"
    assert cadence.retraining_advice([], 50, 50).verdict == "no_history"
    idle = cadence.retraining_advice([(100, 0.7), (200, 0.8)], 0, 50)
    assert idle.verdict == "no_new_labels" and "learn nothing new" in idle.message


def test_it_ignores_versions_trained_on_the_same_labels_for_the_slope():
    advice = cadence.retraining_advice([(100, 0.60), (100, 0.70)], 10, 50)
    assert advice.per_100 is None and advice.verdict == "steady"


@pytest.mark.django_db
def test_it_shows_the_advice_on_the_model_page(project, member):
    for n, (trained_on, f1) in enumerate([(100, 0.70), (200, 0.850), (300, 0.852), (400, 0.849), (500, 0.851)], 1):
        version(project, n, trained_on, f1, active=n == 5)
    load(project, gold=20, unlabeled=0)  # 20 gold labels this week: about 3 a day
    html = client_of(member("reviewer")).get(f"/p/{project.slug}/model/").content.decode()
    assert 'class="advice advice-enough"' in html
    assert "The last 3 retrains moved F1 by &lt; 0.005 each" in html and "Retraining every 50 labels is enough" in html


@pytest.mark.django_db
def test_it_shows_the_influence_report_from_the_background_recount(project, member, django_capture_on_commit_callbacks):
    from labeling import actions

    reviewer = client_of(member("reviewer"))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        before = reviewer.get(f"/p/{project.slug}/model/").content.decode()
    assert "Figures appear once the background worker has counted them" in before
    assert len(queued) == 1  # a recount asked for, once a minute at most
    actions.recount_progress(project)  # what the worker does
    project.refresh_from_db()
    assert project.progress["influence"]["project"]["shown"]["annotations"] == 0
    after = reviewer.get(f"/p/{project.slug}/model/").content.decode()
    assert "whole project" in after and "within the last minute" in after


# --- query counts -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_renders_the_model_page_in_a_fixed_number_of_queries(project, member, django_assert_max_num_queries):
    for n in range(1, 21):
        version(project, n, 100 * n, 0.6 + n / 100, active=n == 20,
                confusion_matrix={"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]},
                calibration={"ece": 0.05, "bins": [{"lower": 0.5, "upper": 0.6, "count": 4, "mean_confidence": 0.55, "accuracy": 0.5}]})
    reviewer = client_of(member("reviewer"))
    # session, user, membership+project, versions, gold pace (an indexed count), online log, rules,
    # slices, categories for the rule form; influence comes from the background recount, the
    # charts are <img> tags: nothing reads the item or annotation tables
    with CaptureQueriesContext(connection) as cold:
        assert reviewer.get(f"/p/{project.slug}/model/").status_code == 200
    assert len(cold) <= 9, [q["sql"] for q in cold]
    assert not [q["sql"] for q in cold if 'FROM "labeling_item"' in q["sql"] or 'FROM "labeling_annotation"' in q["sql"]]
    with django_assert_max_num_queries(8):  # the gold pace is cached for ten minutes
        assert reviewer.get(f"/p/{project.slug}/model/").status_code == 200
    with django_assert_max_num_queries(4):  # session, user, membership, versions
        assert reviewer.get(chart_url(project, "dark", "f1-history")).status_code == 200
    with django_assert_max_num_queries(4):
        assert reviewer.get(f"/p/{project.slug}/model/progress/", **HTMX).status_code == 200
