import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics as river_metrics
from river import utils as river_utils

from detectors.base import InvalidInput
from detectors.metrics import (
    MAE, RMSE, Accuracy, Bias, Brier, ExpectedCalibrationError, F1, LabelCodes, LogLoss, Precision, Recall,
)


def test_accuracy_counts_only_the_last_n_pairs():
    acc = Accuracy(window=3)
    acc.update_many([1, 1, 1, 1], [0, 1, 1, 0])  # window: (1,1) (1,1) (1,0)
    result = acc.result()
    assert result.statistic == pytest.approx(2 / 3)
    assert result.n == 3


def test_empty_window_reports_nan():
    assert math.isnan(Accuracy(window=5).result().statistic)
    assert Accuracy(window=5).result().n == 0


def test_per_class_and_macro_by_hand():
    # true:  a a b b c ; pred: a b b c c
    # a: tp1 fp0 fn1 -> P 1, R 1/2, F1 2/3
    # b: tp1 fp1 fn1 -> P 1/2, R 1/2, F1 1/2
    # c: tp1 fp1 fn0 -> P 1/2, R 1, F1 2/3
    y_true, y_pred = list("aabbc"), list("abbcc")
    f1 = F1(window=10)
    f1.update_many(y_true, y_pred)
    assert f1.per_class() == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 2 / 3})
    assert f1.result().statistic == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert Precision(window=10).update_many(y_true, y_pred).statistic == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert Recall(window=10).update_many(y_true, y_pred).statistic == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert F1(window=10, label="b").update_many(y_true, y_pred).statistic == pytest.approx(0.5)


def test_score_metrics_by_hand():
    y_true, y_pred, p = [1, 0, 1, 0], [1, 0, 0, 1], np.array([0.8, 0.3, 0.4, 0.6])
    # p(true class) = .8 .7 .4 .4
    assert LogLoss(window=10).update_many(y_true, y_pred, p).statistic == pytest.approx(
        -(math.log(0.8) + math.log(0.7) + 2 * math.log(0.4)) / 4)
    assert Brier(window=10).update_many(y_true, y_pred, p).statistic == pytest.approx(
        (0.04 + 0.09 + 0.36 + 0.36) / 4)
    # confidence in the predicted label: .8 .7 .6 .6; correct: 1 1 0 0
    # 5 bins: .8 -> bin 4; .7 .6 .6 -> bin 3
    # bin 4: |1 - .8| = .2 (1 pair); bin 3: |1/3 - 1.9/3| * 3 pairs = .9
    ece = ExpectedCalibrationError(window=10, n_bins=5)
    assert ece.update_many(y_true, y_pred, p).statistic == pytest.approx((0.2 + 0.9) / 4)


def test_multiclass_scores_by_hand():
    classes = ["a", "b", "c"]
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y_true, y_pred = ["a", "b"], ["a", "c"]
    assert LogLoss(window=5, classes=classes).update_many(y_true, y_pred, probs).statistic == pytest.approx(
        -(math.log(0.7) + math.log(0.1)) / 2)
    assert Brier(window=5, classes=classes).update_many(y_true, y_pred, probs).statistic == pytest.approx(
        ((0.09 + 0.04 + 0.01) + (0.01 + 0.81 + 0.64)) / 2)


def test_regression_by_hand():
    y_true, y_pred = [1.0, 2.0, 4.0], [2.0, 2.0, 1.0]  # errors 1, 0, -3
    assert MAE(window=5).update_many(y_true, y_pred).statistic == pytest.approx(4 / 3)
    assert RMSE(window=5).update_many(y_true, y_pred).statistic == pytest.approx(math.sqrt(10 / 3))
    assert Bias(window=5).update_many(y_true, y_pred).statistic == pytest.approx(-2 / 3)


