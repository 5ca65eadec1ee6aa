"""Two-sample drift of a recent window against a reference, one feature (or the prediction) at a time.

Numeric features: :class:`PSI`, :class:`KS`, :class:`Wasserstein`, :class:`JS`.
Categorical features: :class:`Chi2` and :class:`JS` (``categorical=True``), also :class:`PSI`.
The prediction or score distribution is one more column handed to the same classes.

The reference is a fixed sample (``reference=[...]``), a profile made from one offline
(``reference=reference_profile(sample)``: bins and counts, no values), or the first
``reference_size`` values of the stream. It is reduced to a profile: bin edges at its quantiles (numeric; ``bins`` bins,
right-closed, the outer two open-ended) or its ``max_categories`` most frequent categories plus
an "other" bucket that also takes categories never seen in the reference (categorical), and
its count per bin.

The current side is a :class:`~detectors.windows.BlockCounts` over the same bins: memory
``O(bins * blocks)`` whatever the window length, mergeable across partitions (:meth:`merge`).
What is exact and what is approximate on bins:

* PSI, JS and chi-squared are defined on bins: exact.
* KS on bins compares the two ECDFs at the bin edges only, so its D is a lower bound of the
  sample D, equal when every observed value is an edge (discrete features with fewer distinct
  values than bins); its p-value is Smirnov's asymptotic one (scipy's ``method="asymp"``).
* Wasserstein on bins assumes values spread uniformly within each bin, the two open-ended bins
  reaching to the smallest and largest value ever seen; the error shrinks with the bin width,
  except where a heavy tail reaches beyond the reference's range (its mass is then spread
  evenly up to the largest value, not concentrated near the edge as it is).

``exact=True`` (KS, Wasserstein, PSI, JS on numeric features) keeps the raw reference and the raw
last ``window`` values instead (memory ``O(window)``, not mergeable) and gives scipy's numbers:
``scipy.stats.ks_2samp`` and ``scipy.stats.wasserstein_distance`` on the same samples.

Conventions: ``PSI = sum((q - p) * ln(q / p))`` with both proportions floored at
``PSI_EPSILON = 1e-4`` so that empty bins stay finite; JS is the Jensen-Shannon *distance*
(square root of the divergence) in base 2, so in [0, 1]; chi-squared is the test of homogeneity
of the 2 x K table (reference counts, current counts) over the bins either side uses, without
continuity correction. Tests (KS, chi-squared) fire when ``p_value < threshold`` (default 0.01);
distances fire when ``statistic > threshold``. Nothing fires before ``min_samples`` values are in
the window. With a ``level`` instead of a threshold (how a model's false-alarm budget reaches
its detectors), a test fires when ``p_value < level`` and a distance past the threshold that its
own reference exceeds with probability ``level`` when nothing drifted
(:func:`~detectors.calibration.null_threshold`, computed when first needed), judged once its
window is full. A binned KS result carries its p-value deferred (:class:`KSPValue`): computed when
read, while ``fired`` is decided from the critical distance.

Many features at once: a model has one detector per feature and kind. :func:`add_columns` feeds
a matrix (one column per detector) and :func:`results` measures them; detectors whose windows
are in step are binned and counted together whatever their kind and bins (a feature's PSI and
KS windows share one table), those of a kind and number of bins measured as one array
operation, and each ends exactly as ``add_many`` / ``result`` would leave it on its own.
"""
from __future__ import annotations

import itertools
import math
import operator
from functools import lru_cache
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from . import kinds
from .base import InvalidInput, Result, as_finite_array, constructor_arguments, plain_label
from .calibration import null_threshold
from .windows import BlockCounts, CountedCodes, CountWindow

PSI_EPSILON = 1e-4
#: chunks of a numeric reference still filling joined into one array when this many wait
_PENDING_CHUNKS = 8


# -- statistics on two count vectors over the same bins ---------------------------------------

def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``current`` against ``reference`` (counts per bin)."""
    return float(_psi_rows(reference, current, epsilon))


def _psi_rows(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """:func:`psi` of each row (counts along the last axis)."""
    return _psi_against(_psi_reference(reference, epsilon), current, current.sum(axis=-1), epsilon)


def _psi_reference(reference: np.ndarray, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """The reference's side of :func:`_psi_rows`: each row's proportions, floored at epsilon
    (what a detector measured at every evaluation point derives once)."""
    return np.maximum(reference / reference.sum(axis=-1, keepdims=True), epsilon)


def _psi_against(p: np.ndarray, current: np.ndarray, sizes: np.ndarray, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """:func:`_psi_rows` from :func:`_psi_reference` and the windows' sizes
    (``current.sum(axis=-1)``)."""
    q = np.maximum(current / sizes[..., None], epsilon)
    ratio = q / p
    np.log(ratio, out=ratio)
    q -= p
    q *= ratio
    return q.sum(axis=-1)


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two histograms."""
    return float(_js_rows(reference, current))


