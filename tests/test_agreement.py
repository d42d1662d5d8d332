"""labeling.agreement on small fixed tables: every figure against a hand computation (written out
beside it) and against the reference libraries; degenerate inputs; the bootstrap's resampled
figures against the libraries on the explicitly resampled data."""
import json

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from labeling import agreement
from labeling.agreement import agreement_report


def rows_from(columns: dict[str, list]) -> list[tuple]:
    """{annotator: [label per item, None where missing]} -> (item, annotator, label) rows."""
    return [
        (item, annotator, label)
        for annotator, labels in columns.items()
        for item, label in enumerate(labels)
        if label is not None
    ]


# Two raters, ten items, labels y / n:
#   item:  1 2 3 4 5 6 7 8 9 10
#   A:     y y y y y y n n n n      A says y 6 times, n 4 times
#   B:     y y y y n n y n n n      B says y 5 times, n 5 times
# They agree on items 1-4 and 8-10: observed agreement po = 7/10 = 0.7.
# Cohen: expected pe = P(A=y)P(B=y) + P(A=n)P(B=n) = 0.6*0.5 + 0.4*0.5 = 0.5,
#        kappa = (po - pe) / (1 - pe) = (0.7 - 0.5) / 0.5 = 0.4.
# Fleiss (m = 2 raters on every item): p_y = 11/20 = 0.55, p_n = 9/20 = 0.45,
#        Pe = 0.55^2 + 0.45^2 = 0.505; P_i = 1 on agreeing items, 0 otherwise, Pbar = 0.7;
#        kappa = (0.7 - 0.505) / (1 - 0.505) = 0.195 / 0.495 = 13/33.
# Krippendorff (nominal): n = 20 pairable values, n_y = 11, n_n = 9; each agreeing item puts
#        2*1/(2-1) = 2 on the coincidence diagonal, so sum o_cc = 14 and
#        alpha = 1 - (n-1)(n - sum o_cc) / (n^2 - sum n_c^2) = 1 - 19*6 / (400 - 121 - 81)
#              = 1 - 114/198 = 14/33.
TWO_RATERS = {
    "A": list("yyyyyynnnn"),
    "B": list("yyyynnynnn"),
}


def test_it_matches_the_hand_computed_two_rater_table():
    report = agreement_report(rows_from(TWO_RATERS))
    (pair,) = report.pairs
    assert (pair.first, pair.second, pair.shared_items) == ("A", "B", 10)
    assert pair.percent == pytest.approx(0.7)
    assert pair.kappa.value == pytest.approx(0.4)
    assert pair.kappa.value == pytest.approx(cohen_kappa_score(TWO_RATERS["A"], TWO_RATERS["B"]))
    assert report.percent_agreement.value == pytest.approx(0.7)
    assert report.fleiss_kappa.value == pytest.approx(13 / 33)
    assert report.fleiss_raters == 2
    assert report.krippendorff_alpha.value == pytest.approx(14 / 33)
    assert (report.annotations, report.items, report.items_overlapping, report.annotators) == (20, 10, 10, 2)
    # With two annotators, each one's kappa with the others is the pair's.
    assert report.annotator_kappa["A"].value == pytest.approx(0.4)
    assert report.annotator_kappa["B"].value == pytest.approx(0.4)


# Fleiss (1971) as reproduced on Wikipedia ("Fleiss' kappa", worked example): 10 subjects,
# 14 raters each, 5 categories; counts of raters per category:
#   p_j  = (0.143, 0.200, 0.279, 0.150, 0.229), Pe = sum p_j^2 = 0.213
#   P_i  = (1.000, 0.253, 0.308, 0.440, 0.330, 0.462, 0.242, 0.176, 0.286, 0.286), Pbar = 0.378
#   kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210
FLEISS_1971 = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def fleiss_rows(table) -> list[tuple]:
    rows = []
    for item, counts in enumerate(table):
        labels = [category for category, n in enumerate(counts) for _ in range(n)]
        rows += [(item, f"rater{r}", label) for r, label in enumerate(labels)]
    return rows


def test_it_matches_fleiss_worked_example():
    report = agreement_report(fleiss_rows(FLEISS_1971))
    assert report.fleiss_raters == 14
    assert report.fleiss_kappa.n_items == 10
    assert report.fleiss_kappa.value == pytest.approx(0.210, abs=5e-4)
    assert report.fleiss_kappa.value == pytest.approx(fleiss_kappa(np.array(FLEISS_1971)))


# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), section C: 4 observers,
# 12 units, values 1..5, "." missing.
#   unit:  1 2 3 4 5 6 7 8 9 10 11 12
#   A:     1 2 3 3 2 1 4 1 2 .  .  .
#   B:     1 2 3 3 2 2 4 1 2 5  .  3
#   C:     . 3 3 3 2 3 4 2 2 5  1  .
#   D:     1 2 3 3 2 4 4 1 2 5  1  .
# Unit 12 has one value, so it is not pairable. Diagonal of the coincidence matrix, per unit
# sum_c n_uc (n_uc - 1) / (m_u - 1): 3, 2, 4, 4, 4, 0, 4, 2, 4, 3, 2 -> 32.
# Pairable values n = 40; n_1..n_5 = 9, 13, 10, 5, 3, so sum n_c^2 = 81+169+100+25+9 = 384.
# alpha = 1 - (n-1)(n - 32) / (n^2 - 384) = 1 - 39*8 / 1216 = 1 - 312/1216 = 0.743.
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def test_it_matches_krippendorffs_worked_example():
    report = agreement_report(rows_from(KRIPPENDORFF_2011))
    assert report.krippendorff_alpha.value == pytest.approx(1 - 312 / 1216)
    assert round(report.krippendorff_alpha.value, 3) == 0.743
    reliability = np.array(
        [[np.nan if v is None else v for v in labels] for labels in KRIPPENDORFF_2011.values()]
    )
    assert report.krippendorff_alpha.value == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )
    assert (report.items, report.items_overlapping) == (12, 11)
    # Fleiss takes the most common number of raters: 8 units have all 4.
    assert (report.fleiss_raters, report.fleiss_kappa.n_items) == (4, 8)


def random_rows(seed=3, items=300, annotators=6, categories=4):
    rng = np.random.default_rng(seed)
    rows = []
    for item in range(items):
        truth = int(rng.integers(categories))
        for annotator in rng.choice(annotators, int(rng.integers(1, min(annotators, 4) + 1)), replace=False):
            label = truth if rng.random() < 0.7 else int(rng.integers(categories))
            rows.append((item, f"a{annotator}", label))
    return rows


def test_it_agrees_with_the_reference_libraries_on_a_random_table():
    rows = random_rows()
    report = agreement_report(rows)
    by_annotator: dict = {}
    for item, annotator, label in rows:
        by_annotator.setdefault(annotator, {})[item] = label
    for pair in report.pairs:
        a, b = by_annotator[pair.first], by_annotator[pair.second]
        shared = sorted(a.keys() & b.keys())
        assert pair.shared_items == len(shared)
        expected = cohen_kappa_score([a[i] for i in shared], [b[i] for i in shared])
        assert pair.kappa.value == pytest.approx(expected)
    annotators, items = sorted(by_annotator), sorted({r[0] for r in rows})
    reliability = np.full((len(annotators), len(items)), np.nan)
    for item, annotator, label in rows:
        reliability[annotators.index(annotator), items.index(item)] = label
    assert report.krippendorff_alpha.value == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal")
    )
    m = report.fleiss_raters
    subjects = [[by_annotator[a][i] for a in annotators if i in by_annotator[a]] for i in items]
    table, _ = aggregate_raters(np.array([s for s in subjects if len(s) == m]), n_cat=4)
    assert report.fleiss_kappa.value == pytest.approx(fleiss_kappa(table))
    assert report.fleiss_kappa.n_items == len(table)


def test_it_computes_each_resample_as_the_libraries_would_on_the_resampled_items():
    """One bootstrap resample is a vector of draw counts per item; the figures from it must equal the
    libraries' on the data with each item repeated that many times."""
    rows = random_rows(seed=5, items=80, annotators=3)
    table = agreement._Table.from_rows(rows)
    features = agreement._Features(table)
    draws = np.random.default_rng(1).integers(0, table.n_items, table.n_items)
    weights = np.bincount(draws, minlength=table.n_items).astype(float)
    figures = features.figures((weights @ features.matrix).reshape(1, -1))

    counts = table.value_counts()
    resampled_counts = np.repeat(counts, weights.astype(int), axis=0)
    assert figures["alpha"][0] == pytest.approx(
        krippendorff.alpha(value_counts=resampled_counts.astype(float), level_of_measurement="nominal")
    )
    in_fleiss = table.raters_per_item() == features.fleiss_m
    assert figures["fleiss"][0] == pytest.approx(
        fleiss_kappa(np.repeat(counts[in_fleiss], weights[in_fleiss].astype(int), axis=0))
    )
    labels = {(i, r): lab for i, r, lab in zip(table.item, table.rater, table.label, strict=True)}
    for p, (a, b) in enumerate(features.pair_raters):
        shared = [i for i in draws if (i, a) in labels and (i, b) in labels]
        expected = cohen_kappa_score([labels[i, a] for i in shared], [labels[i, b] for i in shared])
        assert figures["pair_kappa"][0, p] == pytest.approx(expected)


def test_it_gives_intervals_around_the_value_that_repeat_with_the_seed():
    rows = random_rows()
    first, again = agreement_report(rows), agreement_report(rows)
    other_seed = agreement_report(rows, seed=99)
    for name in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha"):
        estimate = getattr(first, name)
        assert estimate.low < estimate.value < estimate.high, name
        assert estimate.high - estimate.low < 0.3, name
        assert getattr(again, name) == estimate
    assert other_seed.krippendorff_alpha.low != first.krippendorff_alpha.low
    for pair in first.pairs:
        assert pair.kappa.low <= pair.kappa.value <= pair.kappa.high


