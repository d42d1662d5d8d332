"""The pure-ML core: every algorithm honours one interface; selection is by cross-validation."""

import io
import json
import pickle
import random

import joblib
import numpy as np
import pytest

from modeling import embeddings, training
from modeling.training import InvalidRule, KeywordRules, keyword_pattern

BASE_ALGORITHMS = ["majority", "rules", "decision_tree", "tfidf_logreg"]
EMBEDDING_ALGORITHMS = ["embeddings_logreg", "embeddings_tfidf_logreg"]
needs_embeddings = [
    pytest.mark.embeddings,
    pytest.mark.skipif(
        not embeddings.available(), reason="the [embeddings] extra is not installed"
    ),
]

TOPICS = {
    "cooking": ["recipe", "oven", "flour", "bake", "sauce", "garlic", "simmer", "dough", "butter"],
    "finance": [
        "stock",
        "bond",
        "market",
        "interest",
        "dividend",
        "portfolio",
        "inflation",
        "bank",
    ],
    "sports": ["goal", "match", "league", "coach", "stadium", "referee", "season", "striker"],
}
FILLER = ["the", "a", "new", "guide", "about", "for", "with", "today", "our", "simple", "notes"]


def synthetic_dataset(per_category: int = 20, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short texts whose category shows in three topic words among filler words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(per_category):
        for category, words in TOPICS.items():
            tokens = rng.sample(words, 3) + rng.sample(FILLER, 4)
            rng.shuffle(tokens)
            texts.append(" ".join(tokens))
            labels.append(category)
    return texts, labels


_VECTORS_FOR_THIS_MODULE: dict = {}


@pytest.fixture(autouse=True)
def _encode_each_text_once(request, monkeypatch):
    """Embedding tests share one memo: the same synthetic texts are encoded once, not per test."""
    if request.node.get_closest_marker("embeddings"):
        monkeypatch.setattr(embeddings, "_memo", _VECTORS_FOR_THIS_MODULE)


def all_algorithms():
    return BASE_ALGORITHMS + [
        pytest.param(name, marks=needs_embeddings) for name in EMBEDDING_ALGORITHMS
    ]


# --- one interface ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", all_algorithms())
def test_it_honours_the_classifier_interface(algorithm):
    texts, labels = synthetic_dataset()
    model = training.make_estimator(algorithm)

    assert model.fit(texts, labels) is model
    assert model.classes_ == ["cooking", "finance", "sports"]
    proba = model.predict_proba(texts[:7])
    assert proba.shape == (7, 3)
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba >= 0).all()
    predicted = model.predict(texts[:7])
    assert isinstance(predicted, list) and set(predicted) <= set(model.classes_)
    assert predicted == [model.classes_[i] for i in proba.argmax(axis=1)]


@pytest.mark.parametrize("algorithm", all_algorithms())
def test_it_survives_a_joblib_round_trip(algorithm):
    texts, labels = synthetic_dataset()
    model = training.make_estimator(algorithm).fit(texts, labels)
    stored = io.BytesIO()
    joblib.dump(model, stored)
    stored.seek(0)

    assert np.allclose(joblib.load(stored).predict_proba(texts[:5]), model.predict_proba(texts[:5]))


@pytest.mark.parametrize(
    "algorithm",
    ["decision_tree", "tfidf_logreg"]
    + [pytest.param(n, marks=needs_embeddings) for n in EMBEDDING_ALGORITHMS],
)
def test_it_learns_a_separable_task(algorithm):
    train_texts, train_labels = synthetic_dataset(seed=1)
    test_texts, test_labels = synthetic_dataset(per_category=10, seed=2)
    model = training.make_estimator(algorithm).fit(train_texts, train_labels)

    accuracy = np.mean([p == t for p, t in zip(model.predict(test_texts), test_labels)])
    assert accuracy >= 0.9


def test_majority_predicts_the_most_frequent_label_with_its_frequency():
    model = training.MajorityClass().fit(["x"] * 4, ["b", "a", "b", "b"])

    assert model.predict(["anything", "else"]) == ["b", "b"]
    assert model.predict_proba(["anything"]).tolist() == [[0.25, 0.75]]


def test_the_embedding_algorithms_are_registered_only_when_available():
    registered = set(EMBEDDING_ALGORITHMS) <= set(training.ALGORITHMS)
    assert registered == embeddings.available()


def test_item_text_joins_title_and_description():
    assert training.item_text("A title", "the description") == "A title the description"
    assert training.item_text("Only a title", None) == "Only a title"


# --- keyword rules -----------------------------------------------------------------------------

PETS_AND_CARS = {
    "pets": [keyword_pattern("cat"), keyword_pattern("dog")],
    "cars": [keyword_pattern("car")],
}


def test_rules_score_categories_by_matched_keywords():
    model = KeywordRules(PETS_AND_CARS).fit(["x"] * 3, ["pets", "cars", "cars"])

    assert model.predict(["a cat, a dog and a car", "my car", "a DOG"]) == ["pets", "cars", "pets"]
    cat_and_dog = model.predict_proba(["a cat and a dog"])[0]
    assert cat_and_dog[model.classes_.index("pets")] > 0.5