def _js_rows(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """:func:`js_distance` of each row."""
    return jensenshannon(reference / reference.sum(axis=-1, keepdims=True),
                         current / current.sum(axis=-1, keepdims=True), base=2, axis=-1)


def chi2_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity of the 2 x K table; bins empty on both sides are left out."""
    table = np.vstack((reference, current)).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1))


def ks_from_counts(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """KS distance between the ECDFs at the bin edges, and Smirnov's asymptotic p-value."""
    gap, p_value = ks_distance(reference, current)
    return gap, p_value()


def ks_distance(reference: np.ndarray, current: np.ndarray) -> tuple[float, "KSPValue"]:
    """The KS distance between the ECDFs at the bin edges, and its p-value deferred."""
    gap, en = _ks_rows(reference, current)
    return float(gap), KSPValue(float(gap), float(en))


def _ks_rows(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The KS distance of each row, and each row's effective size for the p-value."""
    return _ks_against(_ks_reference(reference), current, current.sum(axis=-1))


def _ks_reference(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's side of :func:`_ks_rows`: each row's ECDF at the bin edges, and its size."""
    n_ref = reference.sum(axis=-1, keepdims=True)
    return np.cumsum(reference, axis=-1) / n_ref, n_ref


def _ks_against(derived: tuple[np.ndarray, np.ndarray], current: np.ndarray,
                sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_ks_rows` from :func:`_ks_reference` and the windows' sizes (``current.sum(axis=-1)``)."""
    ecdf, n_ref = derived
    n_cur = sizes[..., None]
    gaps = np.cumsum(current, axis=-1) / n_cur
    gaps -= ecdf  # |b - a| is |a - b| exactly in floating point
    np.abs(gaps, out=gaps)
    en = np.maximum(1.0, np.round(n_ref * n_cur / (n_ref + n_cur)))[..., 0]  # scipy's asymp size, >= 1
    return gaps.max(axis=-1), en


class KSPValue:
    """Smirnov's p-value ``kstwo.sf(gap, en)`` of a KS distance, computed when first asked for.

    scipy's exact ``kstwo.sf`` costs far more than the distance, and a monitor needs few of the
    p-values it could compute: a rule or a multiple-testing correction only asks whether
    ``p < level``. :meth:`below` answers that from a narrow band around the critical distance
    (found once per ``(level, en)``); only a distance inside the band needs the p-value itself.

    Parameters
    ----------
    gap : float
        The KS distance, in [0, 1].
    en : float
        The effective sample size ``round(n * m / (n + m))`` of samples of sizes n and m.

    Examples
    --------
    >>> from scipy import stats
    >>> p = KSPValue(0.1, 500.0)
    >>> p.below(0.01), bool(p() == stats.kstwo.sf(0.1, 500.0))
    (True, True)
    """

    __slots__ = ("gap", "en", "_value")

    def __init__(self, gap: float, en: float):
        self.gap, self.en = round(gap, 12), en  # rounded: equal distances share a cache entry
        self._value: float | None = None

    def __call__(self) -> float:
        if self._value is None:
            self._value = _kolmogorov_sf(self.gap, self.en)
        return self._value

    def below(self, level: float) -> bool:
        if self._value is None:
            low, high = _ks_critical_band(level, self.en)
            if self.gap <= low:  # sf falls as the distance grows: sf(gap) >= sf(low) >= level
                return False
            if self.gap >= high:
                return True
        return self() < level


@lru_cache(maxsize=1 << 16)
def _kolmogorov_sf(gap: float, en: float) -> float:
    """``kstwo.sf``, remembered: with window counts from a few hundred to a few thousand values
    the distance is a multiple of 1/count and the effective size takes few values, so a monitor
    asks the same pairs again and again."""
    return float(np.clip(stats.kstwo.sf(gap, en), 0, 1))


@lru_cache(maxsize=1 << 12)
def _ks_critical_band(level: float, en: float) -> tuple[float, float]:
    """Distances ``(low, high)`` with ``kstwo.sf(low) >= level > kstwo.sf(high)``, checked with
    sf itself: ``kstwo.isf``'s root is loose (``sf(isf(1e-6, 141), 141)`` is 1.005e-6). Found
    by a few sf calls, so remembered per ``(level, en)``: a full window goes through few
    effective sizes. An empty band (nan) when none is found: every p-value is then computed."""
    centre = float(stats.kstwo.isf(level, en))
    if math.isfinite(centre):
        for width in (1e-3, 1e-2, 1e-1):
            low, high = round(centre * (1 - width), 12), round(min(1.0, centre * (1 + width)), 12)
            if _kolmogorov_sf(low, en) >= level > _kolmogorov_sf(high, en):
                return low, high
    return math.nan, math.nan


@lru_cache(maxsize=1 << 12)
def _ks_sure_band(level: float, en: float) -> tuple[float, float]:
    """:func:`_ks_critical_band` narrowed by 1e-12 each side: a distance at or below the first
    is surely not below ``level``, one at or above the second surely is (see
    :meth:`_KSPValues.below`); nan when the band is."""
    low, high = _ks_critical_band(level, en)
    return low - 1e-12, high + 1e-12


def wasserstein_from_counts(reference: np.ndarray, current: np.ndarray, boundaries: np.ndarray) -> float:
    """Earth mover's distance between two histograms, values uniform within each bin.

    ``boundaries`` has one more entry than the counts: the bins are its consecutive intervals.
    Between two boundaries the CDF difference is linear, so ``|F - G|`` integrates exactly.
    """
    return float(_wasserstein_rows(np.asarray(reference)[None], np.asarray(current)[None], boundaries)[0])


def _wasserstein_rows(reference: np.ndarray, current: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """:func:`wasserstein_from_counts` of each row."""
    return _bin_integrals(reference, current) @ np.diff(boundaries)


#: the last calibration draws' bin integrals: features on equal reference counts measure the
#: same draws (see ``null_threshold``) and differ only in their bins' widths
_last_integrals: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []


def _bin_integrals(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per row and bin, the integral of ``|F - G|`` over the bin for a bin of width 1 (the two
    CDFs linear within it); Wasserstein is their sum weighted by the bins' widths."""
    for kept_reference, kept_current, integrals in _last_integrals:
        if kept_reference is reference and kept_current is current:
            return integrals
    cdf_gap = (np.cumsum(reference, axis=-1) / reference.sum(axis=-1, keepdims=True)
               - np.cumsum(current, axis=-1) / current.sum(axis=-1, keepdims=True))
    gap = np.concatenate((np.zeros(cdf_gap.shape[:-1] + (1,)), cdf_gap), axis=-1)
    left, right = gap[..., :-1], gap[..., 1:]
    same_sign = left * right >= 0
    magnitude = np.abs(left) + np.abs(right)
    crossing = np.divide(left ** 2 + right ** 2, 2 * magnitude, out=np.zeros_like(magnitude), where=magnitude > 0)
    integrals = np.where(same_sign, magnitude / 2, crossing)
    if not reference.flags.writeable and not current.flags.writeable:  # the calibration's draws
        _last_integrals[:] = [(reference, current, integrals)]
    return integrals


# -- bins ---------------------------------------------------------------------------------------

class NumericBins:
    """Right-closed bins at the reference's quantiles; ties in the reference merge bins.

    Parameters
    ----------
    edges : array-like
        Sorted inner edges; bin ``k`` holds the values in ``(edges[k - 1], edges[k]]``, the first
        and last bins are open-ended.

    Examples
    --------
    >>> NumericBins([0.0, 1.0]).codes(np.array([-1.0, 0.0, 0.5, 7.0])).tolist()
    [0, 0, 1, 2]
    """

    def __init__(self, edges: Any):
        # a copy, read-only: a lookup made from the edges (see codes_of_columns) stays theirs
        self.edges = np.array(edges, dtype=np.float64)
        self.edges.flags.writeable = False
        self.n_bins = len(self.edges) + 1
        #: the last lookup made for a list of bins led by these (see codes_of_columns)
        self._column_lookup: _ColumnLookup | None = None

    @classmethod
    def from_sample(cls, sample: np.ndarray, bins: int) -> "NumericBins":
        return cls(np.unique(np.quantile(sample, np.linspace(0, 1, bins + 1)[1:-1])))

    def codes(self, values: np.ndarray) -> np.ndarray:
        """The bin of each value: how many edges lie below it (the one definition of a bin)."""
        return self.edges.searchsorted(values, side="left")

    @staticmethod
    def codes_of_columns(bins: list["NumericBins"], columns: Any) -> np.ndarray:
        """``np.stack([bins[j].codes(columns[j]) for j])`` bit for bit, for a (k, n) array: a few
        array operations for all the columns instead of a binary search per value (see
        :class:`_ColumnLookup`; the lookup is kept by ``bins[0]`` until the edges change).

        >>> bins = [NumericBins([0.0, 1.0]), NumericBins([-5.0])]
        >>> NumericBins.codes_of_columns(bins, np.array([[-1.0, 0.0, 0.5, 7.0], [-5.0, -4.0, 1e300, -1e300]]))
        array([[0, 0, 1, 2],
               [0, 1, 1, 0]])
        """
        columns = np.asarray(columns, dtype=np.float64)
        if columns.ndim != 2 or len(columns) != len(bins) or not bins:
            raise ValueError(f"need one row of values per bins, got {len(bins)} bins and shape {columns.shape}")
        lead = bins[0]
        if lead._column_lookup is None or not lead._column_lookup.serves(bins):
            lead._column_lookup = _ColumnLookup(bins)
        return lead._column_lookup.codes(bins, columns)

    def state(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumericBins) and np.array_equal(self.edges, other.edges)


_EDGES = operator.attrgetter("edges")


class _ColumnLookup:
    """Bins the values of many columns, each column with its own :class:`NumericBins`, in a few
    array operations, exactly as ``NumericBins.codes`` does.

    Why: ``searchsorted`` is a binary search per value whose branches the CPU cannot predict on
    a stream's values, and binning is most of the work of feeding a model's drift detectors.

    How: each column gets a grid of equal cells from its first edge to its last, one cell more
    each side for the values beyond, and a table giving for each cell the number of edges in
    earlier cells. A value's cell is a multiply and an add away; the table gives its candidate
    code, one comparison with the next edge moves it past an edge inside the cell. Every code
    ``k`` is then verified against the edges, ``edges[k - 1] < v <= edges[k]`` (``-inf`` and
    ``+inf`` beyond the ends): in order, the edges leave one ``k`` that passes, the number of
    edges below ``v``, which is what ``searchsorted`` gives. A column with any value that fails
    (two edges in one cell, values near the float limits, nan) is binned again by
    ``NumericBins.codes``: floating-point rounding in the cells can make a candidate wrong,
    never a code. The grid is fine enough that a cell rarely holds two edges (half the smallest
    gap between edges, at most ``MAX_CELLS`` cells), and the tables of all columns are laid end
    to end so that one gather serves every column.
    """

    MAX_CELLS = 4096
    #: values binned per pass: the work arrays stay in the CPU's cache (and out of fresh pages)
    CHUNK = 1 << 15

    def __init__(self, bins: list[NumericBins]):
        self.edges = [b.edges for b in bins]
        cells = [self._cell_count(e) for e in self.edges]
        table_starts = np.cumsum([0] + [c + 2 for c in cells])[:-1]
        edge_starts = np.cumsum([0] + [len(e) + 2 for e in self.edges])[:-1]
        #: per column: [-inf, edges..., +inf], laid end to end
        self.padded = np.concatenate([self._padded(e) for e in self.edges])
        self.edge_starts = edge_starts[:, None]
        grids = [self._grid(e, c, start) for e, c, start in zip(self.edges, cells, table_starts)]
        self.scale, self.shift, self.low, self.high = (np.array(g)[:, None] for g in zip(*grids))
        self.table = np.concatenate([self._table(j, c) for j, c in enumerate(cells)])

    @staticmethod
    def _padded(edges: np.ndarray) -> np.ndarray:
        """``[-inf, edges..., +inf]``; all nan if the edges are not in order (nan among them):
        then ``searchsorted`` alone says what it does with them, as no code verifies."""
        padded = np.concatenate(([-np.inf], edges, [np.inf]))
        with np.errstate(over="ignore"):  # the gap between two edges near the largest floats is inf: in order
            in_order = (np.diff(padded) >= 0).all()
        return padded if in_order else np.full_like(padded, np.nan)

    @classmethod
    def _cell_count(cls, edges: np.ndarray) -> int:
        """Cells of half the smallest gap between edges, so that few cells hold two edges."""
        if len(edges) < 2:
            return 1
        with np.errstate(all="ignore"):
            wanted = 2 * (edges[-1] - edges[0]) / np.diff(edges).min()
        if not wanted < cls.MAX_CELLS:  # also equal edges (inf) and nan
            return cls.MAX_CELLS
        return max(1, int(wanted) + 1)

    @staticmethod
    def _grid(edges: np.ndarray, cells: int, start: int) -> tuple[float, float, float, float]:
        """``(scale, shift, low, high)``: a value's index in the end-to-end table is
        ``clip(v * scale + shift, low, high)`` truncated; the column's table is [low, high]."""
        first = edges[0] if len(edges) else 0.0
        with np.errstate(all="ignore"):
            scale = cells / (edges[-1] - first) if len(edges) > 1 else 0.0
            shift = start + 1 - first * scale
        if not (np.isfinite(scale) and np.isfinite(shift)):
            # edges too far apart for floats: one cell takes every value, and the verification
            # sends the values past the first edge to searchsorted
            scale, shift = 0.0, start + 1.0
        return scale, shift, float(start), float(start + cells + 1)

    def _table(self, j: int, cells: int) -> np.ndarray:
        """Column j's table: per cell, the index in ``padded`` of the edge before the cell's first
        value (the code if no edge lies in the cell)."""
        edges = self.edges[j]
        edge_cells = self._cells(edges[None, :], self.scale[j:j + 1], self.shift[j:j + 1],
                                 self.low[j:j + 1], self.high[j:j + 1])[0] - int(self.low[j, 0])
        before = np.searchsorted(edge_cells, np.arange(cells + 2), side="left")
        return self.edge_starts[j, 0] + before

    @staticmethod
    def _cells(values: np.ndarray, scale, shift, low, high) -> np.ndarray:
        """Each value's index in the table (the table's edges go through here too, so a cell
        boundary falls the same way for an edge and a value equal to it)."""
        with np.errstate(all="ignore"):  # overflow to inf, 0 * inf = nan: fmax/fmin take the bound
            position = np.multiply(values, scale)
            position += shift
        np.fmax(position, low, out=position)
        np.fmin(position, high, out=position)
        return position.astype(np.intp)

    def serves(self, bins: list[NumericBins]) -> bool:
        """Made from these bins' edges, in this order."""
        return len(bins) == len(self.edges) and all(map(operator.is_, map(_EDGES, bins), self.edges))

    def codes(self, bins: list[NumericBins], columns: np.ndarray) -> np.ndarray:
        """The codes of a (k, n) array, column j binned by ``bins[j]`` (the bins served)."""
        codes = np.empty(columns.shape, dtype=np.intp)
        step = max(1, self.CHUNK // max(1, columns.shape[1]))
        for start in range(0, len(columns), step):
            rows = slice(start, start + step)
            verified = self._candidates(columns[rows], rows, codes[rows])
            if not verified.all():
                for j in start + np.flatnonzero(~verified.all(axis=1)):
                    codes[j] = bins[j].codes(columns[j])
        return codes

    def _candidates(self, values: np.ndarray, rows: slice, out: np.ndarray) -> np.ndarray:
        """Candidate codes of columns ``rows`` into ``out``; returns where they are verified."""
        cells = self._cells(values, self.scale[rows], self.shift[rows], self.low[rows], self.high[rows])
        index = self.table.take(cells, mode="clip")  # index of the edge before the value, in padded
        following = self.padded[1:]
        edge = following.take(index, mode="clip")
        index += values > edge  # past the edge inside the cell
        following.take(index, mode="clip", out=edge)
        verified = values <= edge
        self.padded.take(index, mode="clip", out=edge)
        verified &= edge < values
        np.subtract(index, self.edge_starts[rows], out=out)
        return verified


class CategoryBins:
    """The reference's most frequent categories, then one "other / unseen" bucket.

    Parameters
    ----------
    categories : list
        The categories with a bin of their own, in bin order.

    Examples
    --------
    >>> CategoryBins(["a", "b"]).codes(np.array(["b", "z", "a"])).tolist()
    [1, 2, 0]
    """

    def __init__(self, categories: list[Any]):
        self.categories = [plain_label(c) for c in categories]
        self._codes = {c: i for i, c in enumerate(self.categories)}
        self.n_bins = len(self.categories) + 1

    @classmethod
    def from_sample(cls, sample: np.ndarray, max_categories: int) -> "CategoryBins":
        uniques, counts = np.unique(sample, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:max_categories]
        return cls([uniques[i] for i in order])

    def codes(self, values: np.ndarray) -> np.ndarray:
        if values.size == 0:
            return np.zeros(0, dtype=np.int64)
        uniques, inverse = np.unique(values, return_inverse=True)
        other = len(self.categories)
        lookup = np.array([self._codes.get(plain_label(u), other) for u in uniques], dtype=np.int64)
        return lookup[inverse.reshape(-1)]

    def state(self) -> dict[str, Any]:
        return {"categories": self.categories}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategoryBins) and self.categories == other.categories


def _bins_from_state(state: dict[str, Any]):
    return NumericBins(state["edges"]) if "edges" in state else CategoryBins(state["categories"])


def reference_profile(sample: Any, bins: int = 10, categorical: bool = False,
                      max_categories: int = 50) -> dict[str, Any]:
    """A reference reduced to what the binned detectors keep: bins and counts (JSON, small).

    Computed once offline (on training data, say), it can stand in for the sample:
    ``PSI(reference=profile)`` behaves as ``PSI(reference=sample)`` with the same ``bins``.

    >>> reference_profile([1.0, 2.0, 3.0, 4.0], bins=2)
    {'edges': [2.5], 'counts': [2, 2], 'range': [1.0, 4.0]}
    >>> reference_profile(["a", "b", "a"], categorical=True)
    {'categories': ['a', 'b'], 'counts': [2, 1, 0]}
    """
    if categorical:
        sample = np.asarray(sample)
        profile = CategoryBins.from_sample(sample, max_categories)
        return {**profile.state(), "counts": np.bincount(profile.codes(sample), minlength=profile.n_bins).tolist()}
    sample = as_finite_array(sample, "reference")
    profile = NumericBins.from_sample(sample, bins)
    return {**profile.state(), "counts": np.bincount(profile.codes(sample), minlength=profile.n_bins).tolist(),
            "range": [float(sample.min()), float(sample.max())]}


# -- detectors ----------------------------------------------------------------------------------

class _DriftDetector:
    kind: ClassVar[str]
    default_bins: ClassVar[int] = 10
    default_threshold: ClassVar[float | None]
    #: the threshold bounds a p-value (tests) rather than the statistic (distances)
    is_test: ClassVar[bool] = False
    allows_categorical: ClassVar[bool] = True
    allows_numeric: ClassVar[bool] = True
    #: the range of the values seen is kept up to date (Wasserstein's open-ended bins need it)
    tracks_range: ClassVar[bool] = False

    def __init__(self, reference: Any = None, reference_size: int = 1000, window: int = 1000,
                 blocks: int | None = None, bins: int | None = None, categorical: bool = False,
                 max_categories: int = 50, threshold: float | None = None, min_samples: int = 100,
                 exact: bool = False, level: float | None = None):
        if categorical and not self.allows_categorical:
            raise ValueError(f"{self.kind} works on numeric features only")
        if not categorical and not self.allows_numeric:
            raise ValueError(f"{self.kind} works on categorical features only (categorical = true)")
        if exact and categorical:
            raise ValueError("exact applies to numeric features (categorical bins are exact already)")
        if int(reference_size) < 1:
            raise ValueError(f"reference_size must be >= 1, got {reference_size!r}")
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        # The window slides by blocks of window / blocks events (10 unless said, fewer for a short window).
        blocks = min(10, int(window)) if blocks is None else int(blocks)
        if not exact and not 1 <= blocks <= int(window):
            raise ValueError(f"blocks must be between 1 and window ({window}), got {blocks!r}")
        self.reference_size, self.window, self.blocks = int(reference_size), int(window), blocks
        self.bins = int(bins if bins is not None else self.default_bins)
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins!r}")
        self.categorical, self.max_categories = bool(categorical), int(max_categories)
        self.min_samples, self.exact = int(min_samples), bool(exact)
        self.level = None if level is None else float(level)
        if self.level is None:
            threshold = self.default_threshold if threshold is None else threshold
        else:
            if not 0 < self.level < 1:
                raise ValueError(f"level must be in (0, 1), got {level!r}")
            if threshold is not None:
                raise ValueError("set threshold or level, not both (level calibrates the threshold)")
            if not self.is_test:
                if exact:
                    raise ValueError("a calibrated distance needs binned windows (exact = false)")
                # Calibrated for a full window, at the fewest values a full window holds (the
                # oldest block leaves whole); fewer values would be noisier than calibrated.
                block_size = -(-self.window // blocks)
                self.min_samples = max(self.min_samples, (blocks - 1) * block_size, 1)
                # The open-ended bins keep the reference's extent, which the calibration assumed.
                self.tracks_range = False
            threshold = self.level if self.is_test else None
        self.threshold = None if threshold is None else float(threshold)
        self.profile: NumericBins | CategoryBins | None = None
        self.reference_counts: np.ndarray | None = None
        self._references_stacked: "_ReferenceStack | None" = None  # see _stacked_references
        self._shape_groups: tuple[list, list[list[int]]] | None = None  # see add_columns
        self._foresight_layout: "_Layout | None" = None  # see _Layout.of
        self._split: "_Split | None" = None  # see _Split.of
        self._reference_raw: np.ndarray | None = None  # exact mode only
        self._pending: list[Any] = []  # first values of the stream, while they make the reference
        self._current = CountWindow(self.window) if self.exact else None
        self._low, self._high = np.inf, -np.inf  # range of all numeric values seen (Wasserstein)
        self._params_state: tuple | None = None  # see state
        self._reference_state: tuple | None = None
        if isinstance(reference, dict):
            self._set_profile(reference)
        elif reference is not None:
            self._set_reference(self._clean(reference))

    # values ---------------------------------------------------------------------------------
    def _clean(self, values: Any) -> np.ndarray:
        if not self.categorical:
            return as_finite_array(values)
        values = np.asarray(values)
        values = values.reshape(1) if values.ndim == 0 else values
        if values.dtype.kind == "f":
            as_finite_array(values)
        if values.dtype.kind == "O" and any(v is None for v in values):
            raise InvalidInput("categorical values contain None")
        return values

    def _set_reference(self, sample: np.ndarray) -> None:
        if len(sample) == 0:
            raise ValueError("the reference sample is empty")
        if self.categorical:
            self.profile = CategoryBins.from_sample(sample, self.max_categories)
        else:
            self.profile = NumericBins.from_sample(sample, self.bins)
            self._low, self._high = min(self._low, sample.min()), max(self._high, sample.max())
            if self.exact:
                self._reference_raw = np.sort(sample)
        self.reference_counts = np.bincount(self.profile.codes(sample), minlength=self.profile.n_bins)
        if not self.exact:
            self._current = BlockCounts(self.window, self.blocks, self.profile.n_bins)
        self._pending = []

    def _set_profile(self, profile: dict[str, Any]) -> None:
        """Take a reference profile (see :func:`reference_profile`) instead of a sample."""
        if self.exact:
            raise ValueError("exact needs the reference sample itself, not a profile")
        if ("categories" in profile) != self.categorical:
            raise ValueError("a categorical profile needs categorical = true, a numeric one false")
        self.profile = _bins_from_state(profile)
        self.reference_counts = np.asarray(profile["counts"], dtype=np.int64)
        if len(self.reference_counts) != self.profile.n_bins or self.reference_counts.sum() <= 0:
            raise ValueError(f"the profile needs {self.profile.n_bins} counts (one per bin), not all zero")
        if "range" in profile:
            self._low, self._high = (float(v) for v in profile["range"])
        self._current = BlockCounts(self.window, self.blocks, self.profile.n_bins)

    def update_many(self, values: Any) -> Result:
        self.add_many(values)
        return self.result()

    def add_many(self, values: Any) -> None:
        """``update_many`` without computing the result (a monitor reads it far less often)."""
        values = self._clean(values)
        if self.profile is None:
            held = self._pending_count()
            needed = self.reference_size - held
            if self.categorical:
                self._pending.extend(values[:needed].tolist())
            elif needed > 0 and len(values):
                # numbers wait as float64 copies, not Python floats (4 times smaller: a model
                # with many features holds reference_size of them per detector until it fills)
                self._pending.append(np.array(values[:needed], dtype=np.float64))
                if len(self._pending) >= _PENDING_CHUNKS:
                    # a model's share of a batch is a few values, fewer bytes than an array's
                    # header: the chunks are joined now and then, the copies amortized
                    self._pending = [np.concatenate(self._pending)]
            values = values[needed:]
            if self._pending_count() == self.reference_size:
                self._set_reference(np.asarray(self._pending) if self.categorical else np.concatenate(self._pending))
        if len(values):
            if self.tracks_range:
                self._low, self._high = min(self._low, values.min()), max(self._high, values.max())
            self._current.push(values if self.exact else self.profile.codes(values))

    def _pending_count(self) -> int:
        """Values held for the reference so far (a list of values, or of numeric chunks)."""
        return len(self._pending) if self.categorical else sum(map(len, self._pending))

    def update(self, value: Any) -> Result:
        return self.update_many([value])

    # result ---------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Values in the current window."""
        if self._current is None:
            return 0
        return len(self._current) if self.exact else self._current.count

    def current_counts(self) -> np.ndarray:
        if self.exact:
            return np.bincount(self.profile.codes(self._current.rows()[:, 0]), minlength=self.profile.n_bins)
        return self._current.totals()

    def result(self) -> Result:
        n = self.count
        if self.profile is None or n == 0:
            return Result(statistic=float("nan"), threshold=self.threshold, n=n)
        statistic, p_value = self._measure()
        return self._judged(statistic, p_value, n)

    def _judged(self, statistic: float, p_value: float | KSPValue | None, n: int) -> Result:
        """The result for a statistic measured over ``n`` values: fired past the threshold once
        ``min_samples`` values are in the window."""
        if n >= self.min_samples and self.threshold is None and self.level is not None:
            self.threshold = _calibrated_threshold(self)
        result = Result(statistic=float(statistic), threshold=self.threshold, p_value=p_value, n=n)
        if n >= self.min_samples and self.threshold is not None:
            result.fired = bool(result.p_value_below(self.threshold) if self.is_test else statistic > self.threshold)
        return result

    def _measure(self) -> tuple[float, float | KSPValue | None]:
        raise NotImplementedError

    #: the statistic (and p-values) of many detectors' counts at once, one row each; the kinds
    #: that define it are measured together by :func:`results`
    _measure_rows: ClassVar[Any] = None

    @staticmethod
    def _reference_rows(reference: np.ndarray) -> Any:
        """What :meth:`_measure_sized` needs of a stack of reference counts (a row per detector),
        derived once per stack (see :func:`_stacked_references`): the counts themselves here."""
        return reference

    @classmethod
    def _measure_sized(cls, derived: Any, current: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, Any]:
        """``_measure_rows(reference, current)`` from the reference's :meth:`_reference_rows`
        and the windows' sizes (``current.sum(axis=-1)``, which the caller knows already): the
        same numbers, without redoing per call what depends on the reference alone."""
        return cls._measure_rows(derived, current)

    def _statistic_rows(self, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
        """The statistic of each row of reference and window counts over this detector's bins
        (what :func:`~detectors.calibration.null_threshold` simulates)."""
        return self._measure_rows(reference, current)[0]

    def _calibration_key(self) -> bytes:
        """What the statistic depends on besides the counts (Wasserstein: the bins' extent)."""
        return b""

    def _binned(self) -> bool:
        """The reference is complete and the window counts bins (not exact)."""
        return self.profile is not None and not self.exact

    # merge and state -------------------------------------------------------------------------
    def merge(self, other: "_DriftDetector") -> "_DriftDetector":
        """One detector whose window holds both windows' values (same reference profile needed)."""
        if type(other) is not type(self) or other.params() != self.params():
            raise ValueError("can only merge detectors of the same kind and parameters")
        if self.exact or self.profile is None or other.profile is None:
            raise ValueError("can only merge binned detectors whose reference is complete")
        if self.profile != other.profile or not np.array_equal(self.reference_counts, other.reference_counts):
            raise ValueError("can only merge detectors built on the same reference")
        merged = type(self).from_state(self.state())
        merged._current = self._current.merge(other._current)
        merged._low, merged._high = min(self._low, other._low), max(self._high, other._high)
        return merged

    def params(self) -> dict[str, Any]:
        """Constructor arguments, without the reference sample (the state keeps its profile)."""
        params = {name: getattr(self, name) for name in constructor_arguments(type(self)) if name != "reference"}
        if self.level is not None:
            params["threshold"] = None  # derived from the level (the state keeps a calibrated one)
        return params

    def state(self) -> dict[str, Any]:
        """The detector as JSON. Shares its lists with the states made before and after it (read
        it, do not change it): a model checkpoints its detectors every second, and their
        parameters and reference, most of a detector's state, do not change once learned."""
        # each kept with what it was made from, and made again when that is replaced
        params = self._params_state
        if params is None or params[0] != self.threshold:
            params = self._params_state = (self.threshold, self.params())
        reference = self._reference_state
        if reference is None or reference[0] is not self.profile or reference[1] is not self.reference_counts \
                or reference[2] is not self._reference_raw:
            ready = self.profile is not None
            reference = self._reference_state = (self.profile, self.reference_counts, self._reference_raw, {
                "profile": self.profile.state() if ready else None,
                "reference_counts": self.reference_counts.tolist() if ready else None,
                "reference_raw": self._reference_raw.tolist() if self._reference_raw is not None else None})
        return {
            "kind": self.kind, "params": params[1],
            **reference[3],
            "pending": list(self._pending) if self.categorical else [v for chunk in self._pending for v in chunk.tolist()],
            "current": self._current.state() if self._current is not None else None,
            "range": [float(self._low), float(self._high)] if np.isfinite(self._low) else None,
            "threshold": self.threshold,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]):
        detector = cls(**state["params"])
        pending = list(state["pending"])
        detector._pending = pending if detector.categorical or not pending else [np.asarray(pending, dtype=np.float64)]
        if detector.level is not None:
            detector.threshold = state.get("threshold", detector.threshold)
        if state["range"] is not None:
            detector._low, detector._high = state["range"]
        if state["profile"] is not None:
            detector.profile = _bins_from_state(state["profile"])
            detector.reference_counts = np.asarray(state["reference_counts"], dtype=np.int64)
            if state["reference_raw"] is not None:
                detector._reference_raw = np.asarray(state["reference_raw"], dtype=np.float64)
            window_class = CountWindow if detector.exact else BlockCounts
            detector._current = window_class.from_state(state["current"])
        return detector


class PSI(_DriftDetector):
    """Population stability index over the reference's quantile bins (``PSI_EPSILON`` floor).

    ``PSI = sum((q - p) * ln(q / p))`` over the bins, ``p`` the reference's proportions and ``q``
    the window's, each floored at ``PSI_EPSILON`` so that an empty bin stays finite. Numeric or
    categorical values; fires when the statistic exceeds the threshold.

    Parameters
    ----------
    reference : array-like or dict, optional
        The reference sample, or its profile from :func:`reference_profile`; None takes the
        first ``reference_size`` values of the stream.
    reference_size : int, default 1000
        Values of the stream that make the reference when ``reference`` is None.
    window : int, default 1000
        Values in the current window.
    blocks : int, optional
        Blocks the window slides by (:class:`~detectors.windows.BlockCounts`): the oldest block
        leaves whole; None is ``min(10, window)``.
    bins : int, default 10
        Bins at the quantiles of a numeric reference (fewer where its values tie).
    categorical : bool, default False
        The values are categories (strings or ints), one bin per reference category.
    max_categories : int, default 50
        Categories kept from the reference, most frequent first; the others, and categories the
        reference never had, share one "other" bin.
    threshold : float, optional
        PSI above which the detector fires; default 0.2 (a common "significant shift").
    min_samples : int, default 100
        Values the window must hold before the detector may fire.
    exact : bool, default False
        Keep the raw reference and window instead of bin counts (numeric only): scipy's
        numbers on the samples, ``O(window)`` memory, not mergeable.
    level : float, optional
        A false-alarm probability per judgement instead of a threshold, in (0, 1): tests fire
        when ``p_value < level``, distances past the threshold their reference exceeds with
        that probability when nothing drifted (:func:`~detectors.calibration.null_threshold`).

    Attributes
    ----------
    threshold : float or None
        The level the result is compared with (calibrated when first needed with ``level``).
    profile : NumericBins or CategoryBins or None
        The reference's bins, None while the reference is still being collected.
    reference_counts : numpy.ndarray or None
        The reference's count per bin.
    count : int
        Values in the current window.

    Examples
    --------
    By hand, from a profile with one edge at 0 and half the reference on each side: a window with
    a quarter of its values at or below 0 has ``PSI = (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5)
    ln(0.75 / 0.5) = 0.2747``, above the default threshold 0.2.

    >>> psi = PSI(reference={"edges": [0.0], "counts": [50, 50]}, window=100, min_samples=1)
    >>> result = psi.update_many([-1.0] * 25 + [1.0] * 75)
    >>> round(result.statistic, 4), result.fired
    (0.2747, True)
    >>> psi.update(-1.0).n       # one more value opens a block; the oldest block of 10 leaves
    91

    From a reference sample: a shift of one standard deviation.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> psi_drift = PSI(reference=rng.normal(0, 1, 5000), window=2000)
    >>> round(psi_drift.update_many(rng.normal(0, 1, 2000)).statistic, 3)
    0.007
    >>> result = psi_drift.update_many(rng.normal(1, 1, 2000))
    >>> round(result.statistic, 2), result.fired
    (0.97, True)
    """

    kind = kinds.PSI
    default_threshold = 0.2

    def _measure(self):
        return psi(self.reference_counts, self.current_counts()), None

    @staticmethod
    def _measure_rows(reference, current):
        return _psi_rows(reference, current), None

    _reference_rows = staticmethod(_psi_reference)

    @staticmethod
    def _measure_sized(p, current, sizes):
        return _psi_against(p, current, sizes), None


class JS(_DriftDetector):
    """Jensen-Shannon distance (base 2) between reference and window histograms.

    The square root of the Jensen-Shannon divergence of the two bin proportions, in base 2, so
    in [0, 1] (``scipy.spatial.distance.jensenshannon(p, q, base=2)``). Numeric or categorical
    values; fires when the distance exceeds the threshold.

    Parameters
    ----------
    reference : array-like or dict, optional
        The reference sample, or its profile from :func:`reference_profile`; None takes the
        first ``reference_size`` values of the stream.
    reference_size : int, default 1000
        Values of the stream that make the reference when ``reference`` is None.
    window : int, default 1000
        Values in the current window.
    blocks : int, optional
        Blocks the window slides by (:class:`~detectors.windows.BlockCounts`): the oldest block
        leaves whole; None is ``min(10, window)``.
    bins : int, default 10
        Bins at the quantiles of a numeric reference (fewer where its values tie).
    categorical : bool, default False
        The values are categories (strings or ints), one bin per reference category.
    max_categories : int, default 50
        Categories kept from the reference, most frequent first; the others, and categories the
        reference never had, share one "other" bin.
    threshold : float, optional
        Distance above which the detector fires; default 0.1.
    min_samples : int, default 100
        Values the window must hold before the detector may fire.
    exact : bool, default False
        Keep the raw reference and window instead of bin counts (numeric only): scipy's
        numbers on the samples, ``O(window)`` memory, not mergeable.
    level : float, optional
        A false-alarm probability per judgement instead of a threshold, in (0, 1): tests fire
        when ``p_value < level``, distances past the threshold their reference exceeds with
        that probability when nothing drifted (:func:`~detectors.calibration.null_threshold`).

    Attributes
    ----------
    threshold : float or None
        The level the result is compared with (calibrated when first needed with ``level``).
    profile : NumericBins or CategoryBins or None
        The reference's bins, None while the reference is still being collected.
    reference_counts : numpy.ndarray or None
        The reference's count per bin.
    count : int
        Values in the current window.

    Examples
    --------
    Reference half "a", half "b"; the window a quarter each and half "c", a category the
    reference never had (its "other" bin), so the proportions are (0.5, 0.5, 0) against
    (0.25, 0.25, 0.5):

    >>> from scipy.spatial.distance import jensenshannon
    >>> js = JS(reference=["a"] * 50 + ["b"] * 50, categorical=True, min_samples=1)
    >>> round(js.update_many(["a", "b", "c", "c"]).statistic, 4)
    0.5579
    >>> round(float(jensenshannon([0.5, 0.5, 0], [0.25, 0.25, 0.5], base=2)), 4)
    0.5579
    """

    kind = kinds.JS
    default_threshold = 0.1

    def _measure(self):
        return js_distance(self.reference_counts, self.current_counts()), None

    @staticmethod
    def _measure_rows(reference, current):
        return _js_rows(reference, current), None


class Chi2(_DriftDetector):
    """Chi-squared test of homogeneity between reference and window category counts.

    The 2 x K table of reference and window counts over the bins either side uses, without
    continuity correction (``scipy.stats.chi2_contingency(table, correction=False)``). Categorical
    values, or numeric ones over quantile bins; fires when the p-value is below the threshold.

    Parameters
    ----------
    reference : array-like or dict, optional
        The reference sample, or its profile from :func:`reference_profile`; None takes the
        first ``reference_size`` values of the stream.
    reference_size : int, default 1000
        Values of the stream that make the reference when ``reference`` is None.
    window : int, default 1000
        Values in the current window.
    blocks : int, optional
        Blocks the window slides by (:class:`~detectors.windows.BlockCounts`): the oldest block
        leaves whole; None is ``min(10, window)``.
    bins : int, default 10
        Bins at the quantiles of a numeric reference (fewer where its values tie).
    categorical : bool, default False
        The values are categories (strings or ints), one bin per reference category.
    max_categories : int, default 50
        Categories kept from the reference, most frequent first; the others, and categories the
        reference never had, share one "other" bin.
    threshold : float, optional
        The p-value below which the detector fires; default 0.01.
    min_samples : int, default 100
        Values the window must hold before the detector may fire.
    exact : bool, default False
        Keep the raw window (numeric only); the statistic is the same, chi-squared being
        defined on bins.
    level : float, optional
        A false-alarm probability per judgement instead of a threshold, in (0, 1): tests fire
        when ``p_value < level``, distances past the threshold their reference exceeds with
        that probability when nothing drifted (:func:`~detectors.calibration.null_threshold`).

    Attributes
    ----------
    threshold : float or None
        The level the result is compared with (calibrated when first needed with ``level``).
    profile : NumericBins or CategoryBins or None
        The reference's bins, None while the reference is still being collected.
    reference_counts : numpy.ndarray or None
        The reference's count per bin.
    count : int
        Values in the current window.

    Examples
    --------
    A 60/40 reference against an 20/80 window, the same as scipy on the 2 x 2 table:

    >>> from scipy import stats
    >>> chi2 = Chi2(reference=["a"] * 60 + ["b"] * 40, categorical=True, min_samples=10)
    >>> result = chi2.update_many(["a"] * 20 + ["b"] * 80)
    >>> round(result.statistic, 2), result.p_value < 0.01, result.fired
    (33.33, True, True)
    >>> expected = stats.chi2_contingency([[60, 40], [20, 80]], correction=False)
    >>> bool(result.statistic == expected.statistic and result.p_value == expected.pvalue)
    True
    """

    kind = kinds.CHI2
    default_threshold = 0.01
    is_test = True
    allows_numeric = True

    def _measure(self):
        return chi2_test(self.reference_counts, self.current_counts())


class KS(_DriftDetector):
    """Two-sample Kolmogorov-Smirnov test (binned, or ``exact=True`` for scipy's numbers).

    Binned, the distance is the largest gap between the two ECDFs at the bin edges, a lower
    bound of the samples' distance, and the p-value Smirnov's asymptotic one
    (``scipy.stats.kstwo.sf(D, round(n * m / (n + m)))``), handed over deferred: computed when
    read (:class:`KSPValue`). Numeric values only; fires when the p-value is below the threshold.

    Parameters
    ----------
    reference : array-like or dict, optional
        The reference sample, or its profile from :func:`reference_profile`; None takes the
        first ``reference_size`` values of the stream.
    reference_size : int, default 1000
        Values of the stream that make the reference when ``reference`` is None.
    window : int, default 1000
        Values in the current window.
    blocks : int, optional
        Blocks the window slides by (:class:`~detectors.windows.BlockCounts`): the oldest block
        leaves whole; None is ``min(10, window)``.
    bins : int, default 100
        Bins at the quantiles of a numeric reference (fewer where its values tie).
    categorical : bool, default False
        Not supported: this statistic needs ordered values.
    max_categories : int, default 50
        Categories kept from the reference, most frequent first; the others, and categories the
        reference never had, share one "other" bin.
    threshold : float, optional
        The p-value below which the detector fires; default 0.01.
    min_samples : int, default 100
        Values the window must hold before the detector may fire.
    exact : bool, default False
        Keep the raw reference and window instead of bin counts (numeric only): scipy's
        numbers on the samples, ``O(window)`` memory, not mergeable.
    level : float, optional
        A false-alarm probability per judgement instead of a threshold, in (0, 1): tests fire
        when ``p_value < level``, distances past the threshold their reference exceeds with
        that probability when nothing drifted (:func:`~detectors.calibration.null_threshold`).

    Attributes
    ----------
    threshold : float or None
        The level the result is compared with (calibrated when first needed with ``level``).
    profile : NumericBins or CategoryBins or None
        The reference's bins, None while the reference is still being collected.
    reference_counts : numpy.ndarray or None
        The reference's count per bin.
    count : int
        Values in the current window.

    Examples
    --------
    By hand, from a profile with one edge at 0: the ECDFs at the edge are 0.5 (reference) and
    0.25 (window), so D = 0.25, with the effective size ``round(100 * 100 / 200) = 50``:

    >>> from scipy import stats
    >>> ks = KS(reference={"edges": [0.0], "counts": [50, 50]}, window=100, min_samples=1)
    >>> result = ks.update_many([-1.0] * 25 + [1.0] * 75)
    >>> result.statistic, bool(result.p_value == stats.kstwo.sf(0.25, 50)), result.fired
    (0.25, True, True)

    ``exact=True`` keeps the samples and gives scipy's test:

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> reference, current = rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)
    >>> ks = KS(reference=reference, window=200, exact=True)
    >>> bool(ks.update_many(current).p_value == stats.ks_2samp(reference, current).pvalue)
    True
    """

    kind = kinds.KS
    default_bins = 100
    default_threshold = 0.01
    is_test = True
    allows_categorical = False

    def _measure(self):
        if self.exact:
            result = stats.ks_2samp(self._reference_raw, self._current.rows()[:, 0])
            return float(result.statistic), float(result.pvalue)
        return ks_distance(self.reference_counts, self.current_counts())

    @staticmethod
    def _measure_rows(reference, current):
        gaps, sizes = _ks_rows(reference, current)
        return gaps, _KSPValues(gaps, sizes)

    _reference_rows = staticmethod(_ks_reference)

    @staticmethod
    def _measure_sized(derived, current, sizes):
        gap, en = _ks_against(derived, current, sizes)
        return gap, _KSPValues(gap, en)


class _KSPValues:
    """Each row's :class:`KSPValue`, made when the row is read (a timeline reads none), and
    whether each row's p-value is below a level, decided for all rows at once."""

    def __init__(self, gaps: np.ndarray, sizes: np.ndarray):
        self._gaps, self._sizes = gaps.ravel(), sizes.ravel()
        self.gaps, self.sizes = self._gaps.tolist(), self._sizes.tolist()

    def __getitem__(self, row: int) -> KSPValue:
        return KSPValue(self.gaps[row], self.sizes[row])

    def rows(self, start: int, stop: int) -> list[KSPValue]:
        """``[self[row] for row in range(start, stop)]``."""
        return list(map(KSPValue, self.gaps[start:stop], self.sizes[start:stop]))

    def below(self, levels: np.ndarray) -> np.ndarray:
        """``self[row].below(levels[row])`` for each row whose level is not nan (False for the
        others): the critical band found once per level and effective size, the p-value
        computed only for a distance inside its band. A distance within 1e-12 of the band's
        edge is rounded as KSPValue rounds it before it is compared (rounding moves it less)."""
        distinct = set(levels.tolist())
        judged = None  # every row judged (the usual judgement): nothing to mask
        if len(distinct) != 1 or math.isnan(next(iter(distinct))):
            judged = ~np.isnan(levels)
            distinct = set(levels[judged].tolist())
            if not distinct:
                return np.zeros(len(levels), dtype=bool)
        sizes = sorted(set(self.sizes))
        # (a nan size, which sorted() leaves anywhere in the list, takes the per-level path)
        if len(distinct) == 1 and not any(map(math.isnan, sizes)):
            # one level (the usual judgement: a budget's level for every test), no nan size: each
            # row's band looked up among its few effective sizes (sorted), in one search
            level, = distinct
            if len(sizes) == 1:  # windows in step: one size for all
                low, high = _ks_sure_band(level, sizes[0])
            else:
                bands = np.array([_ks_sure_band(level, size) for size in sizes])[np.searchsorted(sizes, self._sizes)]
                low, high = bands[:, 0], bands[:, 1]
        else:
            low, high = np.full(len(levels), np.nan), np.full(len(levels), np.nan)
            for level in sorted(distinct):
                rows = np.flatnonzero(levels == level)
                sizes, inverse = np.unique(self._sizes[rows], return_inverse=True)
                bands = np.array([_ks_sure_band(level, size) for size in sizes.tolist()])
                low[rows], high[rows] = bands[inverse, 0], bands[inverse, 1]
        gaps = self._gaps
        out = gaps >= high
        # the rest of the judged rows: near an edge of the band, inside it, or without a band (nan)
        unsure = gaps <= low
        if judged is not None:
            out &= judged
            unsure |= ~judged
        unsure |= out
        for row in np.flatnonzero(~unsure).tolist():
            out[row] = self[row].below(float(levels[row]))
        return out


class Wasserstein(_DriftDetector):
    """First Wasserstein (earth mover's) distance, in the feature's units.

    Binned, values are taken as spread evenly within each bin, the two open-ended bins reaching
    to the smallest and largest value seen; ``exact=True`` gives
    ``scipy.stats.wasserstein_distance`` on the samples. Numeric values only; fires when the
    distance exceeds the threshold.

    Parameters
    ----------
    reference : array-like or dict, optional
        The reference sample, or its profile from :func:`reference_profile`; None takes the
        first ``reference_size`` values of the stream.
    reference_size : int, default 1000
        Values of the stream that make the reference when ``reference`` is None.
    window : int, default 1000
        Values in the current window.
    blocks : int, optional
        Blocks the window slides by (:class:`~detectors.windows.BlockCounts`): the oldest block
        leaves whole; None is ``min(10, window)``.
    bins : int, default 100
        Bins at the quantiles of a numeric reference (fewer where its values tie).
    categorical : bool, default False
        Not supported: this statistic needs ordered values.
    max_categories : int, default 50
        Categories kept from the reference, most frequent first; the others, and categories the
        reference never had, share one "other" bin.
    threshold : float, optional
        Distance above which the detector fires. No default (it never fires), because the scale
        is the feature's: set one, or a ``level`` to have it calibrated from the reference.
    min_samples : int, default 100
        Values the window must hold before the detector may fire.
    exact : bool, default False
        Keep the raw reference and window instead of bin counts (numeric only): scipy's
        numbers on the samples, ``O(window)`` memory, not mergeable.
    level : float, optional
        A false-alarm probability per judgement instead of a threshold, in (0, 1): tests fire
        when ``p_value < level``, distances past the threshold their reference exceeds with
        that probability when nothing drifted (:func:`~detectors.calibration.null_threshold`).

    Attributes
    ----------
    threshold : float or None
        The level the result is compared with (calibrated when first needed with ``level``).
    profile : NumericBins or CategoryBins or None
        The reference's bins, None while the reference is still being collected.
    reference_counts : numpy.ndarray or None
        The reference's count per bin.
    count : int
        Values in the current window.

    Examples
    --------
    By hand: every value moved up by 1 moves the distribution by 1.

    >>> w = Wasserstein(reference=[0.0, 1.0, 2.0, 3.0], exact=True, min_samples=1)
    >>> w.update_many([1.0, 2.0, 3.0, 4.0]).statistic
    1.0

    Binned, next to scipy's distance of the samples:

    >>> import numpy as np
    >>> from scipy import stats
    >>> rng = np.random.default_rng(2)
    >>> reference, current = rng.normal(0, 1, 4000), rng.normal(0.5, 1, 4000)
    >>> w = Wasserstein(reference=reference, bins=200, window=4000)
    >>> round(w.update_many(current).statistic, 3), round(float(stats.wasserstein_distance(reference, current)), 3)
    (0.569, 0.561)
    """

    kind = kinds.WASSERSTEIN
    default_bins = 100
    default_threshold = None
    allows_categorical = False
    tracks_range = True

    def _measure(self):
        if self.exact:
            return float(stats.wasserstein_distance(self._reference_raw, self._current.rows()[:, 0])), None
        return wasserstein_from_counts(self.reference_counts, self.current_counts(), self._boundaries()), None

    def _boundaries(self) -> np.ndarray:
        edges = self.profile.edges
        return np.concatenate(([min(self._low, edges[0])], edges, [max(self._high, edges[-1])]))

    def _statistic_rows(self, reference, current):
        return _wasserstein_rows(reference, current, self._boundaries())

    def _calibration_key(self) -> bytes:
        return self._boundaries().tobytes()


DRIFT_DETECTORS = (PSI, KS, Wasserstein, JS, Chi2)

#: calibrated thresholds by what decides them: detectors on equal references share one
_CALIBRATIONS: dict[tuple, float] = {}


def _calibrated_threshold(detector: _DriftDetector) -> float:
    """The distance threshold a detector with a ``level`` alarms at (see ``null_threshold``),
    for its reference and the fewest values its full window holds; computed once per process
    for each reference (features with the same bin counts, as quantile bins of continuous
    values mostly have, share it)."""
    counts = np.asarray(detector.reference_counts, dtype=np.int64)
    extra = detector._calibration_key()
    key = (detector.kind, counts.tobytes(), detector.min_samples, detector.level, extra)
    threshold = _CALIBRATIONS.get(key)
    if threshold is None:
        if len(_CALIBRATIONS) >= 4096:
            _CALIBRATIONS.clear()
        threshold = _CALIBRATIONS[key] = null_threshold(detector._statistic_rows, counts, detector.min_samples,
                                                        detector.level)
    return threshold


# -- many detectors at once ---------------------------------------------------------------------

def add_columns(detectors: list[_DriftDetector], matrix: np.ndarray, columns: Any = None) -> None:
    """``detectors[j].add_many(matrix[:, columns[j]])`` for every detector j, of a finite float
    matrix (``columns`` None: detector j reads column j).

    A model watches many features with the same kinds of detector; fed the same rows, their
    windows stay in step, and the binned numeric ones among them (reference complete) are binned
    together (:meth:`NumericBins.codes_of_columns`) and counted with one ``bincount`` per group
    of windows in step (see :meth:`BlockCounts.push_columns`). The rest are fed one by one.
    Either way each detector ends in the state ``add_many`` would leave it in. Detectors that
    :func:`can_foresee` are fed as a :class:`Foresight` commits (its layout kept from one batch
    to the next, and a column read by several detectors binned once).
    """
    if not len(matrix):
        return
    if detectors and can_foresee(detectors):
        Foresight(detectors, matrix, [], columns).commit()
        return
    if columns is not None:
        matrix = np.asarray(matrix)[:, columns]
    # The grouping of detectors whose windows are all binned cannot change (a binned window
    # keeps its shape): kept by the first detector for the next call with the same detectors.
    kept = detectors[0]._shape_groups
    if kept is not None and len(kept[0]) == len(detectors) and all(map(operator.is_, kept[0], detectors)):
        groups = kept[1]
    else:
        groups = [together for together in _by_window_shape(detectors) if len(together) > 1]
        if sum(map(len, groups)) == len(detectors):
            detectors[0]._shape_groups = (list(detectors), groups)
    order = [j for together in groups for j in together]
    if order:
        columns = np.asarray(matrix, dtype=np.float64).T[order]  # one row per detector
        codes = NumericBins.codes_of_columns([detectors[j].profile for j in order], columns)
        _track_ranges([detectors[j] for j in order], columns)
        start = 0
        for together in groups:
            rows = slice(start, start + len(together))
            BlockCounts.push_columns([detectors[j]._current for j in together], codes[rows].T)
            start += len(together)
    fed = set(order)
    for j, detector in enumerate(detectors):
        if j not in fed:
            detector.add_many(matrix[:, j])


def _by_window_shape(detectors: list[_DriftDetector]) -> list[list[int]]:
    """The binned numeric detectors grouped by the shape of their windows' blocks (fed alike,
    their windows stay in step), those of one number of bins one after another within a group,
    in the order :class:`_Layout` lays them (so that a Foresight's commit and ``add_columns``
    count the same windows as one table)."""
    groups: dict[tuple[int, int], dict[int, list[int]]] = {}
    for j, detector in enumerate(detectors):
        if detector._binned() and not detector.categorical:
            window = detector._current
            groups.setdefault((window.blocks, window.block_size), {}).setdefault(window.bins, []).append(j)
    return [[j for same_bins in by_bins.values() for j in same_bins] for by_bins in groups.values()]


def _track_ranges(detectors: list[_DriftDetector], columns: np.ndarray) -> None:
    """The range of the values seen, for the detectors that keep it (one row of columns each)."""
    rows = [i for i, detector in enumerate(detectors) if detector.tracks_range]
    if rows:
        lows, highs = columns[rows].min(axis=1), columns[rows].max(axis=1)
        for i, low, high in zip(rows, lows, highs):
            detector = detectors[i]
            detector._low, detector._high = min(detector._low, low), max(detector._high, high)


def results(detectors: list[_DriftDetector]) -> list[Result]:
    """``[d.result() for d in detectors]``, the binned detectors of a kind with the same number of
    bins measured together (their counts stacked, one array operation per statistic)."""
    out: list[Result | None] = [None] * len(detectors)
    for kind, members, reference, current, counts in _measured_together(detectors, out):
        values, p_values = kind._measure_sized(reference.derived(kind), current, counts)
        judged = _Judged([detectors[i] for i in members], values[None], p_values, counts[None])
        for i, result in zip(members, judged.results(0)):
            out[i] = result
    return out


class _Judged:
    """Detectors of one kind measured at several positions, judged as ``result()`` would judge
    each (row k of ``values`` and ``counts`` is position k, a column per detector; ``p_values``
    the kind's p-values row by row, or None): whether each fired is decided for all positions
    and detectors in a few array operations; the :class:`Result` objects of a position are
    made when it is read (:meth:`results`).

    A detector with a ``level`` gets its calibrated threshold when a position that it is judged
    at is read, as ``result()`` would set it (and reports None before that)."""

    def __init__(self, detectors: list[_DriftDetector], values: np.ndarray, p_values: Any, counts: np.ndarray,
                 min_samples: np.ndarray | None = None):
        self.detectors = detectors
        if min_samples is None:
            min_samples = np.array([d.min_samples for d in detectors])
        ready = counts >= min_samples
        filled = None  # every window holds events (the usual judgement), else where they do
        if not counts.all():
            filled = counts > 0
            ready &= filled
        self._thresholds = thresholds = list(map(_THRESHOLD, detectors))
        #: detectors whose threshold is calibrated when first judged: column -> that threshold
        self._calibrating = {j: _calibrated_threshold(d) for j, d in enumerate(detectors)
                             if d.threshold is None and d.level is not None and ready[:, j].any()} \
            if None in thresholds else {}
        if self._calibrating:
            thresholds = [self._calibrating.get(j, threshold) for j, threshold in enumerate(thresholds)]
        limit = np.array(thresholds, dtype=np.float64)  # None: nan, never past
        if detectors[0].is_test:
            fired = p_values.below(np.where(ready, limit, np.nan).ravel()).reshape(ready.shape)
        else:
            with np.errstate(invalid="ignore"):
                fired = ready & (values > limit)
        #: whether each position has an empty window (None: none has, the usual judgement)
        self._empty: list[bool] | None = None
        if filled is not None:  # an empty window has no statistic
            empty = ~filled
            self._empty = empty.any(axis=1).tolist()
            values = np.where(empty, np.nan, values)
        self._values = values.tolist()
        self._counts, self._fired = counts.tolist(), fired.tolist()
        self._ready = ready.tolist() if self._calibrating else None  # read by _calibrate alone
        self._p_values = p_values

    def results(self, k: int) -> list[Result]:
        """The detectors' results at position k (row k)."""
        return list(map(Result, *self.columns(k)))

    def columns(self, k: int) -> tuple[list, list, list, list, list]:
        """The fields of :meth:`results` at position k, a list each in ``Result``'s argument
        order (statistic, threshold, p-value, n, fired): for a caller that makes its own objects."""
        thresholds = self._thresholds
        if self._calibrating:
            self._calibrate(k)
            thresholds = [d.threshold for d in self.detectors]
        width = len(self.detectors)
        if self._p_values is None:
            p_values = [None] * width
        else:
            p_values = self._p_values.rows(k * width, (k + 1) * width)
            if self._empty is not None and self._empty[k]:
                p_values = [None if n == 0 else p for p, n in zip(p_values, self._counts[k])]
        return self._values[k], thresholds, p_values, self._counts[k], self._fired[k]

    def judgement(self, k: int) -> tuple[list, list]:
        """The n and fired fields of :meth:`columns` at position k: what a rule on whether the
        detectors fired reads, without making the p-values (a threshold is calibrated as there)."""
        if self._calibrating:
            self._calibrate(k)
        return self._counts[k], self._fired[k]

    def _calibrate(self, k: int) -> None:
        """Set the calibrated thresholds of the detectors judged at position k (see the class)."""
        ready = self._ready[k]
        for j, threshold in self._calibrating.items():
            if ready[j] and self.detectors[j].threshold is None:
                self.detectors[j].threshold = threshold


_THRESHOLD, _CURRENT = operator.attrgetter("threshold"), operator.attrgetter("_current")


class Foresight:
    """What ``add_columns(detectors, matrix[:m])`` then ``results(detectors)`` would give for
    each ``m`` of ``positions`` (a batch's evaluation points), measured without adding anything:
    the matrix is binned once, each window's counts at every position come from counts of the
    batch's events (:meth:`BlockCounts.cells_after`), and each kind is measured and judged at
    all the positions in a few array operations (:class:`_Judged`; :meth:`results` at one
    position measures every planned one, a kind at a time, when first asked, and makes the
    results of the position read). :meth:`commit` then adds the whole matrix, leaving each
    detector as ``add_columns`` would.

    Only for detectors that :func:`can_foresee`. A position not planned is measured on its
    own when asked for (the same code, one position).

    Parameters
    ----------
    detectors : list
        The detectors, binned numeric ones (see :func:`can_foresee`).
    matrix : numpy.ndarray
        The batch, a row per event, finite.
    positions : list of int
        The counts of rows after which the detectors will be read.
    columns : array-like of int, optional
        The column of ``matrix`` each detector reads (None: detector j reads column j). Detectors
        that read one column (a feature's PSI and KS) are binned once where the bins of one
        refine another's (see :class:`_Refined`).
    """

    def __init__(self, detectors: list[_DriftDetector], matrix: np.ndarray, positions: list[int],
                 columns: Any = None):
        self.detectors = detectors
        self.events = len(matrix)
        # windows in step (one shape, filled alike) are counted as one table
        layout = self._layout = _Layout.of(detectors)
        if columns is None:
            values = np.asarray(matrix, dtype=np.float64).T[layout.order]
            codes = NumericBins.codes_of_columns(layout.profiles, values)
        else:
            read = np.asarray(columns, dtype=np.intp)[layout.order]
            codes = layout.refined(read).codes(np.asarray(matrix, dtype=np.float64).T[read])
        # per table, (events, windows), and its counts at the positions, kept for the commit
        self._codes = [CountedCodes.of(windows, codes[rows].T)
                       for windows, rows in zip(layout.tables, layout.table_rows)]
        self._sheets: dict[int, _Sheet] = {}
        if len(positions):
            self._sheet(list(positions))

    def _sheet(self, positions: list[int]) -> "_Sheet":
        """The window counts of every group at these positions (each position's sheet),
        counted a table at a time (:meth:`BlockCounts.cells_after`) and cut into the groups."""
        layout = self._layout
        tables = [BlockCounts.cells_after(windows, codes, positions)
                  for windows, codes in zip(layout.tables, self._codes)]
        totals = []
        for t, cells, windows, bins in layout.places:
            counts, sizes = tables[t]
            totals.append((counts[:, cells].reshape(len(positions), windows.stop - windows.start, bins),
                           sizes[:, windows]))
        sheet = _Sheet(positions, totals)
        for position in positions:
            self._sheets[position] = sheet
        return sheet

    def results(self, position: int, members: list[int]) -> list[Result]:
        """The results of ``detectors[i]`` for each i of ``members`` after ``position`` rows."""
        return list(map(Result, *self.columns(position, members)))

    def columns(self, position: int, members: list[int]) -> tuple[list, list, list, list, list]:
        """The fields of :meth:`results`, a list each (see :meth:`_Judged.columns`): the
        statistic, threshold, p-value, n and whether it fired of each member, in order."""
        return self._read(position, members, _Judged.columns)

    def judgement(self, position: int, members: list[int]) -> tuple[list, list]:
        """The n and fired fields of :meth:`columns` alone (see :meth:`_Judged.judgement`)."""
        return self._read(position, members, _Judged.judgement)

    def _read(self, position: int, members: list[int], read: Callable[["_Judged", int], tuple]) -> tuple:
        """``read(judged, k)`` of the units that hold the members, their lists joined, in the
        members' order."""
        sheet = self._sheets.get(position) or self._sheet([position])
        k = sheet.index[position]
        units, places = self._layout.plan(members)
        found: tuple[list, ...] | None = None
        for unit in units:
            judged = sheet.judged.get(unit)
            if judged is None:
                judged = sheet.judged[unit] = self._judge(sheet, *unit)
            columns = read(judged, k)
            if found is None:
                found = columns
            else:
                found = tuple(a + b for a, b in zip(found, columns))
        if places is None:
            return found
        return tuple([column[place] for place in places] for column in found)

    def measured(self, position: int) -> list[tuple[float, int]] | None:
        """What :func:`statistics` gives after adding the rows up to ``position``, when every
        detector has been measured there already (with the planned positions, when a rule read
        one of them); else None, measuring nothing."""
        sheet = self._sheets.get(position)
        if sheet is None:
            return None
        k = sheet.index[position]
        units, order = self._layout.every_unit()
        values: list = []
        counts: list = []
        for unit in units:
            judged = sheet.judged.get(unit)
            if judged is None:
                return None
            values += judged._values[k]
            counts += judged._counts[k]
        return list(zip(order(values), order(counts)))

    def _judge(self, sheet: "_Sheet", g: int, kind: type) -> "_Judged":
        """One kind of one group measured and judged at every position of the sheet."""
        unit = self._layout.unit(g, kind)
        totals, sizes = sheet.totals[g]
        if unit.columns is not None:  # else the kind is the whole group: no copy
            totals, sizes = totals[:, unit.columns], sizes[:, unit.columns]
        # one reference row per detector, broadcast over the positions
        reference = _stacked_references(unit.detectors).derived(kind)
        with np.errstate(divide="ignore", invalid="ignore"):  # an empty window's row, judged as empty
            values, p_values = kind._measure_sized(reference, totals, sizes)
        return _Judged(unit.detectors, values, p_values, sizes, unit.min_samples)

    def statistics(self, position: int) -> list[tuple[float, int]]:
        """:meth:`measured` at ``position``, measuring there first what is not yet (every
        detector, judged with the position's sheet)."""
        found = self.measured(position)
        if found is None:
            self.judgement(position, list(range(len(self.detectors))))
            found = self.measured(position)
        return found

    def commit(self, rows: int | None = None) -> None:
        """Add the matrix (its first ``rows`` rows; None: all) to the detectors, as
        ``add_columns`` would. After a part, the Foresight no longer holds: its measures are of
        detectors fed nothing of the matrix."""
        for windows, codes in zip(self._layout.tables, self._codes):
            BlockCounts.push_columns(windows, codes if rows is None else codes.codes[:rows])


class _Layout:
    """How a :class:`Foresight` lays its detectors out: the tables of windows in step (counted
    together whatever their bins, see :class:`~detectors.windows.BlockCounts`), each cut into
    groups of one number of bins (measured together), where each table's rows are in the binned
    matrix and each group's cells and windows in its table, and, made when first needed, each
    kind's columns in a group and the members asked for together. Kept by the first detector
    for the next Foresight of the same detectors (a model makes one per batch), while every
    table's windows are still in step, as the batches that fed them together left them."""

    __slots__ = ("detectors", "currents", "groups", "order", "table_rows", "tables", "places", "profiles", "kinds",
                 "foreseeable", "_units", "_plans", "_refined", "_every_unit")

    def __init__(self, detectors: list[_DriftDetector]):
        tables: dict[tuple, dict[int, list[int]]] = {}
        for j, detector in enumerate(detectors):
            window = detector._current
            tables.setdefault(window.step(), {}).setdefault(window.bins, []).append(j)
        self.detectors = list(detectors)
        self.currents = [detector._current for detector in detectors]
        #: what :func:`can_foresee` says of the detectors: it depends on nothing that changes
        #: while they keep their windows
        self.foreseeable = _foreseeable(detectors)
        self.groups = [together for by_bins in tables.values() for together in by_bins.values()]
        order = [j for together in self.groups for j in together]
        self.order = np.array(order, dtype=np.intp)
        self.tables = [[detectors[j]._current for together in by_bins.values() for j in together]
                       for by_bins in tables.values()]
        bounds = list(itertools.accumulate(map(len, self.tables), initial=0))
        self.table_rows = [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]
        #: per group: its table, its cells and windows there, and its bins
        self.places: list[tuple[int, slice, slice, int]] = []
        for t, by_bins in enumerate(tables.values()):
            cell = window = 0
            for bins, together in by_bins.items():
                self.places.append((t, slice(cell, cell + bins * len(together)),
                                    slice(window, window + len(together)), bins))
                cell, window = cell + bins * len(together), window + len(together)
        self.profiles = [detectors[j].profile for j in order]
        self.kinds = [list(dict.fromkeys(type(detectors[j]) for j in together)) for together in self.groups]
        self._units: dict[tuple[int, type], _Unit] = {}
        self._plans: dict[tuple[int, ...], tuple[list[tuple[int, type]], list[int] | None]] = {}
        self._refined: tuple[bytes, _Refined] | None = None
        self._every_unit: tuple[list[tuple[int, type]], Callable[[list], Sequence]] | None = None

    def every_unit(self) -> tuple[list[tuple[int, type]], Callable[[list], Sequence]]:
        """Every unit (group, kind), and what puts the units' members one after the other
        (a list of something per member, unit by unit) in the detectors' order."""
        if self._every_unit is None:
            units = [(g, kind) for g, kinds in enumerate(self.kinds) for kind in kinds]
            members = [i for g, kind in units for i in self.unit(g, kind).members]
            where = [0] * len(members)
            for place, i in enumerate(members):
                where[i] = place
            order = operator.itemgetter(*where) if len(where) > 1 else lambda found: found[:1]
            self._every_unit = (units, order)
        return self._every_unit

    def refined(self, read: np.ndarray) -> "_Refined":
        """How to bin the rows of the layout reading these columns (see :class:`_Refined`),
        kept for the next batch read alike."""
        key = read.tobytes()
        if self._refined is None or self._refined[0] != key:
            self._refined = (key, _Refined(self.profiles, read.tolist()))
        return self._refined[1]

    @staticmethod
    def of(detectors: list[_DriftDetector]) -> "_Layout":
        kept = detectors[0]._foresight_layout
        if kept is None or not kept._serves(detectors):
            kept = detectors[0]._foresight_layout = _Layout(detectors)
        return kept

    def _made_for(self, detectors: list[_DriftDetector]) -> bool:
        """Made for these detectors and their windows (see :func:`_same`)."""
        return _same(self.detectors, self.currents, detectors)

    def _serves(self, detectors: list[_DriftDetector]) -> bool:
        """:meth:`_made_for` these detectors, every group still in step."""
        return self._made_for(detectors) and all(map(BlockCounts.together, self.tables))

    def unit(self, g: int, kind: type) -> "_Unit":
        """The detectors of group g of this kind (see :class:`_Unit`)."""
        unit = self._units.get((g, kind))
        if unit is None:
            together = self.groups[g]
            columns = [column for column, j in enumerate(together) if type(self.detectors[j]) is kind]
            unit = self._units[g, kind] = _Unit([together[c] for c in columns],
                                                [self.detectors[together[c]] for c in columns],
                                                None if len(columns) == len(together) else columns)
        return unit

    def plan(self, members: list[int]) -> tuple[list[tuple[int, type]], list[int] | None]:
        """The units (group, kind) that hold these members, and where each member's result is
        among the units' results one after the other (None: there in order, nothing else)."""
        key = tuple(members)
        found = self._plans.get(key)
        if found is None:
            place = {j: g for g, together in enumerate(self.groups) for j in together}
            units: dict[tuple[int, type], None] = {}
            for i in members:
                units[place[i], type(self.detectors[i])] = None
            order = [i for g, kind in units for i in self.unit(g, kind).members]
            if order == list(members):
                found = (list(units), None)
            else:
                where = {i: position for position, i in enumerate(order)}
                found = (list(units), [where[i] for i in members])
            self._plans[key] = found
        return found


class _Refined:
    """Bins rows of values, row i by ``profiles[i]``, as :meth:`NumericBins.codes_of_columns`
    does, binning a row that reads the same column as a row with finer bins from that row's codes.

    Why: a feature's PSI (10 bins) and KS (100 bins) read the same values; binning is a
    handful of array operations per value, deriving a code from a finer one three.

    How: fine bin u holds the values ``v`` with ``fine[u - 1] < v <= fine[u]``. When no fine bin
    has two coarse edges strictly inside it, the coarse code of ``v`` (how many coarse edges
    lie below it) is ``base[u]``, the coarse edges at or below ``fine[u - 1]``, plus one if
    ``v`` is above ``next[u]``, the coarse edge after those (an edge equal to ``fine[u]`` is
    never below ``v``). Rows whose bins no other row's refine so, or whose edges are not finite
    and increasing, are binned on their own.

    Parameters
    ----------
    profiles : list of NumericBins
        Each row's bins.
    read : list of int
        Each row's column: rows with the same one hold the same values.
    """

    def __init__(self, profiles: list[NumericBins], read: list[int]):
        by_column: dict[int, list[int]] = {}
        for i, column in enumerate(read):
            by_column.setdefault(column, []).append(i)
        sources, tables = {}, []
        for rows in by_column.values():
            rows = sorted(rows, key=lambda i: -len(profiles[i].edges))  # the finest first
            for place, i in enumerate(rows):
                # from a finer row binned on its own (decided already: a source is never derived)
                for source in rows[:place]:
                    found = None if source in sources else _refinement(profiles[source].edges, profiles[i].edges)
                    if found is not None:
                        sources[i] = source
                        tables.append(found)
                        break
        fine = [i for i in range(len(profiles)) if i not in sources]
        #: rows binned on their own, and their bins
        self.fine, self.profiles = _rows(fine), [profiles[i] for i in fine]
        #: rows derived, the row each is derived from, and where its base and next start in the tables
        self.derived, self.sources = _rows(list(sources)), _rows(list(sources.values()))
        starts = list(itertools.accumulate((len(base) for base, _ in tables), initial=0))[:-1]
        self.starts = np.array(starts, dtype=np.intp)[:, None]
        self.base = np.concatenate([base for base, _ in tables]) if tables else None
        self.next = np.concatenate([following for _, following in tables]) if tables else None

    def codes(self, values: np.ndarray) -> np.ndarray:
        """The codes of a (rows, n) array of finite values, row i binned by ``profiles[i]``."""
        if self.base is None:
            return NumericBins.codes_of_columns(self.profiles, values)
        codes = np.empty(values.shape, dtype=np.intp)
        codes[self.fine] = NumericBins.codes_of_columns(self.profiles, values[self.fine])
        index = codes[self.sources] + self.starts
        derived = self.base.take(index)
        derived += values[self.derived] > self.next.take(index)
        codes[self.derived] = derived
        return codes


def _rows(rows: list[int]) -> slice | list[int]:
    """The rows as a slice when they follow one another (a view, not a copy, of an array's rows)."""
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return rows


def _refinement(fine: np.ndarray, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(base, next)`` per fine bin (see :class:`_Refined`), or None when some fine bin holds
    two coarse edges strictly inside it or the edges are not finite and increasing."""
    if not (np.isfinite(fine).all() and np.isfinite(coarse).all() and (np.diff(fine) > 0).all()
            and (np.diff(coarse) > 0).all()):
        return None
    base = np.concatenate(([0], coarse.searchsorted(fine, side="right")))  # at or below the bin's lower edge
    below_upper = np.concatenate((coarse.searchsorted(fine, side="left"), [len(coarse)]))
    if (below_upper - base > 1).any():
        return None
    return base.astype(np.intp), np.append(coarse, np.inf)[base]


class _Unit:
    """The detectors of one kind in one group of a :class:`_Layout`: their places among all
    the detectors, the detectors, their columns in the group (None: the whole group) and
    their ``min_samples`` as an array (what judging compares the window counts with)."""

    __slots__ = ("members", "detectors", "columns", "min_samples")

    def __init__(self, members: list[int], detectors: list[_DriftDetector], columns: list[int] | None):
        self.members, self.detectors, self.columns = members, detectors, columns
        self.min_samples = np.array([d.min_samples for d in detectors])


class _Sheet:
    """A Foresight's window counts at some positions, and the kinds judged there so far."""

    def __init__(self, positions: list[int], totals: list[tuple[np.ndarray, np.ndarray]]):
        self.index = {position: k for k, position in enumerate(positions)}
        self.totals = totals
        self.judged: dict[tuple[int, type], _Judged] = {}


def can_foresee(detectors: list[_DriftDetector]) -> bool:
    """Whether a :class:`Foresight` can measure these detectors: binned numeric ones, reference
    complete, whose statistic depends on their counts alone (not on a tracked range)."""
    kept = detectors[0]._foresight_layout if detectors else None
    if kept is not None and kept._made_for(detectors):
        return kept.foreseeable
    return _foreseeable(detectors)


def _foreseeable(detectors: list[_DriftDetector]) -> bool:
    """:func:`can_foresee`, decided detector by detector."""
    return all(d._binned() and not d.categorical and d._measure_rows is not None and not d.tracks_range
               for d in detectors)


def statistics(detectors: list[_DriftDetector]) -> list[tuple[float, int]]:
    """``(result.statistic, result.n)`` of each detector's result, measured as :func:`results`
    does but not judged (no p-value, no firing): what a timeline records between rule reads."""
    out: list[Any] = [None] * len(detectors)
    for kind, members, reference, current, counts in _measured_together(detectors, out):
        values = kind._measure_sized(reference.derived(kind), current, counts)[0].tolist()
        for i, value, n in zip(members, values, counts.tolist()):
            out[i] = (value, n)
    return [(r.statistic, r.n) if isinstance(r, Result) else r for r in out]


def _measured_together(detectors: list[_DriftDetector], out: list):
    """The detectors' groups to measure together: ``(kind, members, stacked references (see
    :func:`_stacked_references`), window counts, window sizes)``, a row per member. Those
    measured alone (not binned, or an empty window, which has no statistic) get their
    ``result()`` in ``out`` instead."""
    split = _Split.of(detectors)
    for i in split.alone:
        out[i] = detectors[i].result()
    for kind, members, windows, together in split.groups:
        current = BlockCounts.totals_of(windows)
        counts = current.sum(axis=1)  # each window's count, read off the table in one operation
        if not counts.all():
            for i in itertools.compress(members, (counts == 0).tolist()):
                out[i] = detectors[i].result()
            members, current, counts = [i for i in members if out[i] is None], current[counts > 0], counts[counts > 0]
            if not members:
                continue
            together = [detectors[i] for i in members]
        yield kind, members, _stacked_references(together), current, counts


class _Split:
    """How :func:`_measured_together` splits some detectors: those measured alone (not binned),
    and the groups measured together, by kind, number of bins and blocks (windows of one kind
    stack their blocks only if they have as many), each with its members' places, windows and
    detectors. Kept by the first detector for the next call with the same detectors and windows
    (none of what decides the split changes while a detector keeps its window)."""

    __slots__ = ("detectors", "currents", "alone", "groups")

    def __init__(self, detectors: list[_DriftDetector]):
        self.detectors, self.currents = list(detectors), list(map(_CURRENT, detectors))
        self.alone: list[int] = []
        groups: dict[tuple[type, int, int], list[int]] = {}
        for i, detector in enumerate(detectors):
            if detector._measure_rows is not None and detector._binned():
                groups.setdefault((type(detector), detector.profile.n_bins, detector._current.blocks), []).append(i)
            else:
                self.alone.append(i)
        self.groups = [(kind, members, [detectors[i]._current for i in members], [detectors[i] for i in members])
                       for (kind, _, _), members in groups.items()]

    @staticmethod
    def of(detectors: list[_DriftDetector]) -> "_Split":
        kept = detectors[0]._split if detectors else None
        if kept is None or not _same(kept.detectors, kept.currents, detectors):
            kept = _Split(detectors)
            if detectors:
                detectors[0]._split = kept
        return kept


def _same(detectors: list[_DriftDetector], currents: list[Any], others: list[_DriftDetector]) -> bool:
    """Whether ``others`` are these detectors, in this order, with these windows (a detector
    given a new reference gets new bins and a new window with them)."""
    return (len(others) == len(detectors) and all(map(operator.is_, others, detectors))
            and all(map(operator.is_, map(_CURRENT, others), currents)))


def _stacked_references(detectors: list[_DriftDetector]) -> "_ReferenceStack":
    """The detectors' reference counts stacked (:class:`_ReferenceStack`), kept by the first
    detector until one of the arrays is replaced (a reference is never changed in place, so the
    same arrays in the same order have the same stack, and a group is measured at every
    evaluation point)."""
    references = [d.reference_counts for d in detectors]
    kept = detectors[0]._references_stacked
    if kept is None or len(kept.references) != len(references) or not all(map(operator.is_, kept.references,
                                                                               references)):
        kept = detectors[0]._references_stacked = _ReferenceStack(references)
    return kept


class _ReferenceStack:
    """``np.stack`` of some detectors' reference counts (:attr:`counts`, a row each), and what
    their kind derives from it for measuring (:meth:`derived`), computed once for the stack."""

    __slots__ = ("references", "counts", "_derived")

    def __init__(self, references: list[np.ndarray]):
        self.references = references
        self.counts = np.stack(references)
        self._derived: dict[type, Any] = {}

    def derived(self, kind: type) -> Any:
        """``kind._reference_rows(counts)``, remembered."""
        found = self._derived.get(kind)
        if found is None:
            found = self._derived[kind] = kind._reference_rows(self.counts)
        return found
