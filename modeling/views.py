"""The model page (reviewers and admins): model versions beside their baselines, the active
version's holdout figures, the suggestions' influence on people, the live progress of a run, and
for admins the "train now" button and the rules and slices editors.

Every form posts to a real URL and answers with a redirect (works without JavaScript); the
progress box polls its own partial with htmx while a run is in flight."""
from datetime import timedelta

from csp.decorators import csp_replace
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRefresh

from labeling import dashboard
from labeling.access import get_membership
from labeling.models import GoldLabel, Role
from labeling.views_dashboard import ask_for_recount

from . import actions, cadence, charts, evaluation, runs
from .models import ModelVersion, PredictLog, Rule, Slice

RUN_STEPS = [
    ModelVersion.Status.QUEUED,
    ModelVersion.Status.VECTORISING,
    ModelVersion.Status.TRAINING,
    ModelVersion.Status.EVALUATING,
    ModelVersion.Status.PREDICTING,
    ModelVersion.Status.DONE,
]


class RuleForm(forms.Form):
    category = forms.TypedChoiceField(coerce=int)
    pattern = forms.CharField(max_length=500, label="Keyword or pattern")
    is_regex = forms.BooleanField(required=False, label="Regular expression")

    def __init__(self, project, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = [(c.id, c.name) for c in project.categories.all()]


class SliceForm(forms.Form):
    name = forms.CharField(max_length=100)
    keywords = forms.CharField(max_length=500, help_text="Comma-separated; an item is in the slice if it contains any.")


@require_GET
@login_required
def model_page(request, slug):
    membership = get_membership(request.user, slug, Role.REVIEWER)
    project = membership.project
    versions = list(ModelVersion.objects.filter(project=project).order_by("-number")[: charts.HISTORY_VERSIONS])
    active = next((v for v in versions if v.active), None) or ModelVersion.objects.filter(project=project, active=True).first()
    context = {
        # Template names cannot hold a hyphen: f1-history is charts.f1_history there.
        "charts": {name.replace("-", "_"): key for name, key in charts.chart_keys(versions, active).items()},
        "advice": _advice(project, versions),
        "project": project,
        "membership": membership,
        "is_admin": membership.has_role(Role.ADMIN),
        "versions": versions,
        "active": active,
        "active_report": _version_report(active) if active else None,
        "encoder_changed": runs.encoder_changed(active) if active else None,
        "influence": _influence(project),
        "influence_counted_at": parse_datetime((project.progress or {}).get("counted_at") or ""),
        "influence_stale": dashboard.is_stale(project.progress or {}),
        "online": _online_figures(project),
        "rules": Rule.objects.filter(project=project).select_related("category"),
        "slices": Slice.objects.filter(project=project).order_by("name"),
        "rule_form": RuleForm(project),
        "slice_form": SliceForm(),
        **_progress_context(project, versions[0] if versions else None),
    }
    return render(request, "modeling/model.html", context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def model_progress(request, slug):
    """The progress box alone, for htmx polling. When the run it was watching ends, the whole page
    reloads to show the new version's figures."""
    membership = get_membership(request.user, slug, Role.REVIEWER)
    if not request.htmx:
        return redirect("model", slug=slug)
    context = {"project": membership.project, "membership": membership, "is_admin": membership.has_role(Role.ADMIN)}
    context.update(_progress_context(membership.project))
    watching = request.GET.get("watching", "")
    run = context["run"]
    if run is not None and str(run.pk) == watching and not run.is_running():
        return HttpResponseClientRefresh()
    return render(request, "modeling/model.html#progress", context)


@require_GET
@login_required
# An SVG shown through <img> runs no script; matplotlib styles its shapes with inline CSS.
@csp_replace({"default-src": ["'none'"], "style-src": ["'unsafe-inline'"], "script-src": ["'none'"]})
def model_chart(request, slug, theme, chart):
    """One chart as SVG, drawn once per model version and theme (see modeling/charts.py). The
    version key is in the query string, so the browser may cache the image as long as it likes."""
    membership = get_membership(request.user, slug, Role.REVIEWER)
    if chart not in charts.CHARTS or theme not in charts.THEMES:
        raise Http404("No such chart.")
    project = membership.project
    versions = list(ModelVersion.objects.filter(project=project).order_by("-number")[: charts.HISTORY_VERSIONS])
    active = next((v for v in versions if v.active), None) or ModelVersion.objects.filter(project=project, active=True).first()
    key = charts.chart_keys(versions, active).get(chart)
    if key is None:
        raise Http404("This chart has nothing to show yet.")
    svg = charts.cached_svg(project.pk, chart, theme, key, lambda: charts.draw(chart, theme, versions, active))
    response = HttpResponse(svg, content_type="image/svg+xml")
    # Private: the figures are the project's. Long-lived only when the URL names this version.
    fresh = request.GET.get("v") == key
    response["Cache-Control"] = f"private, max-age={86400 * 7 if fresh else 0}"
    return response


@require_POST
@login_required
def train_now(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    in_flight = ModelVersion.objects.filter(project=membership.project, status__in=runs.RUNNING).first()
    if in_flight is not None:
        messages.info(request, f"Run v{in_flight.number} is still in progress; one run per project at a time.")
    else:
        version = runs.request_training(membership.project, ModelVersion.Trigger.BUTTON)
        messages.success(request, f"Training run v{version.number} is queued; its progress shows below.")
    return redirect("model", slug=slug)


@require_POST
@login_required
def add_rule(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    form = RuleForm(membership.project, request.POST)
    if not form.is_valid():
        messages.error(request, "The rule was not saved: " + _form_errors(form))
        return redirect("model", slug=slug)
    try:
        rule = actions.add_rule(membership.project, form.cleaned_data["category"], form.cleaned_data["pattern"], form.cleaned_data["is_regex"])
    except actions.ModelingError as exc:
        messages.error(request, f"The rule was not saved: {exc}")
    else:
        messages.success(request, f"Rule saved: {rule}. The next training run uses it.")
    return redirect("model", slug=slug)


@require_POST
@login_required
def delete_rule(request, slug, rule_id):
    membership = get_membership(request.user, slug, Role.ADMIN)
    if actions.delete_rule(membership.project, rule_id):
        messages.success(request, "Rule deleted.")
    return redirect("model", slug=slug)


@require_POST
@login_required
def add_slice(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    form = SliceForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The slice was not saved: " + _form_errors(form))
        return redirect("model", slug=slug)
    try:
        created = actions.add_slice(membership.project, form.cleaned_data["name"], form.cleaned_data["keywords"])
    except actions.ModelingError as exc:
        messages.error(request, f"The slice was not saved: {exc}")
    else:
        messages.success(request, f"Slice {created.name!r} saved. The next training run reports it.")
    return redirect("model", slug=slug)


@require_POST
@login_required
def delete_slice(request, slug, slice_id):
    membership = get_membership(request.user, slug, Role.ADMIN)
    if actions.delete_slice(membership.project, slice_id):
        messages.success(request, "Slice deleted.")
    return redirect("model", slug=slug)


# --- context ------------------------------------------------------------------------------------


def _progress_context(project, newest=...) -> dict:
    """The progress box's context; `newest` is the project's newest version when already at hand."""
    run = ModelVersion.objects.filter(project=project).order_by("-number").first() if newest is ... else newest
    steps = []
    if run is not None and run.status != ModelVersion.Status.FAILED:
        position = RUN_STEPS.index(run.status)
        steps = [{"name": step.label, "passed": i < position, "current": i == position} for i, step in enumerate(RUN_STEPS)]
    return {"run": run, "run_steps": steps}


GOLD_PACE_DAYS = 7
GOLD_PACE_SECONDS = 600


def _gold_per_day(project) -> float:
    """New gold labels a day over the last week: one count over the (project, decided_at) index,
    kept for ten minutes so page views do not repeat it."""
    key = f"model-page:gold-pace:{project.pk}"
    pace = cache.get(key)
    if pace is None:
        since = timezone.now() - timedelta(days=GOLD_PACE_DAYS)
        pace = GoldLabel.objects.filter(project=project, decided_at__gte=since).count() / GOLD_PACE_DAYS
        cache.set(key, pace, GOLD_PACE_SECONDS)
    return pace


def _influence(project) -> dict | None:
    """The suggestion-influence report reads every annotation and gold label of the project
    (seconds at 100k annotations), so the background recount keeps it in Project.progress beside
    the dashboard's figures; a page view only asks for a recount when they are a minute old."""
    if dashboard.is_stale(project.progress or {}):
        ask_for_recount(project)
    return (project.progress or {}).get("influence")


def _advice(project, versions) -> cadence.Advice:
    history = [(p["trained_on"], p["weighted_f1"]) for p in charts.history_points(versions)]
    if len(history) < 2:  # no advice to give: spare the count
        return cadence.retraining_advice(history, 0.0, project.retrain_every)
    return cadence.retraining_advice(history, _gold_per_day(project), project.retrain_every)


def _form_errors(form) -> str:
    return " ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())


def _version_report(version: ModelVersion) -> dict:
    """The active version's figures, shaped for tables."""
    metrics = version.metrics or {}
    matrix = metrics.get("confusion_matrix") or {"labels": [], "matrix": []}
    rows = [
        {"label": label, "cells": [{"count": n, "diagonal": i == j} for j, n in enumerate(row)]}
        for i, (label, row) in enumerate(zip(matrix["labels"], matrix["matrix"], strict=False))
    ]
    compared = [("this version", metrics)] + [
        (f"version {v['version']} (serving before)" if name == "previous" else name, v)
        for name, v in (version.baselines or {}).items()
    ]
    return {
        "per_class": sorted((metrics.get("per_class") or {}).items()),
        "confusion": {"labels": matrix["labels"], "rows": rows},
        "slices": sorted((metrics.get("slices") or {}).items()),
        "calibration": (metrics.get("calibration") or {}).get("bins", []),
        "compared": [
            {
                "name": name,
                "accuracy": m.get("accuracy"),
                "weighted_f1": m.get("weighted_f1"),
                "macro_f1": m.get("macro_f1"),
                "ece": (m.get("calibration") or {}).get("ece"),
                "intervals": m.get("intervals") or {},  # none on versions evaluated before they were added
                "difference": _signed_intervals(m.get("difference") or {}),
            }
            for name, m in compared
        ],
    }


def _signed_intervals(intervals: dict) -> dict[str, str]:
    """A difference's 95 % intervals as text with signs: "+0.012 to +0.034" (or, where the two
    versions decide every holdout item alike, that)."""
    return {
        name: "alike on every item" if evaluation.decided_alike(interval) else "{:+.3f} to {:+.3f}".format(*interval)
        for name, interval in intervals.items()
    }


def _online_figures(project) -> dict:
    """Online inference over the last 1,000 requests: count, errors, latency percentiles."""
    recent = list(
        PredictLog.objects.filter(project=project).order_by("-created_at").values_list("latency_ms", "ok")[:1000]
    )
    latencies = sorted(latency for latency, ok in recent if ok)

    def percentile(share: float):
        return round(latencies[min(len(latencies) - 1, int(share * len(latencies)))], 2) if latencies else None

    return {
        "requests": len(recent),
        "errors": sum(1 for _, ok in recent if not ok),
        "p50": percentile(0.5),
        "p95": percentile(0.95),
    }
