"""Text classifiers behind one interface, and choosing among them by cross-validation.

Pure scikit-learn on plain lists of strings: nothing here knows about the ORM, so the same code
trains inside a Celery task, in `manage.py evaluate_csv` and in tests.

Every algorithm is a scikit-learn estimator (so `clone()` and `get_params()` work, and joblib can
store it) that takes raw texts:

    fit(texts, labels) -> self
    predict_proba(texts) -> array of shape (n_texts, n_classes), columns in `classes_` order
    predict(texts) -> list of labels
    classes_ -> the label strings seen in training, sorted

Which algorithm and which settings a project gets is decided by `select_and_fit`, by stratified
K-fold cross-validation on the training data alone; nothing here is tuned to one dataset.
"""

import functools
import hashlib
import logging
import math
import re
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import regex
from scipy import sparse
from scipy.optimize import minimize_scalar
from sklearn import config_context
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import ParameterGrid, StratifiedKFold
from sklearn.pipeline import FeatureUnion
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from . import embeddings

log = logging.getLogger(__name__)

# Rules are written by admins and run on every item. A pattern with nested quantifiers such as
# `(a+)+$` backtracks catastrophically on a long text that almost matches, and Python's `re` has
# no timeout. So rules are compiled with the `regex` package (re-compatible syntax) and every
# search is bounded three ways: pattern length, text length, and time. A pattern that exhausts its
# time on the probe texts is refused when saved; one that times out on a real item counts as no
# match and is switched off for the rest of that model's life in this process (logged), so a bad
# rule costs one timeout, not one per item.
MAX_PATTERN_CHARS = 500
MAX_TEXT_CHARS = 20_000
MATCH_TIMEOUT_SECONDS = 0.25
# Near-matches that make backtracking patterns blow up: long runs of one character class,
# then a character that fails the match at the very end.
_PROBE_TEXTS = ["a" * 3000 + "!", "a1 " * 1000 + "!", "x" * 3000 + "\n\x00", " " * 3000 + "!"]


class TextClassifier(Protocol):
    classes_: list[str]

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Self: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def predict(self, texts: Sequence[str]) -> list[str]: ...


class InvalidRule(ValueError):
    pass


def item_text(title: str | None, description: str | None) -> str:
    """The text every model sees: title and description joined by a space."""
    return f"{title or ''} {description or ''}".strip()


# --- algorithms -------------------------------------------------------------------------------


