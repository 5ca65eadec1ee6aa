"""Drift statistics: hand-worked values, scipy references, merge, state, bounds."""
import json
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from detectors.base import InvalidInput
from detectors.drift import (
    JS, KS, PSI, PSI_EPSILON, Chi2, Foresight, KSPValue, NumericBins, Wasserstein, _ColumnLookup, _KSPValues, _Refined,
    _ks_critical_band, add_columns, can_foresee, chi2_test, js_distance, ks_from_counts, psi, results, statistics,
    wasserstein_from_counts,
)


def test_psi_by_hand():
    reference, current = np.array([50, 30, 20]), np.array([30, 30, 40])
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert psi(reference, current) == pytest.approx(expected, rel=1e-12)


def test_psi_floors_empty_bins_at_epsilon():
    reference, current = np.array([10, 0]), np.array([5, 5])
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON)
    assert psi(reference, current) == pytest.approx(expected, rel=1e-12)


def test_js_distance_by_hand():
    assert js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert js_distance(np.array([3, 1]), np.array([3, 1])) == pytest.approx(0.0, abs=1e-12)
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2): m = (1/4, 1/2, 1/4); KL(p||m) = 1/2 * log2(2) = 1/2
    assert js_distance(np.array([1, 1, 0]), np.array([0, 1, 1])) == pytest.approx(math.sqrt(0.5))


def test_chi2_by_hand_and_against_scipy():
    # [[60, 40], [20, 80]]: expected 40 / 60 in each row -> 10 + 6.667 + 10 + 6.667
    statistic, p_value = chi2_test(np.array([60, 40]), np.array([20, 80]))
    assert statistic == pytest.approx(100 / 3)
    assert p_value == pytest.approx(stats.chi2.sf(100 / 3, 1))
    rng = np.random.default_rng(0)
    for _ in range(20):
        reference, current = rng.integers(0, 50, 6), rng.integers(0, 50, 6)
        reference[2] = current[2] = 0  # a bin neither side uses is left out
        expected = stats.chi2_contingency(np.vstack((reference, current))[:, [0, 1, 3, 4, 5]], correction=False)
        assert chi2_test(reference, current) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-9)


def test_categorical_js_and_chi2_use_an_other_bucket_for_unseen_categories():
    js = JS(reference=["a"] * 50 + ["b"] * 50, categorical=True, min_samples=1)
    # current a, b, c, c -> (1/4, 1/4, 1/2) against (1/2, 1/2, 0)
    assert js.update_many(["a", "b", "c", "c"]).statistic == pytest.approx(
        jensenshannon([0.5, 0.5, 0], [0.25, 0.25, 0.5], base=2))
    chi2 = Chi2(reference=["x", "y", "rare"], categorical=True, max_categories=2, min_samples=1)
    assert chi2.profile.categories == ["rare", "x"]  # ties keep sorted order; "y" -> other
    chi2.update_many(["x", "unseen", "y"])
    assert chi2.current_counts().tolist() == [0, 1, 2]


@pytest.mark.parametrize("n_ref, n_cur", [(40, 25), (300, 200), (3000, 1500), (12000, 11000)])
def test_exact_ks_equals_scipy(n_ref, n_cur):
    rng = np.random.default_rng(n_ref)
    reference = rng.normal(0, 1, n_ref)
    current = rng.normal(0.1, 1.2, n_cur + 500)
    ks = KS(reference=reference, window=n_cur, exact=True)
    for batch in np.array_split(current, 3):
        result = ks.update_many(batch)
    expected = stats.ks_2samp(reference, current[-n_cur:])
    assert abs(result.p_value - expected.pvalue) <= 1e-9
    assert result.statistic == expected.statistic


def test_exact_ks_with_reference_from_the_first_events():
    rng = np.random.default_rng(5)
    stream = np.concatenate((rng.normal(0, 1, 500), rng.normal(0.5, 1, 400)))
    ks = KS(reference_size=500, window=300, exact=True)
    result = ks.update_many(stream)
    expected = stats.ks_2samp(stream[:500], stream[-300:])
    assert abs(result.p_value - expected.pvalue) <= 1e-9
    assert result.fired


def test_binned_ks_is_exact_when_every_value_is_an_edge():
    rng = np.random.default_rng(2)
    reference, current = rng.integers(0, 8, 2000).astype(float), rng.integers(1, 9, 1500).astype(float)
    ks = KS(reference=reference, bins=50, window=1500, blocks=1500)
    result = ks.update_many(current)
    # value 8 never occurs in the reference, so it is not an edge: but it is the top of the range
    expected = stats.ks_2samp(reference, current, method="asymp")
    assert result.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert abs(result.p_value - expected.pvalue) <= 1e-9


def test_binned_ks_is_a_close_lower_bound_on_continuous_data():
    rng = np.random.default_rng(3)
    reference, current = rng.normal(0, 1, 5000), rng.normal(0.2, 1, 2000)
    binned = KS(reference=reference, bins=100, window=2000).update_many(current).statistic
    exact = stats.ks_2samp(reference, current).statistic
    assert exact - 0.02 <= binned <= exact + 1e-12  # at most ~one bin's mass (1 %) below, plus noise