def _classification_stream(seed, n=600, classes=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    y_true = rng.choice(classes, size=n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.choice(classes, size=n))
    return y_true, y_pred


RIVER_CLASSIFICATION = [
    (Accuracy, river_metrics.Accuracy),
    (F1, river_metrics.MacroF1),
    (Precision, river_metrics.MacroPrecision),
    (Recall, river_metrics.MacroRecall),
]


@pytest.mark.parametrize("ours, theirs", RIVER_CLASSIFICATION)
@pytest.mark.parametrize("window", [1, 50, 1000])
def test_classification_matches_river_rolling(ours, theirs, window):
    y_true, y_pred = _classification_stream(seed=window)
    metric, reference = ours(window=window), river_utils.Rolling(theirs, window_size=window)
    for start in range(0, len(y_true), 97):  # uneven batches
        stop = start + 97
        metric.update_many(y_true[start:stop], y_pred[start:stop])
        for t, p in zip(y_true[start:stop], y_pred[start:stop]):
            reference.update(t, p)
        assert metric.result().statistic == pytest.approx(reference.get(), abs=1e-12)


def test_binary_scores_match_river():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, 500)
    p = np.clip(0.3 + 0.4 * y_true + rng.normal(0, 0.2, 500), 0, 1)
    y_pred = (p > 0.5).astype(int)
    log_loss = river_utils.Rolling(river_metrics.LogLoss, window_size=100)
    for t, s in zip(y_true, p):
        log_loss.update(bool(t), float(s))
    ours = LogLoss(window=100).update_many(y_true, y_pred, p)
    assert ours.statistic == pytest.approx(log_loss.get(), rel=1e-9)


def test_multiclass_log_loss_matches_river_cross_entropy():
    rng = np.random.default_rng(4)
    classes = ["a", "b", "c"]
    probs = rng.dirichlet([1, 1, 1], size=300)
    y_true = rng.choice(classes, size=300)
    y_pred = np.array(classes)[probs.argmax(axis=1)]
    cross_entropy = river_utils.Rolling(river_metrics.CrossEntropy, window_size=120)
    for t, row in zip(y_true, probs):
        cross_entropy.update(t, dict(zip(classes, row)))
    ours = LogLoss(window=120, classes=classes).update_many(y_true, y_pred, probs)
    assert ours.statistic == pytest.approx(cross_entropy.get(), rel=1e-9)


@pytest.mark.parametrize("ours, theirs", [(MAE, river_metrics.MAE), (RMSE, river_metrics.RMSE)])
def test_regression_matches_river_rolling(ours, theirs):
    rng = np.random.default_rng(5)
    y_true = rng.normal(size=400)
    y_pred = y_true + rng.normal(0.3, 1.0, 400)
    metric, reference = ours(window=64), river_utils.Rolling(theirs, window_size=64)
    for start in range(0, 400, 33):
        metric.update_many(y_true[start:start + 33], y_pred[start:start + 33])
        for t, p in zip(y_true[start:start + 33], y_pred[start:start + 33]):
            reference.update(float(t), float(p))
        assert metric.result().statistic == pytest.approx(reference.get(), rel=1e-9)


ALL_METRICS = [
    (Accuracy, {}), (F1, {}), (Precision, {}), (Recall, {}), (F1, {"label": "b"}),
    (LogLoss, {"positive": "b"}), (Brier, {"positive": "b"}), (ExpectedCalibrationError, {"positive": "b"}),
]


@pytest.mark.parametrize("cls, params", ALL_METRICS)
def test_classification_state_round_trip(cls, params):
    y_true, y_pred = _classification_stream(seed=9, classes=("a", "b"))
    scores = np.random.default_rng(9).random(len(y_true))
    metric = cls(window=50, **params)
    metric.update_many(y_true[:200], y_pred[:200], scores[:200])
    restored = cls.from_state(json.loads(json.dumps(metric.state())))
    for start in range(200, len(y_true), 41):
        chunk = slice(start, start + 41)
        assert restored.update_many(y_true[chunk], y_pred[chunk], scores[chunk]) == \
            metric.update_many(y_true[chunk], y_pred[chunk], scores[chunk])


@pytest.mark.parametrize("cls", [MAE, RMSE, Bias])
def test_regression_state_round_trip(cls):
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.normal(size=300), rng.normal(size=300)
    metric = cls(window=40)
    metric.update_many(y_true[:100], y_pred[:100])
    restored = cls.from_state(json.loads(json.dumps(metric.state())))
    for i in range(100, 300):
        assert restored.update(y_true[i], y_pred[i]) == metric.update(y_true[i], y_pred[i])