class _Classifier(BaseEstimator):
    """Shared plumbing. Subclasses compute `_proba`; this adds temperature scaling and `predict`.

    `temperature_` is set by `select_and_fit` from out-of-fold probabilities; it sharpens or
    softens probabilities without ever changing which class is the most probable.
    """

    param_grid: ClassVar[dict[str, list]] = {}
    uses_embeddings = False
    temperature_ = 1.0

    def feature_cost(self) -> int:
        """How costly this model's features are to compute, as a rank (0 cheapest): model
        selection tries and prefers cheaper settings first (see `cost_ordered`)."""
        return 0

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        # Our own vectorisers made every matrix the estimators see, so scikit-learn's input and
        # parameter checks only cost time: a third of scoring one text online.
        with config_context(assume_finite=True, skip_parameter_validation=True):
            return with_temperature(self._proba(texts), self.temperature_)

    def predict(self, texts: Sequence[str]) -> list[str]:
        best = self._proba(texts).argmax(axis=1)
        return [self.classes_[i] for i in best]

    def _proba(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class MajorityClass(_Classifier):
    """The floor every model must clear: always the most frequent training label."""

    def fit(self, texts, labels):
        self.classes_, self.prior_ = _label_frequencies(labels)
        return self

    def _proba(self, texts):
        return np.tile(self.prior_, (len(texts), 1))


class KeywordRules(_Classifier):
    """Manual rules as a model: category -> regular expressions (see `keyword_pattern`).

    Each category scores the number of its patterns found in the text. The training label
    frequencies are added to the scores: below one vote, they only break ties toward the more
    frequent category, and when nothing matches they make the answer the majority class.
    Categories the training labels do not know are ignored, so every model of a project has the
    same `classes_` and their probabilities can be compared and stored alike.
    """

    def __init__(self, rules: dict[str, list[str]] | None = None):
        self.rules = rules

    def fit(self, texts, labels):
        self.classes_, self.prior_ = _label_frequencies(labels)
        rules = default_rules() if self.rules is None else self.rules
        self.patterns_ = [[compile_pattern(p) for p in rules.get(c, [])] for c in self.classes_]
        return self

    def _proba(self, texts):
        votes = np.array([self._votes(text) for text in texts], dtype=float)
        scores = votes.reshape(len(texts), len(self.classes_)) + self.prior_
        return scores / scores.sum(axis=1, keepdims=True)

    def _votes(self, text: str) -> list[int]:
        text = text[:MAX_TEXT_CHARS]
        # Most rules are keywords that most texts do not contain: one substring test rules them
        # out without the regex engine and its timeout (scoring a 20k holdout took seconds).
        folded = text.lower() if text.isascii() else None
        return [
            sum(1 for p in patterns if _may_match(p.pattern, folded) and self._matches(p, text))
            for patterns in self.patterns_
        ]

    def _matches(self, pattern, text: str) -> bool:
        # Not a learned attribute: models stored before it existed load without it.
        switched_off = self.__dict__.setdefault("timed_out_", set())
        if pattern.pattern in switched_off:
            return False
        if isinstance(pattern, re.Pattern):  # a model stored before rules used `regex` (cached)
            pattern = compile_pattern(pattern.pattern)
        try:
            return search_bounded(pattern, text) is not None
        except TimeoutError:
            switched_off.add(pattern.pattern)
            log.warning("Rule %r took over %s s on one item; it is ignored from now on.", pattern.pattern, MATCH_TIMEOUT_SECONDS)
            return False


class DecisionTree(_Classifier):
    """One tree on word TF-IDF: interpretable, and a check that linear models earn their keep."""

    param_grid: ClassVar[dict[str, list]] = {
        "max_depth": [None, 20],
        "min_samples_leaf": [1, 3],
        "class_weight": [None, "balanced"],
    }

    def __init__(self, max_depth=None, min_samples_leaf=1, class_weight=None):
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight

    def fit(self, texts, labels):
        # Words seen once can only produce splits that memorise one example.
        self.features_ = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        features = self.features_.fit_transform(texts)
        self.classifier_ = DecisionTreeClassifier(
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            class_weight=self.class_weight,
            random_state=0,
        ).fit(features, labels)
        self.classes_ = list(self.classifier_.classes_)
        return self

    def _proba(self, texts):
        return self.classifier_.predict_proba(self.features_.transform(texts))


class TfidfLogReg(_Classifier):
    """Word (and optionally character) n-gram TF-IDF with multinomial logistic regression.

    Character n-grams (within word boundaries) catch word forms and jargon the word vocabulary
    has not seen ("segmentation" / "segmenting"), but cost about ten times the words' time to
    compute: cross-validation decides per project whether they earn it (on a few hundred short
    texts they did, +0.015 weighted F1), up to MAX_TEXTS_FOR_CHAR_NGRAMS training texts (on 100k
    they cost three minutes). Its probabilities
    were under-confident in cross-validation; `select_and_fit` corrects that with a temperature.
    """

    # Cheapest features first: on a tie the earlier candidate wins (see `pick_best`). Word pairs
    # cost five times single words to count on 100k texts (a vocabulary of millions of pairs).
    param_grid: ClassVar[list[dict[str, list]]] = [
        {
            "word_ngrams": [(1, 1), (1, 2)],
            "char_ngrams": [None],
            "C": [1.0, 10.0, 100.0],
            "class_weight": ["balanced"],
        },
        {"char_ngrams": [(2, 5)], "C": [1.0, 10.0, 100.0], "class_weight": [None, "balanced"]},
    ]

    def __init__(self, C=10.0, class_weight="balanced", word_ngrams=(1, 2), char_ngrams=(2, 5)):
        self.C = C
        self.class_weight = class_weight
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams

    def feature_cost(self) -> int:
        return _tfidf_cost(self.word_ngrams, self.char_ngrams)

    def fit(self, texts, labels):
        self.features_, features = _fitted_tfidf(self.word_ngrams, self.char_ngrams, texts)
        self.classifier_ = _logistic_regression(self.C, self.class_weight).fit(features, labels)
        self.classes_ = list(self.classifier_.classes_)
        return self

    def _proba(self, texts):
        return self.classifier_.predict_proba(_tfidf_transform(self.features_, texts))


class EmbeddingsLogReg(_Classifier):
    """Logistic regression on sentence embeddings (all-MiniLM-L6-v2).

    Only the regression is stored when pickled; the encoder is loaded from the installed package
    at prediction time (`embeddings.encode`), so artifacts stay small and free of torch objects.
    """

    param_grid: ClassVar[dict[str, list]] = {
        "C": [1.0, 3.0, 10.0, 30.0],
        "class_weight": [None, "balanced"],
    }
    uses_embeddings = True

    def __init__(self, C=3.0, class_weight="balanced"):
        self.C = C
        self.class_weight = class_weight

    def fit(self, texts, labels):
        vectors = embeddings.encode(texts)
        self.classifier_ = _logistic_regression(self.C, self.class_weight).fit(vectors, labels)
        self.classes_ = list(self.classifier_.classes_)
        return self

    def _proba(self, texts):
        return self.classifier_.predict_proba(embeddings.encode(texts))


class EmbeddingsTfidfLogReg(_Classifier):
    """Sentence embeddings side by side with word and character TF-IDF, one logistic regression.

    Embeddings bring meaning (synonyms, topics); TF-IDF brings exact terms (library and model
    names). Both blocks have unit-length rows, so `embedding_weight=1` gives them equal footing.
    """

    param_grid: ClassVar[dict[str, list]] = {"C": [3.0, 30.0], "class_weight": [None, "balanced"]}
    uses_embeddings = True

    def __init__(
        self,
        C=10.0,
        class_weight="balanced",
        embedding_weight=1.0,
        word_ngrams=(1, 2),
        char_ngrams=(2, 5),
    ):
        self.C = C
        self.class_weight = class_weight
        self.embedding_weight = embedding_weight
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams

    def fit(self, texts, labels):
        self.tfidf_, tfidf = _fitted_tfidf(self.word_ngrams, self.char_ngrams, texts)
        features = self._beside(tfidf, texts)
        self.classifier_ = _logistic_regression(self.C, self.class_weight).fit(features, labels)
        self.classes_ = list(self.classifier_.classes_)
        return self

    def feature_cost(self) -> int:
        return _tfidf_cost(self.word_ngrams, self.char_ngrams)

    def _proba(self, texts):
        return self.classifier_.predict_proba(self._features(texts))

    def _features(self, texts):
        return self._beside(_tfidf_transform(self.tfidf_, texts), texts)

    def _beside(self, tfidf, texts):
        vectors = embeddings.encode(texts) * self.embedding_weight
        return sparse.hstack([tfidf, sparse.csr_matrix(vectors)]).tocsr()


def _tfidf_cost(word_ngrams, char_ngrams) -> int:
    """Single words < word pairs (five times the time on 100k texts: a vocabulary of millions of
    pairs) < character n-grams (about ten times the words')."""
    return 2 if char_ngrams else int(tuple(word_ngrams)[1] > 1)


def _label_frequencies(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    counts = Counter(labels)
    classes = sorted(counts)
    return classes, np.array([counts[c] for c in classes], dtype=float) / len(labels)


# Character n-grams are capped to the most frequent, so that the model and its prediction time
# stay bounded on big projects (a few hundred short texts have far fewer).
MAX_CHAR_FEATURES = 300_000


def _tfidf_features(word_ngrams, char_ngrams) -> FeatureUnion:
    # float32 halves the matrices and speeds the solver; cross-validated F1 was the same.
    # (Hashing the words instead of keeping a vocabulary was tried: 0.025 lower weighted F1.)
    words = TfidfVectorizer(
        ngram_range=tuple(word_ngrams), sublinear_tf=True, strip_accents="unicode", dtype=np.float32
    )
    parts = [("words", words)]
    if char_ngrams:
        chars = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=tuple(char_ngrams),
            sublinear_tf=True,
            max_features=MAX_CHAR_FEATURES,
            dtype=np.float32,
        )
        parts.append(("chars", chars))
    return FeatureUnion(parts)


# Inside `select_and_fit`: vectorisers fitted on one fold's texts and the matrices they produced.
# Candidates that differ only in C or class weights then share them; vectorising was about 60% of
# the cost of a TF-IDF candidate.
_tfidf_memo: dict | None = None


@contextmanager
def _reusing_tfidf():
    global _tfidf_memo
    _tfidf_memo = {}
    try:
        yield
    finally:
        _tfidf_memo = None


def _fitted_tfidf(word_ngrams, char_ngrams, texts) -> tuple[FeatureUnion, sparse.csr_matrix]:
    """Vectorisers fitted on `texts` and the matrix they make of them: one pass over the texts
    (fitting, then transforming, tokenised every text twice: a third of a 100k-text fit)."""
    memo = _tfidf_memo
    digest = _digest(texts)
    key = ("fit", tuple(word_ngrams), tuple(char_ngrams or ()), digest)
    if memo is not None and key in memo:
        return memo[key]
    features = _tfidf_features(word_ngrams, char_ngrams)
    # The parts one by one, as in `_tfidf_transform`: FeatureUnion would go through joblib.
    parts = [transformer.fit_transform(texts) for _, transformer in features.transformer_list]
    matrix = parts[0] if len(parts) == 1 else sparse.hstack(parts, format="csr")
    if memo is not None:
        memo[key] = features, matrix
        memo[("transform", id(features), digest)] = matrix
    return features, matrix


def _tfidf_transform(features: FeatureUnion, texts) -> sparse.csr_matrix:
    memo = _tfidf_memo
    # id() is safe as a key here: the memo keeps every fitted vectoriser alive while it exists.
    key = ("transform", id(features), _digest(texts))
    if memo is not None and key in memo:
        return memo[key]
    # The fitted parts one by one: FeatureUnion.transform goes through joblib even on one
    # thread, which was half the time of scoring a single text online.
    parts = [transformer.transform(texts) for _, transformer in features.transformer_list]
    matrix = parts[0] if len(parts) == 1 else sparse.hstack(parts, format="csr")
    if memo is not None:
        memo[key] = matrix
    return matrix


def _digest(texts) -> str:
    return hashlib.blake2b("\x00".join(texts).encode(), digest_size=16).hexdigest()


def _logistic_regression(C: float, class_weight) -> LogisticRegression:
    # newton-cg converges in a handful of iterations on wide TF-IDF matrices, several times
    # faster than the default lbfgs here, which keeps the whole grid search under a minute.
    return LogisticRegression(C=C, class_weight=class_weight, solver="newton-cg", max_iter=1000)


# --- keyword rules ----------------------------------------------------------------------------


def keyword_pattern(keyword: str) -> str:
    """A literal keyword as a whole-word pattern (also for "c++", where `\\b` fails)."""
    return r"(?<!\w)" + re.escape(keyword.strip()) + r"(?!\w)"


_KEYWORD_START, _KEYWORD_END = r"(?<!\w)", r"(?!\w)"


@functools.lru_cache(maxsize=4096)
def _ascii_keyword(pattern: str) -> str | None:
    """The lower-cased keyword of a `keyword_pattern` pattern when it is plain ASCII; None for
    anything else (a real regular expression, a non-ASCII keyword)."""
    if not (pattern.startswith(_KEYWORD_START) and pattern.endswith(_KEYWORD_END)):
        return None
    escaped = pattern[len(_KEYWORD_START):len(pattern) - len(_KEYWORD_END)]
    keyword = re.sub(r"\\(.)", r"\1", escaped, flags=re.DOTALL)
    if re.escape(keyword) != escaped or not keyword.isascii():
        return None  # not a literal after all: only the regex engine can tell
    return keyword.lower()


def _may_match(pattern: str, folded_text: str | None) -> bool:
    """False only when `pattern` certainly cannot match: an ASCII keyword absent from the
    lower-cased ASCII text (`folded_text`; None for a text with other characters). Between ASCII
    strings, a case-insensitive match implies the lower-cased substring, so nothing is missed."""
    if folded_text is None:
        return True
    keyword = _ascii_keyword(pattern)
    return keyword is None or keyword in folded_text


def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile one rule (case-insensitive, `re` syntax), refusing oversized or invalid patterns."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidRule(
            f"A rule pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_CHARS}. "
            "Split it into several shorter rules."
        )
    try:
        return regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)
    except (regex.error, OverflowError, RecursionError) as error:
        raise InvalidRule(
            f"Rule pattern {pattern!r} is not a valid regular expression: {error}."
        ) from error


