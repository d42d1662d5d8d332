"""Offline evaluation: the numbers a model version is judged by on the gold holdout.

Plain lists in, plain JSON-ready Python out (str, int, float, None, lists and dicts), so a
ModelVersion can store the result as it is. Nothing here knows about the ORM.
"""

import re
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from .training import MAX_TEXT_CHARS, keyword_pattern

CALIBRATION_BINS = 10
SHORT_TEXT_WORDS = 8  # titles with little or no description: where suggestions are least reliable
# Bootstrap resamples of the holdout behind each 95 % interval; a fixed seed, so a version's page
# shows the same interval on every view.
INTERVAL_RESAMPLES = 1000
INTERVAL_SEED = 0


def check_holdout(truth: Sequence, predicted: Sequence, what: str) -> None:
    """What single- and multi-label evaluation both refuse: nothing to score, or a prediction
    count that does not match the gold one (`what` names the gold entries in the message)."""
    if not truth:
        raise ValueError("Nothing to evaluate: the holdout is empty.")
    if len(predicted) != len(truth):
        raise ValueError(f"{len(truth)} {what} but {len(predicted)} predictions.")


def evaluate(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    proba: np.ndarray | Sequence[Sequence[float]] | None,
    classes: Sequence[str],
    texts: Sequence[str] | None = None,
    slices: Mapping[str, Sequence[str]] | None = None,
    *,
    members: Mapping[str, Sequence[bool]] | None = None,
) -> dict:
    """Accuracy, per-class and averaged F1, confusion matrix, calibration and slice metrics.

    `proba` has one column per entry of `classes` (a model's `classes_`). `slices` maps a slice
    name to keywords; an item belongs to the slice when its text contains any of them. The
    built-in "short_text" slice (fewer than 8 words) is reported whenever `texts` is given.
    `members`: the slices' memberships when the caller computed them already (`slice_members`),
    e.g. once for several models scored on the same holdout.
    """
    y_true, y_pred = [str(y) for y in y_true], [str(y) for y in y_pred]
    check_holdout(y_true, y_pred, "true labels")
    labels = _label_order(classes, y_true, y_pred)
    # As positions in `labels`: scikit-learn re-encodes string labels in every metric (most of
    # the time of scoring a 20k-item holdout); names come back only in the figures' keys.
    true, pred = _codes(y_true, labels), _codes(y_pred, labels)
    everything = list(range(len(labels)))
    if members is None and texts is not None:
        members = slice_members(texts, slices)
    matrix = confusion_matrix(true, pred, labels=everything)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(true, pred)),
        "weighted_f1": _weighted_f1(true, pred),
        "macro_f1": _macro_f1(true, pred),
        "intervals": confusion_intervals(matrix),
        "per_class": per_class_metrics(true, pred, everything, names=labels),
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
        "calibration": None if proba is None else calibration(y_true, proba, classes),
        "slices": {} if members is None else _slices_scores(true, pred, members),
    }


def confusion_intervals(matrix: np.ndarray) -> dict[str, list[float]]:
    """95 % bootstrap intervals of accuracy, weighted and macro F1: the holdout is one sample of
    items, and on a few hundred of them another draw moves a figure by points. These figures
    depend on the confusion matrix alone: its cells are the items' kinds."""
    counts = np.asarray(matrix, dtype=np.float64)
    shares = resampled_shares(counts.ravel()).reshape(-1, *counts.shape)
    figures = confusion_figures(shares, _present_in(counts))
    return {name: percentile_interval(values) for name, values in figures.items()}


def resampled_shares(kinds: np.ndarray) -> np.ndarray:
    """INTERVAL_RESAMPLES redraws of a holdout whose items fall into kinds (items alike for every
    figure), `kinds` holding how many items are of each: each row the kinds' shares in one redraw.

    A Bayesian bootstrap (shares from a Dirichlet around the observed counts: the same intervals
    as redrawing the items, at a cost that does not grow with them), with one pseudo-item spread
    over all the kinds. Without it a holdout with no mistake at all redraws none, ever: an
    interval of zero width, a certainty a few dozen items cannot give. On a large holdout the
    pseudo-item weighs nothing."""
    counts = np.asarray(kinds, dtype=np.float64)
    return np.random.default_rng(INTERVAL_SEED).dirichlet(counts + 1 / len(counts), size=INTERVAL_RESAMPLES)