def test_wasserstein_exact_equals_scipy_and_binned_is_close():
    rng = np.random.default_rng(4)
    reference, current = rng.exponential(1.0, 4000), rng.exponential(1.3, 3000)
    expected = stats.wasserstein_distance(reference, current)
    exact = Wasserstein(reference=reference, window=3000, exact=True).update_many(current).statistic
    assert exact == pytest.approx(expected, rel=1e-12)
    binned = Wasserstein(reference=reference, window=3000, bins=1000, blocks=3000).update_many(current).statistic
    # the tail beyond the reference's range is spread uniformly up to the maximum, which an
    # exponential's tail is not: the tolerance is the binned Wasserstein's, not the bins' width
    assert binned == pytest.approx(expected, rel=0.05)


def test_ks_from_counts_by_hand():
    # ECDFs at the edges: reference (.5, 1), current (.2, 1): D = .3, n_eff = round(10 * 10 / 20) = 5
    statistic, p_value = ks_from_counts(np.array([5, 5]), np.array([2, 8]))
    assert statistic == pytest.approx(0.3)
    assert p_value == pytest.approx(stats.kstwo.sf(0.3, 5))


def test_wasserstein_from_counts_by_hand():
    # reference uniform on [0, 1], current uniform on [1, 2]: distance 1
    assert wasserstein_from_counts(np.array([10, 0]), np.array([0, 10]), np.array([0.0, 1.0, 2.0])) == pytest.approx(1.0)
    # CDF gap rises 0 -> 1/2 then falls to 0 across a sign change: area 1/4 + 1/4
    assert wasserstein_from_counts(np.array([1, 1]), np.array([0, 2]), np.array([0.0, 1.0, 2.0])) == pytest.approx(0.5)


def test_first_n_events_make_the_same_reference_as_an_explicit_one():
    rng = np.random.default_rng(6)
    stream = rng.normal(size=3000)
    explicit = PSI(reference=stream[:1000], window=500)
    explicit.update_many(stream[1000:])
    learned = PSI(reference_size=1000, window=500)
    for batch in np.array_split(stream, 7):
        learned.update_many(batch)
    assert learned.result() == explicit.result()


def test_a_reference_fed_a_few_values_at_a_time_waits_in_few_arrays():
    # a monitor of many models feeds each detector a few values per batch: the values wait in
    # a bounded number of arrays (an array per call would cost more in headers than in values)
    rng = np.random.default_rng(7)
    stream = rng.normal(size=1500)
    explicit = PSI(reference=stream[:1000], window=500)
    explicit.update_many(stream[1000:])
    learned = PSI(reference_size=1000, window=500)
    for start in range(0, 999, 3):
        learned.add_many(stream[start:start + 3])
        assert len(learned._pending) <= 8
    restored = PSI.from_state(json.loads(json.dumps(learned.state())))
    for detector in (learned, restored):
        detector.update_many(stream[999:])
        assert detector.result() == explicit.result()

def test_block_window_holds_between_n_minus_one_block_and_n_values():
    detector = PSI(reference=np.arange(100.0), window=1000, blocks=10)
    total = 0
    for size in (3, 250, 999, 1001, 5000, 7):
        detector.update_many(np.zeros(size))
        total += size
        assert min(total, 900) <= detector.count <= min(total, 1000)


def test_a_window_shorter_than_ten_slides_by_single_values():
    """The default is 10 blocks; a window of 8 cannot hold 10, so it gets 8, and the window is
    made when the reference fills, mid-stream, where a refusal would stop the engine."""
    detector = PSI(reference=np.arange(8.0), window=8)
    detector.update_many(np.arange(20.0))
    assert detector.blocks == 8 and detector.count == 8


def test_more_blocks_than_the_window_holds_is_refused_up_front():
    with pytest.raises(ValueError, match=r"blocks must be between 1 and window \(8\), got 20"):
        PSI(window=8, blocks=20)


@pytest.mark.parametrize("cls, params", [
    (PSI, {}), (KS, {}), (Wasserstein, {"threshold": 0.3}), (JS, {}), (Chi2, {"categorical": True}),
    (JS, {"categorical": True}),
])
def test_merge_of_two_partitions_equals_one_detector_on_all_values(cls, params):
    rng = np.random.default_rng(7)
    if params.get("categorical"):
        reference, values = rng.choice(list("abcd"), 800), rng.choice(list("abcde"), 1200)
    else:
        reference, values = rng.normal(size=800), rng.normal(0.3, 1.1, 1200)
    left, right, whole = (cls(reference=reference, window=2000, **params) for _ in range(3))
    left.update_many(values[::2])
    right.update_many(values[1::2])
    whole.update_many(values)
    merged = left.merge(right)
    assert merged.result() == whole.result()
    assert merged.current_counts().tolist() == whole.current_counts().tolist()


def test_merge_refuses_different_references():
    with pytest.raises(ValueError, match="same reference"):
        PSI(reference=[1.0, 2.0, 3.0]).merge(PSI(reference=[1.0, 2.0, 4.0]))
    with pytest.raises(ValueError, match="same kind"):
        PSI(reference=[1.0, 2.0]).merge(JS(reference=[1.0, 2.0]))


@pytest.mark.parametrize("cls, params", [
    (PSI, {}), (KS, {}), (KS, {"exact": True}), (Wasserstein, {}), (Wasserstein, {"exact": True}),
    (JS, {}), (Chi2, {"categorical": True}), (PSI, {"categorical": True}),
])
@pytest.mark.parametrize("cut", [300, 2500])  # during the reference, and after it
def test_state_round_trip_gives_identical_future(cls, params, cut):
    rng = np.random.default_rng(8)
    stream = rng.choice(list("abc"), 6000) if params.get("categorical") else rng.normal(size=6000)
    detector = cls(reference_size=1000, window=700, **params)
    detector.update_many(stream[:cut])
    restored = cls.from_state(json.loads(json.dumps(detector.state())))
    for batch in np.array_split(stream[cut:], 5):
        assert restored.update_many(batch) == detector.update_many(batch)