def search_bounded(pattern: regex.Pattern, text: str):
    """`pattern.search` on at most MAX_TEXT_CHARS characters; TimeoutError past the time bound."""
    return pattern.search(text[:MAX_TEXT_CHARS], timeout=MATCH_TIMEOUT_SECONDS)


def check_rule(pattern: str) -> regex.Pattern:
    """What saving a rule requires: it compiles (compile_pattern) and stays within the time bound
    on texts built to trigger catastrophic backtracking."""
    compiled = compile_pattern(pattern)
    for probe in _PROBE_TEXTS:
        try:
            search_bounded(compiled, probe)
        except TimeoutError:
            raise InvalidRule(
                f"Rule pattern {pattern!r} takes too long on some texts (over {MATCH_TIMEOUT_SECONDS} s: "
                "catastrophic backtracking). Avoid nested repetition such as (a+)+ or (\\w+\\s?)*; "
                "a plain keyword rule is usually enough."
            ) from None
    return compiled


DEFAULT_KEYWORDS = {
    "natural-language-processing": [
        "nlp",
        "natural language",
        "language model",
        "language models",
        "text",
        "texts",
        "transformer",
        "transformers",
        "bert",
        "gpt",
        "gpt-2",
        "gpt-3",
        "word embeddings",
        "word2vec",
        "sentiment",
        "translation",
        "question answering",
        "summarization",
        "named entity",
        "ner",
        "tokenizer",
        "chatbot",
        "speech",
        "spacy",
        "hugging face",
        "huggingface",
    ],
    "computer-vision": [
        "image",
        "images",
        "vision",
        "computer vision",
        "object detection",
        "detection",
        "segmentation",
        "cnn",
        "convolutional",
        "gan",
        "gans",
        "video",
        "videos",
        "pose estimation",
        "face",
        "faces",
        "opencv",
        "yolo",
        "pixel",
        "camera",
        "style transfer",
        "ocr",
        "3d",
    ],
    "mlops": [
        "mlops",
        "deploy",
        "deployment",
        "deploying",
        "production",
        "monitoring",
        "pipeline",
        "pipelines",
        "serving",
        "serve",
        "docker",
        "kubernetes",
        "api",
        "ci/cd",
        "experiment tracking",
        "model registry",
        "feature store",
        "versioning",
        "infrastructure",
        "scalable",
        "distributed",
    ],
    "other": [
        "reinforcement learning",
        "graph",
        "graphs",
        "time series",
        "recommendation",
        "recommender",
        "tabular",
        "anomaly detection",
        "causal",
        "bayesian",
        "robot",
        "robotics",
        "forecasting",
    ],
}