def confusion_figures(matrices: np.ndarray, present: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accuracy, weighted and macro F1 of each confusion matrix in a stack (rows: true labels,
    columns: predicted; counts or shares), as `evaluate` computes them: F1 is 0 where undefined,
    and macro F1 is over the `present` labels (default: each matrix's labels in the gold or the
    predictions)."""
    hits = np.diagonal(matrices, axis1=1, axis2=2)
    support, predicted = matrices.sum(axis=2), matrices.sum(axis=1)
    if present is None:
        present = (support + predicted) > 0
    f1 = np.divide(2 * hits, support + predicted, out=np.zeros(hits.shape), where=(support + predicted) > 0)
    items = support.sum(axis=1)
    return {
        "accuracy": hits.sum(axis=1) / items,
        "weighted_f1": (f1 * support).sum(axis=1) / items,
        "macro_f1": (f1 * present).sum(axis=1) / present.sum(axis=-1),
    }


def difference_intervals(
    y_true: Sequence[str], y_new: Sequence[str], y_old: Sequence[str]
) -> dict[str, list[float]]:
    """95 % intervals of (new model − old model) in accuracy, weighted and macro F1 on the same
    holdout items. Paired: both models are redrawn on the same items, so a difference can be sure
    even where each model's own interval is wide. An item's kind: (gold, new, old) labels. Two
    models that decide every item alike get [0, 0]: this holdout cannot tell them apart."""
    labels = sorted(set(map(str, y_true)) | set(map(str, y_new)) | set(map(str, y_old)))
    codes = np.stack([_codes([str(y) for y in ys], labels) for ys in (y_true, y_new, y_old)], axis=1)
    kinds, counts = np.unique(codes, axis=0, return_counts=True)
    shares = resampled_shares(counts)
    gold, new, old = kinds.T
    figures = []
    for predicted in (new, old):
        matrices = np.zeros((len(shares), len(labels), len(labels)))
        np.add.at(matrices, (slice(None), gold, predicted), shares)
        observed = np.zeros((len(labels), len(labels)))
        np.add.at(observed, (gold, predicted), counts)
        figures.append(confusion_figures(matrices, _present_in(observed)))
    return {name: percentile_interval(figures[0][name] - figures[1][name]) for name in figures[0]}


def decided_alike(difference: Sequence[float]) -> bool:
    """Whether a difference interval (difference_intervals) says the two models decided every
    holdout item alike: this holdout cannot tell them apart at all."""
    return difference[0] == difference[1] == 0


def _present_in(matrix: np.ndarray) -> np.ndarray:
    """The labels of a confusion matrix in the gold or the predictions: the figures are over them."""
    return (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0


def percentile_interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def _codes(values: list[str], labels: list[str]) -> np.ndarray:
    position = {label: i for i, label in enumerate(labels)}
    return np.fromiter((position[value] for value in values), dtype=np.int64, count=len(values))


def _label_order(classes, y_true, y_pred) -> list[str]:
    """The model's classes first, then any label it never saw (so no mistake goes uncounted)."""
    known = [str(c) for c in classes]
    return known + sorted((set(y_true) | set(y_pred)) - set(known))


def _weighted_f1(y_true, y_pred) -> float:
    return float(
        f1_score(
            y_true, y_pred, labels=_present(y_true, y_pred), average="weighted", zero_division=0
        )
    )


def _macro_f1(y_true, y_pred) -> float:
    # Over the categories present in the holdout or the predictions: a category that is in
    # neither says nothing about this model and would only drag the mean to zero.
    return float(
        f1_score(y_true, y_pred, labels=_present(y_true, y_pred), average="macro", zero_division=0)
    )


def _present(y_true, y_pred) -> list:
    return np.union1d(np.asarray(y_true), np.asarray(y_pred)).tolist()


def per_class_metrics(y_true, y_pred, labels, names=None) -> dict[str, dict]:
    """Precision, recall, F1 and support per label, keyed by `names` (default: the labels)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names or labels, precision, recall, f1, support, strict=True)
    }


def calibration(y_true, proba, classes, bins: int = CALIBRATION_BINS) -> dict:
    """Top-label expected calibration error and the reliability table behind it.

    Each item counts once, at the confidence of its most probable class; bin i holds confidences
    in [i/bins, (i+1)/bins), with 1.0 in the last bin. ECE is the count-weighted mean gap between
    a bin's accuracy and its mean confidence.
    """
    proba = np.asarray(proba, dtype=float)
    if proba.shape != (len(y_true), len(classes)):
        raise ValueError(
            f"Probabilities have shape {proba.shape}; expected ({len(y_true)}, {len(classes)})."
        )
    confidence = proba.max(axis=1)
    correct = np.array(classes, dtype=object)[proba.argmax(axis=1)] == np.array(
        y_true, dtype=object
    )
    which_bin = np.minimum((confidence * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for i in range(bins):
        inside = which_bin == i
        count = int(inside.sum())
        row = {
            "lower": i / bins,
            "upper": (i + 1) / bins,
            "count": count,
            "mean_confidence": None,
            "accuracy": None,
        }
        if count:
            row["mean_confidence"] = float(confidence[inside].mean())
            row["accuracy"] = float(correct[inside].mean())
            ece += count / len(y_true) * abs(row["accuracy"] - row["mean_confidence"])
        table.append(row)
    return {"ece": float(ece), "bins": table}


def slice_metrics(y_true, y_pred, texts, keyword_slices=None) -> dict[str, dict]:
    """n, accuracy and weighted F1 on the built-in short-text slice and each keyword slice."""
    if len(texts) != len(y_true):
        raise ValueError(f"{len(y_true)} labels but {len(texts)} texts.")
    return _slices_scores(list(y_true), list(y_pred), slice_members(texts, keyword_slices))


def slice_members(texts, keyword_slices=None) -> dict[str, np.ndarray]:
    """Slice name -> which texts belong to it: the built-in short-text slice, then each keyword one."""
    keyword_slices = dict(keyword_slices or {})
    if "short_text" in keyword_slices:
        raise ValueError('"short_text" is a built-in slice; give your keyword slice another name.')
    members = {"short_text": np.array([len(text.split()) < SHORT_TEXT_WORDS for text in texts], dtype=bool)}
    for name, keywords in keyword_slices.items():
        members[name] = np.array(_containing_any(texts, keywords), dtype=bool)
    return members


def _slices_scores(y_true, y_pred, members) -> dict[str, dict]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    for inside in members.values():
        if len(inside) != len(y_true):
            raise ValueError(f"{len(y_true)} labels but {len(inside)} texts.")
    return {name: _slice_scores(y_true, y_pred, np.asarray(inside, dtype=bool)) for name, inside in members.items()}


def _containing_any(texts, keywords) -> list[bool]:
    if not keywords:
        return [False] * len(texts)
    pattern = re.compile("|".join(keyword_pattern(k) for k in keywords), re.IGNORECASE)
    return [bool(pattern.search(text[:MAX_TEXT_CHARS])) for text in texts]


def _slice_scores(y_true: np.ndarray, y_pred: np.ndarray, inside: np.ndarray) -> dict:
    true, pred = y_true[inside], y_pred[inside]
    if not len(true):
        return {"n": 0, "accuracy": None, "weighted_f1": None}
    return {
        "n": len(true),
        "accuracy": float(accuracy_score(true, pred)),
        "weighted_f1": _weighted_f1(true, pred),
    }


def compare(metrics_new: Mapping, metrics_old: Mapping | None, margin: float) -> bool:
    """True when the new model is not worse than the old one by more than `margin` weighted F1.

    With no old model (or one without metrics) there is nothing to protect, so the new one passes.
    """
    if margin < 0:
        raise ValueError("The promotion margin cannot be negative.")
    if not metrics_old or metrics_old.get("weighted_f1") is None:
        return True
    # A hair of tolerance so that "equal within the margin" is not lost to float rounding.
    return metrics_new["weighted_f1"] >= metrics_old["weighted_f1"] - margin - 1e-9
