"""Inter-annotator agreement on plain rows: no ORM, no Django.

Input: rows `(item_id, annotator_id, label)`. A label is any hashable value: a category id in a
single-label project, a tuple of sorted category ids in a multi-label one (the exact set is the
nominal value, so {nlp, mlops} and {nlp} disagree). Every figure is nominal:

- percent agreement: the share of agreeing annotator pairs within an item, averaged over items
  with two or more labels;
- Cohen's kappa for each pair of annotators, on the items both labeled (unweighted; the same
  formula as `sklearn.metrics.cohen_kappa_score`, which the tests use as the oracle: calling it per
  pair costs about 3 ms, so a project with hundreds of annotator pairs would spend seconds in
  input validation alone);
- Fleiss' kappa (statsmodels `fleiss_kappa`, on the subjects x categories table its
  `aggregate_raters` would build) over the items that have the most common number m >= 2 of labels:
  Fleiss needs the same number of raters on every item;
- Krippendorff's alpha (the `krippendorff` package, nominal), which takes any number of raters per
  item. It is given the items x values count table, which is the package's own equivalent of the
  raters x items reliability matrix with NaN for missing labels, without a row per annotator.

Intervals are percentile bootstrap 95% intervals: items are resampled with replacement, the same
resamples for every figure, from a fixed seed so the page shows the same interval twice. Every
figure is a ratio of sums of per-item quantities, so one resample is a vector of weights over items
(how often each was drawn) and a batch of resamples is one sparse matrix product: 200 resamples of
100k annotations take about a second instead of 200 Python passes.

Undefined figures (one annotator, no overlap, a single category so chance agreement is total) come
back as `Estimate(value=None, reason=...)`, never NaN: the page and JSON show the reason.
"""
from dataclasses import dataclass, field

import krippendorff
import numpy as np
from scipy import sparse
from statsmodels.stats.inter_rater import fleiss_kappa

RESAMPLES = 200
SEED = 20240611
# Fewer items than this and a bootstrap interval says more about the resampling than the data.
MIN_ITEMS_FOR_INTERVAL = 5
# Resamples in which a figure is undefined (e.g. every drawn item in one category) are left out;
# when more than half are, there is no honest interval.
MIN_DEFINED_SHARE = 0.5
# Keeps one batch of resampled sums (resamples x columns) near 32 MB.
_BATCH_CELLS = 4_000_000

NEEDS_TWO_ANNOTATORS = "Agreement needs labels from at least two annotators."
NO_OVERLAP = "No item has labels from two or more annotators yet."
ONE_CATEGORY = (
    "All the labels this figure is computed on are one and the same category, so agreement "
    "expected by chance is total and the figure is undefined."
)
PAIR_ONE_CATEGORY = (
    "Both annotators gave one and the same category on every shared item, so chance "
    "agreement is total and kappa is undefined."
)
ANNOTATOR_ONE_CATEGORY = (
    "On every item shared with someone, both gave one and the same category throughout, so "
    "kappa is undefined."
)
TOO_FEW_FOR_INTERVAL = f"An interval needs at least {MIN_ITEMS_FOR_INTERVAL} items."
NO_SHARED_ITEMS = "Shares no item with another annotator yet."
UNSTABLE_INTERVAL = "Undefined in most resamples (too few items or categories) so there is no interval."