@pytest.mark.parametrize("cls", [PSI, KS, Wasserstein, JS])
def test_binned_state_does_not_grow_with_the_window_or_the_stream(cls):
    rng = np.random.default_rng(9)
    detector = cls(reference=rng.normal(size=1000), window=100_000, blocks=10)
    numbers_held = []
    for _ in range(4):
        detector.update_many(rng.normal(size=50_000))
        numbers_held.append(_count_numbers(detector.state()))
    assert len(set(numbers_held)) == 1
    assert numbers_held[0] < 20 * detector.profile.n_bins  # reference + blocks, O(bins)


def _count_numbers(tree):
    if isinstance(tree, dict):
        return sum(_count_numbers(v) for v in tree.values())
    if isinstance(tree, list):
        return sum(_count_numbers(v) for v in tree)
    return 1


def test_nothing_fires_before_min_samples_and_nan_before_the_reference():
    detector = PSI(reference_size=10, min_samples=50)
    assert math.isnan(detector.update_many(np.ones(5)).statistic)
    assert not detector.update_many(np.arange(10.0, 40.0)).fired  # 25 in the window: too few
    assert detector.update_many(np.arange(40.0, 80.0)).fired


def test_bad_input_is_rejected():
    with pytest.raises(InvalidInput, match=r"values\[1\]"):
        KS(reference=[1.0, 2.0]).update_many([1.0, float("nan")])
    with pytest.raises(InvalidInput):
        PSI(reference=[1.0, float("inf")])
    with pytest.raises(ValueError, match="numeric features only"):
        KS(categorical=True)


finite_lists = st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=80)


@settings(max_examples=50, deadline=None)
@given(finite_lists, finite_lists)
def test_statistics_stay_in_range_for_any_finite_input(reference, current):
    for cls in (PSI, KS, Wasserstein, JS, Chi2):
        result = cls(reference=reference, window=50, min_samples=1).update_many(current)
        assert result.statistic >= 0
        assert np.isfinite(result.statistic)
        if result.p_value is not None:
            assert 0 <= result.p_value <= 1
    assert JS(reference=reference).update_many(current).statistic <= 1 + 1e-12
    assert KS(reference=reference).update_many(current).statistic <= 1


@pytest.mark.parametrize("cls, params", [
    (PSI, {}), (KS, {}), (Wasserstein, {"bins": 50}), (JS, {}), (Chi2, {"categorical": True}),
    (JS, {"categorical": True, "max_categories": 3}),
])
def test_a_reference_profile_stands_in_for_the_sample(cls, params):
    from detectors.drift import reference_profile

    rng = np.random.default_rng(12)
    if params.get("categorical"):
        reference, stream = rng.choice(list("abcde"), 3000), rng.choice(list("abcdef"), 4000)
    else:
        reference, stream = rng.gamma(2.0, 1.0, 3000), rng.gamma(2.2, 1.0, 4000)
    bins = params.get("bins", cls.default_bins)
    profile = json.loads(json.dumps(reference_profile(
        reference, bins=bins, categorical=params.get("categorical", False),
        max_categories=params.get("max_categories", 50))))
    from_sample, from_profile = cls(reference=reference, **params), cls(reference=profile, **params)
    for batch in np.array_split(stream, 4):
        assert from_profile.update_many(batch) == from_sample.update_many(batch)


def test_a_profile_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="categorical = true"):
        PSI(reference={"categories": ["a"], "counts": [1, 0]})
    with pytest.raises(ValueError, match="3 counts"):
        PSI(reference={"edges": [1.0, 2.0], "counts": [1, 1]})
    with pytest.raises(ValueError, match="exact needs the reference sample"):
        KS(reference={"edges": [1.0], "counts": [1, 1]}, exact=True)


@pytest.mark.parametrize("level", [0.05, 0.01, 0.0005, 1e-6])
def test_ks_p_value_below_a_level_agrees_with_scipy_near_the_critical_distance(level):
    """``KSPValue.below`` decides from a band around the critical distance; at and around it
    (inside the band, at its edges and beyond) it must agree with computing kstwo.sf itself."""
    rng = np.random.default_rng(7)
    sizes = sorted({1, 2, 5, 17, 91, 140, 141, 250, 474, 500, *rng.integers(1, 5000, 12).tolist()})
    for en in map(float, sizes):
        critical = stats.kstwo.isf(level, en)
        if not np.isfinite(critical):
            continue
        gaps = []
        for factor in (0.5, 0.99, 0.999, 0.9995, 1, 1.0005, 1.001, 1.002, 1.01, 1.5):
            gap = round(min(1.0, critical * factor), 12)  # KSPValue rounds to 1e-12 (its cache key)
            assert KSPValue(gap, en).below(level) == (stats.kstwo.sf(gap, en) < level), (en, gap)
            gaps.append(gap)
        # all rows at once: the same decisions, none for a row without a level
        levels = [level if k % 3 else math.nan for k in range(len(gaps))]
        rows = _KSPValues(np.array(gaps), np.full(len(gaps), en))
        assert rows.below(np.array(levels)).tolist() == [not math.isnan(level) and KSPValue(gap, en).below(level)
                                                         for gap, level in zip(gaps, levels)]


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(0.0, 1.0), st.sampled_from([1.0, 17.0, 140.0, 500.0]),
                               st.sampled_from([math.nan, 0.05, 1e-6])), min_size=1, max_size=40))
