"""Change detectors: the same detections as river, state round trips, bounded state."""
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift as river_drift

from detectors.base import InvalidInput
from detectors.change import ADWIN, DDM, EDDM, HDDM_A, HDDM_W, KSWIN, PageHinkley

# ours, river's, parameters both accept
PAIRS = [
    (ADWIN, river_drift.ADWIN, {}),
    (ADWIN, river_drift.ADWIN, {"delta": 0.05, "clock": 8}),
    (DDM, river_drift.binary.DDM, {}),
    (EDDM, river_drift.binary.EDDM, {}),
    (EDDM, river_drift.binary.EDDM, {"alpha": 0.8, "beta": 0.75}),
    (HDDM_A, river_drift.binary.HDDMA, {}),
    (HDDM_A, river_drift.binary.HDDMA, {"two_sided_test": True}),
    (HDDM_W, river_drift.binary.HDDMW, {}),
    (HDDM_W, river_drift.binary.HDDMW, {"two_sided_test": True, "lambda_val": 0.1}),
    (PageHinkley, river_drift.PageHinkley, {}),
    (PageHinkley, river_drift.PageHinkley, {"mode": "down", "threshold": 10.0}),
    (KSWIN, river_drift.KSWIN, {"seed": 7}),
    (KSWIN, river_drift.KSWIN, {"seed": 3, "window_size": 60, "stat_size": 20, "alpha": 0.01}),
]
BINARY = {DDM, EDDM, HDDM_A, HDDM_W}


def river_run(detector, stream):
    """Detection indices and (drift, warning) flags after every value, the river way."""
    hits = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            hits.append(i)
    return hits


def docstring_streams():
    rng = random.Random(12345)
    mean_shift = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    rng = random.Random(42)
    error_rise = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    return mean_shift, error_rise


@pytest.mark.parametrize("ours, params, expected", [
    (ADWIN, {}, [1023]), (PageHinkley, {}, [1006]), (KSWIN, {"alpha": 0.0001, "seed": 42}, [1016]),
])
def test_river_docstring_mean_shift(ours, params, expected):
    stream, _ = docstring_streams()
    detector = ours(**params)
    result = detector.update_many(stream)
    assert detector.last_detections == expected
    assert result.fired


@pytest.mark.parametrize("ours, params, expected", [
    (DDM, {}, [1334]), (EDDM, {"alpha": 0.8, "beta": 0.75}, [1278]), (HDDM_A, {}, [1206]), (HDDM_W, {}, [1077]),
])
def test_river_docstring_error_rise(ours, params, expected):
    _, stream = docstring_streams()
    detector = ours(**params)
    assert detector.update_many(stream).fired
    assert detector.last_detections == expected


