"""Agreement page: project-level kappa and alpha with intervals, per-annotator figures with
low-agreement annotators highlighted, and annotator pairs. Reviewers and admins only: it shows who
labeled what how well, which annotators must not see about each other."""
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import annotator_stats
from .access import get_membership
from .agreement import Estimate
from .agreement_multilabel import multilabel_agreement
from .models import Role
from .views import login_required_htmx

# A project with thousands of annotator pairs would make an unreadable table; the worst come first.
PAIRS_SHOWN = 200


@require_GET
@login_required_htmx
def agreement(request, slug):
    membership = get_membership(request.user, slug, Role.REVIEWER)
    figures = annotator_stats.project_agreement(membership.project)
    report = figures.report
    context = {
        "project": membership.project,
        "membership": membership,
        "report": report,
        "percent": _shown(report.percent_agreement, as_percent=True),
        "fleiss": _shown(report.fleiss_kappa),
        "alpha": _shown(report.krippendorff_alpha),
        "annotators": [
            {
                "person": person,
                "kappa": _shown(person.kappa),
                "gold": _share(person.gold_agreed, person.gold_compared),
                "honeypot": _share(person.honeypots_correct, person.honeypots),
            }
            for person in figures.annotators
        ],
        "pairs": [
            {"row": row, "kappa": _shown(row.pair.kappa), "percent": f"{row.pair.percent:.0%}"}
            for row in figures.pairs[:PAIRS_SHOWN]
        ],
        "pairs_total": len(figures.pairs),
        "pairs_shown": PAIRS_SHOWN,
        "low_kappa": annotator_stats.LOW_KAPPA,
        "low_accuracy": annotator_stats.LOW_ACCURACY,
        "min_evidence": annotator_stats.MIN_EVIDENCE,
    }
    if membership.project.is_multi_label:
        context["multilabel"] = _multilabel_context(membership.project, figures.rows)
    return render(request, "labeling/agreement.html", context)


def _multilabel_context(project, rows) -> dict:
    """MASI alpha and one row per category (binary presence), in the project's key order."""
    categories = list(project.categories.all())
    figures = multilabel_agreement(rows, [c.id for c in categories])
    return {
        "masi_alpha": _shown(figures.masi_alpha),
        "distinct_sets": figures.distinct_sets,
        "categories": [
            {
                "category": category,
                "prevalence": f"{row.prevalence:.0%}",
                "percent": _shown(row.percent, as_percent=True),
                "cohen": _shown(Estimate(value=row.cohen_kappa)),
                "alpha": _shown(row.alpha),
            }
            for category, row in zip(categories, figures.categories, strict=True)
        ],
    }


def _shown(estimate: Estimate, as_percent: bool = False) -> dict:
    """An estimate as the page prints it: value, interval, and why either is missing."""
    def text(x):
        # A real minus sign: a hyphen before a number reads as a dash.
        return (f"{x:.0%}" if as_percent else f"{x:.2f}").replace("-", "\N{MINUS SIGN}")

    return {
        "value": text(estimate.value) if estimate.value is not None else "n/a",
        "interval": f"{text(estimate.low)} to {text(estimate.high)}" if estimate.low is not None else "",
        "reason": estimate.reason,
        "n_items": estimate.n_items,
    }


def _share(hits: int, total: int) -> str:
    return f"{hits / total:.0%} ({hits}/{total})" if total else "none yet"
