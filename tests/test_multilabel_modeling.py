"""modeling.multilabel on plain lists: one-vs-rest models with independent probabilities,
per-category thresholds tuned on out-of-fold probabilities, and the multi-label figures (checked
against values worked out by hand)."""
import io

import joblib
import numpy as np
import pytest

from modeling import multilabel

from .multilabel_data import texts_and_sets

FAST = ["majority", "rules", "ovr_tfidf_logreg"]


# --- metrics ------------------------------------------------------------------------------------

# Worked by hand: item 1 exact; item 2 misses b; item 3 adds c; item 4 misses c (predicts nothing).
TRUE = [["a"], ["a", "b"], ["b"], ["c"]]
PREDICTED = [["a"], ["a"], ["b", "c"], []]


def test_it_computes_samples_micro_macro_f1_and_hamming_loss():
    metrics = multilabel.evaluate(TRUE, PREDICTED, None, ["a", "b", "c"], thresholds=[0.4, 0.5, 0.6])

    # Per item F1: 1, 2/3, 2/3, 0.
    assert metrics["samples_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)
    # tp 3, fp 1, fn 2 over all pairs.
    assert metrics["micro_f1"] == pytest.approx(6 / 9)
    # a: 1, b: P 1 R 1/2 -> 2/3, c: 0.
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics["hamming_loss"] == pytest.approx(3 / 12)
    assert metrics["accuracy"] == pytest.approx(1 / 4)  # exact sets
    assert metrics["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2, "threshold": 0.5}
    assert metrics["per_class"]["c"]["f1"] == 0.0 and metrics["per_class"]["c"]["threshold"] == 0.6
    assert metrics["label_cardinality"] == {"gold": 1.25, "predicted": 1.0}
    assert metrics["multilabel"] is True and metrics["n"] == 4


def test_it_counts_an_item_whose_gold_and_predicted_sets_are_both_empty_as_right():
    metrics = multilabel.evaluate([[], ["a"]], [[], ["a"]], None, ["a", "b"])
    assert metrics["samples_f1"] == 1.0 and metrics["hamming_loss"] == 0.0


def test_it_counts_categories_the_model_never_saw():
    metrics = multilabel.evaluate([["a"], ["new"]], [["a"], ["a"]], None, ["a"])
    assert metrics["per_class"]["new"]["support"] == 1 and metrics["per_class"]["new"]["recall"] == 0.0
    assert metrics["hamming_loss"] == pytest.approx(2 / 4)


def test_it_measures_the_calibration_of_per_category_probabilities():
    truth = [["a"], ["b"]]
    proba = np.array([[0.95, 0.05], [0.15, 0.85]])
    calibration = multilabel.evaluate(truth, truth, proba, ["a", "b"])["calibration"]
    by_bin = {row["lower"]: row for row in calibration["bins"] if row["count"]}
    assert by_bin[0.9]["count"] == 1 and by_bin[0.9]["accuracy"] == 1.0
    assert by_bin[0.0]["count"] == 1 and by_bin[0.0]["accuracy"] == 0.0
    # Gaps 0.05, 0.05, 0.15, 0.15 over four (item, category) pairs.
    assert calibration["ece"] == pytest.approx(0.1)


def test_it_refuses_an_empty_holdout_or_mismatched_lengths():
    with pytest.raises(ValueError, match="holdout is empty"):
        multilabel.evaluate([], [], None, ["a"])
    with pytest.raises(ValueError, match="2 true label sets but 1 predictions"):
        multilabel.evaluate([["a"], ["a"]], [["a"]], None, ["a"])


def test_it_promotes_on_samples_f1_within_the_margin():
    assert multilabel.compare({"samples_f1": 0.80}, {"samples_f1": 0.805}, margin=0.01)
    assert not multilabel.compare({"samples_f1": 0.78}, {"samples_f1": 0.80}, margin=0.01)
    assert multilabel.compare({"samples_f1": 0.1}, None, margin=0.01)
    with pytest.raises(ValueError):
        multilabel.compare({"samples_f1": 0.1}, None, margin=-1)


# --- thresholds ---------------------------------------------------------------------------------


def test_it_tunes_each_threshold_to_the_middle_of_its_best_f1_range():
    truth = np.array([[1, 1], [1, 0], [1, 0], [0, 0], [0, 0], [0, 1]])
    proba = np.array([[0.9, 0.9], [0.8, 0.1], [0.35, 0.2], [0.3, 0.3], [0.1, 0.4], [0.2, 0.2]])
    thresholds = multilabel.tune_thresholds(truth, proba)
    # Column 0: F1 is 1 for every threshold in (0.30, 0.35] -> 0.31..0.35 on the grid, middle 0.33.
    assert thresholds[0] == 0.33
    # Column 1 has two positives: too few to tune, so the default.
    assert thresholds[1] == multilabel.DEFAULT_THRESHOLD


def test_it_predicts_at_least_the_top_category_unless_training_had_empty_sets():
    proba = np.array([[0.2, 0.3], [0.9, 0.6]])
    assert multilabel.decide(proba, [0.5, 0.5], allow_empty=False).tolist() == [[0, 1], [1, 1]]
    assert multilabel.decide(proba, [0.5, 0.5], allow_empty=True).tolist() == [[0, 0], [1, 1]]


def test_the_queue_margin_measures_doubt_about_each_category_decision():
    proba = np.array([[0.95, 0.93, 0.02], [0.55, 0.05, 0.0], [0.5, 0.5, 0.5]])
    margins = multilabel.margins(proba, [0.5, 0.5, 0.5])
    # Two sure categories are not a doubt (the softmax margin would give 0.02); 0.55 is.
    assert margins.tolist() == pytest.approx([0.86, 0.1, 0.0])
    # Scaled by the room on each side of the threshold: 0.6 with threshold 0.2 is halfway up.
    assert multilabel.margins(np.array([[0.6]]), [0.2]).tolist() == pytest.approx([0.5])


# --- models -------------------------------------------------------------------------------------


def test_one_vs_rest_gives_independent_probabilities_and_label_sets():
    texts, sets = texts_and_sets(160)
    model = multilabel.OneVsRestTfidf().fit(texts[:120], sets[:120])

    proba = model.predict_proba(texts[120:])
    assert proba.shape == (40, 4) and model.classes_ == sorted({c for s in sets for c in s})
    assert ((proba >= 0) & (proba <= 1)).all()
    # Independent per category: two-category items have two high probabilities, so rows exceed 1.
    assert proba.sum(axis=1).max() > 1.3
    predicted = model.predict(texts[120:])
    assert multilabel.evaluate(sets[120:], predicted, proba, model.classes_)["samples_f1"] > 0.9


def test_one_vs_rest_handles_a_category_every_item_has():
    texts = ["red apple", "green apple", "red car", "blue car"]
    sets = [["fruit", "thing"], ["fruit", "thing"], ["thing", "vehicle"], ["thing", "vehicle"]]
    model = multilabel.OneVsRestTfidf().fit(texts, sets)
    proba = model.predict_proba(["yellow apple"])
    assert proba[0, model.classes_.index("thing")] == 1.0
    assert model.predict(["yellow apple"]) == [["fruit", "thing"]]


def test_the_baselines_predict_frequent_categories_and_rule_matches():
    texts, sets = ["image of a cat", "text about words", "images again"], [["cv"], ["nlp"], ["cv"]]
    prior = multilabel.CategoryPrior().fit(texts, sets)
    assert prior.predict(["anything"]) == [["cv"]]
    rules = multilabel.CategoryRules(rules={"nlp": [r"\bwords?\b"], "cv": [r"\bimages?\b"]}).fit(texts, sets)
    assert rules.predict(["words and images"]) == [["cv", "nlp"]]
    assert rules.predict(["nothing matches"]) == [["cv"]]  # the prior, at least the top one


def test_it_selects_by_cross_validation_and_keeps_the_tuned_thresholds():
    texts, sets = texts_and_sets(120)
    model, report = multilabel.select_and_fit(texts, sets, algorithms=FAST, cv=3)

    assert report["algorithm"] == "ovr_tfidf_logreg" and report["multilabel"]
    assert {c["algorithm"] for c in report["candidates"]} == set(FAST)
    assert report["cv_samples_f1"] > max(
        c["cv_samples_f1"] for c in report["candidates"] if c["algorithm"] != "ovr_tfidf_logreg"
    )
    assert report["cv_folds"] == 3 and report["params"]["C"] in (1.0, 10.0, 100.0)
    assert report["thresholds"] == dict(zip(model.classes_, model.thresholds_, strict=True))
    assert all(0.05 <= t <= 0.95 for t in model.thresholds_)
    best = next(c for c in report["candidates"] if c["algorithm"] == report["algorithm"] and c["params"].items() <= report["params"].items())
    assert best["thresholds"] == model.thresholds_


def test_it_selects_on_a_stratified_sample_of_big_training_sets():
    texts, sets = texts_and_sets(160)
    model, report = multilabel.select_and_fit(texts, sets, algorithms=["ovr_tfidf_logreg"], cv=3, sample=80)
    assert 70 <= report["selection_sample"] <= 90 and report["n_train"] == 160
    assert model.classes_ == sorted({c for s in sets for c in s})


def test_it_refuses_data_with_fewer_than_two_categories_or_unknown_algorithms():
    with pytest.raises(ValueError, match="at least two categories"):
        multilabel.select_and_fit(["a", "b", "c"], [["x"], ["x"], ["x"]])
    with pytest.raises(ValueError, match="2 texts but 1 label sets"):
        multilabel.select_and_fit(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="Unknown or unavailable multi-label algorithm"):
        multilabel.select_and_fit(["a", "b"], [["x"], ["y"]], algorithms=["no_such"])


def test_single_label_algorithm_names_map_to_their_multi_label_counterparts():
    assert multilabel.algorithms_for(["majority", "rules", "tfidf_logreg", "decision_tree"]) == FAST
    assert multilabel.algorithms_for(["decision_tree"]) == ["ovr_tfidf_logreg"]


def test_a_fitted_model_survives_joblib_with_its_thresholds():
    texts, sets = texts_and_sets(80)
    model, _ = multilabel.select_and_fit(texts, sets, algorithms=["ovr_tfidf_logreg"], cv=3)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    assert loaded.thresholds_ == model.thresholds_
    np.testing.assert_allclose(loaded.predict_proba(texts[:5]), model.predict_proba(texts[:5]))


@pytest.mark.embeddings
def test_one_vs_rest_on_embeddings_and_tfidf_learns_label_sets():
    from modeling import embeddings

    from .conftest import require

    require(embeddings.available(), "the [embeddings] extra")
    texts, sets = texts_and_sets(100)
    model, report = multilabel.select_and_fit(
        texts[:80], sets[:80], algorithms=multilabel.algorithms_for(["embeddings_tfidf_logreg"]), cv=3
    )
    assert report["algorithm"] == "ovr_embeddings_tfidf_logreg" and model.uses_embeddings
    proba = model.predict_proba(texts[80:])
    assert multilabel.evaluate(sets[80:], model.decide(proba), proba, model.classes_)["samples_f1"] > 0.85


def test_its_headline_figures_have_95_percent_intervals_like_redrawing_the_items():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    categories = ["a", "b", "c", "d"]
    gold = [[c for c in categories if rng.random() < 0.35] for _ in range(250)]
    chosen = [[c for c in categories if (c in labels) ^ (rng.random() < 0.12)] for labels in gold]
    metrics = multilabel.evaluate(gold, chosen, None, categories, None)
    for name in ("samples_f1", "weighted_f1", "macro_f1", "accuracy"):
        low, high = metrics["intervals"][name]
        assert low < metrics[name] < high, name

    truth, predicted = multilabel.binarize(gold, categories), multilabel.binarize(chosen, categories)
    redrawn = []
    for _ in range(2000):
        pick = rng.integers(0, 250, 250)
        redrawn.append(f1_score(truth[pick], predicted[pick], average="samples", zero_division=1.0))
    assert metrics["intervals"]["samples_f1"] == pytest.approx(np.percentile(redrawn, [2.5, 97.5]), abs=0.012)


def test_a_holdout_without_a_mistake_still_gets_intervals_that_say_how_few_items_it_had():
    perfect = [["a"], ["b"], ["c"], ["d"]] * 6  # 24 items, every set right
    intervals = multilabel.evaluate(perfect, perfect, None, ["a", "b", "c", "d"], None)["intervals"]
    # As for 23 of 23 single-label items (Clopper-Pearson's exact interval starts at 0.852).
    assert 0.82 < intervals["accuracy"][0] < 0.9
    assert all(0.9 < low < 0.97 and high > 0.99 for low, high in (intervals["samples_f1"], intervals["macro_f1"]))