def error_stream(seed, n=6000):
    """0/1 errors whose rate jumps twice, so detectors fire and reset several times."""
    rng = np.random.default_rng(seed)
    rate = np.repeat(rng.uniform(0.05, 0.6, 4), n // 4)
    return (rng.random(n) < rate).astype(float)


def numeric_stream(seed, n=6000):
    rng = np.random.default_rng(seed)
    return rng.normal(np.repeat(rng.normal(0, 2, 4), n // 4), 1.0)


@pytest.mark.parametrize("ours, theirs, params", PAIRS, ids=lambda p: getattr(p, "__name__", str(p)))
@pytest.mark.parametrize("seed", [1, 2])
def test_same_detections_as_river(ours, theirs, params, seed):
    n = 2400 if ours is KSWIN else 6000  # river's KSWIN runs a scipy test per value: a shorter stream
    stream = error_stream(seed, n) if ours in BINARY else numeric_stream(seed, n)
    expected = river_run(theirs(**params), stream.tolist())
    detector = ours(**params)
    found = []
    for batch in np.array_split(stream, 7):  # batch boundaries must not matter
        detector.update_many(batch)
        found += detector.last_detections
    assert found == expected
    assert detector.n_detections == len(expected)


@pytest.mark.parametrize("ours, theirs, params", PAIRS[:11], ids=lambda p: getattr(p, "__name__", str(p)))
def test_same_warnings_and_flags_value_by_value(ours, theirs, params):
    stream = (error_stream(5, 3000) if ours in BINARY else numeric_stream(5, 3000)).tolist()
    river_detector, detector = theirs(**params), ours(**params)
    for x in stream:
        river_detector.update(x)
        detector.update(x)
        assert detector.drift_detected == river_detector.drift_detected
        assert detector.warning_detected == getattr(river_detector, "warning_detected", False)


@pytest.mark.parametrize("ours, theirs, params", PAIRS, ids=lambda p: getattr(p, "__name__", str(p)))
def test_state_round_trip_gives_identical_future(ours, theirs, params):
    stream = error_stream(11) if ours in BINARY else numeric_stream(11)
    detector = ours(**params)
    detector.update_many(stream[:2500])
    restored = ours.from_state(json.loads(json.dumps(detector.state())))
    assert restored.state() == detector.state()
    for batch in np.array_split(stream[2500:], 9):
        assert restored.update_many(batch) == detector.update_many(batch)
        assert restored.last_detections == detector.last_detections


@pytest.mark.parametrize("ours", [DDM, EDDM, HDDM_A, HDDM_W, PageHinkley, KSWIN, ADWIN])
def test_state_stays_bounded(ours):
    """No growth with stream length (ADWIN: logarithmic in its window, a few buckets per doubling)."""
    rng = np.random.default_rng(0)
    detector = ours()
    sizes = []
    for _ in range(4):
        detector.update_many((rng.random(20_000) < 0.2).astype(float))
        sizes.append(len(json.dumps(detector.state())))
    if ours is ADWIN:
        buckets = sum(len(row) for row in detector.state()["vars"]["_totals"])
        assert buckets <= detector.max_buckets * (np.log2(detector.seen) + 1)
    else:
        assert max(sizes) <= min(sizes) * 1.2 + 200


def test_last_detections_are_stream_positions_and_reset_per_batch():
    detector = PageHinkley(threshold=5.0)
    detector.update_many(np.zeros(100))
    assert detector.last_detections == [] and not detector.result().fired
    result = detector.update_many(np.full(50, 3.0))
    assert result.fired and all(100 <= i < 150 for i in detector.last_detections)
    assert not detector.update_many(np.full(5, 3.0)).fired


def test_binary_detectors_reject_values_outside_unit_interval():
    with pytest.raises(InvalidInput, match="ddm takes errors in \\[0, 1\\]"):
        DDM().update_many([0, 1, 2])
    with pytest.raises(InvalidInput, match="values\\[1\\]"):
        ADWIN().update_many([0.0, float("nan")])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300))
def test_any_finite_stream_keeps_results_finite(values):
    for detector in (ADWIN(), PageHinkley(), KSWIN(window_size=20, stat_size=5)):
        result = detector.update_many(values)
        assert np.isfinite(result.statistic)
        assert result.n >= 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=400))
def test_any_error_stream_keeps_binary_results_in_range(values):
    for detector in (DDM(), EDDM(), HDDM_A(), HDDM_W()):
        result = detector.update_many(values)
        assert 0.0 <= result.statistic <= 2.0


@pytest.mark.parametrize(("scalar_below", "loop_below"), [(0, 0), (10**9, 0), (10**9, 10**9)],
                         ids=["vectorized", "screened-numpy", "one-by-one"])