def test_state_size_does_not_grow_with_the_stream():
    metric = Accuracy(window=100)
    sizes = []
    for _ in range(5):
        y_true, y_pred = _classification_stream(seed=len(sizes), n=1000)
        metric.update_many(y_true, y_pred)
        sizes.append(len(json.dumps(metric.state())))
    assert max(sizes) - min(sizes) < 100  # the window holds 100 pairs whatever the stream length


def test_label_vocabulary_is_bounded():
    with pytest.raises(InvalidInput, match="distinct labels"):
        Accuracy(window=5).update_many(np.arange(5000.0) + 0.5, np.zeros(5000))


def test_bad_input_is_rejected_with_a_clear_error():
    with pytest.raises(InvalidInput, match="y_true"):
        Accuracy(window=5).update_many([1.0, float("nan")], [1, 1])
    with pytest.raises(InvalidInput, match="y_pred"):
        MAE(window=5).update_many([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(InvalidInput, match="probabilities"):
        LogLoss(window=5).update_many([1], [1], scores=[1.5])
    with pytest.raises(InvalidInput, match="values"):
        Accuracy(window=5).update_many([1, 0], [1])


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(0, 1)), min_size=1, max_size=60),
       st.integers(1, 20))
def test_classification_statistics_stay_in_range(pairs, window):
    y_true, y_pred, scores = map(np.array, zip(*pairs))
    for cls in (Accuracy, F1, Precision, Recall, Brier, ExpectedCalibrationError):
        value = cls(window=window).update_many(y_true, y_pred, scores).statistic
        assert 0.0 <= value <= 1.0
    assert LogLoss(window=window).update_many(y_true, y_pred, scores).statistic >= 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=60), st.integers(1, 20))
def test_regression_statistics_stay_in_range(pairs, window):
    y_true, y_pred = map(np.array, zip(*pairs))
    mae = MAE(window=window).update_many(y_true, y_pred).statistic
    rmse = RMSE(window=window).update_many(y_true, y_pred).statistic
    bias = Bias(window=window).update_many(y_true, y_pred).statistic
    assert 0.0 <= mae <= rmse * (1 + 1e-9) + 1e-9
    assert abs(bias) <= mae * (1 + 1e-9) + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.one_of(st.integers(-3, 3), st.integers(-2**63, 2**63 - 1)), max_size=30), max_size=4))
def test_label_codes_are_first_seen_in_sorted_batches_whatever_the_ints(batches):
    """Integer labels coded through a table over their range get the codes the sort gives: each
    batch's new labels numbered in ascending order after the labels seen before."""
    codes, seen = LabelCodes(), []
    for batch in batches:
        got = codes.encode(np.array(batch, dtype=np.int64))
        seen += [label for label in sorted(set(batch)) if label not in seen]
        assert got.tolist() == [seen.index(label) for label in batch]
        assert codes.labels == seen


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(-3, 3), st.integers(-2**63, 2**63 - 1), st.booleans()), max_size=6),
       st.lists(st.one_of(st.integers(-4, 4), st.integers(-2**63, 2**63 - 1), st.sampled_from([-2**63, 2**63 - 1])),
                min_size=1, max_size=30),
       st.sampled_from([np.int64, np.int32, np.int8]))
def test_label_codes_know_ints_exactly_when_each_is_coded(known, batch, dtype):
    """Class ids are known (``knows_ints``) only when each one has a code, and always then when
    the known ints span a table (not far apart, nor near the ends of int64), and known ones are
    coded as the codes' dict has them, whatever the ints: far apart, at the ends of int64 (where
    differences to the table wrap around), in a narrower dtype, after bools."""
    codes = LabelCodes(known)
    info = np.iinfo(dtype)
    batch = [v for v in batch if info.min <= v <= info.max] or [0]
    values = np.array(batch, dtype=dtype)
    coded = all(v in codes._codes for v in batch)
    ints = [int(label) for label in codes.labels]
    tabled = max(ints) - min(ints) < 1 << 16 and max(map(abs, ints)) < 1 << 62 if ints else False
    assert codes.knows_ints(values) == coded if tabled else not codes.knows_ints(values) or coded
    if coded:
        labels = list(codes.labels)
        true, pred = codes.encode_pairs(values, values[::-1])
        assert true.tolist() == [codes.code(v) for v in batch] == pred.tolist()[::-1]
        assert codes.labels == labels