def test_ks_rows_below_their_levels_are_each_rows_own_decision(rows):
    """Rows of many effective sizes and levels (nan: not judged) decided at once agree with
    each row's own :meth:`KSPValue.below`."""
    gaps, sizes, levels = (np.array(column) for column in zip(*rows))
    got = _KSPValues(gaps, sizes).below(levels).tolist()
    assert got == [not math.isnan(level) and KSPValue(gap, en).below(level)
                   for gap, en, level in zip(gaps.tolist(), sizes.tolist(), levels.tolist())]


@settings(max_examples=50, deadline=None)
@given(st.sampled_from([0.05, 1e-6, 0.01]), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 600)),
                                                     min_size=1, max_size=60))
def test_ks_rows_at_one_level_are_each_rows_own_decision(level, rows):
    """The usual judgement, every row at one level (bands looked up by effective size), agrees
    with each row's own :meth:`KSPValue.below`, distances near a band's edge included."""
    gaps, sizes = (np.array(column, dtype=np.float64) for column in zip(*rows))
    for k, size in enumerate(sizes.tolist()[:3]):  # a distance on the band's edge, and within 1e-12 of it
        low, high = _ks_critical_band(level, size)
        if math.isfinite(low):
            gaps[k] = (low, high, high - 5e-13)[k]
    got = _KSPValues(gaps, sizes).below(np.full(len(gaps), level)).tolist()
    assert got == [KSPValue(gap, en).below(level) for gap, en in zip(gaps.tolist(), sizes.tolist())]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 120), st.integers(1, 6), st.integers(0, 4), st.booleans())
def test_measuring_from_reference_constants_equals_measuring_the_rows(seed, bins, detectors, positions, some_empty):
    """``_measure_sized`` from the constants a kind derives once per reference, with the window
    sizes given, gives ``_measure_rows``'s statistics and effective sizes bit for bit: for one
    row per detector and for positions x detectors, empty windows (no statistic) included."""
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 50, size=(detectors, bins))
    reference[:, 0] += 1  # a reference is never empty
    shape = (positions, detectors, bins) if positions else (detectors, bins)
    current = rng.integers(0, rng.integers(1, 200), size=shape) * (rng.random(shape) < rng.random())
    if some_empty:
        current[..., 0, :] = 0
    for kind in (PSI, KS, JS):
        with np.errstate(divide="ignore", invalid="ignore"):
            values, p_values = kind._measure_rows(reference, current)
            sized, sized_p_values = kind._measure_sized(kind._reference_rows(reference), current,
                                                        current.sum(axis=-1))
        assert sized.tobytes() == values.tobytes(), kind.__name__  # bit for bit, nan where empty
        if p_values is not None:
            assert repr((sized_p_values.gaps, sized_p_values.sizes)) == repr((p_values.gaps, p_values.sizes))


def test_ks_rows_at_one_level_with_a_nan_size_are_each_rows_own_decision():
    """A nan effective size (no band) among others at one level: sorted() leaves it anywhere,
    so the one-search lookup must not be used (it read other rows' bands, or past the end)."""
    gaps, sizes = [0.9, 0.2, 0.9, 0.05, 0.6], [40.0, 3.0, math.nan, 500.0, 10.0]
    for order in ([0, 1, 2, 3, 4], [2, 0, 4, 1, 3], [3, 2, 1, 0, 4], [1, 4, 2, 3, 0]):
        g, s = np.array(gaps)[order], np.array(sizes)[order]
        got = _KSPValues(g, s).below(np.full(len(g), 0.01)).tolist()
        assert got == [KSPValue(gap, en).below(0.01) for gap, en in zip(g.tolist(), s.tolist())]


def test_ks_rows_without_a_critical_band_are_decided_by_their_p_values():
    gaps = [0.01, 0.2, 0.9]
    with mock.patch("detectors.drift._ks_critical_band", lambda level, en: (math.nan, math.nan)):
        rows = _KSPValues(np.array(gaps), np.full(3, 50.0))
        assert rows.below(np.full(3, 0.01)).tolist() == [stats.kstwo.sf(gap, 50.0) < 0.01 for gap in gaps]


def test_ks_detector_defers_its_p_value_and_fires_on_the_critical_distance():
    rng = np.random.default_rng(3)
    ks = KS(reference=rng.normal(0, 1, 1000), window=1000, min_samples=100)
    quiet = ks.update_many(rng.normal(0, 1, 1000))
    assert callable(quiet.deferred_p_value()) and not quiet.fired
    drifted = ks.update_many(rng.normal(0.5, 1, 1000))
    assert drifted.fired
    statistic, p_value = ks_from_counts(ks.reference_counts, ks.current_counts())
    assert (drifted.statistic, drifted.p_value) == (statistic, p_value) and p_value < 0.01


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 700), min_size=1, max_size=6),
       st.sampled_from([None, 3]))