@dataclass(frozen=True)
class Estimate:
    """A figure with its bootstrap interval; `reason` says why the value or the interval is missing."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n_items: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "value": _json_number(self.value), "low": _json_number(self.low), "high": _json_number(self.high),
            "n_items": self.n_items, "reason": self.reason,
        }


@dataclass(frozen=True)
class PairAgreement:
    first: object  # annotator ids as given
    second: object
    shared_items: int
    percent: float  # share of shared items both labeled the same
    kappa: Estimate

    def to_dict(self) -> dict:
        return {
            "first": self.first, "second": self.second, "shared_items": self.shared_items,
            "percent": _json_number(self.percent), "kappa": self.kappa.to_dict(),
        }


@dataclass(frozen=True)
class AgreementReport:
    annotations: int  # rows used (one per item and annotator)
    items: int  # distinct items labeled
    items_overlapping: int  # items with labels from two or more annotators
    annotators: int
    percent_agreement: Estimate
    fleiss_kappa: Estimate
    fleiss_raters: int | None  # m: the number of labels per item Fleiss' kappa was computed on
    krippendorff_alpha: Estimate
    pairs: list[PairAgreement] = field(default_factory=list)
    # Each annotator's Cohen's kappa with the others: the mean over their pairs, weighted by shared items.
    annotator_kappa: dict = field(default_factory=dict)
    resamples: int = RESAMPLES
    seed: int = SEED

    def to_dict(self) -> dict:
        return {
            "annotations": self.annotations, "items": self.items, "items_overlapping": self.items_overlapping,
            "annotators": self.annotators, "percent_agreement": self.percent_agreement.to_dict(),
            "fleiss_kappa": self.fleiss_kappa.to_dict(), "fleiss_raters": self.fleiss_raters,
            "krippendorff_alpha": self.krippendorff_alpha.to_dict(),
            "pairs": [p.to_dict() for p in self.pairs],
            "annotator_kappa": [{"annotator": a, **e.to_dict()} for a, e in self.annotator_kappa.items()],
            "resamples": self.resamples, "seed": self.seed,
        }


def agreement_report(rows, resamples: int = RESAMPLES, seed: int = SEED) -> AgreementReport:
    """Every agreement figure for `rows` of (item_id, annotator_id, label), with 95% intervals.

    An annotator's second label for the same item is ignored (callers pass one round per item)."""
    table = _Table.from_rows(rows)
    if len(table.raters) < 2 or table.n_items == 0:
        reason = NEEDS_TWO_ANNOTATORS if len(table.raters) < 2 else NO_OVERLAP
        return _undefined_report(table, reason, resamples, seed)
    features = _Features(table)
    boot = _bootstrap(features, table.n_items, resamples, seed)
    point = features.figures(np.asarray(features.matrix.sum(axis=0)).reshape(1, -1))
    # Fleiss and alpha: the libraries' values; the same formulas as `figures` (the tests check).
    point["fleiss"], point["alpha"] = [_fleiss_point(table, features)], [_alpha_point(table, features)]

    def estimates(name: str, n_items, undefined_reason: str) -> list[Estimate]:
        return _estimates(point[name], boot[name], n_items, undefined_reason)

    n = [table.n_items]
    pair_kappa = estimates("pair_kappa", features.pair_n, PAIR_ONE_CATEGORY)
    pairs = [
        PairAgreement(
            first=table.raters[a], second=table.raters[b], shared_items=int(features.pair_n[p]),
            percent=float(point["pair_percent"][0, p]), kappa=pair_kappa[p],
        )
        for p, (a, b) in enumerate(features.pair_raters)
    ]
    annotator_kappa = estimates("annotator_kappa", features.annotator_shared, ANNOTATOR_ONE_CATEGORY)
    return AgreementReport(
        annotations=table.n_rows, items=table.n_items_all, items_overlapping=table.n_items,
        annotators=len(table.raters),
        percent_agreement=estimates("percent", n, ONE_CATEGORY)[0],
        fleiss_kappa=estimates("fleiss", [features.fleiss_items], ONE_CATEGORY)[0],
        fleiss_raters=features.fleiss_m,
        krippendorff_alpha=estimates("alpha", n, ONE_CATEGORY)[0],
        pairs=pairs,
        annotator_kappa={
            annotator: estimate if shared else Estimate(value=None, reason=NO_SHARED_ITEMS)
            for annotator, estimate, shared in zip(
                table.raters, annotator_kappa, features.annotator_shared, strict=True
            )
        },
        resamples=resamples, seed=seed,
    )


# --- the item table ---------------------------------------------------------------------------


def _encode(values) -> tuple[np.ndarray, list]:
    """Dense codes 0..k-1 and the original values by code."""
    as_array = np.asarray(values) if values and isinstance(values[0], (int, np.integer)) else None
    if as_array is not None and as_array.ndim == 1 and as_array.dtype.kind in "iu":
        uniques, codes = np.unique(as_array, return_inverse=True)  # ids from the database: fast path
        return codes.astype(np.int64), uniques.tolist()
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