@st.composite
def labelled_batches(draw):
    """Batches of (y_true, y_pred) over a few labels (small ints, far-apart ints or strings),
    a window size and the batch before which the metric is restored from its state."""
    labels = draw(st.sampled_from([[0, 1], [-3, 0, 2, 7], [0, 2**40, -2**40], ["a", "b", "c"]]))
    pair = st.tuples(st.sampled_from(labels), st.sampled_from(labels))
    batches = draw(st.lists(st.lists(pair, max_size=25), min_size=1, max_size=12))
    return batches, draw(st.integers(1, 30)), draw(st.integers(0, len(batches)))


@settings(max_examples=150, deadline=None)
@given(labelled_batches())
def test_accuracy_batched_with_a_restore_matches_pair_by_pair(run):
    """Accuracy after every batch (fed whole, restored from its state before one of them) is the
    mean over the window's pairs, as one fed pair by pair has it, with the same pairs in the
    window; the state is the one of a metric never restored."""
    batches, window, restore_at = run
    batched, single, unbroken = Accuracy(window=window), Accuracy(window=window), Accuracy(window=window)

    def pairs(metric):
        labels = metric.codes.labels
        return [(labels[int(t)], labels[int(p)]) for t, p in metric.window.rows()[:, :2]]

    for index, batch in enumerate(batches):
        if index == restore_at:
            batched = Accuracy.from_state(json.loads(json.dumps(batched.state())))
        y_true, y_pred = np.array([t for t, _ in batch]), np.array([p for _, p in batch])
        result = batched.update_many(y_true, y_pred)
        unbroken.update_many(y_true, y_pred)
        for t, p in batch:
            single.update(t, p)
        rows = batched.window.rows()
        expected = float(np.mean(rows[:, 0] == rows[:, 1])) if len(rows) else math.nan
        assert result.n == len(rows) == single.result().n
        assert result.statistic == expected or (math.isnan(expected) and math.isnan(result.statistic))
        assert result == single.result() or math.isnan(expected)
        assert pairs(batched) == pairs(single)
        assert batched.state() == unbroken.state()


@settings(max_examples=150, deadline=None)
@given(labelled_batches(), st.integers(0, 12), st.booleans())
def test_accuracy_ahead_is_the_result_pushing_the_parts_gives_and_pushes_nothing(run, pushed_first, bools):
    """What an Ahead of a batch tells after each of its parts is the result ``update_many`` of
    every part so far, one after the other, returns, or None (a label not coded yet, not an
    int, or more pairs than the window holds); the metric it reads is left as it was."""
    batches, window, _ = run
    metric, pushed = Accuracy(window=window), Accuracy(window=window)
    for batch in batches[:pushed_first]:  # a window already holding some pairs
        for m in (metric, pushed):
            m.update_many(np.array([t for t, _ in batch]), np.array([p for _, p in batch]))
    rest = [pair for batch in batches[pushed_first:] for pair in batch]
    y_true = [bool(t) if bools and t in (0, 1) else t for t, _ in rest]  # True == 1, yet no class id
    y_pred = [p for _, p in rest]
    before = json.dumps(metric.state())
    ahead = metric.ahead(y_true, y_pred)
    knows = (all(type(label) is int for label in y_true + y_pred)
             and set(y_true + y_pred) <= set(metric.codes.labels))
    assert (ahead is not None) == knows
    count = 0
    for batch in batches[pushed_first:]:
        expected = pushed.update_many(np.array([t for t, _ in batch]), np.array([p for _, p in batch]))
        count += len(batch)
        if ahead is not None:
            result = ahead.result(count)
            assert (result is None) == (count > window)
            assert result is None or repr(result) == repr(expected)
        assert json.dumps(metric.state()) == before
    if ahead is not None:
        assert ahead.result(count + 1) is None  # beyond the pairs told


def test_an_accuracy_ahead_tells_nothing_of_new_labels_or_beyond_a_window():
    metric = Accuracy(window=4)
    metric.update_many(np.array([0, 1, 1]), np.array([0, 1, 0]))
    ahead = metric.ahead([1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert [ahead.result(k).statistic for k in range(5)] == [2 / 3, 0.75, 0.5, 0.5, 0.75]
    assert ahead.result(5) is None
    assert metric.ahead([2], [1]) is None and metric.ahead([1.0], [1]) is None and metric.ahead([[1]], [1]) is None