@example(seed=1, batches=[300], ties_in=None)  # references complete, every window still empty
@example(seed=1, batches=[300, 0, 5], ties_in=None)
def test_detectors_fed_and_measured_together_equal_one_by_one(seed, batches, ties_in):
    """``add_columns`` + ``results`` leave every detector (state and result) exactly as
    ``add_many`` + ``result`` on its own column would, whatever the batching: references
    completing mid-batch, windows wrapping, a column whose ties merge bins (fewer bins)."""
    rng = np.random.default_rng(seed)
    kinds = [PSI, KS, JS, Wasserstein, Chi2]
    params = {"reference_size": 300, "window": 400, "blocks": 8, "min_samples": 50}
    together = [kind(**params) for kind in kinds for _ in range(3)]
    alone = [kind(**params) for kind in kinds for _ in range(3)]
    for size in batches:
        matrix = rng.normal(size=(size, len(together))) + np.linspace(0, 1, len(together))
        if ties_in is not None:
            matrix[:, ties_in] = np.round(matrix[:, ties_in])  # few distinct values: merged bins
        add_columns(together, matrix)
        for j, detector in enumerate(alone):
            detector.add_many(matrix[:, j])
        for detector, grouped in zip(alone, results(together)):
            expected = detector.result()
            assert (grouped.statistic, grouped.n, grouped.fired, grouped.threshold) == \
                (expected.statistic, expected.n, expected.fired, expected.threshold) or \
                (math.isnan(grouped.statistic) and math.isnan(expected.statistic))
            assert grouped.p_value == expected.p_value or math.isnan(expected.statistic)
    assert [d.state() for d in together] == [d.state() for d in alone]



@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.tuples(st.integers(0, 500), st.sampled_from([None, 0, 3])),
                                           min_size=1, max_size=6), st.booleans())
@example(seed=1, batches=[(300, None), (40, 0), (40, None)], wasserstein=False)  # a detector fed alone, then all
def test_detectors_fed_by_columns_equal_one_by_one(seed, batches, wasserstein):
    """``add_columns(..., columns=)`` (a Foresight's commit once every detector can be foreseen,
    a feature read by its PSI and KS binned once) and ``statistics`` / ``results`` leave every
    detector exactly as ``add_many`` / ``result`` would: references completing mid-batch, a
    detector fed alone between batches (its table's windows out of step, then back in step),
    a detector that cannot be foreseen among them, the same detectors asked again."""
    rng = np.random.default_rng(seed)
    params = {"reference_size": 200, "window": 300, "blocks": 6, "min_samples": 50, "level": 0.01}
    kinds = [PSI, KS, PSI, KS, PSI] + ([Wasserstein] if wasserstein else [])
    features = [0, 0, 1, 1, 2] + ([2] if wasserstein else [])
    together = [kind(**params) for kind in kinds]
    alone = [kind(**params) for kind in kinds]
    for size, fed_alone in batches:
        matrix = rng.normal(size=(size, 3)) + np.array([0.0, 0.5, 1.0])
        if fed_alone is not None:  # one detector fed on its own: the others' windows pass it by
            together[fed_alone].add_many(matrix[:, features[fed_alone]])
            alone[fed_alone].add_many(matrix[:, features[fed_alone]])
        else:
            add_columns(together, matrix, columns=np.array(features))
            for detector, feature in zip(alone, features):
                detector.add_many(matrix[:, feature])
        expected = [detector.result() for detector in alone]
        assert statistics(together) == [(r.statistic, r.n) for r in expected] or \
            any(math.isnan(r.statistic) for r in expected)
        for grouped, one in zip(results(together), expected):
            assert (grouped.statistic, grouped.n, grouped.fired, grouped.threshold) == \
                (one.statistic, one.n, one.fired, one.threshold) or \
                (math.isnan(grouped.statistic) and math.isnan(one.statistic))
        assert can_foresee(together) == (not wasserstein and all(d.profile is not None for d in together))
    assert [d.state() for d in together] == [d.state() for d in alone]


# -- many columns binned at once ------------------------------------------------------------------

any_float = st.floats(allow_nan=False, allow_infinity=False)
FLOAT_LIMITS = [np.finfo(float).max, 1e300, 1.0, np.finfo(float).tiny, 5e-324, 0.0]


@st.composite
def edges(draw):
    """Sorted distinct edges, as NumericBins has them: quantiles of a sample (up to 400) at any
    scale, neighbouring floats a few ulps apart (with or without one far away), whatever
    hypothesis finds, or a single edge."""
    shape = draw(st.sampled_from(["quantiles", "crowded", "any", "one"]))
    if shape == "quantiles":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        scale, location = 10.0 ** draw(st.integers(-300, 300)), draw(st.floats(-1e300, 1e300))
        edges = np.unique(location + scale * rng.standard_normal(draw(st.integers(1, 400))))
    elif shape == "crowded":
        edges = [draw(any_float)]
        for ulps in draw(st.lists(st.integers(1, 4), min_size=1, max_size=30)):
            edges.append(edges[-1])
            for _ in range(ulps):
                with np.errstate(over="ignore"):  # past the largest float: inf, dropped below
                    edges[-1] = np.nextafter(edges[-1], np.inf)
        if draw(st.booleans()):
            edges.append(draw(any_float))
        edges = np.unique(np.asarray(edges, dtype=np.float64))
    elif shape == "any":
        edges = np.unique(draw(st.lists(any_float, min_size=1, max_size=60)))
    else:
        edges = np.array([draw(any_float)])
    edges = edges[np.isfinite(edges)]
    return edges if len(edges) else np.array([0.0])


