"""Figures for the project dashboard and the ops page.

Whole-project figures (status counts, gold label distribution, weekly agreement, annotations
still needed, throughput over the last 7 days, and the model page's suggestion-influence report)
are counted by the Celery task `labeling.tasks.recount_progress` into `Project.progress`: a page
view never reads the item or annotation tables (at 100k annotations, throughput alone is a third
of a second on SQLite and influence several seconds). A page asks for a recount when the figures
are a minute old. The live figure (review queues, over their partial index) is cached a minute.
"""
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.core.cache import cache
from django.db.models import Count, F, Q, Sum, Value
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .models import Annotation, Category, GoldLabel, Item, Project, ReviewQueue
from .review import queue_counts

LIVE_SECONDS = 60
AGREEMENT_WEEKS = 12
STALE_AFTER = timedelta(minutes=1)


# --- counted in the background (recount_progress) ---------------------------------------------


def slow_aggregates(project: Project) -> dict:
    """The whole-table figures; run by the recount task, stored in Project.progress."""
    return {
        "annotations_needed": _annotations_needed(project),
        "gold_by_source": dict(
            GoldLabel.objects.filter(project=project).values_list("source").annotate(n=Count("id"))
        ),
        "gold_labels": _gold_distribution(project),
        "agreement_weeks": agreement_by_week(project),
        "throughput": throughput(project),
        "influence": _suggestion_influence(project),
    }


def _suggestion_influence(project: Project) -> dict:
    from modeling import suggestions  # modeling builds on labeling, not the other way round

    return suggestions.influence(project)


def _annotations_needed(project: Project) -> int:
    k = project.annotations_per_item
    needed = Item.objects.filter(project=project, status=Item.Status.OPEN).aggregate(
        n=Sum(Value(k) - F("annotation_count"))
    )["n"]
    return max(0, needed or 0)


def _gold_distribution(project: Project) -> dict[str, int]:
    """Gold items per category id (a multi-label item counts once for each of its categories)."""
    tally: Counter = Counter()
    for categories, n in GoldLabel.objects.filter(project=project).values_list("categories").annotate(n=Count("id")):
        for category_id in categories:
            tally[str(category_id)] += n
    return dict(tally)


def agreement_by_week(project: Project, now=None) -> list[dict]:
    """Per ISO week of completion: items whose k ≥ 2 annotations of a round all agree, out of all
    such items (honeypots and rejected rounds left out). Only the last AGREEMENT_WEEKS weeks."""
    since = (now or timezone.now()) - timedelta(weeks=AGREEMENT_WEEKS)
    rows = (
        Annotation.objects.filter(project=project, is_honeypot=False, rejected=False, created_at__gte=since)
        .order_by("item_id", "round")
        .values_list("item_id", "round", "categories", "created_at")
    )
    rounds: dict[tuple, list] = defaultdict(list)
    for item_id, round_, categories, created_at in rows.iterator(chunk_size=5000):
        rounds[(item_id, round_)].append((sorted(categories), created_at))
    weeks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    k = project.annotations_per_item
    for labels in rounds.values():
        if k < 2 or len(labels) < k:
            continue
        year, week, _ = max(at for _, at in labels).isocalendar()
        tally = weeks[f"{year}-W{week:02d}"]
        tally[1] += 1
        tally[0] += all(lab == labels[0][0] for lab, _ in labels)
    return [{"week": w, "agreed": a, "items": n} for w, (a, n) in sorted(weeks.items())]


# --- live, cached per minute ------------------------------------------------------------------


def throughput(project: Project, now=None) -> list[dict]:
    """Annotations per hour for each annotator, over the last 24 hours and the last 7 days."""
    now = now or timezone.now()
    day_ago, week_ago = now - timedelta(days=1), now - timedelta(days=7)
    rows = (
        Annotation.objects.filter(project=project, created_at__gte=week_ago)
        .values("annotator__username")
        .annotate(week=Count("id"), day=Count("id", filter=Q(created_at__gte=day_ago)))
        .order_by("-day", "-week", "annotator__username")
    )
    return [
        {"annotator": r["annotator__username"], "day": r["day"], "week": r["week"],
         "per_hour_day": r["day"] / 24, "per_hour_week": r["week"] / (24 * 7)}
        for r in rows
    ]


def live_figures(project: Project) -> dict:
    key = f"dashboard:live:{project.pk}"
    figures = cache.get(key)
    if figures is None:
        figures = {"queues": queue_counts(project)}
        cache.set(key, figures, LIVE_SECONDS)
    return figures