def test_it_gives_intervals_close_to_a_plain_bootstrap_loop():
    """The vectorised bootstrap against the textbook one: resample items, call the library."""
    rows = rows_from(TWO_RATERS)
    rows = [(f"{copy}-{item}", annotator, label) for copy in range(20) for item, annotator, label in rows]
    report = agreement_report(rows, resamples=300)
    items = sorted({r[0] for r in rows})
    a = {i: lab for i, who, lab in rows if who == "A"}
    b = {i: lab for i, who, lab in rows if who == "B"}
    rng = np.random.default_rng(12345)
    kappas = []
    for _ in range(300):
        drawn = [items[i] for i in rng.integers(0, len(items), len(items))]
        kappas.append(cohen_kappa_score([a[i] for i in drawn], [b[i] for i in drawn]))
    low, high = np.percentile(kappas, [2.5, 97.5])
    (pair,) = report.pairs
    assert pair.kappa.low == pytest.approx(low, abs=0.04)
    assert pair.kappa.high == pytest.approx(high, abs=0.04)


def test_it_treats_a_multi_label_set_as_one_label():
    rows = [
        (1, "A", (1, 2)), (1, "B", (1, 2)),
        (2, "A", (1,)), (2, "B", (1, 2)),
        (3, "A", (3,)), (3, "B", (3,)),
    ]
    report = agreement_report(rows)
    assert report.percent_agreement.value == pytest.approx(2 / 3)
    assert report.pairs[0].kappa.value == pytest.approx(
        cohen_kappa_score(["12", "1", "3"], ["12", "12", "3"])
    )


def test_it_keeps_the_first_label_when_a_person_labels_an_item_twice():
    rows = rows_from(TWO_RATERS) + [(0, "A", "n")]  # item 0 again, now disagreeing
    report = agreement_report(rows)
    assert report.pairs[0].kappa.value == pytest.approx(0.4)
    assert report.annotations == 20


# --- degenerate inputs: a value of None with a reason, never a crash, never NaN ---------------


def assert_json_safe(report):
    json.dumps(report.to_dict(), allow_nan=False)


def test_it_explains_that_no_labels_give_no_figures():
    report = agreement_report([])
    assert report.fleiss_kappa.value is None
    assert report.krippendorff_alpha.reason == agreement.NEEDS_TWO_ANNOTATORS
    assert report.pairs == []
    assert_json_safe(report)


def test_it_explains_that_one_annotator_gives_no_agreement():
    report = agreement_report([(i, "A", "y") for i in range(5)])
    assert report.percent_agreement.value is None
    assert report.percent_agreement.reason == agreement.NEEDS_TWO_ANNOTATORS
    assert report.annotator_kappa["A"].value is None
    assert_json_safe(report)


def test_it_explains_that_annotators_without_shared_items_give_no_agreement():
    report = agreement_report([(1, "A", "y"), (2, "B", "y"), (3, "A", "n")])
    assert report.items_overlapping == 0
    assert report.krippendorff_alpha.value is None
    assert report.krippendorff_alpha.reason == agreement.NO_OVERLAP
    assert report.pairs == []
    assert_json_safe(report)


def test_it_explains_that_a_single_category_leaves_kappa_and_alpha_undefined():
    report = agreement_report([(i, who, "y") for i in range(10) for who in "AB"])
    assert report.percent_agreement.value == 1.0  # they do agree; chance would have too
    assert report.fleiss_kappa.value is None
    assert report.fleiss_kappa.reason == agreement.ONE_CATEGORY
    assert report.krippendorff_alpha.value is None
    assert report.pairs[0].kappa.value is None
    assert report.pairs[0].kappa.reason == agreement.PAIR_ONE_CATEGORY
    assert report.annotator_kappa["A"].value is None
    assert report.annotator_kappa["A"].reason == agreement.ANNOTATOR_ONE_CATEGORY
    assert_json_safe(report)


def test_it_leaves_out_a_pair_that_used_one_category_and_keeps_the_rest():
    # A and B only ever say y on their shared items; A and C disagree usefully.
    rows = [(i, "A", "y") for i in range(6)] + [(i, "B", "y") for i in range(3)]
    rows += [(i, "C", "y" if i in (3, 4) else "n") for i in range(3, 6)] + [(6, "A", "n"), (6, "C", "n")]
    report = agreement_report(rows)
    pairs = {(p.first, p.second): p for p in report.pairs}
    assert pairs["A", "B"].kappa.value is None
    assert pairs["A", "C"].kappa.value is not None
    assert report.annotator_kappa["A"].value == pytest.approx(pairs["A", "C"].kappa.value)
    assert_json_safe(report)


def test_it_gives_no_interval_for_too_few_items():
    report = agreement_report(rows_from({"A": list("ynn"), "B": list("yyn")}))
    assert report.krippendorff_alpha.value is not None
    assert report.krippendorff_alpha.low is None
    assert report.krippendorff_alpha.reason == agreement.TOO_FEW_FOR_INTERVAL
    assert_json_safe(report)