def default_rules() -> dict[str, list[str]]:
    """Generic keyword aliases for the four default categories, as whole-word patterns."""
    return {
        category: [keyword_pattern(k) for k in keywords]
        for category, keywords in DEFAULT_KEYWORDS.items()
    }


# --- registry ---------------------------------------------------------------------------------

# Simplest first: when two candidates score the same in cross-validation, the earlier one wins.
ALGORITHMS: dict[str, type[_Classifier]] = {
    "majority": MajorityClass,
    "rules": KeywordRules,
    "decision_tree": DecisionTree,
    "tfidf_logreg": TfidfLogReg,
}
if embeddings.available():
    ALGORITHMS["embeddings_logreg"] = EmbeddingsLogReg
    ALGORITHMS["embeddings_tfidf_logreg"] = EmbeddingsTfidfLogReg


def make_estimator(
    algorithm: str, params: dict | None = None, rules: dict | None = None
) -> _Classifier:
    """An unfitted model; `rules` (category -> patterns) only concerns the rules algorithm."""
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"Unknown or unavailable algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}."
        )
    estimator = ALGORITHMS[algorithm](**(params or {}))
    if algorithm == "rules" and rules is not None:
        estimator.set_params(rules=rules)
    return estimator


def describe_params(estimator: BaseEstimator) -> dict[str, Any]:
    """The estimator's settings as JSON-ready values (the rules themselves live in the database)."""
    params = estimator.get_params(deep=False)
    params.pop("rules", None)
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in params.items()
    }