@pytest.mark.parametrize("seed", range(12))
def test_adwin_batches_reproduce_rivers_window_bit_for_bit(seed, scalar_below, loop_below, monkeypatch):
    """Every insertion path keeps river's float operations: same width, sum and variance."""
    monkeypatch.setattr(ADWIN, "SCALAR_BELOW", scalar_below)
    monkeypatch.setattr(ADWIN, "LOOP_BELOW", loop_below)
    rng = np.random.default_rng(seed)
    params = dict(delta=float(rng.choice([0.002, 0.05, 0.3])), clock=int(rng.choice([1, 2, 8, 32])),
                  max_buckets=int(rng.choice([2, 3, 5])), min_window_length=int(rng.choice([1, 5, 10])),
                  grace_period=int(rng.choice([0, 10, 50])))
    n = 2500
    means = np.repeat(rng.normal(0, 1, 5), n // 5)
    stream = [(rng.random(n) < 0.3 + 0.1 * np.sign(means)).astype(float),
              rng.normal(means, 1.0), np.round(rng.exponential(1.0, n) + means, 2)][seed % 3]
    reference = river_drift.ADWIN(**params)
    expected = river_run(reference, stream.tolist())
    detector, found = ADWIN(**params), []
    for batch in np.array_split(stream, int(rng.integers(1, 30))):
        detector.update_many(batch)
        found += detector.last_detections
    assert found == expected
    assert (detector.width, detector._total, detector._variance) == (reference.width, reference.total, reference.variance)


@st.composite
def adwin_runs(draw):
    """ADWIN parameters, a stream with a level shift (0/1 errors or reals) and where to cut it
    into batches, one of the cuts also a checkpoint restore."""
    params = dict(delta=draw(st.sampled_from([0.002, 0.05, 0.5])), clock=draw(st.sampled_from([1, 3, 32])),
                  max_buckets=draw(st.sampled_from([2, 3, 5])), min_window_length=draw(st.sampled_from([1, 5])),
                  grace_period=draw(st.sampled_from([0, 10])))
    n = draw(st.integers(1, 700))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shift = draw(st.integers(0, n))
    if draw(st.booleans()):
        stream = (rng.random(n) < np.where(np.arange(n) < shift, 0.1, 0.6)).astype(float)
    else:
        stream = np.round(rng.normal(np.where(np.arange(n) < shift, 0.0, 3.0), 1.0), 3)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=8)))
    return params, stream, cuts, draw(st.sampled_from(cuts)) if cuts else None


@settings(max_examples=150, deadline=None)
@given(adwin_runs())
def test_adwin_any_batching_and_restore_matches_river_value_by_value(run):
    """Batches of any size (each insertion path), with a restore between two of them, give
    river's detections, window and variance, and the state feeding value by value gives."""
    params, stream, cuts, restore_at = run
    reference = river_drift.ADWIN(**params)
    expected = river_run(reference, stream.tolist())
    single = ADWIN(**params)
    for x in stream.tolist():
        single.update(x)
    detector, found = ADWIN(**params), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        if start == restore_at:
            detector = ADWIN.from_state(json.loads(json.dumps(detector.state())))
        detector.update_many(stream[start:end])
        found += detector.last_detections
    assert found == expected
    assert (detector.width, detector._total, detector._variance) == (reference.width, reference.total, reference.variance)
    keys = ("seen", "n_detections", "drift_detected", "vars")
    assert {k: detector.state()[k] for k in keys} == {k: single.state()[k] for k in keys}


class _Unscreened(ADWIN):
    """ADWIN checking every clock tick exactly (no screen)."""

    def _new_screen(self):
        return None


