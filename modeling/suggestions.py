"""Suggestions on the annotate page (augment, don't automate), and how they influence people.

A card shows the model's stored probabilities for its item, one bar per category, and the model
version; nothing is pre-selected, the person always presses a key. Two kinds of item show nothing:
- honeypots (known-gold checks), always, so they score people on their own judgment;
- blind controls: a fixed share of (item, person) pairs (`Project.blind_control_percent`), chosen
  by a hash, so a reload or a retried submit always makes the same choice.
What a card showed is worked out again on the server when the label arrives (never taken from the
browser). For a blind control the annotation still records what the model would have suggested,
with `suggestion_shown=False`: that is the control group the influence report compares against.
"""
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef

from labeling.models import Annotation, Assignment, GoldLabel, Item, Project

from .models import Prediction
from .multilabel import DEFAULT_THRESHOLD


@dataclass
class Bar:
    category: object  # labeling.models.Category
    probability: float
    percent: int
    top: bool
    # Multi-label projects: the category's decision threshold; the model would suggest the
    # category when `probability >= threshold` (probabilities are independent, not a share).
    threshold: float | None = None


@dataclass
class Suggestion:
    shown: bool
    reason: str  # "shown", "blind", "honeypot" or "none" (no prediction for this item yet)
    version_id: int | None = None
    version_number: int | None = None
    bars: list[Bar] = field(default_factory=list)


def is_blind(project, item_id: int, user_id: int) -> bool:
    """Whether this person sees this item without a suggestion (the blind-control share)."""
    digest = hashlib.blake2b(f"{project.pk}:{item_id}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < project.blind_control_percent


def for_card(membership, lease, categories) -> Suggestion | None:
    """What the card of `lease` shows beside the item (one primary-key read at most)."""
    if lease is None:
        return None
    if lease.is_honeypot:
        return Suggestion(False, "honeypot")
    if is_blind(membership.project, lease.item_id, membership.user_id):
        return Suggestion(False, "blind")
    fields = ["probabilities", "top_category_id", "model_version_id", "model_version__number"]
    multi = membership.project.mode == Project.Mode.MULTI
    if multi:
        fields.append("model_version__params")  # the thresholds, by category name (runs._thresholds)
    row = Prediction.objects.filter(item_id=lease.item_id).values(*fields).first()
    if row is None:
        return Suggestion(False, "none")
    thresholds = (row["model_version__params"] or {}).get("thresholds", {}) if multi else None
    return Suggestion(
        True, "shown", row["model_version_id"], row["model_version__number"],
        bars(categories, row["probabilities"], row["top_category_id"], thresholds),
    )


def bars(categories, probabilities: dict, top_category_id: int | None, thresholds: dict | None = None) -> list[Bar]:
    """One bar per category, in the project's category order (the order of the keys).

    `thresholds` (multi-label): category name -> decision threshold; a category the model has no
    threshold for (added since it was trained) gets the default 0.5."""
    result = []
    for category in categories:
        probability = float(probabilities.get(str(category.id), 0.0))
        threshold = None if thresholds is None else float(thresholds.get(category.name, DEFAULT_THRESHOLD))
        result.append(Bar(category, probability, round(probability * 100), category.id == top_category_id, threshold))
    return result


def for_submit(membership, item_id: int) -> dict:
    """The suggestion fields of `submit_annotation` for this person's label of this item, worked
    out as the card did (one query)."""
    project, user = membership.project, membership.user
    honeypot = Assignment.objects.filter(
        item=OuterRef("pk"), annotator=user, status=Assignment.Status.LEASED, is_honeypot=True
    )
    row = (
        Item.objects.filter(pk=item_id, project=project)
        .annotate(honeypot=Exists(honeypot))
        .values("honeypot", "prediction__probabilities", "prediction__top_category_id", "prediction__model_version_id")
        .first()
    )
    if row is None or row["honeypot"] or row["prediction__model_version_id"] is None:
        return {"suggestion_shown": False}
    return {
        "suggestion_shown": not is_blind(project, item_id, user.pk),
        "suggested_category_id": row["prediction__top_category_id"],
        "model_version_id": row["prediction__model_version_id"],
        "suggestion": row["prediction__probabilities"],
    }


# --- influence --------------------------------------------------------------------------------


class _Tally:
    """Counts for one group of annotations (suggestion shown, or withheld as a blind control)."""

    def __init__(self):
        self.annotations = self.accepted = 0
        self.on_gold = self.correct = 0
        self.wrong_suggestions = self.accepted_wrong = 0
        self.accepted_on_gold = self.accepted_correct = 0

    def add(self, chosen: list[int], suggested: int | None, gold: list[int] | None) -> None:
        took = suggested in chosen
        self.annotations += 1
        self.accepted += took
        if gold is None:
            return
        self.on_gold += 1
        self.correct += sorted(chosen) == sorted(gold)
        if took:
            self.accepted_on_gold += 1
            self.accepted_correct += sorted(chosen) == sorted(gold)
        if suggested not in gold:
            self.wrong_suggestions += 1
            self.accepted_wrong += took

    def report(self) -> dict:
        return {
            "annotations": self.annotations,
            "on_gold": self.on_gold,
            "accuracy": _share(self.correct, self.on_gold),
            # Shown: how often people took the suggestion. Blind: how often they chose, unprompted,
            # what the model would have said (the baseline acceptance is compared with).
            "agrees_with_model": _share(self.accepted, self.annotations),
            "wrong_suggestions": self.wrong_suggestions,
            "took_wrong_suggestion": _share(self.accepted_wrong, self.wrong_suggestions),
            "accuracy_when_agreeing": _share(self.accepted_correct, self.accepted_on_gold),
        }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def influence(project) -> dict:
    """Suggestions' influence on people, over the project and per annotator.

    Compared on items with a gold label: accuracy with a suggestion shown vs. blind controls; how
    often people take the suggestion (vs. how often blind controls agree with the hidden one:
    the difference is what showing it changed); and how often they take a *wrong* suggestion.
    Honeypots are left out (always blind, and a different set of items), as are labels given
    before any model existed."""
    gold = dict(GoldLabel.objects.filter(project=project).values_list("item_id", "categories"))
    groups: dict = defaultdict(lambda: {"shown": _Tally(), "blind": _Tally()})
    without_model = defaultdict(int)
    rows = Annotation.objects.filter(project=project, is_honeypot=False).values_list(
        "annotator__username", "item_id", "categories", "suggestion_shown", "suggested_category_id", "model_version_id"
    )
    for username, item_id, chosen, shown, suggested, version_id in rows.iterator(chunk_size=5000):
        if version_id is None:
            without_model[username] += 1
            continue
        for key in ("", username):  # "" is the whole project
            groups[key]["shown" if shown else "blind"].add(chosen, suggested, gold.get(item_id))
    project_groups = groups.pop("", None) or {"shown": _Tally(), "blind": _Tally()}
    return {
        "project": _summary(project_groups, sum(without_model.values())),
        "annotators": [
            {"username": username, **_summary(tallies, without_model.get(username, 0))}
            for username, tallies in sorted(groups.items())
        ],
        "blind_control_percent": project.blind_control_percent,
    }


def _summary(tallies: dict, without_model: int) -> dict:
    shown, blind = tallies["shown"].report(), tallies["blind"].report()
    return {
        "shown": shown,
        "blind": blind,
        "without_model": without_model,
        "accuracy_change": _difference(shown["accuracy"], blind["accuracy"]),
        "agreement_change": _difference(shown["agrees_with_model"], blind["agrees_with_model"]),
    }


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)
