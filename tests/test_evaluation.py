"""Offline metrics, checked against numbers worked out by hand on a six-item holdout."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from modeling import evaluation
from modeling.evaluation import calibration, compare, evaluate

CLASSES = ["a", "b", "c"]
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]
# Top-label confidences 0.95 0.85 0.55 0.92 0.62 0.65; right, right, wrong, right, wrong, right.
PROBA = [
    [0.95, 0.03, 0.02],
    [0.85, 0.10, 0.05],
    [0.40, 0.55, 0.05],
    [0.04, 0.92, 0.04],
    [0.08, 0.30, 0.62],
    [0.05, 0.30, 0.65],
]
TEXTS = [
    "Short title",  # 2 words
    "A much longer description of a project with plenty of words",
    "Tiny text here",  # 3 words
    "Training on a GPU cluster with many nodes and more words",
    "Two words",  # 2 words
    "GPU kernels for fast inference of large models in production",
]


@pytest.fixture
def metrics():
    return evaluate(
        Y_TRUE, Y_PRED, PROBA, CLASSES, texts=TEXTS, slices={"gpu": ["gpu"], "none": ["zebra"]}
    )


def test_it_computes_accuracy_and_averaged_f1(metrics):
    assert metrics["n"] == 6
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # Per class F1: a = 2·1·(2/3)/(1+2/3) = 0.8; b = 0.5; c = 2·0.5·1/1.5 = 2/3.
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)


def test_it_reports_each_class(metrics):
    assert metrics["per_class"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert metrics["per_class"]["b"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert metrics["per_class"]["c"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )


def test_it_gives_the_confusion_matrix_with_its_label_order(metrics):
    assert metrics["confusion_matrix"] == {
        "labels": ["a", "b", "c"],
        "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]],
    }


def test_it_computes_the_expected_calibration_error(metrics):
    # Bins: 0.5-0.6 {0.55 wrong}: gap 0.55; 0.6-0.7 {0.62 wrong, 0.65 right}: |0.5 - 0.635| = 0.135;
    # 0.8-0.9 {0.85 right}: 0.15; 0.9-1.0 {0.95, 0.92 right}: |1 - 0.935| = 0.065.
    expected = (1 * 0.55 + 2 * 0.135 + 1 * 0.15 + 2 * 0.065) / 6
    assert metrics["calibration"]["ece"] == pytest.approx(expected)
    assert expected == pytest.approx(1.1 / 6)


def test_it_gives_a_reliability_table_of_ten_bins(metrics):
    bins = metrics["calibration"]["bins"]

    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 2, 0, 1, 2]
    assert bins[6] == pytest.approx(
        {"lower": 0.6, "upper": 0.7, "count": 2, "mean_confidence": 0.635, "accuracy": 0.5}
    )
    assert bins[0]["mean_confidence"] is None and bins[0]["accuracy"] is None


def test_a_certain_prediction_falls_in_the_last_bin():
    result = calibration(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], ["a", "b"])

    assert result["bins"][9]["count"] == 2
    assert result["ece"] == 0.0


def test_it_measures_the_short_text_and_keyword_slices(metrics):
    slices = metrics["slices"]

    # Short texts are items 0, 2, 4: true a a b, predicted a b c. F1: a 2/3 (support 2), b 0.
    assert slices["short_text"] == pytest.approx(
        {"n": 3, "accuracy": 1 / 3, "weighted_f1": (2 * 2 / 3) / 3}
    )
    assert slices["gpu"] == {"n": 2, "accuracy": 1.0, "weighted_f1": 1.0}
    assert slices["none"] == {"n": 0, "accuracy": None, "weighted_f1": None}


def test_it_returns_plain_json_types(metrics):
    assert json.loads(json.dumps(metrics)) == metrics


def test_it_counts_labels_the_model_never_saw():
    metrics = evaluate(["a", "z"], ["a", "a"], [[0.9, 0.1], [0.8, 0.2]], ["a", "b"])

    assert metrics["confusion_matrix"]["labels"] == ["a", "b", "z"]
    assert metrics["per_class"]["z"]["support"] == 1
    assert metrics["accuracy"] == 0.5


def test_it_works_without_texts_or_probabilities():
    metrics = evaluate(["a", "b"], ["a", "b"], None, ["a", "b"])

    assert metrics["calibration"] is None and metrics["slices"] == {}
    assert metrics["weighted_f1"] == 1.0


def test_it_refuses_an_empty_holdout_and_mismatched_lengths():
    with pytest.raises(ValueError, match="empty"):
        evaluate([], [], None, ["a"])
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        evaluate(["a", "b"], ["a"], None, ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        evaluate(["a"], ["a"], [[0.5, 0.5]], ["a", "b", "c"])


def test_it_refuses_a_keyword_slice_named_like_the_built_in_one():
    with pytest.raises(ValueError, match="built-in"):
        evaluate(["a"], ["a"], None, ["a", "b"], texts=["x"], slices={"short_text": ["x"]})


@pytest.mark.parametrize(
    ("new", "old", "margin", "passes"),
    [
        (0.80, 0.82, 0.02, True),  # worse, but within the margin
        (0.80, 0.82, 0.01, False),
        (0.85, 0.82, 0.0, True),
        (0.82, 0.82, 0.0, True),
    ],
)
def test_compare_accepts_a_model_not_worse_by_more_than_the_margin(new, old, margin, passes):
    assert compare({"weighted_f1": new}, {"weighted_f1": old}, margin) is passes


def test_compare_passes_when_there_is_nothing_to_compare_with():
    assert compare({"weighted_f1": 0.1}, None, 0.0)
    assert compare({"weighted_f1": 0.1}, {}, 0.0)


def test_compare_refuses_a_negative_margin():
    with pytest.raises(ValueError):
        compare({"weighted_f1": 0.9}, {"weighted_f1": 0.8}, -0.1)


# --- 95 % intervals ------------------------------------------------------------------------------


def noisy_holdout(n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """n items of four classes, about 85 % predicted right, the rest spread over five labels."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n)
    predicted = np.where(rng.random(n) < 0.85, truth, rng.integers(0, 5, n))
    return [f"c{t}" for t in truth], [f"c{p}" for p in predicted]


