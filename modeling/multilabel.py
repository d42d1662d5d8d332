"""Multi-label text classification: one-vs-rest logistic regressions with a decision threshold per
category, chosen by cross-validation, and the multi-label figures a model is judged by.

Pure scikit-learn on plain lists, like training.py and evaluation.py: nothing here knows about the
ORM. Every model takes raw texts and *sets* of category names:

    fit(texts, label_sets) -> self
    predict_proba(texts) -> (n_texts, n_classes), one independent probability per category
                            (rows do not sum to 1), columns in `classes_` order
    predict(texts) -> a list of category names per text: those whose probability reaches the
                      category's threshold (`thresholds_`, same order as `classes_`)
    classes_, thresholds_, multilabel = True

A text gets at least its most probable category unless some training item had no category at all
(a project that allows "none of these"): predicting nothing for a project where every item has a
label would be a mistake the model is sure to make.
"""
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support
from sklearn.model_selection import ParameterGrid

from labeling.stratification import stratify

from . import embeddings, evaluation, label_errors, training

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
# Thresholds tried per category; the ends are kept away from 0 and 1, where one lucky fold would
# make a category always or never suggested.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
# Fewer out-of-fold positives than this and a tuned threshold is noise: keep the default.
MIN_POSITIVES_TO_TUNE = 3


# --- models -------------------------------------------------------------------------------------


class _MultiLabel(BaseEstimator):
    """Shared plumbing: label sets to an indicator matrix, thresholds, and `predict`."""

    multilabel = True
    uses_embeddings = False
    tunes_thresholds = False
    param_grid: ClassVar[dict[str, list]] = {}

    def predict(self, texts: Sequence[str]) -> list[list[str]]:
        return self.decide(self.predict_proba(texts))

    def decide(self, proba: np.ndarray) -> list[list[str]]:
        """The categories at or above their thresholds (at least the top one, see the module)."""
        chosen = decide(proba, self.thresholds_, self.allow_empty_)
        return [[c for c, yes in zip(self.classes_, row, strict=True) if yes] for row in chosen]

    def margins(self, proba: np.ndarray) -> np.ndarray:
        """The queue's uncertainty measure for multi-label models (see `margins`)."""
        return margins(proba, self.thresholds_)

    def _learn_classes(self, label_sets) -> np.ndarray:
        label_sets = [list(labels) for labels in label_sets]
        self.classes_ = sorted({str(label) for labels in label_sets for label in labels})
        self.allow_empty_ = any(not labels for labels in label_sets)
        self.thresholds_ = [DEFAULT_THRESHOLD] * len(self.classes_)
        return binarize(label_sets, self.classes_)


class CategoryPrior(_MultiLabel):
    """The floor: each category's share of the training items, for every text. With the default
    threshold it predicts the categories most items have (at least the most frequent one)."""

    def fit(self, texts, label_sets):
        truth = self._learn_classes(label_sets)
        self.prior_ = truth.mean(axis=0)
        return self

    def predict_proba(self, texts):
        return np.tile(self.prior_, (len(texts), 1))


class CategoryRules(_MultiLabel):
    """Keyword rules as a multi-label model: a category is suggested when any of its patterns is
    found (probability 1 - (1 - prior) / (1 + matches)); otherwise it keeps its prior."""

    def __init__(self, rules: dict[str, list[str]] | None = None):
        self.rules = rules

    def fit(self, texts, label_sets):
        truth = self._learn_classes(label_sets)
        self.prior_ = truth.mean(axis=0)
        rules = training.default_rules() if self.rules is None else self.rules
        self.patterns_ = [[training.compile_pattern(p) for p in rules.get(c, [])] for c in self.classes_]
        return self

    def predict_proba(self, texts):
        matches = np.array(
            [[sum(1 for p in patterns if _found(p, text)) for patterns in self.patterns_] for text in texts],
            dtype=float,
        ).reshape(len(texts), len(self.classes_))
        return np.where(matches > 0, 1 - (1 - self.prior_) / (1 + matches), self.prior_)


def _found(pattern, text: str) -> bool:
    try:
        return training.search_bounded(pattern, text) is not None
    except TimeoutError:  # a runaway pattern counts as no match (training.KeywordRules logs them)
        return False


