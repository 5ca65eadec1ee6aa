"""CBPE: hand-worked expected metrics, the isotonic fit against its min-max formula, batching and
checkpoints."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from detectors.base import InvalidInput
from detectors.estimation import CBPE, Isotonic


def _calibrated_binary(reference_size=8):
    """Scores 0.75 are positive 3 times in 4, scores 0.25 once in 4: already calibrated."""
    cbpe = CBPE(window=100, reference_size=reference_size)
    cbpe.learn_many([1, 1, 1, 0, 0, 0, 0, 1], [0.75] * 4 + [0.25] * 4)
    return cbpe


def test_binary_expected_confusion_matrix_by_hand():
    cbpe = _calibrated_binary()
    # predicted: 1 (p=.75), 1 (p=.75), 0 (p=.25), 0 (p=.75: a negative call on a likely positive)
    cbpe.update_many([1, 1, 0, 0], [0.75, 0.75, 0.25, 0.75])
    est = cbpe.estimate()
    # TP = .75 + .75 = 1.5, FP = .5, FN = .25 + .75 = 1, TN = .75 + .25 = 1
    assert est["accuracy"].value == pytest.approx((1.5 + 1.0) / 4)
    assert est["precision"].value == pytest.approx(1.5 / 2)
    assert est["recall"].value == pytest.approx(1.5 / 2.5)
    assert est["f1"].value == pytest.approx(3.0 / (3.0 + 0.5 + 1.0))
    # every prediction is right with probability .75 or .25: variance .1875 each
    assert est["accuracy"].stderr == pytest.approx(math.sqrt(4 * 0.1875) / 4)
    assert est["precision"].stderr == pytest.approx(math.sqrt(2 * 0.1875) / 2)
    assert est["accuracy"].n == 4
    assert est["accuracy"].lower < est["accuracy"].value < est["accuracy"].upper


def test_stderr_matches_the_spread_of_realized_metrics():
    """If the calibration holds, the realized metrics of windows drawn from the calibrated
    probabilities scatter around the estimate with the reported standard error."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 400)
    positive = rng.uniform(size=400) < 0.5
    cbpe = CBPE(window=400, reference_size=2)
    cbpe.calibrators = [Isotonic(np.array([0.0, 1.0]), np.array([0.0, 1.0]))]  # the identity
    cbpe.update_many(positive.astype(int), p)
    est = cbpe.estimate()
    y = rng.uniform(size=(20000, 400)) < p
    tp = (y & positive).sum(axis=1)
    realized = {"accuracy": (y == positive).mean(axis=1), "precision": tp / positive.sum(),
                "recall": tp / y.sum(axis=1), "f1": 2 * tp / (positive.sum() + y.sum(axis=1))}
    for metric, values in realized.items():
        assert est[metric].value == pytest.approx(values.mean(), abs=0.003), metric
        assert est[metric].stderr == pytest.approx(values.std(), rel=0.05), metric