# --- model selection --------------------------------------------------------------------------


@dataclass
class Candidate:
    algorithm: str
    params: dict
    cv_weighted_f1: float | None = None
    cv_std: float | None = None
    seconds: float = 0.0
    error: str | None = None
    folds: int | None = None  # how many folds scored it: 1 when screened out (see `screen`)
    # Probabilities each fold's model gave its held-out texts (rows in input order, columns in
    # sorted label order): what the chosen model's temperature is fitted on.
    out_of_fold: np.ndarray | None = field(default=None, repr=False)

    def report(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name != "out_of_fold"}


@dataclass
class Selection:
    """What cross-validation chose: the winning candidate, whose out-of-fold probabilities (rows
    in the order of the texts it was chosen on) also serve the label-error check, and the
    JSON-ready report."""

    best: Candidate
    report: dict


def select(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    algorithms: Sequence[str] | None = None,
    cv: int = 5,
    seed: int = 0,
    rules: dict[str, list[str]] | None = None,
    fit_size: int | None = None,
) -> Selection:
    """Choose algorithm and settings by stratified K-fold CV (weighted F1), without the final fit.

    `fit_size`: how many texts the chosen model will be fitted on, when `texts` are a sample of
    them (it bounds which settings are affordable, see `affordable_grid`).

    The report has every candidate's CV score, the chosen algorithm and params, its probability
    temperature, and timings. Embeddings are computed once per text for the whole search,
    TF-IDF once per fold. On big training sets the candidates race on the first fold and only
    the best third is scored on every fold (`screen`).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    texts, labels = _checked(texts, labels)
    names = list(algorithms or ALGORITHMS)
    for name in names:
        make_estimator(name)  # fail on an unknown name before spending minutes on the others
    folds = cv_folds(labels, cv, seed)
    with embeddings.remember(), _reusing_tfidf():
        if any(ALGORITHMS[name].uses_embeddings for name in names):
            embeddings.encode(texts)  # once, up front; every fold and candidate reuses the vectors
        with _one_thread_per_fit():
            grid = affordable_grid(names, fit_size or len(texts))
            screened, grid = screen(grid, texts, labels, folds, rules)
            finalists = [score_candidate(name, params, texts, labels, folds, rules) for name, params in grid]
    best = pick_best(finalists)
    report = {
        "algorithm": best.algorithm,
        "params": describe_params(make_estimator(best.algorithm, best.params)),
        "cv_weighted_f1": best.cv_weighted_f1,
        # The K fold models saw a little less data than the final one; their held-out
        # probabilities are still the best available estimate of how over- or under-confident it is.
        "temperature": fit_temperature(best.out_of_fold, labels),
        "cv_folds": len(folds),
        "seed": seed,
        "n_train": len(texts),
        "candidates": [c.report() for c in _merged(screened, finalists)],
        "selection_seconds": round(time.perf_counter() - started, 3),
        # CPU time of all threads: the wall-clock figure on a busy machine says little.
        "cpu_seconds": round(time.process_time() - cpu_started, 3),
    }
    return Selection(best, report)


def fit_selected(
    selection: Selection, texts: Sequence[str], labels: Sequence[str], rules: dict[str, list[str]] | None = None
) -> tuple[_Classifier, dict]:
    """The chosen algorithm and settings fitted on `texts` (all the training data, of which the
    selection may have seen a sample), with the selection's temperature; and the full report."""
    started, cpu_started = time.perf_counter(), time.process_time()
    texts, labels = _checked(texts, labels)
    report = selection.report
    model = make_estimator(report["algorithm"], selection.best.params, rules).fit(texts, labels)
    model.temperature_ = report["temperature"]
    fit_seconds = time.perf_counter() - started
    return model, {
        **report,
        "n_train": len(texts),
        "fit_seconds": round(fit_seconds, 3),
        "train_seconds": round(report["selection_seconds"] + fit_seconds, 3),
        "cpu_seconds": round(report["cpu_seconds"] + time.process_time() - cpu_started, 3),
    }