def test_the_figures_of_a_confusion_matrix_are_the_holdout_figures(metrics):
    matrix = np.array(metrics["confusion_matrix"]["matrix"])[None]
    figures = evaluation.confusion_figures(matrix)
    for name in ("accuracy", "weighted_f1", "macro_f1"):
        assert figures[name][0] == pytest.approx(metrics[name])


def test_each_headline_figure_has_a_95_percent_interval_around_it():
    truth, predicted = noisy_holdout(300)
    metrics = evaluate(truth, predicted, None, ["c0", "c1", "c2", "c3"])
    for name in ("accuracy", "weighted_f1", "macro_f1"):
        low, high = metrics["intervals"][name]
        assert low < metrics[name] < high, name
    assert evaluate(truth, predicted, None, ["c0"])["intervals"] == metrics["intervals"]  # the same on every view
    # Ten times the items, the same proportions: about a third as wide (1/sqrt(10)).
    many = evaluate(truth * 10, predicted * 10, None, ["c0"])
    width = np.diff(metrics["intervals"]["weighted_f1"])[0]
    assert np.diff(many["intervals"]["weighted_f1"])[0] == pytest.approx(width / np.sqrt(10), rel=0.25)


def test_the_intervals_are_those_of_redrawing_the_items_themselves():
    truth, predicted = noisy_holdout(200, seed=3)
    metrics = evaluate(truth, predicted, None, ["c0", "c1", "c2", "c3"])
    rng, t, p = np.random.default_rng(7), np.array(truth), np.array(predicted)
    redrawn = []
    for _ in range(2000):
        pick = rng.integers(0, len(t), len(t))
        redrawn.append(f1_score(t[pick], p[pick], labels=np.union1d(t[pick], p[pick]), average="weighted", zero_division=0))
    # Two Monte Carlo estimates of the same percentiles: they agree to within a point or so.
    assert metrics["intervals"]["weighted_f1"] == pytest.approx(np.percentile(redrawn, [2.5, 97.5]), abs=0.012)


def test_a_holdout_without_a_mistake_still_gets_an_interval_that_says_how_few_items_it_had():
    perfect = [f"c{i % 4}" for i in range(12)]
    low, high = evaluate(perfect, perfect, None, ["c0", "c1", "c2", "c3"])["intervals"]["accuracy"]
    # Clopper-Pearson's exact 95 % interval for 12 of 12 right starts at 0.735.
    assert 0.7 < low < 0.8 and high > 0.99
    assert evaluate(perfect * 100, perfect * 100, None, ["c0"])["intervals"]["accuracy"][0] > 0.995


def test_a_paired_difference_is_sure_where_each_models_own_interval_is_not():
    truth, better = noisy_holdout(300, seed=4)
    # The same predictions with 15 of the right ones made wrong: 5 points worse on every draw.
    worse = list(better)
    for i in [i for i, (t, p) in enumerate(zip(truth, better, strict=True)) if t == p][:15]:
        worse[i] = "c9"
    new, old = evaluate(truth, better, None, ["c0"]), evaluate(truth, worse, None, ["c0"])
    assert new["intervals"]["accuracy"][0] < old["intervals"]["accuracy"][1]  # their own intervals overlap
    low, high = evaluation.difference_intervals(truth, better, worse)["accuracy"]
    assert 0 < low < 0.05 < high  # yet the difference is sure: 15 of 300 items
    assert evaluation.difference_intervals(truth, better, better)["weighted_f1"] == [0.0, 0.0]
