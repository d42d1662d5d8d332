"""Active learning: which unlabeled items people should label first.

Uncertainty sampling puts the items the current model is least sure about at the front of the
queue. Three measures of "unsure" are offered, all from a model's class probabilities:
  margin            1 - (top probability - second): a near tie between two categories;
  least_confidence  1 - top probability;
  entropy           the entropy of the distribution, divided by its maximum (log K).
A project in uncertainty order is served by margin: it is stored with every batch prediction, and
the queue's rank is computed from it, so the claim stays one index range scan (no sorting by
uncertainty at claim time).

`simulate` replays labeling on a CSV whose labels are known (a perfect annotator) to compare
strategies: the learning curve of weighted F1 against the number of labels.
"""
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion

MEASURES = ("margin", "least_confidence", "entropy")
STRATEGIES = ("uncertainty", "random")

# Queue ranks in uncertainty order: the margin in steps of one millionth, then the item id, so
# every rank is distinct and the least confident item has the smallest rank.
RANK_STEPS = 1_000_000
ID_SPAN = 2**32


def margins(proba: np.ndarray) -> np.ndarray:
    """Top probability minus the second, per row (1.0 when there is a single column)."""
    proba = np.asarray(proba, dtype=float)
    if proba.shape[1] < 2:
        return np.ones(len(proba))
    top_two = np.sort(proba, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def uncertainty(proba: np.ndarray, measure: str = "margin") -> np.ndarray:
    """How unsure the model is about each row, in [0, 1]: higher means label it sooner."""
    proba = np.asarray(proba, dtype=float)
    if measure == "margin":
        return 1.0 - margins(proba)
    if measure == "least_confidence":
        return 1.0 - proba.max(axis=1)
    if measure == "entropy":
        if proba.shape[1] < 2:
            return np.zeros(len(proba))
        clipped = np.clip(proba, 1e-12, 1.0)
        return -(clipped * np.log(clipped)).sum(axis=1) / math.log(proba.shape[1])
    raise ValueError(f"Unknown uncertainty measure {measure!r}; use one of {', '.join(MEASURES)}.")


def uncertainty_rank(margin: float, item_id: int) -> int:
    """The queue rank of an open item in uncertainty order (smaller: served sooner)."""
    steps = round(min(max(margin, 0.0), 1.0) * RANK_STEPS)
    return steps * ID_SPAN + item_id % ID_SPAN


def most_uncertain(proba: np.ndarray, count: int, measure: str = "margin") -> np.ndarray:
    """Row indices of the `count` most uncertain rows, most uncertain first (ties: lower index)."""
    scores = uncertainty(proba, measure)
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:count]


# --- simulation -------------------------------------------------------------------------------


@dataclass
class Simulation:
    """Settings of a simulated labeling session on a fully labelled dataset."""

    batch: int = 20
    initial: int = 20
    test_fraction: float = 0.2
    measure: str = "margin"
    max_labels: int | None = None
    C: float = 10.0


def _features() -> FeatureUnion:
    # TF-IDF words + characters, as the app's tfidf_logreg, fitted once on the unlabeled pool's
    # texts: in active learning all texts are known up front, only their labels are not.
    return FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        ]
    )


def _classifier(C: float) -> LogisticRegression:
    return LogisticRegression(C=C, class_weight="balanced", solver="newton-cg", max_iter=1000)


def split(texts: Sequence[str], labels: Sequence[str], test_fraction: float, seed: int):
    """A stratified pool / test split of the given data (the test part is never labeled)."""
    indices = np.arange(len(texts))
    counts = {label: list(labels).count(label) for label in set(labels)}
    stratify = list(labels) if min(counts.values()) >= 2 else None
    return train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=stratify)


