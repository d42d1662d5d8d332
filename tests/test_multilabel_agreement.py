"""Agreement on sets: the MASI distance and Krippendorff's alpha with it (by hand and against the
`krippendorff` package given the same distance), per-category agreement on binary presence
(against scikit-learn and the package), degenerate inputs, and the agreement page."""
import io
import random
import uuid
from fractions import Fraction

import krippendorff
import numpy as np
import pytest
from django.test import Client
from sklearn.metrics import cohen_kappa_score

from labeling import actions, agreement
from labeling.agreement_multilabel import (
    CATEGORY_CONSTANT,
    SAME_SET,
    _masi_matrix,
    _resample_weights,
    _SetTable,
    masi_alpha,
    masi_distance,
    multilabel_agreement,
)
from labeling.importer import import_items
from labeling.models import Project


@pytest.mark.parametrize(
    "first, second, expected",
    [
        ({1, 2}, {2, 1}, 0),
        ({1}, {1, 2}, 1 - Fraction(1, 2) * Fraction(2, 3)),  # subset: J = 1/2, M = 2/3
        ({1, 2}, {2, 3}, 1 - Fraction(1, 3) * Fraction(1, 3)),  # overlap: J = 1/3, M = 1/3
        ({1}, {2}, 1),  # disjoint
        (set(), set(), 0),  # both "none of these"
        (set(), {1}, 1),
    ],
)
def test_masi_distance_matches_the_definition(first, second, expected):
    assert masi_distance(first, second) == pytest.approx(float(expected))
    assert masi_distance(second, first) == pytest.approx(float(expected))


def test_the_distance_matrix_is_masi_distance_for_every_pair_of_sets():
    sets = [(), (1,), (2,), (1, 2), (1, 2, 3), (2, 3), (4,)]
    matrix = _masi_matrix(sets)
    for i, first in enumerate(sets):
        for j, second in enumerate(sets):
            assert matrix[i, j] == pytest.approx(masi_distance(first, second)), (first, second)


# Two annotators, three items:
#   item 1: A {1,2}  B {1,2}   d = 0
#   item 2: A {1}    B {1,2}   d = 2/3
#   item 3: A {3}    B {1}     d = 1
# n = 6 values: {1,2} x3, {1} x2, {3} x1.
# D_o = (1/n) sum_u sum_{i != j} d / (m_u - 1) = (1/6)(0 + 2*2/3 + 2*1) = 5/9.
# D_e = (1/(n(n-1))) sum_{c != k} n_c n_k d(c, k)
#     = (1/30) * 2 * (3*2*2/3 + 3*1*1 + 2*1*1) = 18/30 = 3/5.
# alpha = 1 - D_o / D_e = 1 - 25/27 = 2/27.
HAND = [
    (1, "A", (1, 2)), (1, "B", (1, 2)),
    (2, "A", (1,)), (2, "B", (1, 2)),
    (3, "A", (3,)), (3, "B", (1,)),
]


def test_masi_alpha_matches_the_hand_computation():
    estimate = masi_alpha(HAND)
    assert estimate.value == pytest.approx(2 / 27)
    assert estimate.n_items == 3
    assert estimate.low is None and "at least" in estimate.reason  # too few items for an interval


def random_rows(seed=7, items=60, raters="ABCD", categories=(1, 2, 3, 4), missing=0.2):
    rng = random.Random(seed)
    rows = []
    for item in range(items):
        truth = {c for c in categories if rng.random() < 0.35}
        for rater in raters:
            if rng.random() < missing:
                continue
            labels = set(truth)
            if rng.random() < 0.3:
                labels ^= {rng.choice(categories)}
            rows.append((item, rater, tuple(sorted(labels))))
    return rows