def test_rules_fall_back_to_the_majority_class_when_nothing_matches():
    model = KeywordRules(PETS_AND_CARS).fit(["x"] * 3, ["pets", "cars", "cars"])

    assert model.predict(["nothing relevant here"]) == ["cars"]
    assert model.predict_proba(["nothing relevant"])[0].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_rules_break_ties_toward_the_more_frequent_category():
    model = KeywordRules(PETS_AND_CARS).fit(["x"] * 3, ["pets", "pets", "cars"])

    assert model.predict(["a cat in a car"]) == ["pets"]


def test_rules_ignore_categories_the_training_labels_do_not_know():
    model = KeywordRules({**PETS_AND_CARS, "boats": [keyword_pattern("boat")]}).fit(
        ["x"] * 2, ["pets", "cars"]
    )

    assert model.classes_ == ["cars", "pets"]
    assert model.predict(["a boat"]) in (["cars"], ["pets"])


def test_keyword_patterns_match_whole_words_only_and_literally():
    assert training.compile_pattern(keyword_pattern("text")).search("plain Text here")
    assert not training.compile_pattern(keyword_pattern("text")).search("in context")
    assert training.compile_pattern(keyword_pattern("c++")).search("written in C++.")
    assert not training.compile_pattern(keyword_pattern("a.b")).search("axb")


def test_rules_refuse_overlong_patterns():
    training.compile_pattern("a" * training.MAX_PATTERN_CHARS)
    with pytest.raises(InvalidRule, match="limit is 500"):
        training.compile_pattern("a" * (training.MAX_PATTERN_CHARS + 1))
    with pytest.raises(InvalidRule):
        KeywordRules({"pets": ["x" * 501]}).fit(["x", "y"], ["pets", "cars"])


def test_rules_refuse_invalid_regular_expressions():
    with pytest.raises(InvalidRule, match="not a valid regular expression"):
        training.compile_pattern("(unclosed")


def test_rules_only_read_the_first_20k_characters_of_a_text():
    model = KeywordRules(PETS_AND_CARS).fit(["x"] * 3, ["pets", "cars", "cars"])
    padding = "z " * (training.MAX_TEXT_CHARS // 2)

    assert model.predict(["cat " + padding]) == ["pets"]
    assert model.predict([padding + " cat"]) == ["cars"]  # beyond the bound: the majority class


def test_default_rules_cover_the_default_categories_and_compile():
    rules = training.default_rules()

    assert set(rules) == {"natural-language-processing", "computer-vision", "mlops", "other"}
    model = KeywordRules().fit(["x"] * 4, list(rules))
    assert model.predict(["A BERT transformer for sentiment of text"]) == [
        "natural-language-processing"
    ]
    assert model.predict(["Object detection and segmentation in images"]) == ["computer-vision"]
    assert model.predict(["Deploy and monitor models in production"]) == ["mlops"]


# --- selection by cross-validation ---------------------------------------------------------------


def test_it_selects_the_algorithm_with_the_best_cross_validated_score():
    texts, labels = synthetic_dataset()
    model, report = training.select_and_fit(
        texts, labels, algorithms=["majority", "tfidf_logreg"], cv=3
    )

    best = max(report["candidates"], key=lambda c: c["cv_weighted_f1"])
    assert report["algorithm"] == best["algorithm"] == "tfidf_logreg"
    assert isinstance(model, training.TfidfLogReg)
    assert report["cv_weighted_f1"] == best["cv_weighted_f1"]
    assert report["params"]["C"] == best["params"]["C"]


def test_it_tries_every_setting_in_each_grid():
    texts, labels = synthetic_dataset()
    _, report = training.select_and_fit(
        texts, labels, algorithms=["majority", "tfidf_logreg"], cv=3
    )

    tried = [c["params"] for c in report["candidates"] if c["algorithm"] == "tfidf_logreg"]
    assert len(tried) == len(list(training.ParameterGrid(training.TfidfLogReg.param_grid)))
    assert report["cv_folds"] == 3 and report["n_train"] == 60


def test_its_report_is_json_ready_and_timed():
    texts, labels = synthetic_dataset()
    _, report = training.select_and_fit(
        texts, labels, algorithms=["majority", "rules", "decision_tree"]
    )

    assert json.loads(json.dumps(report)) == report
    assert report["train_seconds"] >= report["fit_seconds"] >= 0


def test_it_is_deterministic_for_a_seed():
    texts, labels = synthetic_dataset()
    first = training.select_and_fit(texts, labels, algorithms=["decision_tree"], seed=3)[1]
    second = training.select_and_fit(texts, labels, algorithms=["decision_tree"], seed=3)[1]

    assert [c["cv_weighted_f1"] for c in first["candidates"]] == [
        c["cv_weighted_f1"] for c in second["candidates"]
    ]


def test_it_passes_project_rules_to_the_rules_algorithm():
    texts = ["a cat", "a dog", "my car", "the car", "cat food", "car wash"]
    labels = ["pets", "pets", "cars", "cars", "pets", "cars"]
    model, report = training.select_and_fit(
        texts, labels, algorithms=["rules"], rules=PETS_AND_CARS, cv=2
    )

    assert report["cv_weighted_f1"] == 1.0
    assert model.predict(["a dog"]) == ["pets"]
    assert "rules" not in report["params"]


def test_it_copes_with_a_category_that_has_a_single_example():
    texts, labels = synthetic_dataset(per_category=6)
    model, report = training.select_and_fit(
        texts + ["a lonely boat"], labels + ["boats"], algorithms=["tfidf_logreg"]
    )

    assert report["cv_folds"] == 2
    assert "boats" in model.classes_


def test_it_refuses_data_with_a_single_category():
    with pytest.raises(ValueError, match="at least two categories"):
        training.select_and_fit(["a", "b", "c"], ["x", "x", "x"])


def test_it_refuses_an_unknown_algorithm():
    texts, labels = synthetic_dataset(per_category=3)
    with pytest.raises(ValueError, match="Unknown or unavailable algorithm 'svm'"):
        training.select_and_fit(texts, labels, algorithms=["svm"])


def test_ties_go_to_the_earlier_simpler_candidate():
    candidates = [
        training.Candidate("majority", {}, 0.9),
        training.Candidate("tfidf_logreg", {}, 0.9),
    ]

    assert training.pick_best(candidates).algorithm == "majority"


# --- probability temperature ---------------------------------------------------------------------


def test_temperature_never_changes_the_predicted_class():
    proba = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]])
    for temperature in (0.3, 1.0, 4.0):
        scaled = training.with_temperature(proba, temperature)
        assert np.allclose(scaled.sum(axis=1), 1.0)
        assert (scaled.argmax(axis=1) == proba.argmax(axis=1)).all()