def simulate(texts: Sequence[str], labels: Sequence[str], strategy: str, seed: int, settings: Simulation) -> dict:
    """One seed of one strategy: the learning curve [(labels, weighted F1)] and the F1 of a model
    trained on the whole pool (the ceiling the curve is measured against)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
    labels = np.array([str(label) for label in labels], dtype=object)
    pool, test = split(texts, labels, settings.test_fraction, seed)
    features = _features().fit([texts[i] for i in pool])
    X_pool = features.transform([texts[i] for i in pool]).tocsr()
    X_test = features.transform([texts[i] for i in test]).tocsr()
    y_pool, y_test = labels[pool], labels[test]
    rng = np.random.default_rng(seed)
    labeled = _initial(y_pool, settings.initial, rng)
    limit = min(len(pool), settings.max_labels or len(pool))
    curve = []
    while True:
        model = _classifier(settings.C).fit(X_pool[labeled], y_pool[labeled])
        curve.append({"labels": len(labeled), "weighted_f1": _f1(model, X_test, y_test)})
        if len(labeled) >= limit:
            break
        labeled = labeled + _next_batch(model, X_pool, labeled, min(settings.batch, limit - len(labeled)), strategy, settings.measure, rng)
    full = _classifier(settings.C).fit(X_pool, y_pool)
    return {"seed": seed, "curve": curve, "full_data_f1": _f1(full, X_test, y_test), "pool": len(pool), "test": len(test)}


def _initial(y_pool: np.ndarray, size: int, rng) -> list[int]:
    """A random first batch, grown until it holds two categories (a classifier needs two)."""
    order = [int(i) for i in rng.permutation(len(y_pool))]
    chosen = order[: max(size, 2)]
    for index in order[len(chosen):]:
        if len(set(y_pool[chosen])) >= 2:
            break
        chosen.append(index)
    return chosen


def _next_batch(model, X_pool, labeled: list[int], count: int, strategy: str, measure: str, rng) -> list[int]:
    taken = np.zeros(X_pool.shape[0], dtype=bool)
    taken[labeled] = True
    unlabeled = np.flatnonzero(~taken)
    if strategy == "random":
        return [int(i) for i in rng.choice(unlabeled, size=count, replace=False)]
    proba = model.predict_proba(X_pool[unlabeled])
    return [int(unlabeled[i]) for i in most_uncertain(proba, count, measure)]


def _f1(model, X, y) -> float:
    return round(float(f1_score(y, model.predict(X), average="weighted", zero_division=0)), 4)


def compare(texts: Sequence[str], labels: Sequence[str], strategies: Sequence[str], seeds: Sequence[int], settings: Simulation) -> dict:
    """Every strategy on every seed (the same pool/test split per seed for all strategies), with
    the mean curve and how many labels each needed to reach 95% of the full-data F1."""
    texts = list(texts)
    result = {}
    for strategy in strategies:
        started = time.perf_counter()
        runs = [simulate(texts, labels, strategy, seed, settings) for seed in seeds]
        result[strategy] = summarise(runs)
        result[strategy]["seconds"] = round(time.perf_counter() - started, 2)
    return result


def summarise(runs: list[dict], share: float = 0.95) -> dict:
    full = float(np.mean([run["full_data_f1"] for run in runs]))
    points = {}
    for run in runs:
        for point in run["curve"]:
            points.setdefault(point["labels"], []).append(point["weighted_f1"])
    curve = [
        {
            "labels": n,
            "weighted_f1": round(float(np.mean(scores)), 4),
            "std": round(float(np.std(scores)), 4),
            "seeds": len(scores),
        }
        for n, scores in sorted(points.items())
    ]
    return {
        "full_data_f1": round(full, 4),
        "target_f1": round(share * full, 4),
        "labels_to_target": _first_reaching(curve, share * full),
        "labels_to_target_per_seed": [_first_reaching(run["curve"], share * run["full_data_f1"]) for run in runs],
        "pool": runs[0]["pool"],
        "test": runs[0]["test"],
        "curve": curve,
    }


def _first_reaching(curve: list[dict], target: float) -> int | None:
    return next((point["labels"] for point in curve if point["weighted_f1"] >= target - 1e-9), None)