class OneVsRestTfidf(_MultiLabel):
    """One logistic regression per category on shared word and character TF-IDF (the features of
    training.TfidfLogReg, fitted once for all categories)."""

    tunes_thresholds = True
    param_grid: ClassVar[dict[str, list]] = {"C": [1.0, 10.0, 100.0], "class_weight": [None, "balanced"]}

    def __init__(self, C=10.0, class_weight="balanced", word_ngrams=(1, 2), char_ngrams=(2, 5)):
        self.C = C
        self.class_weight = class_weight
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams

    def fit(self, texts, label_sets):
        truth = self._learn_classes(label_sets)
        self.tfidf_, tfidf = training._fitted_tfidf(self.word_ngrams, self.char_ngrams, list(texts))
        features = self._beside(tfidf, texts)
        # A category every training text has (or none has) is a constant: no regression to fit.
        self.per_category_ = [
            float(column[0]) if column.min() == column.max()
            else training._logistic_regression(self.C, self.class_weight).fit(features, column)
            for column in truth.T
        ]
        return self

    def predict_proba(self, texts):
        features = self._features(texts)
        columns = [
            np.full(features.shape[0], part) if isinstance(part, float) else part.predict_proba(features)[:, 1]
            for part in self.per_category_
        ]
        return np.column_stack(columns) if columns else np.zeros((features.shape[0], 0))

    def _features(self, texts):
        return self._beside(training._tfidf_transform(self.tfidf_, list(texts)), texts)

    def _beside(self, tfidf, texts):
        """The features of `texts` given their TF-IDF matrix (subclasses add columns)."""
        return tfidf


class OneVsRestEmbeddingsTfidf(OneVsRestTfidf):
    """The same, on sentence embeddings side by side with TF-IDF (training.EmbeddingsTfidfLogReg)."""

    uses_embeddings = True
    param_grid: ClassVar[dict[str, list]] = {"C": [3.0, 30.0], "class_weight": [None, "balanced"]}

    def __init__(self, C=10.0, class_weight="balanced", embedding_weight=1.0, word_ngrams=(1, 2), char_ngrams=(2, 5)):
        super().__init__(C=C, class_weight=class_weight, word_ngrams=word_ngrams, char_ngrams=char_ngrams)
        self.embedding_weight = embedding_weight

    def _beside(self, tfidf, texts):
        vectors = embeddings.encode(list(texts)) * self.embedding_weight
        return sparse.hstack([tfidf, sparse.csr_matrix(vectors)]).tocsr()


# Simplest first: on a tie in cross-validation the earlier one wins. The baselines carry the
# single-label names, so TRAIN_ALGORITHMS means the same in both kinds of project.
ALGORITHMS: dict[str, type[_MultiLabel]] = {
    "majority": CategoryPrior,
    "rules": CategoryRules,
    "ovr_tfidf_logreg": OneVsRestTfidf,
}
if embeddings.available():
    ALGORITHMS["ovr_embeddings_tfidf_logreg"] = OneVsRestEmbeddingsTfidf
# Which multi-label algorithm stands in for each single-label one (settings name the latter).
COUNTERPART = {
    "majority": "majority",
    "rules": "rules",
    "tfidf_logreg": "ovr_tfidf_logreg",
    "embeddings_tfidf_logreg": "ovr_embeddings_tfidf_logreg",
    "embeddings_logreg": "ovr_embeddings_tfidf_logreg",
}


def algorithms_for(single_label: Sequence[str]) -> list[str]:
    """The multi-label algorithms standing in for a list of single-label ones (order kept, each
    once); the one-vs-rest TF-IDF model when none of them has a counterpart."""
    names = [COUNTERPART[name] for name in single_label if COUNTERPART.get(name) in ALGORITHMS]
    return list(dict.fromkeys(names)) or ["ovr_tfidf_logreg"]


def make_estimator(algorithm: str, params: dict | None = None, rules: dict | None = None) -> _MultiLabel:
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"Unknown or unavailable multi-label algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}."
        )
    estimator = ALGORITHMS[algorithm](**(params or {}))
    if algorithm == "rules" and rules is not None:
        estimator.set_params(rules=rules)
    return estimator


