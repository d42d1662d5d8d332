"""Agreement for multi-label projects, on plain rows: no ORM, no Django.

Input: the rows `labeling.agreement` takes, `(item_id, annotator_id, label)`, where a label is a
tuple of sorted category ids (the empty tuple is "none of these"). Three views of agreement:

- exact set: {nlp, mlops} and {nlp} disagree. That is `labeling.agreement.agreement_report` on the
  rows as they are (the page's main figures); it is strict, and with many categories it is low even
  when people mostly agree.
- per category: for each category, whether it is in the set or not, a binary label; percent
  agreement, Cohen's kappa per annotator pair (pooled: the mean over pairs weighted by shared items),
  Fleiss' kappa and Krippendorff's alpha on it, from `agreement_report` on those binary rows.
  This shows *which* categories people find hard.
- Krippendorff's alpha with the MASI distance between sets (Passonneau 2006, "Measuring agreement
  on set-valued items (MASI) for semantic and pragmatic annotation", LREC): partial overlap counts as
  partial agreement.

MASI distance: 1 - J * M, where J = |A n B| / |A u B| (Jaccard) and M is 1 when A = B, 2/3 when one
contains the other, 1/3 when they overlap otherwise, 0 when disjoint. (NLTK's `masi_distance`
rounds M to 0.67 and 0.33; it also divides by zero on two empty sets, which here have distance 0.
An empty set and a non-empty one are disjoint: distance 1.)

Alpha with any distance d (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"):
alpha = 1 - D_o / D_e, D_o = (1/n) sum_u sum_{i != j in u} d(v_i, v_j) / (m_u - 1) and
D_e = (1/(n(n-1))) sum_{c,k} n_c n_k d(c, k), over items u with m_u >= 2 labels, n labels in all,
n_c labels equal to the set c. Both are sums of per-item quantities, so the bootstrap interval
weights items by how often a resample draws them, as `labeling.agreement` does.
"""
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from . import agreement
from .agreement import Estimate

CATEGORY_CONSTANT = (
    "Every label compared includes this category, or none does, so chance agreement is total "
    "and the figure is undefined."
)
SAME_SET = (
    "Every label this figure is computed on is one and the same set of categories, so agreement "
    "expected by chance is total and alpha is undefined."
)


def masi_distance(first, second) -> float:
    """1 - Jaccard x monotonicity (Passonneau 2006); 0 for two empty sets."""
    a, b = frozenset(first), frozenset(second)
    if a == b:
        return 0.0
    shared = len(a & b)
    if shared == 0:
        return 1.0
    monotonicity = 2 / 3 if shared == min(len(a), len(b)) else 1 / 3
    return 1.0 - shared / len(a | b) * monotonicity


@dataclass(frozen=True)
class CategoryAgreement:
    category: object  # category id as given
    prevalence: float  # share of the compared labels that include the category
    percent: Estimate
    cohen_kappa: float | None  # pooled over annotator pairs, weighted by shared items
    fleiss_kappa: Estimate
    alpha: Estimate

    def to_dict(self) -> dict:
        return {
            "category": self.category, "prevalence": round(self.prevalence, 4),
            "percent": self.percent.to_dict(),
            "cohen_kappa": None if self.cohen_kappa is None else round(self.cohen_kappa, 4),
            "fleiss_kappa": self.fleiss_kappa.to_dict(), "alpha": self.alpha.to_dict(),
        }


@dataclass(frozen=True)
class MultiLabelAgreement:
    masi_alpha: Estimate
    categories: list[CategoryAgreement] = field(default_factory=list)
    distinct_sets: int = 0

    def to_dict(self) -> dict:
        return {
            "masi_alpha": self.masi_alpha.to_dict(),
            "categories": [c.to_dict() for c in self.categories],
            "distinct_sets": self.distinct_sets,
        }