@dataclass
class _Table:
    """Rows as codes, sorted by (item, rater), restricted to items with two or more raters."""

    item: np.ndarray
    rater: np.ndarray
    label: np.ndarray
    raters: list  # annotator ids by code (every annotator seen, overlapping or not)
    n_labels: int
    n_items: int  # overlapping items: the ones every figure is computed on
    n_items_all: int
    n_rows: int

    @classmethod
    def from_rows(cls, rows) -> "_Table":
        rows = list(rows)
        items, _ = _encode([r[0] for r in rows])
        rater, raters = _encode([r[1] for r in rows])
        label, labels = _encode([r[2] for r in rows])
        # One label per (item, rater): the first one given.
        _, first = np.unique(items * max(len(raters), 1) + rater, return_index=True)
        first.sort()
        items, rater, label = items[first], rater[first], label[first]
        order = np.lexsort((rater, items))
        items, rater, label = items[order], rater[order], label[order]
        per_item = np.bincount(items) if len(items) else np.zeros(0, np.int64)
        keep = per_item[items] >= 2
        overlapping, item = np.unique(items[keep], return_inverse=True)
        return cls(
            item=item.astype(np.int64), rater=rater[keep], label=label[keep], raters=raters,
            n_labels=len(labels), n_items=len(overlapping), n_items_all=int(np.count_nonzero(per_item)),
            n_rows=len(first),
        )

    def value_counts(self) -> np.ndarray:
        """items x labels: how many annotators gave each label to each item."""
        flat = np.bincount(self.item * self.n_labels + self.label, minlength=self.n_items * self.n_labels)
        return flat.reshape(self.n_items, self.n_labels)

    def raters_per_item(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)


def _fleiss_point(table: _Table, features: "_Features") -> float | None:
    # The subjects x categories table `aggregate_raters` would build, by one bincount: it loops over
    # subjects in Python (a quarter of a second at 50k items). The tests check the two agree.
    counts = table.value_counts()[features.in_fleiss]
    if np.count_nonzero(counts.sum(axis=0)) < 2:
        return None
    return float(fleiss_kappa(counts, method="fleiss"))


def _alpha_point(table: _Table, features: "_Features") -> float | None:
    counts = table.value_counts().astype(np.float64)
    if np.count_nonzero(counts.sum(axis=0)) < 2:
        return None  # the package refuses a one-value domain; alpha is undefined there anyway
    if table.n_items * table.n_labels**2 > _BATCH_CELLS:
        # The package builds an items x values x values array: with the many distinct label sets of
        # a multi-label project that is gigabytes. The same formula from the column sums instead.
        return float(features.figures(np.asarray(features.matrix.sum(axis=0)).reshape(1, -1))["alpha"][0])
    return float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))


# --- per-item quantities whose sums give every figure -----------------------------------------


