import numpy as np
import pytest
from scipy import stats

from detectors.calibration import adjusted_p_values, judgement_level, null_threshold, reject, tail_quantile
from detectors.drift import JS, KS, PSI, Chi2, Wasserstein, _js_rows, _psi_rows, add_columns, results


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




def test_judgement_level_by_hand():
    # 20 statistics judged every 50 predictions, one false alarm per 1M predictions:
    # 1M / 50 = 20,000 judgements of 20 statistics, 400,000 chances at 2.5e-6 each
    assert judgement_level(1_000_000, 50, 20) == pytest.approx(2.5e-6)
    with pytest.raises(ValueError):
        judgement_level(1_000_000, 50, 0)


@pytest.mark.parametrize("df", [4, 9, 30])
def test_the_fitted_tail_errs_high_on_chi_squared(df):
    # A chi-squared sample's fitted tail against scipy's exact quantile, far past the sample:
    # high (the fit's bias) within the fit's sampling error, over several samples.
    for seed in range(5):
        sample = stats.chi2.rvs(df, size=10_000, random_state=np.random.default_rng(seed))
        for level in (1e-4, 1e-6, 1e-8):
            exact = stats.chi2.isf(level, df)
            assert 0.95 * exact <= tail_quantile(sample, level) <= 1.3 * exact


def _simulated(statistic_rows, counts, n_current, runs, seed):
    rng = np.random.default_rng(seed)
    p = np.asarray(counts, dtype=float) / np.sum(counts)
    return statistic_rows(rng.multinomial(int(np.sum(counts)), p, size=runs), rng.multinomial(n_current, p, size=runs))


@pytest.mark.parametrize("name, rows, counts", [
    ("psi, 10 even bins", _psi_rows, [100] * 10),
    ("psi, skewed categories", _psi_rows, [700, 150, 80, 40, 20, 10]),
    ("js, 10 even bins", _js_rows, [100] * 10),
])
def test_null_threshold_keeps_its_level_in_an_independent_simulation(name, rows, counts):
    level = 1e-3
    threshold = null_threshold(rows, counts, 900, level)
    exceed = np.mean(_simulated(rows, counts, 900, 400_000, seed=99) > threshold)
    # 400 exceedances expected at the level: the rate within its 4-sigma band above, and not
    # so conservative that a tenth of the level would do
    assert level / 10 < exceed < level + 4 * np.sqrt(level / 400_000)


def test_null_threshold_is_deterministic_and_grows_as_the_level_falls():
    a = null_threshold(_psi_rows, [100] * 10, 900, 1e-5)
    assert a == null_threshold(_psi_rows, [100] * 10, 900, 1e-5)
    assert null_threshold(_psi_rows, [100] * 10, 900, 1e-3) < a < null_threshold(_psi_rows, [100] * 10, 900, 1e-7)


def _null_stream_episodes(make, n_features, events, every, seed, categorical=False):
    """Alarm episodes (a judgement with an alarm after one without, as a rule fires once per
    breach) over a drift-free stream of ``n_features`` columns judged every ``every`` values as
    a Monitor does, and the number of judgements."""
    rng = np.random.default_rng(seed)
    detectors = [make() for _ in range(n_features)]
    draw = (lambda n: rng.choice(["a", "b", "c", "d", "e"], p=[.5, .2, .15, .1, .05], size=(n, n_features))) \
        if categorical else (lambda n: rng.normal(size=(n, n_features)))
    episodes = judgements = 0
    alarmed = False
    for start in range(0, events, every):
        block = draw(every)
        if categorical:
            for j, detector in enumerate(detectors):
                detector.add_many(block[:, j])
        else:
            add_columns(detectors, block)
        found = results(detectors)
        if all(r.n >= d.min_samples for r, d in zip(found, detectors)):
            judgements += 1
            now = any(r.fired for r in found)
            episodes += now and not alarmed
            alarmed = now
    return episodes, judgements


@pytest.mark.parametrize("kind, make, categorical", [
    ("psi", lambda level: PSI(level=level), False),
    ("ks", lambda level: KS(level=level), False),
    ("wasserstein", lambda level: Wasserstein(level=level), False),
    ("js", lambda level: JS(level=level, categorical=True), True),
    ("chi2", lambda level: Chi2(level=level, categorical=True), True),
])
def test_a_budget_holds_on_drift_free_streams(kind, make, categorical):
    # A budget small enough to see: one false alarm per 20,000 predictions for 4 statistics
    # judged every 50, over 4 drift-free streams of 50,000 predictions (each with references of
    # its own). The promise is at most 10 alarm episodes on average; the union bound makes the
    # real count lower, as a judgement's window overlaps the last one's. The bound below leaves
    # room for the sampling error of one run of 200,000 predictions.
    every, budget, features, events = 50, 20_000, 4, 50_000
    level = judgement_level(budget, every, features)
    episodes = judgements = 0
    for seed in range(4):
        e, j = _null_stream_episodes(lambda: make(level), features, events, every, seed=seed, categorical=categorical)
        episodes, judgements = episodes + e, judgements + j
    assert judgements > 0.9 * 4 * events / every
    assert episodes <= 20