def multilabel_agreement(
    rows, category_ids, resamples: int = agreement.RESAMPLES, seed: int = agreement.SEED
) -> MultiLabelAgreement:
    """MASI alpha and per-category figures for `rows` of (item_id, annotator_id, label set).

    Like `agreement_report`, an annotator's second label for the same item is ignored."""
    rows = _first_label_per_person(rows)
    return MultiLabelAgreement(
        masi_alpha=masi_alpha(rows, resamples, seed),
        categories=per_category(rows, list(category_ids), resamples, seed),
        distinct_sets=len({label for _, _, label in rows}),
    )


def _first_label_per_person(rows) -> list[tuple]:
    seen, kept = set(), []
    for item, annotator, label in rows:
        if (item, annotator) not in seen:
            seen.add((item, annotator))
            kept.append((item, annotator, tuple(sorted(label))))
    return kept


# --- per category -----------------------------------------------------------------------------


def per_category(rows, category_ids: list, resamples: int = agreement.RESAMPLES, seed: int = agreement.SEED):
    """For each category, agreement on whether it is in the set: the figures `agreement_report`
    gives for binary labels (the tests check they agree), for all categories at once. Every figure
    but Cohen's kappa is a ratio of sums over items, so the bootstrap is one product per batch."""
    table = _PresenceTable(_first_label_per_person(rows), category_ids)
    if table.annotators < 2 or table.n_items == 0:
        reason = agreement.NEEDS_TWO_ANNOTATORS if table.annotators < 2 else agreement.NO_OVERLAP
        missing = Estimate(value=None, reason=reason)
        return [CategoryAgreement(c, 0.0, missing, None, missing, missing) for c in category_ids]
    point = table.figures(np.ones((1, table.n_items)))
    batches = [table.figures(w) for w in _resample_weights(table.n_items, resamples, seed)]
    resampled = {name: np.concatenate([b[name] for b in batches]) for name in point}
    counts = {"percent": [table.n_items] * table.C, "alpha": [table.n_items] * table.C,
              "fleiss": [table.fleiss_items] * table.C}
    estimates = {
        name: agreement._estimates(point[name], resampled[name], counts[name], CATEGORY_CONSTANT)
        for name in counts
    }
    kappa = table.pooled_cohen_kappa()
    return [
        CategoryAgreement(
            category=c, prevalence=float(table.prevalence[j]), percent=estimates["percent"][j],
            cohen_kappa=kappa[j], fleiss_kappa=estimates["fleiss"][j], alpha=estimates["alpha"][j],
        )
        for j, c in enumerate(category_ids)
    ]