def select_and_fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    algorithms: Sequence[str] | None = None,
    cv: int = 5,
    seed: int = 0,
    rules: dict[str, list[str]] | None = None,
) -> tuple[_Classifier, dict]:
    """`select` by cross-validation, then `fit_selected` on the same texts: the fitted model and
    the JSON-ready report."""
    with embeddings.remember():  # the final fit reuses the vectors the selection computed
        selection = select(texts, labels, algorithms=algorithms, cv=cv, seed=seed, rules=rules)
        return fit_selected(selection, texts, labels, rules)


# Character n-grams cost about 1.9 CPU-seconds per 1,000 texts to fit here (187 s for 100k
# 30-word texts, against 5.5 s for single words): on bigger training sets the chosen model's fit
# alone would outgrow the retraining budget. That much data has also shown the words most word
# forms, which is what character n-grams make up for on small sets.
MAX_TEXTS_FOR_CHAR_NGRAMS = 10_000


def affordable_grid(names: Sequence[str], fit_size: int) -> list[tuple[str, dict]]:
    """Every (algorithm, settings) pair to try, `cost_ordered`; for a model to be fitted on more
    than MAX_TEXTS_FOR_CHAR_NGRAMS texts, only settings without character n-grams."""
    grid = []
    for name in names:
        for params in ParameterGrid(ALGORITHMS[name].param_grid):
            if fit_size > MAX_TEXTS_FOR_CHAR_NGRAMS and getattr(make_estimator(name, params), "char_ngrams", None):
                if "char_ngrams" in params:
                    continue  # the grid's own character n-gram settings
                params = {**params, "char_ngrams": None}  # a model that has them by default
            grid.append((name, params))
    return cost_ordered(grid)