def test_multiclass_by_hand():
    cbpe = CBPE(window=10, reference_size=6, classes=["a", "b", "c"])
    identity = Isotonic(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    cbpe.learn_many(["a", "b", "c", "a", "b", "c"], np.full((6, 3), 1 / 3))
    cbpe.calibrators = [identity] * 3  # rows that sum to 1 come back unchanged
    cbpe.update_many(["a", "b", "z"], [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    est = cbpe.estimate()
    assert est["accuracy"].value == pytest.approx((0.6 + 0.5 + 0.0) / 3)  # "z" is not a class
    assert est["accuracy"].stderr == pytest.approx(math.sqrt(0.24 + 0.25) / 3)
    # per class: TP a=.6 b=.5 c=0; predicted a=1 b=1 c=0; expected actual a=1.1 b=1.1 c=.8
    assert est["precision"].value == pytest.approx((0.6 + 0.5 + 0.0) / 3)
    assert est["recall"].value == pytest.approx((0.6 / 1.1 + 0.5 / 1.1 + 0.0) / 3)
    assert est["f1"].value == pytest.approx((1.2 / 2.1 + 1.0 / 2.1 + 0.0) / 3)
    assert math.isnan(est["f1"].stderr)


def test_calibration_repairs_an_overconfident_model():
    """Scores of 0.9 that are right only 60 % of the time estimate 0.6, not 0.9."""
    cbpe = CBPE(window=10, reference_size=10)
    cbpe.learn_many([1] * 6 + [0] * 4, [0.9] * 10)
    cbpe.update_many([1, 1], [0.9, 0.9])
    assert cbpe.estimate()["accuracy"].value == pytest.approx(0.6)


def test_no_estimate_before_the_reference_is_full():
    cbpe = CBPE(window=10, reference_size=5)
    cbpe.update_many([1, 0], [0.8, 0.1])
    cbpe.learn_many([1, 0, 1, 0], [0.8, 0.1, 0.7, 0.3])
    assert math.isnan(cbpe.estimate()["accuracy"].value) and cbpe.estimate()["accuracy"].n == 0
    cbpe.learn(1, 0.9)
    assert cbpe.fitted and cbpe.estimate()["accuracy"].n == 2


def test_bad_input_is_one_clear_error():
    cbpe = CBPE(window=10, reference_size=5)
    with pytest.raises(InvalidInput, match="probabilities"):
        cbpe.update_many([1], [1.5])
    with pytest.raises(InvalidInput, match="rows"):
        cbpe.update_many([1, 0], [0.5])
    with pytest.raises(ValueError, match="reference_size"):
        CBPE(reference_size=1)


def _min_max_isotonic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The isotonic fit at each distinct x by its closed form: max over j <= i of min over k >= i
    of the mean of y over the distinct x's j..k (weighted by their counts)."""
    xs = np.unique(x)
    sums = np.array([y[x == v].sum() for v in xs])
    counts = np.array([(x == v).sum() for v in xs])
    fit = []
    for i in range(len(xs)):
        fit.append(max(min(sums[j:k + 1].sum() / counts[j:k + 1].sum() for k in range(i, len(xs)))
                       for j in range(i + 1)))
    return xs, np.array(fit)


@given(st.lists(st.tuples(st.integers(0, 12), st.booleans()), min_size=1, max_size=40))
@settings(max_examples=200, deadline=None)
def test_isotonic_fit_equals_the_min_max_formula(pairs):
    x = np.array([a / 12 for a, _ in pairs])
    y = np.array([float(b) for _, b in pairs])
    xs, expected = _min_max_isotonic(x, y)
    iso = Isotonic.fit(x, y)
    assert np.allclose(iso(xs), expected)
    assert (np.diff(iso.y) >= -1e-12).all()


def _stream(draw_labels, n, classes):
    rng = np.random.default_rng(n)
    if classes is None:
        scores = rng.uniform(size=n).round(2)
        return (rng.uniform(size=n) < 0.5).astype(int), (rng.uniform(size=n) < scores).astype(int), scores
    raw = rng.uniform(size=(n, len(classes)))
    scores = raw / raw.sum(axis=1, keepdims=True)
    picks = [classes[i] for i in rng.integers(0, len(classes), n)]
    truth = [classes[i] for i in rng.integers(0, len(classes), n)]
    return picks, truth, scores


def _chunks(n, cuts):
    edges = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(zip(edges[:-1], edges[1:]))


@given(n=st.integers(1, 120), cuts=st.lists(st.integers(0, 200), max_size=8),
       label_cuts=st.lists(st.integers(0, 200), max_size=8), refit_every=st.sampled_from([0, 1, 7, 25]),
       multiclass=st.booleans())
@settings(max_examples=150, deadline=None)
def test_batching_does_not_change_the_estimate(n, cuts, label_cuts, refit_every, multiclass):
    classes = ["a", "b", "c"] if multiclass else None
    predicted, truth, scores = _stream(None, n, classes)
    whole = CBPE(window=30, reference_size=10, refit_every=refit_every, classes=classes)
    whole.learn_many(truth, scores)
    whole.update_many(predicted, scores)
    chunked = CBPE(window=30, reference_size=10, refit_every=refit_every, classes=classes)
    for start, end in _chunks(n, label_cuts):
        chunked.learn_many(truth[start:end], scores[start:end])
    for start, end in _chunks(n, cuts):
        chunked.update_many(predicted[start:end], scores[start:end])
    assert chunked.state() == whole.state()
    assert _plain(chunked.estimate()) == _plain(whole.estimate())


def _plain(estimates):
    """Estimates as comparable tuples (nan spelled as None)."""
    return {m: tuple(None if isinstance(v, float) and math.isnan(v) else v for v in (e.value, e.stderr, e.n))
            for m, e in estimates.items()}


@pytest.mark.parametrize("classes", [None, [0, 1, 2]])
def test_checkpoint_round_trip_continues_identically(classes):
    predicted, truth, scores = _stream(None, 200, classes)
    a = CBPE(window=50, reference_size=40, refit_every=30, classes=classes)
    a.learn_many(truth[:90], scores[:90])
    a.update_many(predicted[:120], scores[:120])
    b = CBPE.from_state(json.loads(json.dumps(a.state())))
    assert _plain(b.estimate()) == _plain(a.estimate())
    for cbpe in (a, b):
        cbpe.learn_many(truth[90:], scores[90:])
        cbpe.update_many(predicted[120:], scores[120:])
    assert b.state() == a.state() and _plain(b.estimate()) == _plain(a.estimate())