class _PresenceTable:
    """Labels of items with two or more, sorted by (item, annotator), as a labels x categories
    0/1 matrix, and the per-item counts every figure is a sum of:
    m_u labels on item u, y_uc of them including category c, and a_uc = y(y-1) + (m-y)(m-y-1)
    ordered pairs of labels that agree about c."""

    def __init__(self, rows, category_ids: list):
        self.C = len(category_ids)
        self.annotators = len({annotator for _, annotator, _ in rows})
        per_item: dict = {}
        for item, annotator, label in rows:
            per_item.setdefault(item, []).append((annotator, label))
        items = [sorted(labels, key=lambda x: str(x[0])) for labels in per_item.values() if len(labels) >= 2]
        self.n_items = len(items)
        if not items:
            return  # nothing to compare: `per_category` says why
        raters = {a: i for i, a in enumerate(sorted({a for labels in items for a, _ in labels}, key=str))}
        self.item = np.repeat(np.arange(self.n_items), [len(labels) for labels in items])
        self.rater = np.array([raters[a] for labels in items for a, _ in labels], dtype=np.int64)
        position = {c: j for j, c in enumerate(category_ids)}
        self.present = np.zeros((len(self.item), self.C))
        r = 0
        for labels in items:
            for _, label in labels:
                self.present[r, [position[c] for c in label if c in position]] = 1
                r += 1
        m = np.bincount(self.item, minlength=self.n_items).astype(np.float64)
        y = np.zeros((self.n_items, self.C))
        np.add.at(y, self.item, self.present)
        agreeing = y * (y - 1) + (m[:, None] - y) * (m[:, None] - y - 1)
        fleiss_m = agreement._most_common(m.astype(np.int64))
        in_fleiss = (m == fleiss_m).astype(np.float64)
        self.fleiss_m, self.fleiss_items = fleiss_m, int(in_fleiss.sum())
        share = agreeing / (m * (m - 1))[:, None]
        # Per-item columns, summed (weighted by draws) for every figure: see `figures`.
        self.columns = np.hstack([
            np.ones((self.n_items, 1)), m[:, None], in_fleiss[:, None],
            share, agreeing / (m - 1)[:, None], y, in_fleiss[:, None] * share, in_fleiss[:, None] * y,
        ])
        self.prevalence = y.sum(axis=0) / m.sum()

    def figures(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Percent agreement, Krippendorff's alpha and Fleiss' kappa per category for each row of
        `weights` (resamples x items), the formulas of `labeling.agreement._Features.figures`."""
        sums = weights @ self.columns
        C = self.C
        items, n, fleiss_items = sums[:, 0:1], sums[:, 1:2], sums[:, 2:3]
        share, agreeing, yes, fleiss_share, fleiss_yes = (sums[:, 3 + k * C:3 + (k + 1) * C] for k in range(5))
        no = n - yes
        p_yes = fleiss_yes / np.maximum(fleiss_items * self.fleiss_m, 1)
        chance = p_yes**2 + (1 - p_yes) ** 2
        return {
            "percent": agreement._ratio(share, items),
            "alpha": 1.0 - agreement._ratio((n - 1) * (n - agreeing), n * n - yes * yes - no * no),
            "fleiss": agreement._ratio(agreement._ratio(fleiss_share, fleiss_items) - chance, 1.0 - chance),
        }

    def pooled_cohen_kappa(self) -> list[float | None]:
        """Per category: each annotator pair's Cohen's kappa on the items both labeled, averaged
        with the shared items as weights (pairs where it is undefined left out)."""
        R = int(self.rater.max()) + 1 if len(self.rater) else 1
        longest = int(np.bincount(self.item).max())
        first = np.concatenate([np.nonzero(self.item[:-d] == self.item[d:])[0] for d in range(1, longest)])
        second = np.concatenate([np.nonzero(self.item[:-d] == self.item[d:])[0] + d for d in range(1, longest)])
        _, pair = np.unique(self.rater[first] * R + self.rater[second], return_inverse=True)
        P = int(pair.max()) + 1

        def per_pair(values):
            out = np.zeros((P, values.shape[1]))
            np.add.at(out, pair, values)
            return out

        a, b = self.present[first], self.present[second]
        n = np.bincount(pair, minlength=P).astype(np.float64)[:, None]
        observed = per_pair((a == b).astype(np.float64)) / n
        a_yes, b_yes = per_pair(a), per_pair(b)
        chance = (a_yes * b_yes + (n - a_yes) * (n - b_yes)) / (n * n)
        kappa = agreement._ratio(observed - chance, 1.0 - chance)
        weight = np.where(np.isfinite(kappa), n, 0.0)
        pooled = agreement._ratio((np.nan_to_num(kappa) * weight).sum(axis=0), weight.sum(axis=0))
        return [float(k) if np.isfinite(k) else None for k in pooled]


# --- alpha with the MASI distance -------------------------------------------------------------


def masi_alpha(rows, resamples: int = agreement.RESAMPLES, seed: int = agreement.SEED) -> Estimate:
    """Krippendorff's alpha with the MASI distance, with a percentile bootstrap 95% interval.
    An annotator's second label for the same item is ignored."""
    table = _SetTable(rows)
    if table.annotators < 2:
        return Estimate(value=None, reason=agreement.NEEDS_TWO_ANNOTATORS)
    if table.n_items == 0:
        return Estimate(value=None, reason=agreement.NO_OVERLAP)
    point = table.alpha(np.ones((1, table.n_items)))
    resampled = np.concatenate([table.alpha(w) for w in _resample_weights(table.n_items, resamples, seed)])
    return agreement._estimates(point, resampled.reshape(-1, 1), [table.n_items], SAME_SET)[0]


class _SetTable:
    """Items with two or more labels as an items x distinct-sets count matrix (sparse), the MASI
    distance matrix between those sets, and each item's observed disagreement (its D_o numerator).
    Vectorised: a project has up to 2^9 distinct sets and any number of items."""

    def __init__(self, rows):
        rows = _first_label_per_person(rows)
        self.annotators = len({annotator for _, annotator, _ in rows})
        per_item: dict = {}
        for item, _, label in rows:
            per_item.setdefault(item, []).append(label)
        items = [labels for labels in per_item.values() if len(labels) >= 2]
        self.sets = sorted({s for labels in items for s in labels})
        code = {s: i for i, s in enumerate(self.sets)}
        self.n_items = len(items)
        item_of = np.repeat(np.arange(self.n_items), [len(labels) for labels in items])
        set_of = np.fromiter((code[s] for labels in items for s in labels), dtype=np.int64, count=len(item_of))
        self.counts = sparse.csr_matrix(
            (np.ones(len(item_of)), (item_of, set_of)), shape=(self.n_items, len(self.sets))
        )
        self.distance = _masi_matrix(self.sets)
        self.labels_per_item = np.bincount(item_of, minlength=self.n_items).astype(np.float64)
        self.observed = _pair_distances(item_of, set_of, self.distance, self.n_items) / np.maximum(
            self.labels_per_item - 1, 1
        )

    def alpha(self, weights: np.ndarray) -> np.ndarray:
        """Alpha for each row of `weights` (resamples x items: how often each item is drawn)."""
        n = weights @ self.labels_per_item
        totals = np.asarray(self.counts.T @ weights.T).T  # resamples x sets: n_c
        expected = ((totals @ self.distance) * totals).sum(axis=1)  # n(n-1) D_e
        return 1.0 - agreement._ratio((n - 1) * (weights @ self.observed), expected)


def _masi_matrix(sets: list[tuple]) -> np.ndarray:
    """MASI distance between every two of `sets`, as `masi_distance` computes it for one pair."""
    members = sorted({c for s in sets for c in s})
    position = {c: i for i, c in enumerate(members)}
    has = np.zeros((len(sets), len(members)))
    for i, s in enumerate(sets):
        has[i, [position[c] for c in s]] = 1
    size = has.sum(axis=1)
    shared = has @ has.T
    union = size[:, None] + size[None, :] - shared
    smaller = np.minimum(size[:, None], size[None, :])
    equal = (shared == size[:, None]) & (shared == size[None, :])
    monotonicity = np.where(equal, 1.0, np.where(shared == smaller, 2 / 3, np.where(shared > 0, 1 / 3, 0.0)))
    jaccard = np.divide(shared, union, out=np.ones_like(shared), where=union > 0)  # two empty sets: equal
    return 1.0 - jaccard * monotonicity


def _pair_distances(item_of: np.ndarray, set_of: np.ndarray, distance: np.ndarray, n_items: int) -> np.ndarray:
    """Per item, the sum of d(v_i, v_j) over ordered pairs i != j of its labels. Rows are grouped by
    item, so the pairs are rows r and r + k of the same item, k = 1 .. m_u - 1."""
    total = np.zeros(n_items)
    longest = int(np.bincount(item_of).max()) if len(item_of) else 0
    for k in range(1, longest):
        same = np.nonzero(item_of[:-k] == item_of[k:])[0]
        total += 2 * np.bincount(item_of[same], weights=distance[set_of[same], set_of[same + k]], minlength=n_items)
    return total


def _resample_weights(n_items: int, resamples: int, seed: int):
    """Batches of resamples x items matrices: how often each resample draws each item (with
    replacement). Batches keep one matrix near 32 MB at any project size."""
    rng = np.random.default_rng(seed)
    batch = max(1, min(resamples, agreement._BATCH_CELLS // n_items))
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        draws = rng.integers(0, n_items, size=(size, n_items), dtype=np.int64)
        draws += (np.arange(size) * n_items)[:, None]
        yield np.bincount(draws.ravel(), minlength=size * n_items).reshape(size, n_items).astype(np.float64)