def binarize(label_sets: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Indicator matrix (n, len(classes)); labels outside `classes` are left out."""
    column = {c: j for j, c in enumerate(classes)}
    matrix = np.zeros((len(label_sets), len(classes)), dtype=int)
    for i, labels in enumerate(label_sets):
        for label in labels:
            if str(label) in column:
                matrix[i, column[str(label)]] = 1
    return matrix


# --- thresholds ---------------------------------------------------------------------------------


def tune_thresholds(truth: np.ndarray, proba: np.ndarray) -> list[float]:
    """Per category, the threshold on held-out probabilities with the best F1 for that category.

    Several thresholds often tie (the probabilities between two held-out texts); the middle one
    of the best is taken, the least tied to those particular texts. Categories with fewer than
    MIN_POSITIVES_TO_TUNE positives keep DEFAULT_THRESHOLD."""
    truth, proba = np.asarray(truth, dtype=bool), np.asarray(proba, dtype=float)
    thresholds = []
    for j in range(truth.shape[1]):
        positive = truth[:, j]
        if positive.sum() < MIN_POSITIVES_TO_TUNE:
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        said = proba[:, j][:, None] >= THRESHOLD_GRID[None, :]
        tp = (said & positive[:, None]).sum(axis=0)
        fp = (said & ~positive[:, None]).sum(axis=0)
        fn = (~said & positive[:, None]).sum(axis=0)
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best = THRESHOLD_GRID[f1 >= f1.max() - 1e-12]
        thresholds.append(float(best[len(best) // 2]))
    return thresholds


def thresholds_by_category(model: "_MultiLabel") -> dict[str, float]:
    """What a suggestion card shows beside each probability (stored with the version's params)."""
    return dict(zip(model.classes_, (float(t) for t in model.thresholds_), strict=True))


def margins(proba: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per row, how far its most doubtful category is from that category's threshold, as a share
    of the room on that side (0: a category sits on its threshold; 1: every category is at 0 or 1).

    The single-label margin (top probability minus the second) would call an item with two sure
    categories (0.95 and 0.93) the least certain of all; here the decisions are what is in doubt."""
    proba, thresholds = np.asarray(proba, dtype=float), np.asarray(thresholds, dtype=float)
    if proba.shape[1] == 0:
        return np.ones(len(proba))
    room = np.where(proba >= thresholds, 1 - thresholds, thresholds)
    return (np.abs(proba - thresholds) / np.maximum(room, 1e-9)).min(axis=1)


# --- choosing a model by cross-validation -------------------------------------------------------


@dataclass
class Candidate:
    algorithm: str
    params: dict
    cv_samples_f1: float | None = None  # with the thresholds tuned on the same folds (optimistic)
    cv_samples_f1_default: float | None = None  # every threshold at 0.5
    cv_micro_f1: float | None = None
    cv_macro_f1: float | None = None
    seconds: float = 0.0
    error: str | None = None
    thresholds: list[float] | None = None
    out_of_fold: np.ndarray | None = field(default=None, repr=False)

    def report(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name != "out_of_fold"}


def select_and_fit(
    texts: Sequence[str],
    label_sets: Sequence[Sequence[str]],
    *,
    algorithms: Sequence[str] | None = None,
    cv: int = 5,
    seed: int = 0,
    rules: dict[str, list[str]] | None = None,
    sample: int | None = None,
) -> tuple[_MultiLabel, dict]:
    """Choose algorithm and settings by multi-label stratified K-fold CV (samples F1 at each
    candidate's tuned thresholds), fit the choice on all data with the thresholds its held-out
    probabilities gave. Returns the model and a JSON-ready report.

    `sample`: above this many texts, the choice (and the thresholds) are made on a stratified
    sample of that size; only the chosen model is fitted on everything."""
    model, report, _ = select_fit_and_check(
        texts, label_sets, algorithms=algorithms, cv=cv, seed=seed, rules=rules, sample=sample
    )
    return model, report


def select_fit_and_check(
    texts: Sequence[str],
    label_sets: Sequence[Sequence[str]],
    *,
    algorithms: Sequence[str] | None = None,
    cv: int = 5,
    seed: int = 0,
    rules: dict[str, list[str]] | None = None,
    sample: int | None = None,
) -> tuple[_MultiLabel, dict, label_errors.Check]:
    """`select_and_fit`, and the material of the label check a training run makes: the chosen
    candidate's out-of-fold probabilities on the texts the choice was made on."""
    started, cpu_started = time.perf_counter(), time.process_time()
    texts, label_sets = _checked(texts, label_sets)
    names = list(algorithms or ALGORITHMS)
    for name in names:
        make_estimator(name)  # fail on an unknown name before spending minutes on the others
    chosen = _sample(label_sets, sample, seed) if sample and len(texts) > sample else list(range(len(texts)))
    picked_texts, picked_sets = [texts[i] for i in chosen], [label_sets[i] for i in chosen]
    folds = cv_folds(picked_sets, cv, seed)
    classes = sorted({label for labels in label_sets for label in labels})
    with embeddings.remember(), training._reusing_tfidf():
        if any(ALGORITHMS[name].uses_embeddings for name in names):
            embeddings.encode(texts)  # once, up front; every fold, candidate and the final fit reuse them
        with training._one_thread_per_fit():
            candidates = [
                score_candidate(name, params, picked_texts, picked_sets, classes, folds, rules)
                for name in names
                for params in ParameterGrid(ALGORITHMS[name].param_grid)
            ]
            best = pick_best(candidates)
            fit_started = time.perf_counter()
            model = make_estimator(best.algorithm, best.params, rules).fit(texts, label_sets)
    # The final model knows the classes of all the data; thresholds are by class name.
    tuned = dict(zip(classes, best.thresholds, strict=True))
    model.thresholds_ = [tuned.get(c, DEFAULT_THRESHOLD) for c in model.classes_]
    finished = time.perf_counter()
    report = {
        "multilabel": True,
        "algorithm": best.algorithm,
        "params": training.describe_params(model),
        "thresholds": thresholds_by_category(model),
        "cv_samples_f1": best.cv_samples_f1,
        "cv_samples_f1_default": best.cv_samples_f1_default,
        "cv_micro_f1": best.cv_micro_f1,
        "cv_macro_f1": best.cv_macro_f1,
        "cv_folds": len(folds),
        "seed": seed,
        "n_train": len(texts),
        "candidates": [c.report() for c in candidates],
        "selection_seconds": round(fit_started - started, 3),
        "fit_seconds": round(finished - fit_started, 3),
        "train_seconds": round(finished - started, 3),
        "cpu_seconds": round(time.process_time() - cpu_started, 3),
    }
    if len(chosen) < len(texts):
        report["selection_sample"] = len(chosen)
    return model, report, label_errors.Check(chosen, best.out_of_fold, classes)


def _checked(texts, label_sets) -> tuple[list[str], list[list[str]]]:
    texts, label_sets = list(texts), [sorted({str(label) for label in labels}) for labels in label_sets]
    if len(texts) != len(label_sets):
        raise ValueError(f"{len(texts)} texts but {len(label_sets)} label sets.")
    if len({label for labels in label_sets for label in labels}) < 2:
        raise ValueError("Training needs labelled examples of at least two categories.")
    return texts, label_sets


def _sample(label_sets, size: int, seed: int) -> list[int]:
    """A sample of about `size` items with every category's share kept (iterative stratification)."""
    sides = stratify(label_sets, [size, len(label_sets) - size], seed=seed)
    return [i for i, side in enumerate(sides) if side == 0]


def cv_folds(label_sets, cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Iteratively stratified folds; fewer than `cv` when the rarest category has fewer examples."""
    counts = Counter(label for labels in label_sets for label in labels)
    k = max(2, min(cv, min(counts.values())))
    # A shuffled order, so ties between folds do not follow the order the items came in.
    order = list(range(len(label_sets)))
    random.Random(seed).shuffle(order)
    fold_of = stratify([label_sets[i] for i in order], [1] * k, seed=seed)
    folds = []
    for fold in range(k):
        test = np.array(sorted(order[n] for n, f in enumerate(fold_of) if f == fold), dtype=int)
        train = np.setdiff1d(np.arange(len(label_sets)), test)
        folds.append((train, test))
    return folds


def score_candidate(algorithm, params, texts, label_sets, classes, folds, rules=None) -> Candidate:
    """Out-of-fold probabilities of one algorithm + settings, its tuned thresholds, and scores."""
    candidate = Candidate(algorithm, dict(params))
    started = time.perf_counter()
    texts = np.array(texts, dtype=object)
    truth = binarize(label_sets, classes)
    out_of_fold = np.zeros(truth.shape)
    try:
        for train, test in folds:
            model = make_estimator(algorithm, params, rules).fit(
                list(texts[train]), [label_sets[i] for i in train]
            )
            # A fold's model lacks a category its training part did not contain: probability 0.
            out_of_fold[np.ix_(test, [classes.index(c) for c in model.classes_])] = model.predict_proba(
                list(texts[test])
            )
    except ValueError as error:  # e.g. a fold whose training part has a single category
        log.info("Multi-label candidate %s %s failed: %s", algorithm, params, error)
        candidate.error = str(error)
    else:
        allow_empty = any(not labels for labels in label_sets)
        default = [DEFAULT_THRESHOLD] * len(classes)
        tuned = tune_thresholds(truth, out_of_fold) if ALGORITHMS[algorithm].tunes_thresholds else default
        predicted = decide(out_of_fold, tuned, allow_empty)
        candidate.thresholds = tuned
        candidate.cv_samples_f1 = round(_samples_f1(truth, predicted), 4)
        candidate.cv_samples_f1_default = round(_samples_f1(truth, decide(out_of_fold, default, allow_empty)), 4)
        candidate.cv_micro_f1 = round(float(f1_score(truth, predicted, average="micro", zero_division=0)), 4)
        candidate.cv_macro_f1 = round(float(f1_score(truth, predicted, average="macro", zero_division=0)), 4)
        candidate.out_of_fold = out_of_fold
    candidate.seconds = round(time.perf_counter() - started, 3)
    return candidate


def decide(proba: np.ndarray, thresholds: Sequence[float], allow_empty: bool) -> np.ndarray:
    """Indicator matrix of the categories at or above their thresholds (at least the top one)."""
    chosen = np.asarray(proba) >= np.asarray(thresholds)
    if not allow_empty and chosen.shape[1]:
        chosen[np.arange(len(chosen)), np.asarray(proba).argmax(axis=1)] = True
    return chosen.astype(int)


def pick_best(candidates: Sequence[Candidate]) -> Candidate:
    """Highest CV samples F1 (to 4 decimals); ties go to the earlier, simpler candidate."""
    scored = [c for c in candidates if c.cv_samples_f1 is not None]
    if not scored:
        errors = "; ".join(f"{c.algorithm}: {c.error}" for c in candidates)
        raise ValueError(f"No multi-label algorithm could be trained on this data ({errors}).")
    return max(scored, key=lambda c: c.cv_samples_f1)


# --- evaluation ---------------------------------------------------------------------------------


def evaluate(
    true_sets: Sequence[Sequence[str]],
    predicted_sets: Sequence[Sequence[str]],
    proba: np.ndarray | None,
    classes: Sequence[str],
    thresholds: Sequence[float] | None = None,
    texts: Sequence[str] | None = None,
    slices: Mapping[str, Sequence[str]] | None = None,
    *,
    members: Mapping[str, Sequence[bool]] | None = None,
) -> dict:
    """The multi-label figures, JSON-ready: samples / micro / macro / weighted F1, Hamming loss,
    exact-set accuracy, per category precision, recall, F1, support and threshold, calibration of
    the per-category probabilities, and slices.

    Samples F1 is the mean over items of the F1 between the gold and the predicted set (an item
    whose gold and predicted sets are both empty counts 1); macro F1 is over the categories
    present in the gold or predicted sets, as in the single-label figures. `accuracy` and
    `weighted_f1` are there so tables built for single-label versions read sensibly. Slices as in
    evaluation.evaluate (`members`: their memberships, when computed already)."""
    true_sets = [[str(label) for label in labels] for labels in true_sets]
    predicted_sets = [[str(label) for label in labels] for labels in predicted_sets]
    evaluation.check_holdout(true_sets, predicted_sets, "true label sets")
    labels = _label_order(classes, true_sets, predicted_sets)
    truth, predicted = binarize(true_sets, labels), binarize(predicted_sets, labels)
    cardinality = {"gold": float(truth.sum(axis=1).mean()), "predicted": float(predicted.sum(axis=1).mean())}
    if members is None and texts is not None:
        members = evaluation.slice_members(texts, slices)
    return {
        "multilabel": True,
        "n": len(true_sets),
        "samples_f1": _samples_f1(truth, predicted),
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": _f1_over_present(truth, predicted, "macro"),
        "weighted_f1": _f1_over_present(truth, predicted, "weighted"),
        "hamming_loss": float(hamming_loss(truth, predicted)),
        "accuracy": float(accuracy_score(truth, predicted)),  # exact set
        "intervals": _intervals(truth, predicted),
        "label_cardinality": cardinality,
        "per_class": _per_class(truth, predicted, labels, classes, thresholds),
        "calibration": None if proba is None else calibration(truth[:, : len(classes)], proba),
        "slices": {} if members is None else _slices(truth, predicted, members),
    }


def _label_order(classes, true_sets, predicted_sets) -> list[str]:
    """The model's classes first, then any label it never saw (so no miss goes uncounted)."""
    known = [str(c) for c in classes]
    seen = {label for labels in list(true_sets) + list(predicted_sets) for label in labels}
    return known + sorted(seen - set(known))


def _f1_over_present(truth, predicted, average: str) -> float:
    """Over the categories in the gold or predicted sets: one in neither says nothing about the
    model and would only drag the mean to zero (as in evaluation._macro_f1)."""
    present = [j for j in range(truth.shape[1]) if truth[:, j].any() or predicted[:, j].any()]
    if not present:
        return 0.0
    return float(f1_score(truth, predicted, labels=present, average=average, zero_division=0))


def _samples_f1(truth, predicted) -> float:
    return float(f1_score(truth, predicted, average="samples", zero_division=1.0))


def _intervals(truth, predicted) -> dict[str, list[float]]:
    """95 % bootstrap intervals of samples, weighted and macro F1 and exact-set accuracy (see
    evaluation.confusion_intervals). An item's kind is its pair of gold and predicted sets: a
    holdout has few distinct pairs however many items it has."""
    kinds, counts = np.unique(np.hstack([truth, predicted]).astype(np.int64), axis=0, return_counts=True)
    gold, chosen = np.hsplit(kinds, 2)
    # Mistakes a redraw may make though this holdout shows none: each gold set seen, with one
    # category flipped (the counterpart of the confusion cells no item fell in, which get their
    # share of the pseudo-item in the single-label intervals).
    seen, width = np.unique(gold, axis=0), gold.shape[1]
    gold = np.vstack([gold, np.repeat(seen, width, axis=0)])
    flipped = np.repeat(seen, width, axis=0) ^ np.tile(np.eye(width, dtype=np.int64), (len(seen), 1))
    chosen = np.vstack([chosen, flipped])
    counts = np.concatenate([counts, np.zeros(len(seen) * width, dtype=counts.dtype)])
    figures = _figures(gold, chosen, evaluation.resampled_shares(counts), _present(truth, predicted))
    return {name: evaluation.percentile_interval(values) for name, values in figures.items()}


def difference_intervals(true_sets, new_sets, old_sets, classes) -> dict[str, list[float]]:
    """95 % intervals of (new model − old model) in the same figures on the same holdout items,
    paired as evaluation.difference_intervals. An item's kind: its gold, new and old sets."""
    labels = _label_order(classes, true_sets, list(new_sets) + list(old_sets))
    truth, new, old = (
        binarize([[str(c) for c in labels_of_item] for labels_of_item in sets], labels)
        for sets in (true_sets, new_sets, old_sets)
    )
    kinds, counts = np.unique(np.hstack([truth, new, old]).astype(np.int64), axis=0, return_counts=True)
    gold, chosen_new, chosen_old = np.hsplit(kinds, 3)
    shares = evaluation.resampled_shares(counts)
    before = _figures(gold, chosen_old, shares, _present(truth, old))
    after = _figures(gold, chosen_new, shares, _present(truth, new))
    return {name: evaluation.percentile_interval(after[name] - before[name]) for name in after}


def _present(truth, predicted) -> np.ndarray:
    """The categories the figures are over: in the gold or the predicted sets."""
    return (np.asarray(truth).sum(axis=0) + np.asarray(predicted).sum(axis=0)) > 0


def _figures(gold, chosen, weights, present) -> dict[str, np.ndarray]:
    """Samples, weighted and macro F1 and exact-set accuracy of each row of `weights` (shares of
    the kinds, whose gold and chosen sets are the rows of `gold` and `chosen`)."""
    hits, support, guessed = weights @ (gold & chosen), weights @ gold, weights @ chosen  # (redraws, categories)
    sizes = gold.sum(axis=1) + chosen.sum(axis=1)
    # An item with both sets empty scores 1, as in _samples_f1.
    item_f1 = np.divide(2 * (gold & chosen).sum(axis=1), sizes, out=np.ones(len(gold)), where=sizes > 0)
    f1 = np.divide(2 * hits, support + guessed, out=np.zeros(hits.shape), where=(support + guessed) > 0)
    return {
        "samples_f1": weights @ item_f1,
        "weighted_f1": _ratio((f1 * support).sum(axis=1), support.sum(axis=1)),
        "macro_f1": _ratio((f1 * present).sum(axis=1), np.full(len(weights), present.sum())),
        "accuracy": weights @ (gold == chosen).all(axis=1),
    }


def _ratio(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    """0 where the denominator is 0 (no category present), as _f1_over_present."""
    return np.divide(numerators, denominators, out=np.zeros(len(numerators)), where=denominators > 0)


def _per_class(truth, predicted, labels, classes, thresholds) -> dict[str, dict]:
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=list(range(len(labels))), zero_division=0
    )
    threshold_of = dict(zip(classes, thresholds, strict=True)) if thresholds is not None else {}
    return {
        label: {
            "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
            "threshold": threshold_of.get(label),
        }
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }


def calibration(truth: np.ndarray, proba, bins: int = evaluation.CALIBRATION_BINS) -> dict:
    """Reliability of the per-category probabilities, every (item, category) pair one point: bin
    by probability, compare the mean probability with the share of pairs that are gold (shown in
    the `accuracy` column of the single-label table)."""
    proba = np.asarray(proba, dtype=float)
    if proba.shape != truth.shape:
        raise ValueError(f"Probabilities have shape {proba.shape}; expected {truth.shape}.")
    points, gold = proba.ravel(), truth.ravel().astype(float)
    which_bin = np.minimum((points * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for i in range(bins):
        inside = which_bin == i
        count = int(inside.sum())
        row = {"lower": i / bins, "upper": (i + 1) / bins, "count": count, "mean_confidence": None, "accuracy": None}
        if count:
            row["mean_confidence"] = float(points[inside].mean())
            row["accuracy"] = float(gold[inside].mean())
            ece += count / len(points) * abs(row["accuracy"] - row["mean_confidence"])
        table.append(row)
    return {"ece": float(ece), "bins": table}


def _slices(truth, predicted, members) -> dict[str, dict]:
    result = {}
    for name, inside in members.items():
        rows = np.asarray(inside, dtype=bool)
        if not rows.any():
            result[name] = {"n": 0, "accuracy": None, "weighted_f1": None, "samples_f1": None}
            continue
        t, p = truth[rows], predicted[rows]
        result[name] = {
            "n": int(rows.sum()),
            "accuracy": float(accuracy_score(t, p)),
            "weighted_f1": _f1_over_present(t, p, "weighted"),
            "samples_f1": _samples_f1(t, p),
        }
    return result


def compare(metrics_new: Mapping, metrics_old: Mapping | None, margin: float) -> bool:
    """True when the new model is not worse than the old one by more than `margin` samples F1
    (the mean per-item F1: what an annotator feels); the same rule as evaluation.compare."""
    if margin < 0:
        raise ValueError("The promotion margin cannot be negative.")
    if not metrics_old or metrics_old.get("samples_f1") is None:
        return True
    return metrics_new["samples_f1"] >= metrics_old["samples_f1"] - margin - 1e-9