@st.composite
def values_around(draw, edges: np.ndarray, n: int):
    """n values: the edges, their neighbouring floats both sides, midpoints, values far outside
    (up to the float limits, infinities, nan) and whatever hypothesis finds."""
    limits = np.array(FLOAT_LIMITS)
    pool = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                           (edges[:-1] + edges[1:]) / 2, limits, -limits, [np.inf, -np.inf, np.nan],
                           draw(st.lists(st.floats(allow_nan=True), max_size=10))])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.choice(pool, n)


def searchsorted_codes(bins, columns):
    return np.stack([b.codes(column) for b, column in zip(bins, columns)])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_codes_of_columns_equal_searchsorted_on_each_column(data):
    """Bit for bit ``NumericBins.codes`` column by column, whatever the edges (close, far, one,
    many, any magnitude) and the values (on an edge, one float either side, outside, nan), in
    one pass or in chunks of columns."""
    bins = [NumericBins(e) for e in data.draw(st.lists(edges(), min_size=1, max_size=6), label="edges")]
    n = data.draw(st.integers(0, 80), label="n")
    with np.errstate(over="ignore"):  # the neighbours of the largest float
        columns = np.stack([data.draw(values_around(b.edges, n)) for b in bins])
    chunk = data.draw(st.sampled_from([1, 50, _ColumnLookup.CHUNK]), label="chunk")
    with mock.patch.object(_ColumnLookup, "CHUNK", chunk):
        codes = NumericBins.codes_of_columns(bins, columns)
        expected = searchsorted_codes(bins, columns)
    assert codes.dtype == expected.dtype and np.array_equal(codes, expected)


def test_codes_of_columns_on_stream_like_values_needs_no_binary_search():
    """On quantile edges of the data's own kind (normal, heavy-tailed, discrete) every value's
    code is found by the lookup, none by ``searchsorted``: the speed is not given away."""
    rng = np.random.default_rng(4)
    samples = [rng.normal(size=1000).round(5), rng.exponential(size=1000), rng.lognormal(size=1000),
               rng.integers(0, 5, 1000).astype(float), rng.normal(1e6, 1e-3, 1000)]
    bins = [NumericBins.from_sample(s, count) for s in samples for count in (10, 100)]
    columns = np.stack([rng.permutation(s) for s in samples for _ in (10, 100)])
    with mock.patch.object(NumericBins, "codes", autospec=True, side_effect=NumericBins.codes) as searched:
        codes = NumericBins.codes_of_columns(bins, columns)
    assert searched.call_count == 0
    assert np.array_equal(codes, searchsorted_codes(bins, columns))


def test_the_lookup_follows_the_bins_it_is_asked_for():
    """Kept by the first bins, it is made again when the other bins or their edges change;
    the edges are read-only so that a lookup made from them stays right."""
    first, second, other = NumericBins([0.0, 1.0]), NumericBins([5.0]), NumericBins([-1.0, 2.0, 3.0])
    columns = np.array([[0.5, 2.0, -3.0], [6.0, 5.0, 2.5]])
    for bins in ([first, second], [first, other], [first, second], [first, NumericBins([5.0, 6.0])]):
        assert np.array_equal(NumericBins.codes_of_columns(bins, columns), searchsorted_codes(bins, columns))
    lookup = first._column_lookup
    NumericBins.codes_of_columns([first, other], columns)
    assert first._column_lookup is not lookup  # other bins
    lookup = first._column_lookup
    NumericBins.codes_of_columns([first, other], columns)
    assert first._column_lookup is lookup  # the same bins: kept
    other.edges = np.array([2.5])
    assert np.array_equal(NumericBins.codes_of_columns([first, other], columns),
                          searchsorted_codes([first, other], columns))
    assert first._column_lookup is not lookup  # new edges
    with pytest.raises(ValueError):
        first.edges[0] = 0.25
    with pytest.raises(ValueError, match="one row of values per bins"):
        NumericBins.codes_of_columns([first], columns)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 300), min_size=1, max_size=4),
       st.lists(st.integers(0, 300), max_size=5), st.integers(0, 300), st.booleans())
@example(seed=1, before=[1], positions=[10, 40], size=60, asked_late=False)  # a level calibrated within the batch
def test_foresight_equals_feeding_up_to_each_position(seed, before, positions, size, asked_late):
    """A Foresight's results at each position equal ``add_columns`` of the rows up to it and
    ``results``, for windows of different shapes and out of step (references of different
    sizes), sliding within the batch; a position not planned is measured when asked; commit
    leaves the detectors as ``add_columns`` of the whole matrix."""
    rng = np.random.default_rng(seed)
    made = [(PSI, {"reference_size": 100, "window": 150, "blocks": 5}),
            (KS, {"reference_size": 100, "window": 150, "blocks": 5}),
            (KS, {"reference_size": 130, "window": 60, "blocks": 6, "min_samples": 20}),
            (JS, {"reference_size": 100, "window": 80}), (PSI, {"reference_size": 100, "window": 150, "level": 0.05})]
    foreseen, fed, alone = ([kind(**params) for kind, params in made for _ in range(2)] for _ in range(3))
    for rows in [*before, 200]:  # every reference complete, windows partly filled
        matrix = rng.normal(size=(rows, len(foreseen))) + np.linspace(0, 1, len(foreseen))
        add_columns(foreseen, matrix)
        add_columns(fed, matrix)
        add_columns(alone, matrix)
    assert can_foresee(foreseen)
    matrix = rng.normal(0.3, 1.2, size=(size, len(foreseen)))
    positions = sorted(min(p, size) for p in positions)
    foresight = Foresight(foreseen, matrix, [] if asked_late else positions)
    members = list(range(len(foreseen)))[::-1]
    done = 0
    for position in positions:
        add_columns(fed, matrix[done:position])
        add_columns(alone, matrix[done:position])
        done = position
        expected = results(fed)
        one_by_one = [detector.result() for detector in alone]  # a calibrated threshold set as result() sets it
        got = foresight.results(position, members)
        assert repr(foresight.measured(position)) == repr(statistics(fed))  # repr: nan equals nan
        for i, result in zip(members, got):
            assert (result.statistic, result.n, result.fired, result.threshold, result.p_value) == \
                (expected[i].statistic, expected[i].n, expected[i].fired, expected[i].threshold, expected[i].p_value)
            assert (result.statistic, result.n, result.fired, result.threshold) == \
                (one_by_one[i].statistic, one_by_one[i].n, one_by_one[i].fired, one_by_one[i].threshold) or \
                (math.isnan(result.statistic) and math.isnan(one_by_one[i].statistic))
    add_columns(fed, matrix[done:])
    foresight.commit()
    assert [d.state() for d in foreseen] == [d.state() for d in fed]
    assert not can_foresee([PSI(reference_size=10), *foreseen])  # a reference still filling
    assert not can_foresee([Wasserstein(reference=[0.0, 1.0]), Chi2(reference=[0.0, 1.0])])  # measured one by one


