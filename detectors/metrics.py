"""Model performance over a count window of the last ``window`` labelled predictions.

Every metric takes two aligned arrays: ``update_many(y_true, y_pred, scores=None)``; ``update``
is the one-pair case. Classification labels may be ints or strings. ``scores`` is optional:

* 1-D: the probability of the ``positive`` class (binary models);
* 2-D: one column per class, in the order given by ``classes=[...]`` (multiclass models).

Conventions (documented because libraries differ):

* An empty window (or, for score metrics, a window without scores) reports ``nan``.
* Macro averages are over the classes present in the window (as true or predicted label);
  a class never predicted has precision 0 (scikit-learn's ``zero_division=0``, river's default).
* Log loss clips probabilities to ``[1e-15, 1 - 1e-15]`` (as river does).
* Brier score: ``(p - y)^2`` for 1-D scores; ``sum_k (p_k - y_k)^2`` over the classes for 2-D scores.
* Expected calibration error: the confidence of a prediction is the probability the model gave to
  the label it predicted; confidences fall in ``n_bins`` equal-width bins over [0, 1] and
  ``ECE = sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|``.
* Bias (mean error) is ``mean(y_pred - y_true)``: positive when the model over-predicts.
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, ClassVar

import numpy as np

from . import kinds
from .base import InvalidInput, Result, as_finite_array, plain_label
from .windows import CountWindow

LOG_LOSS_EPS = 1e-15
#: distinct class labels a classification metric accepts (keeps its state bounded)
MAX_CLASSES = 1000


#: integer labels spanning fewer values than this are coded through a table over their range
_INT_TABLE = 1 << 16
#: the table's labels stay within this of 0, so that its ends and ``_low`` are int64 values
_INT_LIMIT = 1 << 62


class LabelCodes:
    """Class labels (ints or strings) to small int codes, in order of first appearance.

    Parameters
    ----------
    labels : iterable, default ()
        Labels coded first, in order (a metric's configured ``classes``: codes 0, 1, ...).

    Attributes
    ----------
    labels : list
        Every label seen, at the index of its code.

    Examples
    --------
    >>> codes = LabelCodes()
    >>> codes.encode(["cat", "dog", "cat"]).tolist(), codes.labels
    ([0, 1, 0], ['cat', 'dog'])
    """

    def __init__(self, labels: list[Any] = ()):
        self.labels: list[Any] = []
        self._codes: dict[Any, int] = {}
        #: the code of each known integer label by its value minus ``_low`` (-1 for none, and at
        #: both ends: a label outside the range, clipped onto an end, has none), so a batch of
        #: known class ids is coded by one lookup; built when first needed
        self._table: np.ndarray | None = None
        self._low = 0
        for label in labels:
            self._code_of(plain_label(label))

    def _code_of(self, label: Any) -> int:
        code = self._codes.get(label)
        if code is None:
            if len(self.labels) >= MAX_CLASSES:
                raise InvalidInput(f"more than {MAX_CLASSES} distinct labels (at {label!r}); "
                                   "is this a regression target given to a classification metric?")
            code = self._codes[label] = len(self.labels)
            self.labels.append(label)
            self._table = None
        return code

    def _known_ints(self, arr: np.ndarray) -> np.ndarray | None:
        """The codes of integer labels when every one is already known, else None."""
        if self._table is None:
            ints = {int(label): code for label, code in self._codes.items() if isinstance(label, int)}
            low = min(ints, default=0) - 1  # the first place is an end
            if ints and max(ints) - low <= _INT_TABLE and -_INT_LIMIT <= low and max(ints) < _INT_LIMIT:
                self._table, self._low = np.full(max(ints) - low + 2, -1, dtype=np.int64), low
                self._table[np.array(list(ints)) - low] = list(ints.values())
            else:
                self._table, self._low = np.full(1, -1, dtype=np.int64), 0
        # Two int64 values congruent modulo 2**64 are equal, so a difference that wraps around
        # lands in the table's inner places only for a label there: no range test is needed.
        codes = self._table.take(arr.astype(np.int64, copy=False) - self._low, mode="clip")
        return codes if codes.min() >= 0 else None

    def encode(self, values: Any, name: str = "labels") -> np.ndarray:
        arr = np.asarray(values)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.dtype.kind in "fc":
            as_finite_array(arr, name)
        elif arr.dtype.kind == "O" and any(v is None for v in arr):
            raise InvalidInput(f"{name} contains None; labels must be ints or strings")
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        # Only the distinct labels go through the Python dict; the rest is numpy.
        arr = arr.reshape(-1)
        if arr.dtype.kind == "i":
            known = self._known_ints(arr)
            if known is not None:
                return known
        if arr.dtype.kind in "iu":  # class ids: a table over their range, not a sort
            low, high = int(arr.min()), int(arr.max())
            if high - low < _INT_TABLE:
                offsets = arr - low
                present = np.flatnonzero(np.bincount(offsets, minlength=high - low + 1))
                table = np.zeros(high - low + 1, dtype=np.int64)
                table[present] = [self._code_of(low + int(u)) for u in present]
                return table[offsets]
        uniques, inverse = np.unique(arr, return_inverse=True)
        lookup = np.array([self._code_of(plain_label(u)) for u in uniques], dtype=np.int64)
        return lookup[inverse.reshape(-1)]

    def knows_ints(self, values: np.ndarray) -> bool:
        """Whether ``values`` are integer labels that all have a code already (so coding them
        together or in parts gives the same codes)."""
        if values.dtype.kind != "i" or values.ndim != 1:
            return False
        return not len(values) or self._known_ints(values) is not None

    def encode_pairs(self, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
        """``encode(y_true)`` then ``encode(y_pred)``; known class ids of both in one lookup."""
        true, pred = np.asarray(y_true), np.asarray(y_pred)
        if true.dtype.kind == pred.dtype.kind == "i" and true.ndim == pred.ndim == 1 and len(true) and len(pred):
            known = self._known_ints(np.concatenate((true, pred)))
            if known is not None:
                return known[: len(true)], known[len(true):]
        return self.encode(true, "y_true"), self.encode(pred, "y_pred")

    def code(self, label: Any) -> int | None:
        return self._codes.get(plain_label(label))

    def knows(self, labels: set) -> bool:
        """Whether every one of these labels is an int (not a bool, nor a float) coded already:
        values of them are then coded without a new code, two to one code exactly when equal."""
        return all(type(label) is int and label in self._codes for label in labels)


class _WindowedMetric:
    """Shared plumbing: a count window of per-pair columns, a statistic over it, state."""

    kind: ClassVar[str]
    columns: ClassVar[int]
    #: the models the metric is for: "classification" or "regression"
    task: ClassVar[str]
    #: computed from the scores, so only pairs pushed with scores count
    uses_scores: ClassVar[bool] = False

    def __init__(self, window: int = 1000):
        self.window = CountWindow(window, self.columns)

    def update(self, y_true: Any, y_pred: Any, score: Any = None) -> Result:
        scores = None if score is None else np.asarray(score, dtype=np.float64)[None, ...]
        return self.update_many([y_true], [y_pred], scores)

    def update_many(self, y_true: Any, y_pred: Any, scores: Any = None) -> Result:
        rows = self._rows(y_true, y_pred, scores)
        self.window.push(rows)
        return self.result()

    def result(self) -> Result:
        rows = self.window.rows()
        statistic = self._statistic(rows) if len(rows) else float("nan")
        return Result(statistic=float(statistic), n=len(rows))

    def ahead(self, y_true: list, y_pred: list) -> "Ahead | None":
        """What tells this metric's result after each count of these pairs, none of them pushed
        (see :class:`Ahead`); None when it cannot: then pairs are pushed to be read."""
        return None

    def _params(self) -> dict[str, Any]:
        return {"window": self.window.size}

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self._params(), "window": self.window.state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]):
        metric = cls(**state["params"])
        metric.window = CountWindow.from_state(state["window"])
        return metric

    def _rows(self, y_true: Any, y_pred: Any, scores: Any) -> np.ndarray:
        raise NotImplementedError

    def _statistic(self, rows: np.ndarray) -> float:
        raise NotImplementedError


# -- classification ---------------------------------------------------------------------------

TRUE, PRED, P_TRUE, BRIER, CONFIDENCE = range(5)


class _ClassificationMetric(_WindowedMetric):
    """Window columns: true code, predicted code, p(true class), Brier term, confidence.

    The last three are derived from the scores when the pair is pushed (nan without scores), so
    the window holds five floats per pair whatever the number of classes.
    """

    columns = 5
    task = "classification"

    def __init__(self, window: int = 1000, classes: list[Any] | None = None, positive: Any = 1):
        super().__init__(window)
        self.classes = None if classes is None else [plain_label(c) for c in classes]
        self.positive = plain_label(positive)
        self.codes = LabelCodes(self.classes or ())

    def _params(self) -> dict[str, Any]:
        return {"window": self.window.size, "classes": self.classes, "positive": self.positive}

    def state(self) -> dict[str, Any]:
        return {**super().state(), "labels": list(self.codes.labels)}

    @classmethod
    def from_state(cls, state: dict[str, Any]):
        metric = super().from_state(state)
        metric.codes = LabelCodes(state["labels"])
        return metric

    def _rows(self, y_true: Any, y_pred: Any, scores: Any) -> np.ndarray:
        true, pred = self.codes.encode_pairs(y_true, y_pred)
        if len(true) != len(pred):
            raise InvalidInput(f"y_true has {len(true)} values but y_pred has {len(pred)}")
        rows = np.full((len(true), self.columns), np.nan)
        rows[:, TRUE] = true
        rows[:, PRED] = pred
        if scores is not None:
            rows[:, P_TRUE:] = self._score_columns(true, pred, scores)
        return rows

    def _score_columns(self, true: np.ndarray, pred: np.ndarray, scores: Any) -> np.ndarray:
        scores = as_finite_array(scores, "scores")
        if ((scores < 0) | (scores > 1)).any():
            raise InvalidInput("scores must be probabilities in [0, 1]")
        if scores.shape[0] != len(true):
            raise InvalidInput(f"scores has {scores.shape[0]} rows but y_true has {len(true)} values")
        if scores.ndim == 1:
            positive = self.codes.code(self.positive)
            is_positive_true = true == positive
            p_true = np.where(is_positive_true, scores, 1.0 - scores)
            brier = (scores - is_positive_true) ** 2
            confidence = np.where(pred == positive, scores, 1.0 - scores)
            return np.column_stack((p_true, brier, confidence))
        if self.classes is None or scores.shape[1] != len(self.classes):
            raise InvalidInput("2-D scores need classes=[...] naming one class per column")
        # Codes of the configured classes are 0..len(classes)-1 (LabelCodes was seeded with them).
        rows = np.arange(len(true))
        known_true = true < len(self.classes)
        known_pred = pred < len(self.classes)
        p_true = np.where(known_true, scores[rows, np.minimum(true, len(self.classes) - 1)], 0.0)
        onehot = np.zeros_like(scores)
        onehot[rows[known_true], true[known_true]] = 1.0
        brier = ((scores - onehot) ** 2).sum(axis=1)
        confidence = np.where(known_pred, scores[rows, np.minimum(pred, len(self.classes) - 1)], 0.0)
        return np.column_stack((p_true, brier, confidence))

    def confusion(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, list[Any]]:
        """Confusion matrix (true x predicted) over the window and the labels of its axes."""
        rows = self.window.rows() if rows is None else rows
        true, pred = rows[:, TRUE].astype(np.int64), rows[:, PRED].astype(np.int64)
        k = len(self.codes.labels)
        matrix = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
        present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
        return matrix[np.ix_(present, present)], [l for l, p in zip(self.codes.labels, present) if p]


class Accuracy(_ClassificationMetric):
    """Share of correct predictions among the last ``window`` labelled pairs.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.
    classes : list, optional
        Multiclass models fed 2-D scores: the class of each score column, in order. None for
        binary models (1-D scores) and for metrics fed no scores.
    positive : int or str, default 1
        Binary models: the class a 1-D score is the probability of.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    A window of 4: the first pair leaves; of the last four, (0, 1) and (1, 1) and (1, 0) and
    (0, 0), two are right.

    >>> acc = Accuracy(window=4)
    >>> acc.update_many([1, 0, 1, 1, 0], [1, 1, 1, 0, 0])     # y_true, y_pred
    Result(statistic=0.5, threshold=None, p_value=None, n=4, fired=False)
    >>> Accuracy.from_state(acc.state()).update(1, 1).statistic   # (0, 1) leaves, (1, 1) comes
    0.75
    """

    kind = kinds.ACCURACY

    def __init__(self, window: int = 1000, classes: list[Any] | None = None, positive: Any = 1):
        super().__init__(window, classes, positive)
        #: right predictions in the window, kept as pairs come and leave, so a result costs
        #: nothing (a whole number over n: what the mean of the window's 0/1 column gives)
        self._right = 0

    def update_many(self, y_true: Any, y_pred: Any, scores: Any = None) -> Result:
        rows = self._rows(y_true, y_pred, scores)
        window = self.window
        leaving = window.oldest(len(window) + len(rows) - window.size)
        self._right += _right(rows[-window.size:]) - _right(leaving)
        window.push(rows)
        return self.result()

    def result(self) -> Result:
        n = len(self.window)
        return Result(statistic=self._right / n if n else float("nan"), n=n)

    def ahead(self, y_true: list, y_pred: list) -> "Ahead | None":
        return _AccuracyAhead.of(self, y_true, y_pred)

    @classmethod
    def from_state(cls, state: dict[str, Any]):
        metric = super().from_state(state)
        metric._right = _right(metric.window.rows())
        return metric

    def _statistic(self, rows: np.ndarray) -> float:
        return float(np.mean(rows[:, TRUE] == rows[:, PRED]))


def _right(rows: np.ndarray) -> int:
    return int(np.count_nonzero(rows[:, TRUE] == rows[:, PRED]))


class Ahead:
    """A metric's result after some of a batch of pairs, the metric left as it is.

    A monitor reads its metrics at every evaluation point of a batch, a few dozen pairs apart:
    told the batch's pairs once (the metric's ``ahead``), this gives the result at each point,
    and the whole batch is then pushed once (the same window as pushing it part by part).
    Only valid while nothing is pushed to the metric.
    """

    def result(self, count: int) -> Result | None:
        """What ``update_many`` of the first ``count`` pairs (in one call or in parts) would
        return; None when this cannot tell (then the caller pushes them and reads the metric)."""
        raise NotImplementedError


class _AccuracyAhead(Ahead):
    """:class:`Accuracy` ahead: the right pairs among the batch's first ``count`` and among the
    window's oldest, those that leave it, from running sums made once. Made only when every
    label is a class id the metric has coded (the usual stream after its first pairs), so that
    pushing the pairs codes no new label (and raises nothing), and a pair is right exactly when
    its two ids are equal; and told up to a window of pairs (which of those stay would matter
    beyond)."""

    def __init__(self, metric: Accuracy, right: list[int], left: list[int]):
        self.metric = metric
        #: right pairs among the batch's first k, and among the window's oldest k
        self._right, self._left = right, left

    @classmethod
    def of(cls, metric: Accuracy, y_true: list, y_pred: list) -> "_AccuracyAhead | None":
        try:
            labels = {*y_true, *y_pred}
        except TypeError:  # an unhashable label: not a class id
            return None
        if len(y_true) != len(y_pred) or not metric.codes.knows(labels):
            return None
        window = metric.window
        right = list(itertools.accumulate(map(operator.eq, y_true, y_pred), initial=0))
        oldest = window.oldest(len(window) + min(len(y_true), window.size) - window.size)
        # a batch's worth of pairs or fewer: summed in Python, as the batch's are (numpy's calls
        # cost more than they save on a few dozen values)
        left = list(itertools.accumulate((oldest[:, TRUE] == oldest[:, PRED]).tolist(), initial=0))
        return cls(metric, right, left)

    def result(self, count: int) -> Result | None:
        window = self.metric.window
        if count >= len(self._right) or count > window.size:
            return None
        n = min(window.size, len(window) + count)
        right = self.metric._right + self._right[count] - self._left[max(0, len(window) + count - window.size)]
        return Result(statistic=right / n if n else float("nan"), n=n)


def _per_class_scores(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return precision, recall, f1


class _PerClassMetric(_ClassificationMetric):
    """Precision / recall / F1: macro average, or one class when ``label`` is given."""

    score_index: ClassVar[int]

    def __init__(self, window: int = 1000, label: Any = None, classes: list[Any] | None = None,
                 positive: Any = 1):
        super().__init__(window, classes, positive)
        self.label = plain_label(label)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "label": self.label}

    def per_class(self) -> dict[Any, float]:
        matrix, labels = self.confusion()
        scores = _per_class_scores(matrix)[self.score_index]
        return {label: float(s) for label, s in zip(labels, scores)}

    def _statistic(self, rows: np.ndarray) -> float:
        matrix, labels = self.confusion(rows)
        scores = _per_class_scores(matrix)[self.score_index]
        if self.label is None:
            return float(scores.mean())
        return float(scores[labels.index(self.label)]) if self.label in labels else 0.0


class Precision(_PerClassMetric):
    """Precision, macro-averaged over classes (or of class ``label``).

    Per class, the share of its predictions that are right; a class never predicted has
    precision 0 (scikit-learn's ``zero_division=0``). The macro average is over the classes
    present in the window as true or predicted label.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.
    label : int or str, optional
        Report this one class's score instead of the macro average over the classes present.
    classes : list, optional
        Multiclass models fed 2-D scores: the class of each score column, in order. None for
        binary models (1-D scores) and for metrics fed no scores.
    positive : int or str, default 1
        Binary models: the class a 1-D score is the probability of.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    True ``a b b c`` against predicted ``a b c c``: per class, precision is 1/1, 1/1 and 1/2,
    recall 1/1, 1/2 and 1/1, F1 1, 2/3 and 2/3.

    >>> Precision(window=10).update_many(["a", "b", "b", "c"], ["a", "b", "c", "c"]).statistic
    0.8333333333333334
    >>> Precision(window=10, label="c").update_many(["a", "b", "b", "c"], ["a", "b", "c", "c"]).statistic
    0.5
    """

    kind = kinds.PRECISION_MACRO
    score_index = 0


class Recall(_PerClassMetric):
    """Recall, macro-averaged over classes (or of class ``label``).

    Per class, the share of its true pairs that are predicted as it. The macro average is over
    the classes present in the window as true or predicted label.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.
    label : int or str, optional
        Report this one class's score instead of the macro average over the classes present.
    classes : list, optional
        Multiclass models fed 2-D scores: the class of each score column, in order. None for
        binary models (1-D scores) and for metrics fed no scores.
    positive : int or str, default 1
        Binary models: the class a 1-D score is the probability of.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    True ``a b b c`` against predicted ``a b c c``: per class, precision is 1/1, 1/1 and 1/2,
    recall 1/1, 1/2 and 1/1, F1 1, 2/3 and 2/3.

    >>> Recall(window=10).update_many(["a", "b", "b", "c"], ["a", "b", "c", "c"]).statistic
    0.8333333333333334
    """

    kind = kinds.RECALL_MACRO
    score_index = 1


class F1(_PerClassMetric):
    """F1, macro-averaged over classes (or of class ``label``).

    Per class, the harmonic mean of precision and recall (0 where both are 0). The macro
    average is over the classes present in the window as true or predicted label.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.
    label : int or str, optional
        Report this one class's score instead of the macro average over the classes present.
    classes : list, optional
        Multiclass models fed 2-D scores: the class of each score column, in order. None for
        binary models (1-D scores) and for metrics fed no scores.
    positive : int or str, default 1
        Binary models: the class a 1-D score is the probability of.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    True ``a b b c`` against predicted ``a b c c``: per class, precision is 1/1, 1/1 and 1/2,
    recall 1/1, 1/2 and 1/1, F1 1, 2/3 and 2/3.

    >>> f1 = F1(window=10)
    >>> round(f1.update_many(["a", "b", "b", "c"], ["a", "b", "c", "c"]).statistic, 4)   # (1 + 2/3 + 2/3) / 3
    0.7778
    >>> f1.per_class()
    {'a': 1.0, 'b': 0.6666666666666666, 'c': 0.6666666666666666}
    """

    kind = kinds.F1_MACRO
    score_index = 2


class _ScoreMetric(_ClassificationMetric):
    """A metric of the scores: rows pushed without scores are left out of it."""

    uses_scores = True

    def result(self) -> Result:
        rows = self.window.rows()
        scored = rows[~np.isnan(rows[:, P_TRUE])]
        statistic = self._statistic(scored) if len(scored) else float("nan")
        return Result(statistic=float(statistic), n=len(scored))


class LogLoss(_ScoreMetric):
    """Mean negative log-likelihood of the true class.

    The probability of the true class is clipped to ``[1e-15, 1 - 1e-15]`` (as river does);
    pairs pushed without scores are left out.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.
    classes : list, optional
        Multiclass models fed 2-D scores: the class of each score column, in order. None for
        binary models (1-D scores) and for metrics fed no scores.
    positive : int or str, default 1
        Binary models: the class a 1-D score is the probability of.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    Scores are the probability of class 1: the true classes had 0.9 and 1 - 0.2 = 0.8, so the
    loss is ``-(ln 0.9 + ln 0.8) / 2``.

    >>> log_loss = LogLoss(window=10)
    >>> round(log_loss.update_many([1, 0], [1, 0], scores=[0.9, 0.2]).statistic, 6)
    0.164252
    >>> log_loss.update(1, 1).n           # a pair without a score does not count
    2
    """

    kind = kinds.LOG_LOSS

    def _statistic(self, rows: np.ndarray) -> float:
        return float(-np.log(np.clip(rows[:, P_TRUE], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)).mean())


class Brier(_ScoreMetric):
    """Mean Brier score (squared error of the probabilities).

    ``(p - y)^2`` for 1-D scores (``y`` 1 for the positive class); ``sum_k (p_k - y_k)^2`` over
    the classes for 2-D scores. Pairs pushed without scores are left out.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.
    classes : list, optional
        Multiclass models fed 2-D scores: the class of each score column, in order. None for
        binary models (1-D scores) and for metrics fed no scores.
    positive : int or str, default 1
        Binary models: the class a 1-D score is the probability of.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    Binary: ``((0.9 - 1)^2 + (0.2 - 0)^2) / 2``.

    >>> round(Brier(window=10).update_many([1, 0], [1, 0], scores=[0.9, 0.2]).statistic, 6)
    0.025

    Multiclass: ``((0.3^2 + 0.2^2 + 0.1^2) + (0.2^2 + 0.5^2 + 0.7^2)) / 2``.

    >>> brier = Brier(window=10, classes=["a", "b", "c"])
    >>> scores = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]
    >>> round(brier.update_many(["a", "c"], ["a", "b"], scores=scores).statistic, 6)
    0.46
    """

    kind = kinds.BRIER

    def _statistic(self, rows: np.ndarray) -> float:
        return float(rows[:, BRIER].mean())


class ExpectedCalibrationError(_ScoreMetric):
    """Expected calibration error over ``n_bins`` equal-width confidence bins.

    The confidence of a prediction is the probability the model gave to the label it predicted;
    ``ECE = sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|`` over the bins. Pairs pushed
    without scores are left out.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.
    n_bins : int, default 10
        Equal-width confidence bins over [0, 1], >= 1.
    classes : list, optional
        Multiclass models fed 2-D scores: the class of each score column, in order. None for
        binary models (1-D scores) and for metrics fed no scores.
    positive : int or str, default 1
        Binary models: the class a 1-D score is the probability of.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    Predicted 1, 1, 1, 0 with scores (of class 1) 0.9, 0.8, 0.6, 0.3: confidences 0.9, 0.8,
    0.6 and 0.7, all in the upper of 2 bins, with mean 0.75; two of the four are right, so
    ``ECE = |0.5 - 0.75|``.

    >>> ece = ExpectedCalibrationError(window=10, n_bins=2)
    >>> round(ece.update_many([1, 0, 1, 1], [1, 1, 1, 0], scores=[0.9, 0.8, 0.6, 0.3]).statistic, 6)
    0.25
    """

    kind = kinds.ECE

    def __init__(self, window: int = 1000, n_bins: int = 10, classes: list[Any] | None = None,
                 positive: Any = 1):
        super().__init__(window, classes, positive)
        if int(n_bins) < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins!r}")
        self.n_bins = int(n_bins)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "n_bins": self.n_bins}

    def _statistic(self, rows: np.ndarray) -> float:
        confidence = rows[:, CONFIDENCE]
        correct = (rows[:, TRUE] == rows[:, PRED]).astype(np.float64)
        bins = np.minimum((confidence * self.n_bins).astype(np.int64), self.n_bins - 1)
        gap = np.bincount(bins, correct - confidence, minlength=self.n_bins)
        return float(np.abs(gap).sum() / len(rows))


# -- regression -------------------------------------------------------------------------------

class _RegressionMetric(_WindowedMetric):
    """Window columns: y_true, y_pred."""

    columns = 2
    task = "regression"

    def _rows(self, y_true: Any, y_pred: Any, scores: Any) -> np.ndarray:
        true = as_finite_array(y_true, "y_true")
        pred = as_finite_array(y_pred, "y_pred")
        if true.shape != pred.shape:
            raise InvalidInput(f"y_true has {len(true)} values but y_pred has {len(pred)}")
        return np.column_stack((true, pred))

    @staticmethod
    def _errors(rows: np.ndarray) -> np.ndarray:
        return rows[:, 1] - rows[:, 0]


class MAE(_RegressionMetric):
    """Mean absolute error over the last ``window`` pairs.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    Errors ``y_pred - y_true`` of 0.5, 0 and -2:

    >>> MAE(window=10).update_many([1.0, 2.0, 3.0], [1.5, 2.0, 1.0]).statistic    # 2.5 / 3
    0.8333333333333334
    >>> MAE(window=2).update_many([1.0, 2.0, 3.0], [1.5, 2.0, 1.0]).statistic     # the last two
    1.0
    """

    kind = kinds.MAE

    def _statistic(self, rows: np.ndarray) -> float:
        return float(np.abs(self._errors(rows)).mean())


class RMSE(_RegressionMetric):
    """Root mean squared error over the last ``window`` pairs.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    Errors ``y_pred - y_true`` of 0.5, 0 and -2:

    >>> RMSE(window=10).update_many([1.0, 2.0, 3.0], [1.5, 2.0, 1.0]).statistic   # sqrt(4.25 / 3)
    1.1902380714238083
    """

    kind = kinds.RMSE

    def _statistic(self, rows: np.ndarray) -> float:
        return float(np.sqrt((self._errors(rows) ** 2).mean()))


class Bias(_RegressionMetric):
    """Mean error ``mean(y_pred - y_true)``; positive when the model over-predicts.

    Parameters
    ----------
    window : int, default 1000
        Labelled pairs the metric is computed over: the last ``window`` of them.

    Attributes
    ----------
    window : CountWindow
        The pairs held, one row each (:class:`~detectors.windows.CountWindow`).

    Examples
    --------
    Errors ``y_pred - y_true`` of 0.5, 0 and -2:

    >>> Bias(window=10).update_many([1.0, 2.0, 3.0], [1.5, 2.0, 1.0]).statistic   # -1.5 / 3
    -0.5
    """

    kind = kinds.BIAS

    def _statistic(self, rows: np.ndarray) -> float:
        return float(self._errors(rows).mean())


METRICS = (Accuracy, Precision, Recall, F1, LogLoss, Brier, ExpectedCalibrationError, MAE, RMSE, Bias)
