import numpy as np
import pytest
from scipy import stats

from detectors.calibration import adjusted_p_values, calibrate_threshold, reject
from detectors.drift import PSI


def test_benjamini_hochberg_by_hand():
    # m = 5, alpha = 0.05: step-up thresholds 0.01, 0.02, 0.03, 0.04, 0.05
    p = [0.012, 0.001, 0.039, 0.041, 0.6]
    # sorted: 0.001 <= .01, 0.012 <= .02, 0.039 > .03, 0.041 > .04, 0.6 > .05
    # largest k with p_(k) <= k/m * alpha is k = 2, so the two smallest are rejected
    assert reject(p, alpha=0.05).tolist() == [True, True, False, False, False]
    # adjusted: .001*5/1, .012*5/2, then .039*5/3 = .065 lowered to .041*5/4 = .05125
    assert adjusted_p_values(p).tolist() == pytest.approx([0.03, 0.005, 0.05125, 0.05125, 0.6])


def test_bonferroni_by_hand():
    p = [0.012, 0.001, 0.039, 0.041, 0.6]
    assert reject(p, alpha=0.05, method="bonferroni").tolist() == [False, True, False, False, False]
    assert adjusted_p_values(p, "bonferroni").tolist() == pytest.approx([0.06, 0.005, 0.195, 0.205, 1.0])


def test_benjamini_hochberg_equals_scipy():
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 50, 500):
        p = np.concatenate((rng.uniform(size=size), rng.uniform(0, 0.01, size=size // 3)))
        p[::4] = p[0]  # ties
        np.testing.assert_allclose(adjusted_p_values(p), stats.false_discovery_control(p, method="bh"), rtol=1e-12)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown correction method 'holm'"):
        reject([0.1], method="holm")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reject([1.5])
    with pytest.raises(ValueError, match="alpha"):
        reject([0.1], alpha=0)


def _run_lengths(threshold, reference, population_draw, n_runs=30, events=20_000, batch=100):
    lengths = []
    for run in range(n_runs):
        detector = PSI(reference=reference, window=500, min_samples=500, threshold=threshold)
        stream = population_draw(np.random.default_rng(1000 + run), events)
        length = events
        for start in range(0, events, batch):
            if detector.update_many(stream[start:start + batch]).fired:
                length = start + batch
                break
        lengths.append(length)
    return np.array(lengths)


def test_calibrated_threshold_keeps_false_alarms_at_the_target_run_length():
    population = lambda rng, n: rng.normal(size=n)  # noqa: E731
    reference = population(np.random.default_rng(7), 4000)
    calibration = calibrate_threshold("psi", {"window": 500, "min_samples": 500}, reference, ert=4000, n_runs=30)
    assert calibration.ert >= 4000
    # fresh no-drift streams from the population, full reference: the run length holds up
    lengths = _run_lengths(calibration.threshold, reference, population)
    assert lengths.mean() >= 0.5 * 4000
    # and an arbitrary low threshold would not
    assert _run_lengths(calibration.threshold / 4, reference, population).mean() < 0.5 * 4000
    longer = calibrate_threshold("psi", {"window": 500, "min_samples": 500}, reference, ert=12000, n_runs=30)
    assert longer.threshold > calibration.threshold


def test_tests_are_calibrated_on_their_p_value():
    reference = np.random.default_rng(3).normal(size=2000)
    alphas = [calibrate_threshold("ks", {"window": 300, "min_samples": 300}, reference, ert=ert,
                                  batch_size=100, n_runs=20).threshold for ert in (2000, 20_000)]
    assert 0 < alphas[1] < alphas[0] < 1  # a longer run length needs a smaller alpha


def test_a_horizon_too_short_for_the_target_is_an_error():
    with pytest.raises(ValueError, match="horizon"):
        calibrate_threshold("psi", {"window": 100}, np.arange(100.0), ert=10_000, horizon=500, n_runs=3)