_edges = st.lists(st.sampled_from([-3.0, -1.5, -1.0, -0.0, 0.0, 0.25, 0.5, 1.0, 1.0 + 2 ** -52, 2.0, 7.0]),
                  max_size=8).map(lambda edges: sorted(set(edges)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), _edges), min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_codes_derived_from_finer_bins_equal_each_rows_own(rows, seed):
    """Rows reading one column are binned once where one's bins refine another's: every code
    equals the row's own ``NumericBins.codes``, for any edges (refining or not, shared, a
    bin holding two coarse edges, none), values on the edges included."""
    rng = np.random.default_rng(seed)
    profiles = [NumericBins(edges) for _, edges in rows]
    read = [column for column, _ in rows]
    grid = np.array([-3.0, -1.5, -1.0, -0.0, 0.0, 0.25, 0.5, 1.0, 1.0 + 2 ** -52, 2.0, 7.0])
    columns = np.concatenate((grid, rng.normal(0, 2, 30), [-1e300, 1e300]))[None, :] + np.zeros((3, 1))
    columns[1] = rng.permutation(columns[1])
    values = columns[read]
    expected = np.stack([profile.codes(row) for profile, row in zip(profiles, values)])
    assert _Refined(profiles, read).codes(values).tolist() == expected.tolist()


def test_a_foresight_reading_each_feature_once_equals_one_reading_a_column_per_detector():
    """``columns``: a feature's PSI and KS read its column of the batch (the KS codes give the
    PSI ones); results and the committed windows are those of a column per detector."""
    rng = np.random.default_rng(11)
    made = [(PSI, {"reference_size": 200, "window": 150}), (KS, {"reference_size": 200, "window": 150})]
    by_column, by_detector = ([kind(**params) for _ in range(3) for kind, params in made] for _ in range(2))
    columns = [0, 0, 1, 1, 2, 2]
    for batch in range(4):
        matrix = rng.normal(0.1 * batch, 1.0, size=(250 if batch == 0 else 70, 3))
        if batch == 0:
            add_columns(by_column, matrix[:, columns])
            add_columns(by_detector, matrix[:, columns])
            continue
        positions = [20, 50, 70]
        once = Foresight(by_column, matrix, positions, columns=columns)
        each = Foresight(by_detector, matrix[:, columns], positions)
        assert once._layout._refined[1].base is not None  # the PSI codes derived
        for position in positions:
            got, expected = once.results(position, list(range(6))), each.results(position, list(range(6)))
            assert [(r.statistic, r.n, r.fired, r.p_value) for r in got] == \
                [(e.statistic, e.n, e.fired, e.p_value) for e in expected]
        once.commit()
        each.commit()
        assert [d.state() for d in by_column] == [d.state() for d in by_detector]


def test_foresights_batch_after_batch_equal_feeding_as_their_groups_change():
    """A model's Foresight batch after batch measures what feeding gives, also once a detector
    fed on its own falls out of step with its group and the groups change."""
    rng = np.random.default_rng(7)
    made = [(PSI, {"reference_size": 50, "window": 100}), (KS, {"reference_size": 50, "window": 100}),
            (PSI, {"reference_size": 50, "window": 100, "level": 0.05})]
    foreseen, fed = ([kind(**params) for kind, params in made for _ in range(3)] for _ in range(2))
    first = rng.normal(size=(60, len(foreseen)))
    add_columns(foreseen, first)
    add_columns(fed, first)
    members = list(range(len(foreseen)))
    for batch in range(5):
        if batch == 3:  # one detector out of step: its own group from now on
            extra = rng.normal(size=7)
            foreseen[4].add_many(extra)
            fed[4].add_many(extra)
        matrix = rng.normal(0.2 * batch, 1.0, size=(45, len(foreseen)))
        positions = [10, 30, 45]
        foresight = Foresight(foreseen, matrix, positions)
        assert len(foresight._layout.groups) == (3 if batch >= 3 else 2)
        done = 0
        for position in positions:
            add_columns(fed, matrix[done:position])
            done = position
            got, expected = foresight.results(position, members[::-1]), results(fed)
            assert [(r.statistic, r.n, r.fired, r.threshold, r.p_value) for r in got] == \
                [(e.statistic, e.n, e.fired, e.threshold, e.p_value) for e in expected[::-1]]
        foresight.commit()
        assert [d.state() for d in foreseen] == [d.state() for d in fed]