def test_an_overconfident_model_gets_a_temperature_above_one():
    labels, proba = ["a", "b"] * 50, []
    for i, label in enumerate(labels):
        right = i % 5 < 3  # always 95% sure, right 60% of the time
        proba.append([0.95, 0.05] if (label == "a") == right else [0.05, 0.95])

    assert training.fit_temperature(np.array(proba), labels) > 1.5


def test_too_few_held_out_predictions_keep_the_temperature_at_one():
    assert training.fit_temperature(np.array([[0.9, 0.1]] * 10), ["a"] * 5 + ["b"] * 5) == 1.0


# --- embeddings --------------------------------------------------------------------------------


def test_remember_encodes_each_distinct_text_once(monkeypatch):
    encoded = []

    def fake_encode(texts):
        encoded.extend(texts)
        return np.ones((len(texts), embeddings.DIMENSIONS), dtype=np.float32)

    monkeypatch.setattr(embeddings, "_encode_batches", fake_encode)
    with embeddings.remember():
        embeddings.encode(["a", "b", "a"])
        with embeddings.remember():  # nested blocks share the memo
            embeddings.encode(["b", "c"])
    embeddings.encode(["a"])  # outside: no memo

    assert encoded == ["a", "b", "c", "a"]
    assert embeddings._memo is None


def test_remember_reuses_vectors_stored_earlier(monkeypatch):
    encoded = []
    monkeypatch.setattr(
        embeddings,
        "_encode_batches",
        lambda texts: encoded.extend(texts) or np.zeros((len(texts), embeddings.DIMENSIONS)),
    )
    stored = np.full(embeddings.DIMENSIONS, 0.5, dtype=np.float32)
    with embeddings.remember(known={"old item": stored}):
        vectors = embeddings.encode(["old item", "new item"])

    assert encoded == ["new item"]
    assert (vectors[0] == stored).all()


def test_embeddings_report_unavailable_without_the_model_package(monkeypatch):
    real_find_spec = embeddings.importlib.util.find_spec
    monkeypatch.setattr(
        embeddings.importlib.util,
        "find_spec",
        lambda name: None if name == embeddings.MODEL_PACKAGE else real_find_spec(name),
    )
    assert embeddings.available() is False


@pytest.mark.embeddings
@pytest.mark.skipif(not embeddings.available(), reason="the [embeddings] extra is not installed")
def test_embedding_artifacts_hold_no_encoder():
    texts, labels = synthetic_dataset()
    model = training.make_estimator("embeddings_logreg").fit(texts, labels)
    stored = pickle.dumps(model)

    assert len(stored) < 100_000
    assert b"sentence_transformers" not in stored and b"torch" not in stored


@pytest.mark.embeddings
@pytest.mark.skipif(not embeddings.available(), reason="the [embeddings] extra is not installed")
def test_embeddings_are_unit_vectors_and_similar_for_similar_texts():
    vectors = embeddings.encode(
        ["a photo of a cat", "a picture of a kitten", "quarterly bond yields"]
    )

    assert vectors.shape == (3, embeddings.DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