class _Features:
    """A sparse items x columns matrix; every figure is a formula of its column sums, so the point
    estimate uses the plain sums and a bootstrap resample the sums weighted by draws per item.

    Columns: [1, P_u, A_u, n_u1..n_uC] | Fleiss [in set, P_i, n_i1..n_iC] |
    per annotator pair p [shared, agreed, first's labels 1..C, second's labels 1..C], where
    n_uc = labels c on item u, m_u = labels on u, P_u = sum_c n_uc (n_uc - 1) / (m_u (m_u - 1)) is
    the item's share of agreeing pairs, and A_u = sum_c n_uc (n_uc - 1) / (m_u - 1) its agreeing
    pairable values (the diagonal of Krippendorff's coincidence matrix)."""

    def __init__(self, table: _Table):
        self.C = C = table.n_labels
        m = table.raters_per_item().astype(np.float64)
        counts = sparse.csr_matrix(
            (np.ones(len(table.item)), (table.item, table.label)), shape=(table.n_items, C)
        )
        counts.sum_duplicates()
        agreeing_pairs = np.asarray(counts.multiply(counts).sum(axis=1)).ravel() - m
        share_agreeing = agreeing_pairs / (m * (m - 1))
        self.fleiss_m = _most_common(table.raters_per_item())
        self.in_fleiss = m == self.fleiss_m
        self.fleiss_items = int(self.in_fleiss.sum())
        in_fleiss = self.in_fleiss.astype(np.float64)
        blocks = [
            _column(np.ones(table.n_items)), _column(share_agreeing), _column(agreeing_pairs / (m - 1)),
            counts, _column(in_fleiss), _column(in_fleiss * share_agreeing), sparse.diags(in_fleiss) @ counts,
        ]
        self.pair_base = 3 + C + 2 + C
        blocks.append(self._pair_block(table))
        self.matrix = sparse.hstack(blocks, format="csr")

    def _pair_block(self, table: _Table):
        """Every pair of annotators within each item: rows are sorted by item, then annotator, so
        the pairs are rows i and i + d of the same item, d = 1 .. m_u - 1."""
        C, R = self.C, len(table.raters)
        most = int(table.raters_per_item().max())
        offsets = range(1, most)
        first = np.concatenate([np.nonzero(table.item[:-d] == table.item[d:])[0] for d in offsets])
        second = np.concatenate([np.nonzero(table.item[:-d] == table.item[d:])[0] + d for d in offsets])
        key = table.rater[first] * R + table.rater[second]
        pair_keys, pair = np.unique(key, return_inverse=True)
        self.pair_raters = [(int(k // R), int(k % R)) for k in pair_keys]
        self.n_pairs = P = len(pair_keys)
        self.stride = stride = 2 + 2 * C
        self.pair_n = np.bincount(pair, minlength=P)
        ends = np.concatenate([pair_keys // R, pair_keys % R])
        # pairs x annotators, 1 where the annotator is one of the pair: sums pair figures per person.
        self.incidence = sparse.csr_matrix((np.ones(2 * P), (np.tile(np.arange(P), 2), ends)), shape=(P, R))
        self.annotator_shared = np.bincount(ends, weights=np.tile(self.pair_n, 2), minlength=R)
        la, lb, item = table.label[first], table.label[second], table.item[first]
        base = pair * stride
        cols = np.concatenate([base, base + 1, base + 2 + la, base + 2 + C + lb])
        ones = np.ones(len(pair))
        data = np.concatenate([ones, (la == lb).astype(np.float64), ones, ones])
        return sparse.csr_matrix((data, (np.tile(item, 4), cols)), shape=(table.n_items, P * stride))

    def figures(self, sums: np.ndarray) -> dict[str, np.ndarray]:
        """Every figure from column sums, one row per resample (NaN where undefined)."""
        C = self.C
        values = sums[:, 3:3 + C]
        n = values.sum(axis=1)
        disagreeing = (n - 1) * (n - sums[:, 2])  # (n - 1) * off-diagonal coincidences
        start = 3 + C
        fleiss_items, fleiss_counts = sums[:, start], sums[:, start + 2:start + 2 + C]
        p = fleiss_counts / np.maximum(fleiss_items * self.fleiss_m, 1)[:, None]
        chance = (p * p).sum(axis=1)
        pair_kappa, pair_percent, pair_shared = self._pairs(sums)
        # Each annotator's kappa with the others, weighted by shared items, undefined pairs left out.
        weight = np.where(np.isfinite(pair_kappa), pair_shared, 0.0)
        weighted = np.asarray(self.incidence.T @ (np.nan_to_num(pair_kappa) * weight).T).T
        return {
            "percent": _ratio(sums[:, 1], sums[:, 0]),
            "alpha": 1.0 - _ratio(disagreeing, n * n - (values * values).sum(axis=1)),
            "fleiss": _ratio(_ratio(sums[:, start + 1], fleiss_items) - chance, 1.0 - chance),
            "pair_kappa": pair_kappa,
            "pair_percent": pair_percent,
            "annotator_kappa": _ratio(weighted, np.asarray(self.incidence.T @ weight.T).T),
        }

    def _pairs(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cohen's kappa, percent agreement and shared items per pair: (resamples x pairs) each."""
        block = sums[:, self.pair_base:].reshape(len(sums), self.n_pairs, self.stride)
        n, agreed = block[..., 0], block[..., 1]
        first, second = block[..., 2:2 + self.C], block[..., 2 + self.C:]
        observed = _ratio(agreed, n)
        chance = _ratio(np.einsum("bpc,bpc->bp", first, second), n * n)
        return _ratio(observed - chance, 1.0 - chance), observed, n


def _column(values: np.ndarray):
    return sparse.csr_matrix(values.reshape(-1, 1))


def _most_common(per_item: np.ndarray) -> int:
    """The most common number of raters per item (ties: the larger, more raters per item)."""
    counts = np.bincount(per_item)
    return int(len(counts) - 1 - np.argmax(counts[::-1]))


def _ratio(numerator, denominator) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is (numerically) zero."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=np.abs(denominator) > 1e-12)
    return out


# --- bootstrap --------------------------------------------------------------------------------


def _bootstrap(features: _Features, n_items: int, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Every figure for each resample of the items, drawn with replacement: (resamples, ...) arrays.

    A batch of resamples is an items x batch matrix of draw counts, so its column sums are one
    sparse product; batches keep the resampled sums (batch x columns) near 32 MB."""
    rng = np.random.default_rng(seed)
    transposed = features.matrix.T.tocsr()
    batch = max(1, min(resamples, _BATCH_CELLS // max(features.matrix.shape[1], n_items)))
    parts: dict[str, list] = {}
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        draws = rng.integers(0, n_items, size=(size, n_items), dtype=np.int64)
        draws *= size
        draws += np.arange(size)[:, None]
        weights = np.bincount(draws.ravel(), minlength=n_items * size).reshape(n_items, size)
        sums = (transposed @ weights.astype(np.float64)).T
        for name, values in features.figures(sums).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _percentile_intervals(resampled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5th and 97.5th percentiles of each column over its defined resamples (linear
    interpolation, as np.percentile); NaN where fewer than MIN_DEFINED_SHARE are defined."""
    ordered = np.sort(resampled, axis=0)  # NaN sorts last
    defined = np.isfinite(resampled).sum(axis=0)
    columns = np.arange(resampled.shape[1])
    bounds = []
    for q in (0.025, 0.975):
        position = q * np.maximum(defined - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(defined - 1, 0))
        fraction = position - below
        value = ordered[below, columns] * (1 - fraction) + ordered[above, columns] * fraction
        bounds.append(np.where(defined >= MIN_DEFINED_SHARE * len(resampled), value, np.nan))
    return bounds[0], bounds[1]


def _estimates(values, resampled: np.ndarray, n_items, undefined_reason: str) -> list[Estimate]:
    """One Estimate per column: `values` (point estimates), `resampled` (resamples x columns)."""
    values = np.asarray(values, dtype=float).reshape(-1)
    low, high = _percentile_intervals(resampled.reshape(len(resampled), -1))
    out = []
    for value, lo, hi, n in zip(values, low, high, np.asarray(n_items).reshape(-1), strict=True):
        n = int(n)
        if not np.isfinite(value):
            out.append(Estimate(value=None, n_items=n, reason=undefined_reason))
        elif n < MIN_ITEMS_FOR_INTERVAL:
            out.append(Estimate(value=float(value), n_items=n, reason=TOO_FEW_FOR_INTERVAL))
        elif not (np.isfinite(lo) and np.isfinite(hi)):
            out.append(Estimate(value=float(value), n_items=n, reason=UNSTABLE_INTERVAL))
        else:
            out.append(Estimate(value=float(value), low=float(lo), high=float(hi), n_items=n))
    return out


def _undefined_report(table: _Table, reason: str, resamples: int, seed: int) -> AgreementReport:
    missing = Estimate(value=None, reason=reason)
    return AgreementReport(
        annotations=table.n_rows, items=table.n_items_all, items_overlapping=table.n_items,
        annotators=len(table.raters), percent_agreement=missing, fleiss_kappa=missing, fleiss_raters=None,
        krippendorff_alpha=missing,
        annotator_kappa={a: Estimate(value=None, reason=reason) for a in table.raters},
        resamples=resamples, seed=seed,
    )


def _json_number(x) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), 4)