@pytest.mark.parametrize("seed", range(3))
def test_a_features_windows_in_one_table_stay_each_detectors_own_through_restores_and_new_references(seed):
    """A feature's PSI and KS counted in one table (different bins; a PSI with other blocks,
    a feature with few values and so few bins, two references whose bins do not refine one
    another), batch after batch through a Foresight reading each feature once or
    ``add_columns``: each detector's results and window equal its own ``add_many`` and
    ``result``, also after a restore from a checkpoint, detectors given new references and
    one fed on its own."""
    rng = np.random.default_rng(seed)

    def made():
        detectors = []
        for feature in range(5):
            detectors += [PSI(reference_size=80, window=120, blocks=4 if feature == 3 else 6),
                          KS(reference_size=80, window=120, blocks=6)]
            if feature == 2:
                detectors.append(PSI(reference_size=80, window=120, blocks=6, bins=7))
        return detectors

    columns = [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    together, alone = made(), made()
    for batch in range(14):
        matrix = rng.normal(size=(int(rng.integers(0, 90)), 5))
        matrix[:, 1] = rng.integers(0, 4, len(matrix))
        matrix[:, 4] = np.round(matrix[:, 4] * 3) / 3
        if batch == 6:
            together = [type(d).from_state(json.loads(json.dumps(d.state()))) for d in together]
        if batch == 8:  # new references: the KS of feature 1 elsewhere, its PSI's bins all near 0
            for j, reference in ((3, rng.normal(2.0, 1.0, 80)), (2, rng.normal(0.0, 0.001, 80))):
                together[j]._set_reference(reference)
                alone[j]._set_reference(reference)
        if batch == 10:
            extra = rng.normal(size=5)
            together[5].add_many(extra)
            alone[5].add_many(extra)
        done = 0
        if batch % 3 and len(matrix) and can_foresee(together):
            positions = sorted({int(p) for p in rng.integers(1, len(matrix) + 1, 3)})
            foresight = Foresight(together, matrix, positions, columns=columns)
            for position in positions:
                for detector, column in zip(alone, columns):
                    detector.add_many(matrix[done:position, column])
                done = position
                got = foresight.results(position, list(range(len(together))))
                assert repr([(r.statistic, r.n, r.fired) for r in got]) == \
                    repr([(r.statistic, r.n, r.fired) for r in (d.result() for d in alone)])
            foresight.commit()
        else:
            add_columns(together, matrix[:, columns])
        for detector, column in zip(alone, columns):
            detector.add_many(matrix[done:, column])
        assert repr([(r.statistic, r.n) for r in results(together)]) == \
            repr([(r.statistic, r.n) for r in (d.result() for d in alone)])
        assert [d.state() for d in together] == [d.state() for d in alone]


def test_a_foresight_after_a_detector_takes_a_new_reference_bins_with_the_new_one():
    """The layout a Foresight keeps for the next batch is not used once a detector has a new
    reference (new bins, a new window), even while its windows look in step with the rest."""
    rng = np.random.default_rng(3)
    foreseen, fed = ([PSI(reference_size=50, window=100) for _ in range(3)] for _ in range(2))
    first = rng.normal(size=(60, 3))
    add_columns(foreseen, first)
    add_columns(fed, first)
    Foresight(foreseen, rng.normal(size=(0, 3)), [])  # a layout kept by the first detector
    reference = rng.normal(5.0, 2.0, size=50)
    for detectors in (foreseen, fed):
        detectors[1]._set_reference(reference)  # what a reference learned again does
    matrix = rng.normal(4.0, 2.0, size=(40, 3))
    foresight = Foresight(foreseen, matrix, [40])
    add_columns(fed, matrix)
    got, expected = foresight.results(40, [0, 1, 2]), results(fed)
    assert [(r.statistic, r.n) for r in got] == [(e.statistic, e.n) for e in expected]
    foresight.commit()
    assert [d.state() for d in foreseen] == [d.state() for d in fed]


@pytest.mark.parametrize("make", [lambda: PSI(reference_size=20, window=30, level=0.01, min_samples=10),
                                  lambda: KS(reference_size=20, window=30, exact=True),
                                  lambda: PSI(reference_size=20, window=30, categorical=True)])
def test_a_state_reuses_its_reference_only_while_the_detector_keeps_it(make):
    """The parameters and reference a state shares with the one before are made again when the
    detector learns its reference or calibrates its threshold, and a restore reads them back."""
    detector, rng = make(), np.random.default_rng(3)
    values = (lambda n: rng.integers(0, 4, n).astype(str)) if detector.categorical else (lambda n: rng.normal(size=n))
    states = []
    for n in (5, 10, 10, 30, 30):
        detector.add_many(values(n))
        detector.result()
        states.append(json.loads(json.dumps(detector.state())))
        fresh = type(detector).from_state(states[-1])
        assert json.loads(json.dumps(fresh.state())) == states[-1]
    assert states[0]["profile"] is None and states[-1]["profile"] is not None
    assert states[-1]["reference_counts"] == detector.reference_counts.tolist()
    if detector.level is not None:
        assert states[-1]["threshold"] is not None