@st.composite
def adwin_near_threshold(draw):
    """ADWIN parameters and a stream whose mean creeps (bits, reals far from 0, or reals of large
    magnitude) so that cut checks come close to the bound, cut into batches of any size."""
    params = dict(delta=draw(st.sampled_from([0.002, 0.05, 0.5])), clock=draw(st.sampled_from([1, 4, 32])),
                  max_buckets=draw(st.sampled_from([2, 5])), min_window_length=draw(st.sampled_from([1, 5, 20])),
                  grace_period=draw(st.sampled_from([0, 10])))
    n = draw(st.integers(1, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ramp = np.linspace(0.0, draw(st.floats(0.0, 1.0)), n)
    kind = draw(st.sampled_from(["bits", "reals", "large"]))
    if kind == "bits":
        stream = (rng.random(n) < 0.05 + 0.3 * ramp).astype(float)
    elif kind == "reals":
        stream = rng.normal(5.0 + ramp, 1.0)
    else:
        stream = np.round(rng.normal(1e9 + 1e3 * ramp, 1e3), 1)
    sizes = draw(st.lists(st.integers(1, 400), min_size=1, max_size=20))
    return params, stream, sizes


@settings(max_examples=120, deadline=None)
@given(adwin_near_threshold())
def test_adwin_screen_skips_only_ticks_without_a_cut(run):
    """The screen that lets clock ticks pass without the exact cut check changes nothing: the
    same detections and state as checking every tick, whatever the batch sizes (and so each
    insertion path)."""
    params, stream, sizes = run
    screened, unscreened = ADWIN(**params), _Unscreened(**params)
    start, found, expected = 0, [], []
    while start < len(stream):
        for size in sizes:
            batch = stream[start:start + size]
            screened.update_many(batch)
            unscreened.update_many(batch)
            found += screened.last_detections
            expected += unscreened.last_detections
            start += size
    assert found == expected
    assert screened.state()["vars"] == unscreened.state()["vars"]


def test_adwin_screen_spares_most_exact_checks_on_a_steady_stream(monkeypatch):
    """On a steady error stream nearly every clock tick passes the screen."""
    checks = []
    original = ADWIN._shrink_window
    monkeypatch.setattr(ADWIN, "_shrink_window", lambda self: checks.append(1) or original(self))
    detector = ADWIN()
    stream = (np.random.default_rng(3).random(64_000) < 0.1).astype(float)
    for batch in np.array_split(stream, 400):
        detector.update_many(batch)
    assert detector.n_detections == 0 and len(checks) < 64_000 / 32 / 5


def test_adwin_builds_no_screens_while_they_pass_few_ticks():
    """Absolute errors of a wide spread: most ticks fail the screen, so after a trial the
    detector checks exactly without building screens for a while (then tries again), and its
    detections and state are those of checking every tick."""
    stream = np.abs(np.random.default_rng(0).normal(0.0, 1.0, 60_000)) * 1e3
    detector, unscreened = ADWIN(), _Unscreened()
    rested = 0
    for batch in np.array_split(stream, 600):  # 100 values a batch: the one-by-one path
        detector.update_many(batch)
        unscreened.update_many(batch)
        rested += detector._screen_rest > 0
    assert rested > 300
    assert detector.last_detections == unscreened.last_detections and detector.n_detections == unscreened.n_detections
    assert detector.state()["vars"] == unscreened.state()["vars"]


def _compress_reference(totals: list[list[float]], variances: list[list[float]], limit: int) -> None:
    """ADWIN's bucket compression written plainly: the two oldest buckets of a row holding more
    than ``limit`` merge into one of the next row, until no row holds more."""
    row = 0
    while row < len(totals) and len(totals[row]) > limit:
        size = float(1 << row)
        if row + 1 == len(totals):
            totals.append([])
            variances.append([])
        while len(totals[row]) > limit:
            t0, t1 = totals[row].pop(0), totals[row].pop(0)
            v0, v1 = variances[row].pop(0), variances[row].pop(0)
            gap = t0 / size - t1 / size
            totals[row + 1].append(t0 + t1)
            variances[row + 1].append(v0 + v1 + size * 0.5 * gap * gap)
        row += 1


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 5), st.lists(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(0, 1e6)), max_size=90),
                                   min_size=1, max_size=6), st.sampled_from([0, 8, 10**9]))
def test_adwin_compress_merges_as_one_pair_at_a_time(limit, rows, numpy_merges):
    """Rows merged a pair at a time, a list of pairs at once (by Python or numpy) or one pair
    alone: the same sums and variances, bit for bit."""
    detector = ADWIN(max_buckets=limit)
    detector.NUMPY_MERGES = numpy_merges
    detector._totals = [[t for t, _ in row] for row in rows]
    detector._variances = [[v for _, v in row] for row in rows]
    totals, variances = [list(r) for r in detector._totals], [list(r) for r in detector._variances]
    detector._compress()
    _compress_reference(totals, variances, limit)
    bits = lambda rows: [[value.hex() for value in row] for row in rows]  # noqa: E731
    assert bits(detector._totals) == bits(totals) and bits(detector._variances) == bits(variances)


@pytest.mark.parametrize("params", [{"max_buckets": 1}, {"clock": 0}])
def test_adwin_refuses_parameters_it_cannot_run_with(params):
    """A row of one bucket can never merge a pair (it failed on the first merge); a clock of
    0 never checks a cut. The config check reports the constructor's message as one line."""
    with pytest.raises(ValueError, match="clock must be >= 1 and max_buckets >= 2"):
        ADWIN(**params)