def cost_ordered(grid: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Algorithms in the order given (simplest first), each one's settings cheapest features first.

    Ties in cross-validation go to the earlier candidate (`pick_best`, `screen`), so on a tie the
    cheaper features win. ParameterGrid alone varies the last key fastest, which put word pairs
    before single words at a larger C, and a tie then chose (and screening kept) the costlier."""
    position: dict[str, int] = {}  # keys are computed in input order: first appearance wins
    return sorted(grid, key=lambda pair: (position.setdefault(pair[0], len(position)), make_estimator(*pair).feature_cost()))


@contextmanager
def _one_thread_per_fit():
    """Fit the small scikit-learn models single-threaded (BLAS and OpenMP).

    On a few thousand texts, threads buy nothing, and when the web server or another worker
    competes for the cores, spinning OpenMP/BLAS threads made a logistic regression fit 4-15x
    slower here. The sentence encoder (torch) keeps its threads: texts are encoded before this.
    """
    with (
        threadpool_limits(limits=1, user_api="blas"),
        threadpool_limits(limits=1, user_api="openmp"),
    ):
        yield


# Racing over folds, a form of successive halving (Jamieson & Talwalkar, 2016): on a training
# set this big, every candidate is first scored on the first fold alone (whose held-out part has
# hundreds of texts), and only the best third goes on to the other folds. Choosing among twelve
# TF-IDF settings on 5,000 texts otherwise cost over a minute of CPU, most of it character
# n-grams for all five folds. Small training sets, where one fold is too noisy to judge by, get
# every candidate on every fold.
SCREENING_MIN_TEXTS = 2000
SCREENING_KEEPS_ONE_IN = 3


def screen(grid, texts, labels, folds, rules=None) -> tuple[list[Candidate], list[tuple[str, dict]]]:
    """(the candidates scored on the first fold, the (algorithm, params) pairs that go on, in
    grid order). Ties keep the earlier, cheaper candidate, as in `pick_best`."""
    keep = math.ceil(len(grid) / SCREENING_KEEPS_ONE_IN)
    if len(texts) < SCREENING_MIN_TEXTS or keep >= len(grid) or len(folds) < 2:
        return [], grid
    screened = [score_candidate(name, params, texts, labels, folds[:1], rules) for name, params in grid]
    scored = [i for i, c in enumerate(screened) if c.cv_weighted_f1 is not None]
    if not scored:
        return [], grid  # the full cross-validation reports the errors
    best_first = sorted(scored, key=lambda i: -screened[i].cv_weighted_f1)  # stable: ties keep order
    return screened, [grid[i] for i in sorted(best_first[:keep])]


def _merged(screened: list[Candidate], finalists: list[Candidate]) -> list[Candidate]:
    """Every candidate once, in grid order: the finalists' scores, the others' first-fold one."""
    final = {(c.algorithm, repr(sorted(c.params.items()))): c for c in finalists}
    return [final.get((c.algorithm, repr(sorted(c.params.items()))), c) for c in screened] or finalists


def _checked(texts, labels) -> tuple[list[str], list[str]]:
    texts, labels = list(texts), [str(label) for label in labels]
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels.")
    if len(set(labels)) < 2:
        raise ValueError("Training needs labelled examples of at least two categories.")
    return texts, labels


def cv_folds(labels: Sequence[str], cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds; fewer than `cv` when the rarest category has fewer examples than that."""
    rarest = min(Counter(labels).values())
    splitter = StratifiedKFold(n_splits=max(2, min(cv, rarest)), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A category with a single example cannot be in every fold; the estimate is still fair.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(labels)), labels))


