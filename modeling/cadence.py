"""Retraining cadence advice: would retraining more often help?

Read from the learning curve (holdout weighted F1 of the finished versions against the number of
gold labels each was trained on) and the pace of new gold labels. Pure: plain numbers in, advice
out; the model page passes the figures in.
"""
from dataclasses import dataclass
from itertools import pairwise

FLAT = 0.005  # a retrain that moves weighted F1 by less than this changed nothing a person sees
RECENT = 3  # retrains looked at
WORTH = 0.01  # gain per retrain worth a run: retrain once the curve promises this much
MIN_EVERY = 50


@dataclass(frozen=True)
class Advice:
    verdict: str  # "no_history", "no_new_labels", "more_often", "enough", "falling", "steady"
    message: str
    per_100: float | None = None  # F1 change per 100 more gold labels, over the recent retrains
    suggested_every: int | None = None  # retrain after this many new gold labels


def _nice(n: float) -> int:
    """Round up to 1, 2 or 5 times a power of ten: 'every 200 labels', not 'every 187'."""
    n = max(1, int(-(-n // 1)))
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= n:
                return step * scale
        scale *= 10


def _pace(gold_per_day: float, every: int) -> str:
    if gold_per_day <= 0:
        return ""
    days = every / gold_per_day
    when = f"about every {days * 24:.0f} hours" if days < 2 else f"about every {days:.0f} days"
    return f" At {gold_per_day:,.0f} new gold labels a day, that is {when}."


def retraining_advice(history: list[tuple[int, float]], gold_per_day: float, retrain_every: int) -> Advice:
    """history: (gold labels trained on, holdout weighted F1) per finished version, oldest first.
    gold_per_day: the recent pace of new gold labels. retrain_every: the project's setting (0: off).
    """
    points = [(n, f1) for n, f1 in history if f1 is not None]
    if len(points) < 2:
        return Advice("no_history", "Advice on how often to retrain appears after two finished versions.")
    recent = points[-(RECENT + 1):]
    moves = [b[1] - a[1] for a, b in pairwise(recent)]
    labels_added = recent[-1][0] - recent[0][0]
    per_100 = (recent[-1][1] - recent[0][1]) / labels_added * 100 if labels_added > 0 else None
    current = f"every {retrain_every:,} labels" if retrain_every else "only when started by hand or nightly"
    if gold_per_day <= 0:
        return Advice("no_new_labels", "No new gold labels lately: retraining now would learn nothing new.", per_100)
    if all(abs(m) < FLAT for m in moves) and len(moves) < RECENT:
        return Advice(
            "steady",
            f"The last {'retrain' if len(moves) == 1 else f'{len(moves)} retrains'} moved F1 by < {FLAT}; "
            f"after {RECENT} retrains the page can tell whether the model has levelled off.",
            per_100, retrain_every or None,
        )
    if all(abs(m) < FLAT for m in moves):
        every = _nice(max(retrain_every, gold_per_day * 7, MIN_EVERY))
        return Advice(
            "enough",
            f"The last {len(moves)} retrains moved F1 by < {FLAT} each: the model has levelled off. "
            f"Retraining every {every:,} labels is enough; more labels per category or better "
            f"features would help more than retraining more often.{_pace(gold_per_day, every)}",
            per_100, every,
        )
    if per_100 is not None and per_100 < 0 and recent[-1][1] < recent[0][1] - FLAT:
        return Advice(
            "falling",
            f"F1 fell by {recent[0][1] - recent[-1][1]:.3f} over the last {len(moves)} retrains: check recent labels "
            "(disagreements, suspected label errors) before retraining more often.",
            per_100,
        )
    if per_100 is not None and per_100 >= FLAT:
        every = _nice(max(MIN_EVERY, WORTH / per_100 * 100))
        if not retrain_every or every < retrain_every:
            return Advice(
                "more_often",
                f"F1 is still rising, about {per_100:+.3f} per 100 new gold labels: retrain more often, "
                f"every {every:,} labels instead of {current}.{_pace(gold_per_day, every)}",
                per_100, every,
            )
    rise = f"about {per_100:+.3f} per 100 new gold labels" if per_100 is not None else "little"
    return Advice(
        "steady",
        f"F1 moves {rise} over the last {len(moves)} retrains: the current cadence ({current}) suits.",
        per_100, retrain_every or None,
    )