def package_masi_alpha(rows) -> float:
    """The `krippendorff` package given the same MASI distance between the distinct sets."""
    table = _SetTable(rows)

    def distance(v1, v2, i1, i2, n_v, dtype=np.float64):
        return table.distance[np.asarray(i1), np.asarray(i2)].astype(dtype)

    return krippendorff.alpha(
        value_counts=table.counts.toarray(), value_domain=np.arange(len(table.sets)), level_of_measurement=distance
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_masi_alpha_matches_the_krippendorff_package_with_the_masi_distance(seed):
    rows = random_rows(seed)
    estimate = masi_alpha(rows)
    assert estimate.value == pytest.approx(package_masi_alpha(rows))
    assert estimate.low <= estimate.value <= estimate.high


def test_masi_alpha_on_exact_sets_only_is_the_nominal_alpha():
    """With every pair of distinct sets disjoint, MASI distance is 1 and alpha is nominal alpha."""
    rows = [(item, r, (label,)) for item, r, label in agreement_rows_single()]
    assert masi_alpha(rows).value == pytest.approx(agreement.agreement_report(rows).krippendorff_alpha.value)


def agreement_rows_single():
    rng = random.Random(3)
    return [(i, r, rng.choice([1, 2, 3]) if rng.random() < 0.4 else 1 + i % 3) for i in range(30) for r in "ABC"]


def test_each_bootstrap_resample_is_alpha_on_the_items_it_drew():
    rows = random_rows(5, items=20)
    table = _SetTable(rows)
    weights = next(_resample_weights(table.n_items, 3, seed=11))
    by_item = {}
    for row in rows:
        by_item.setdefault(row[0], []).append(row)
    overlapping = [labels for labels in by_item.values() if len(labels) >= 2]
    for draw, resampled_alpha in zip(weights, table.alpha(weights), strict=True):
        explicit = [
            (f"{u}-{copy}", rater, label)
            for u, labels in enumerate(overlapping)
            for copy in range(int(draw[u]))
            for _, rater, label in labels
        ]
        assert resampled_alpha == pytest.approx(package_masi_alpha(explicit))


def test_masi_alpha_is_undefined_with_a_reason_when_it_must_be():
    assert masi_alpha([(1, "A", (1,)), (2, "A", (2,))]).reason == agreement.NEEDS_TWO_ANNOTATORS
    assert masi_alpha([(1, "A", (1,)), (2, "B", (2,))]).reason == agreement.NO_OVERLAP
    same = [(i, r, (1, 2)) for i in range(6) for r in "AB"]
    assert masi_alpha(same).value is None and masi_alpha(same).reason == SAME_SET


def test_per_category_figures_match_scikit_learn_and_the_package():
    rows = random_rows(9, raters="AB", missing=0)
    figures = multilabel_agreement(rows, [1, 2, 3, 4])
    items = sorted({item for item, _, _ in rows})
    labels = {(item, rater): set(label) for item, rater, label in rows}
    for category, row in zip([1, 2, 3, 4], figures.categories, strict=True):
        a = [category in labels[(i, "A")] for i in items]
        b = [category in labels[(i, "B")] for i in items]
        assert row.category == category
        assert row.cohen_kappa == pytest.approx(cohen_kappa_score(a, b))
        assert row.percent.value == pytest.approx(np.mean(np.array(a) == np.array(b)))
        reliability = np.array([a, b], dtype=float)
        assert row.alpha.value == pytest.approx(krippendorff.alpha(reliability, level_of_measurement="nominal"))
        assert row.prevalence == pytest.approx((sum(a) + sum(b)) / (2 * len(items)))
    assert figures.masi_alpha.value == pytest.approx(package_masi_alpha(rows))
    assert figures.to_dict()["categories"][0]["category"] == 1


def binary_report(rows, category):
    """The oracle: `labeling.agreement.agreement_report` on yes/no rows for one category."""
    return agreement.agreement_report([(i, r, category in label) for i, r, label in rows])


@pytest.mark.parametrize("seed, raters", [(2, "ABC"), (4, "ABCDE"), (6, "AB")])
def test_per_category_figures_equal_the_agreement_report_on_yes_no_labels(seed, raters):
    rows = random_rows(seed, items=40, raters=raters, missing=0.25)
    figures = multilabel_agreement(rows, [1, 2, 3, 4])
    for row in figures.categories:
        report = binary_report(rows, row.category)
        assert row.percent.value == pytest.approx(report.percent_agreement.value)
        assert row.alpha.value == pytest.approx(report.krippendorff_alpha.value)
        assert row.fleiss_kappa.value == pytest.approx(report.fleiss_kappa.value)
        assert row.fleiss_kappa.n_items == report.fleiss_kappa.n_items
        defined = [(p.kappa.value, p.shared_items) for p in report.pairs if p.kappa.value is not None]
        pooled = sum(k * n for k, n in defined) / sum(n for _, n in defined)
        assert row.cohen_kappa == pytest.approx(pooled)
        # The same resamples as the report (same seed, items drawn the same way): the same interval.
        assert (row.alpha.low, row.alpha.high) == pytest.approx(
            (report.krippendorff_alpha.low, report.krippendorff_alpha.high)
        )


def test_a_category_everyone_leaves_out_has_undefined_figures_with_a_reason():
    rows = [(i, r, (1,) if (i + (r == "B")) % 3 else ()) for i in range(10) for r in "AB"]
    unused = multilabel_agreement(rows, [1, 2]).categories[1]
    assert unused.prevalence == 0
    assert unused.alpha.value is None and unused.alpha.reason == CATEGORY_CONSTANT
    assert unused.cohen_kappa is None
    assert unused.percent.value == 1.0
    lonely = multilabel_agreement([(1, "A", (1,)), (2, "A", ())], [1]).categories[0]
    assert lonely.alpha.reason == agreement.NEEDS_TWO_ANNOTATORS


def test_an_annotators_second_label_for_an_item_is_ignored():
    rows = HAND + [(3, "B", (3,))]  # would turn item 3 into agreement
    assert masi_alpha(rows).value == pytest.approx(masi_alpha(HAND).value)
    assert multilabel_agreement(rows, [1]).masi_alpha.value == pytest.approx(2 / 27)


# --- the page ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_agreement_page_shows_masi_alpha_and_one_row_per_category(member):
    project = actions.create_project(
        "Tags", "tags", mode=Project.Mode.MULTI, annotations_per_item=2, honeypot_percent=0, review_policy="all"
    )

    import_items(project, io.BytesIO(("title,description\n" + "".join(f"T{i},x{i}\n" for i in range(6))).encode()), "a.csv")
    nlp, cv, mlops, other = [c.id for c in project.categories.all()]
    a, b = member("annotator", in_project=project), member("annotator", in_project=project)
    sets_a = [[nlp], [nlp, cv], [mlops], [other], [cv], [nlp, mlops]]
    sets_b = [[nlp], [cv], [mlops, other], [other], [nlp], [nlp, mlops]]
    for first, second in zip(sets_a, sets_b, strict=True):
        lease = actions.claim_next_item(a)
        actions.submit_annotation(a, lease.item_id, first, uuid.uuid4().hex)
        assert actions.claim_next_item(b).item_id == lease.item_id
        actions.submit_annotation(b, lease.item_id, second, uuid.uuid4().hex)
    client = Client()
    client.force_login(member("reviewer", in_project=project).user)
    html = client.get("/p/tags/agreement/").content.decode()

    rows = [(i, "a", tuple(x)) for i, x in enumerate(sets_a)] + [(i, "b", tuple(x)) for i, x in enumerate(sets_b)]
    expected = masi_alpha(rows).value
    assert 'id="figure-masi-alpha"' in html
    assert f"<span>{expected:.2f}</span>Krippendorff’s alpha, MASI distance".replace("-", "\N{MINUS SIGN}") in html
    for name in ("natural-language-processing", "computer-vision", "mlops", "other"):
        assert f'data-category="{name}"' in html
    assert "exact-set agreement" in html


@pytest.mark.django_db
def test_a_single_label_agreement_page_has_no_multi_label_section(project, member):
    client = Client()
    client.force_login(member("reviewer").user)
    html = client.get(f"/p/{project.slug}/agreement/").content.decode()
    assert "figure-masi-alpha" not in html and "agreement-categories" not in html


def test_exact_set_alpha_with_many_distinct_sets_skips_the_packages_cube_and_agrees_with_it(monkeypatch):
    """The package builds items x values x values; with hundreds of distinct sets that is
    gigabytes, so the report computes the same alpha from its column sums instead."""
    rows = random_rows(8, items=50, categories=(1, 2, 3, 4, 5, 6))
    expected = agreement.agreement_report(rows).krippendorff_alpha.value  # small: the package
    calls = []
    real = krippendorff.alpha
    monkeypatch.setattr(agreement.krippendorff, "alpha", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(agreement, "_BATCH_CELLS", 10)
    assert agreement.agreement_report(rows).krippendorff_alpha.value == pytest.approx(expected)
    assert calls == []