def score_candidate(algorithm, params, texts, labels, folds, rules=None) -> Candidate:
    """Mean weighted F1 of one algorithm + settings over the folds (fit on K-1, score on 1)."""
    candidate = Candidate(algorithm, dict(params), folds=len(folds))
    started = time.perf_counter()
    texts, labels = np.array(texts, dtype=object), np.array(labels, dtype=object)
    classes = sorted(set(labels))
    out_of_fold = np.zeros((len(labels), len(classes)))
    scores = []
    try:
        for train, test in folds:
            model = make_estimator(algorithm, params, rules).fit(
                list(texts[train]), list(labels[train])
            )
            proba = model.predict_proba(list(texts[test]))
            # A fold's model may lack a category its training part did not contain.
            out_of_fold[np.ix_(test, [classes.index(c) for c in model.classes_])] = proba
            predicted = [model.classes_[i] for i in proba.argmax(axis=1)]
            scores.append(
                f1_score(list(labels[test]), predicted, average="weighted", zero_division=0)
            )
    except ValueError as error:  # e.g. a fold whose training part has a single category
        log.info("Candidate %s %s failed: %s", algorithm, params, error)
        candidate.error = str(error)
    else:
        candidate.cv_weighted_f1 = round(float(np.mean(scores)), 4)
        candidate.cv_std = round(float(np.std(scores)), 4)
        candidate.out_of_fold = out_of_fold
    candidate.seconds = round(time.perf_counter() - started, 3)
    return candidate


def pick_best(candidates: Sequence[Candidate]) -> Candidate:
    """Highest mean CV weighted F1 (to 4 decimals); ties go to the earlier, simpler candidate."""
    scored = [c for c in candidates if c.cv_weighted_f1 is not None]
    if not scored:
        errors = "; ".join(f"{c.algorithm}: {c.error}" for c in candidates)
        raise ValueError(f"No algorithm could be trained on this data ({errors}).")
    return max(scored, key=lambda c: c.cv_weighted_f1)


# --- probability calibration ------------------------------------------------------------------

# Below this many held-out predictions a fitted temperature is mostly noise; keep T = 1.
MIN_ITEMS_FOR_TEMPERATURE = 50
TEMPERATURE_BOUNDS = (0.2, 5.0)


def fit_temperature(out_of_fold: np.ndarray, labels: Sequence[str]) -> float:
    """The temperature T minimising the log loss of softmax(log(p) / T) on held-out predictions.

    Temperature scaling (Guo et al., 2017) fixes over- or under-confidence with one number and
    never changes the predicted class, so it cannot cost accuracy; here it cut the expected
    calibration error of the logistic models by about four fifths in cross-validation, where
    CalibratedClassifierCV cost weighted F1 and five times the training time.
    """
    if len(labels) < MIN_ITEMS_FOR_TEMPERATURE:
        return 1.0
    classes = sorted(set(labels))
    truth = np.array([classes.index(label) for label in labels])

    def log_loss(log_temperature: float) -> float:
        scaled = with_temperature(out_of_fold, float(np.exp(log_temperature)))
        return float(-np.log(np.clip(scaled[np.arange(len(truth)), truth], 1e-12, 1.0)).mean())

    result = minimize_scalar(log_loss, bounds=np.log(TEMPERATURE_BOUNDS), method="bounded")
    return round(float(np.exp(result.x)), 4)


def with_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)
