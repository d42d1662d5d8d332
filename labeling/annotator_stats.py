"""Per-annotator figures and project agreement for the agreement page: two queries, one pass.

One streamed pass over the project's annotations (joined to the item's current round and its gold
label) feeds both the per-person counts and the rows for `labeling.agreement`; a second query
names the people. Nothing is counted per annotator in SQL: a median is not portable SQL, and one
pass of 100k narrow rows costs less than one aggregate query per column.

What counts where:
- *items done*: every label the person submitted, including honeypot checks (they are
  indistinguishable from normal items to the annotator, so they are work done) and labels of rounds
  a reviewer later rejected (the work happened; the page shows how many were rejected beside it).
- *median seconds per item*: over those same labels, leaving out labels without a measured duration
  (0 ms, e.g. an API client that sent none).
- *honeypot accuracy*: honeypot labels whose categories equal the item's gold label now.
- *agreement with the final label*: the person's labels of each item's current round (not rejected,
  not honeypots) on items that have a gold label, equal to it. Gold by consensus counts too: a
  person who agreed with the others agreed with the final label.
- *agreement between annotators* (kappa, alpha, pairs): labels of each item's current round only,
  not rejected, not honeypots. A rejected round was judged wrong as a whole; counting it beside its
  replacement would give one item two rounds of labels. Honeypots are single labels on gold items,
  so they would only add noise to overlap.
Labels compare as sets of category ids (for multi-label projects the exact set is the label).
"""
import json
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import median

from django.contrib.auth import get_user_model
from django.db.models import TextField
from django.db.models.functions import Cast

from . import agreement
from .models import Annotation, Project

# Highlight thresholds, explained on the page. Kappa below 0.40 is "fair" or worse on the scale of
# Landis & Koch (1977), the usual reading; 70% is a common floor for accuracy on gold checks.
LOW_KAPPA = 0.40
LOW_ACCURACY = 0.70
# Below this many items, a figure is too noisy to single a person out.
MIN_EVIDENCE = 10
_CHUNK = 5000


@dataclass
class AnnotatorFigures:
    user_id: int
    username: str = ""
    items_done: int = 0
    rejected: int = 0
    median_seconds: float | None = None
    honeypots: int = 0
    honeypots_correct: int = 0
    gold_compared: int = 0
    gold_agreed: int = 0
    kappa: agreement.Estimate = field(
        default_factory=lambda: agreement.Estimate(value=None, reason=agreement.NO_SHARED_ITEMS)
    )
    pairs: int = 0
    low_reasons: list[str] = field(default_factory=list)

    @property
    def honeypot_accuracy(self) -> float | None:
        return self.honeypots_correct / self.honeypots if self.honeypots else None

    @property
    def gold_agreement(self) -> float | None:
        return self.gold_agreed / self.gold_compared if self.gold_compared else None

    @property
    def is_low(self) -> bool:
        return bool(self.low_reasons)


@dataclass
class PairRow:
    first: str
    second: str
    pair: agreement.PairAgreement


@dataclass
class ProjectAgreement:
    report: agreement.AgreementReport
    annotators: list[AnnotatorFigures]
    pairs: list[PairRow]
    # The (item, annotator, label set) rows the report was computed on: multi-label figures reuse them.
    rows: list = field(default_factory=list)


def project_agreement(project: Project) -> ProjectAgreement:
    """Everything the agreement page shows for `project`."""
    people, durations, rows = _tally(_annotations(project))
    report = agreement.agreement_report(rows)
    names = dict(get_user_model().objects.filter(pk__in=list(people)).values_list("pk", "username"))
    pairs_per_person: dict[int, int] = defaultdict(int)
    for pair in report.pairs:
        pairs_per_person[pair.first] += 1
        pairs_per_person[pair.second] += 1
    for person in people.values():
        person.username = names.get(person.user_id, f"#{person.user_id}")
        seconds = durations[person.user_id]
        person.median_seconds = median(seconds) / 1000 if seconds else None
        person.kappa = report.annotator_kappa.get(person.user_id, person.kappa)
        person.pairs = pairs_per_person[person.user_id]
        person.low_reasons = low_agreement_reasons(person)
    annotators = sorted(people.values(), key=lambda p: (not p.is_low, p.username))
    pairs = [PairRow(names.get(p.first, ""), names.get(p.second, ""), p) for p in _worst_first(report.pairs)]
    return ProjectAgreement(report=report, annotators=annotators, pairs=pairs, rows=rows)


def _tally(annotations):
    """One pass: per-person counts, durations, and the (item, annotator, label) rows for agreement
    (see the module docstring for what counts where)."""
    people: dict[int, AnnotatorFigures] = {}
    durations: dict[int, list[int]] = defaultdict(list)
    rows = []
    label_of = _LabelCache()
    for row in annotations:
        annotator_id, item_id, labels, honeypot, rejected, round_, item_round, duration_ms, gold = row
        person = people.get(annotator_id) or people.setdefault(annotator_id, AnnotatorFigures(annotator_id))
        label, gold = label_of[labels], label_of[gold]
        person.items_done += 1
        person.rejected += rejected
        if duration_ms:
            durations[annotator_id].append(duration_ms)
        if honeypot:
            person.honeypots += 1
            person.honeypots_correct += gold == label
        elif not rejected and round_ == item_round:
            rows.append((item_id, annotator_id, label))
            if gold is not None:
                person.gold_compared += 1
                person.gold_agreed += gold == label
    return people, durations, rows


def low_agreement_reasons(person: AnnotatorFigures) -> list[str]:
    """Why this person is highlighted; empty when they are not (or the evidence is too thin)."""
    reasons = []
    kappa = person.kappa
    if kappa.value is not None and kappa.n_items >= MIN_EVIDENCE and kappa.value < LOW_KAPPA:
        reasons.append(f"kappa with others {kappa.value:.2f} is below {LOW_KAPPA:.2f}")
    if person.gold_compared >= MIN_EVIDENCE and person.gold_agreement < LOW_ACCURACY:
        reasons.append(
            f"agrees with the final label on {person.gold_agreement:.0%}, below {LOW_ACCURACY:.0%}"
        )
    if person.honeypots >= MIN_EVIDENCE and person.honeypot_accuracy < LOW_ACCURACY:
        reasons.append(f"honeypot accuracy {person.honeypot_accuracy:.0%} is below {LOW_ACCURACY:.0%}")
    return reasons


def _annotations(project: Project):
    """The project's annotations as narrow tuples, streamed: memory stays flat at any size.

    Category lists come as JSON text, decoded once per distinct text by `_LabelCache`: a project
    has a handful of distinct label sets, and decoding each row's JSON was most of the page's time."""
    return (
        Annotation.objects.filter(project=project)
        .order_by()
        .annotate(labels=Cast("categories", TextField()), gold=Cast("item__gold__categories", TextField()))
        .values_list(
            "annotator_id", "item_id", "labels", "is_honeypot", "rejected", "round", "item__round",
            "duration_ms", "gold",
        )
        .iterator(chunk_size=_CHUNK)
    )


class _LabelCache(dict):
    """JSON text of a category list -> the label it stands for (sorted category ids); None stays None."""

    def __missing__(self, text):
        label = None if text is None else tuple(sorted(json.loads(text)))
        self[text] = label
        return label


def _worst_first(pairs: list[agreement.PairAgreement]) -> list[agreement.PairAgreement]:
    """Lowest kappa first (the pairs to look at), undefined ones last; most shared items break ties."""
    return sorted(pairs, key=lambda p: (p.kappa.value is None, p.kappa.value or 0.0, -p.shared_items))