# --- the page's shape -------------------------------------------------------------------------


@dataclass
class Bar:
    label: str
    value: int
    share: float  # 0..1 of the chart's largest (or of the total, for a distribution)
    note: str = ""

    @property
    def width_class(self) -> str:
        """w-0 .. w-100 in steps of 5: the CSP forbids inline style widths."""
        return f"w-{round(max(0.0, min(1.0, self.share)) * 20) * 5}"

    @property
    def percent(self) -> int:
        return round(self.share * 100)


def pace_per_hour(rows: list[dict]) -> float:
    """The project's current pace: the last 24 hours, or the last week's average if the day was idle."""
    day = sum(r["day"] for r in rows)
    return day / 24 if day else sum(r["week"] for r in rows) / (24 * 7)


def hours_left(needed: int, pace: float) -> float | None:
    return needed / pace if pace > 0 else None


def describe_hours(hours: float | None) -> str:
    if hours is None:
        return "no recent pace to estimate from"
    if hours < 1:
        return f"about {max(1, round(hours * 60))} minutes"
    if hours < 48:
        return f"about {hours:.0f} hours"
    return f"about {hours / 24:.0f} days"


def label_bars(project: Project, distribution: dict[str, int]) -> list[Bar]:
    total = sum(distribution.values())
    names = Category.objects.filter(project=project).values_list("id", "name")
    return [Bar(name, distribution.get(str(pk), 0), distribution.get(str(pk), 0) / total if total else 0.0)
            for pk, name in names]


def agreement_bars(weeks: list[dict]) -> list[Bar]:
    return [Bar(w["week"], w["agreed"], w["agreed"] / w["items"] if w["items"] else 0.0, f"{w['agreed']} of {w['items']}")
            for w in weeks]


def throughput_bars(rows: list[dict]) -> list[Bar]:
    top = max((r["per_hour_day"] for r in rows), default=0)
    return [Bar(r["annotator"], r["day"], r["per_hour_day"] / top if top else 0.0) for r in rows]


def summary(project: Project) -> dict:
    """Everything the dashboard shows: stored progress + live figures. Two or three queries."""
    progress = project.progress or {}
    live = live_figures(project)
    rates = progress.get("throughput", [])
    pace = pace_per_hour(rates)
    needed = progress.get("annotations_needed", 0)
    items = progress.get("items", 0)
    gold = progress.get("gold", 0)
    return {
        "progress": progress,
        "counted_at": parse_datetime(progress.get("counted_at") or ""),
        "reviewed": progress.get("gold_by_source", {}).get(GoldLabel.Source.REVIEW, 0),
        "left": progress.get("open", 0),
        "done_bar": Bar("gold", gold, gold / items if items else 0.0),
        "annotations_needed": needed,
        "pace": pace,
        "time_left": describe_hours(hours_left(needed, pace)) if needed else "nothing left to annotate",
        "queues": [(ReviewQueue(name).label, n) for name, n in live["queues"].items()],
        "throughput": [dict(row, bar=bar) for row, bar in zip(rates, throughput_bars(rates), strict=True)],
        "label_bars": label_bars(project, progress.get("gold_labels", {})),
        "agreement_bars": agreement_bars(progress.get("agreement_weeks", [])),
        "stale": is_stale(progress),
    }


def is_stale(progress: dict, now=None) -> bool:
    counted = parse_datetime(progress.get("counted_at") or "")
    return counted is None or (now or timezone.now()) - counted > STALE_AFTER


# --- ops: online inference --------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


def inference_stats(logs, since) -> list[dict]:
    """Requests, error rate and p50/p95 latency per (model version, endpoint) since `since`.
    `logs` is a PredictLog queryset; one query, latencies read as floats only."""
    groups: dict[tuple, list] = defaultdict(lambda: [[], 0])
    rows = logs.filter(created_at__gte=since).values_list(
        "model_version__number", "project__slug", "endpoint", "latency_ms", "ok"
    )
    for number, slug, endpoint, latency, ok in rows.iterator(chunk_size=10000):
        group = groups[(slug or "", number, endpoint)]
        group[0].append(latency)
        group[1] += not ok
    stats = []
    for (slug, number, endpoint), (latencies, errors) in sorted(groups.items(), key=lambda kv: (kv[0][0], -(kv[0][1] or 0), kv[0][2])):
        latencies.sort()
        stats.append({
            "project": slug, "version": number, "endpoint": endpoint, "requests": len(latencies),
            "errors": errors, "error_rate": errors / len(latencies),
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
        })
    return stats
