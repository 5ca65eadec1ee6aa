"""Performance estimated from the model's own scores, before the labels arrive (CBPE).

Confidence-based performance estimation (CBPE, as NannyML does it in batch): once a model's
scores are calibrated, a prediction's calibrated probability *is* the chance that it is right,
so the expected confusion matrix of a window of predictions — labelled or not — follows from
the scores alone. Here it is live: :meth:`CBPE.update_many` feeds predictions (class and
score) to a count window of the last ``window`` of them; :meth:`CBPE.learn_many` feeds
labelled pairs (label and score) to the calibration.

Calibration: isotonic regression (pool-adjacent-violators, in numpy), fitted on the first
``reference_size`` labelled pairs and, with ``refit_every``, refitted on the latest
``reference_size`` pairs after every further ``refit_every`` pairs. Isotonic rather than Platt
because it assumes only that a higher score means a likelier positive: Platt's sigmoid cannot
repair a model whose miscalibration is not a sigmoid of its score (a tree's or a boosted
model's usually is not), and isotonic is NannyML's default. Fits happen at fixed labelled-pair
counts, never on the clock, so a replay, a live run and a restored checkpoint agree, and
the estimate does not depend on how the pairs or predictions were batched.

Estimates, for binary models (``scores`` is the probability of ``positive``), with ``p`` the
calibrated probability of the positive class and the expected confusion entries
``TP = sum(p | predicted positive)``, ``FP = sum(1 - p | predicted positive)``,
``FN = sum(p | predicted negative)``, ``TN = sum(1 - p | predicted negative)``:

* ``accuracy = (TP + TN) / n``; ``precision = TP / (TP + FP)``; ``recall = TP / (TP + FN)``;
  ``f1 = 2 TP / (2 TP + FP + FN)`` (of the positive class, as NannyML reports them).

Multiclass models (``scores`` is a row of probabilities in ``classes`` order): each class's
probability is calibrated one-vs-rest and the rows renormalised (NannyML's way); accuracy is
the mean calibrated probability of the predicted class; ``precision``, ``recall`` and ``f1``
are macro averages over the classes of the same expected per-class entries.

Each estimate carries its standard error: if the calibration holds, prediction *i* is right
with probability ``c_i`` independently of the others, so the realized accuracy of the window
has variance ``sum c_i (1 - c_i) / n^2`` (a Poisson-binomial); precision, recall and F1 get
theirs by the delta method from the same independent Bernoulli terms (binary models; ``nan``
for the multiclass macro averages). The band ``value ± 1.96 stderr`` is where the realized
metric of this window falls 95 % of the time *if the concept has not changed*: scores cannot
see a change of ``P(y | x)``, so under concept drift the estimate is wrong and only the
realized metric tells.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import kinds
from .base import InvalidInput, as_finite_array, plain_label
from .metrics import LabelCodes
from .windows import CountWindow

#: the estimated metrics, named in rules as ``estimated.<metric>``
ESTIMATED_METRICS = kinds.ESTIMATED_METRICS
#: the normal quantile of the two-sided 95 % band
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """One estimated metric of the window: its value, standard error and the predictions behind it.

    Attributes
    ----------
    value : float
        The estimate (``nan`` before the calibration is fitted or while the window is empty).
    stderr : float
        Its standard error if the calibration holds (``nan`` where none is derived).
    n : int
        The predictions in the window.

    Examples
    --------
    >>> estimate = Estimate(0.8, 0.05, 400)
    >>> round(estimate.lower, 4), round(estimate.upper, 4)     # 0.8 -/+ 1.96 * 0.05
    (0.702, 0.898)
    """

    value: float
    stderr: float
    n: int

    @property
    def lower(self) -> float:
        """The lower end of the 95 % band (clipped to 0)."""
        return max(0.0, self.value - Z95 * self.stderr)

    @property
    def upper(self) -> float:
        """The upper end of the 95 % band (clipped to 1)."""
        return min(1.0, self.value + Z95 * self.stderr)


class Isotonic:
    """A non-decreasing step-and-ramp map fitted by pool-adjacent-violators.

    ``fit`` pools equal scores, then merges adjacent blocks while their means decrease; the map
    interpolates linearly between the first and last score of consecutive blocks and is constant
    beyond the fitted range (scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``).

    Parameters
    ----------
    x : array-like
        The map's knots, increasing (``fit`` makes them).
    y : array-like
        The map's value at each knot, non-decreasing.

    Examples
    --------
    Scores 0.1 .. 0.4 with targets 0, 1, 0, 1: the middle pair violates the order and is pooled
    to 0.5, so the map is 0 at 0.1, 0.5 from 0.2 to 0.3, 1 at 0.4, linear in between.

    >>> iso = Isotonic.fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    >>> iso(np.array([0.1, 0.25, 0.35, 0.9])).round(6).tolist()
    [0.0, 0.5, 0.75, 1.0]
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = np.asarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)

    @classmethod
    def fit(cls, scores: np.ndarray, targets: np.ndarray) -> "Isotonic":
        order = np.argsort(scores, kind="stable")
        scores, targets = scores[order], targets[order].astype(np.float64)
        unique, start = np.unique(scores, return_index=True)
        weights = np.diff(np.append(start, len(scores))).astype(np.float64)
        sums = np.add.reduceat(targets, start)
        # Pool adjacent violators on the unique scores' (sum, weight) blocks: a stack of blocks.
        block_sum, block_weight, block_first = [], [], []
        for i in range(len(unique)):
            s, w, first = sums[i], weights[i], i
            while block_sum and block_sum[-1] * w >= s * block_weight[-1]:  # previous mean >= this one
                s += block_sum.pop()
                w += block_weight.pop()
                first = block_first.pop()
            block_sum.append(s)
            block_weight.append(w)
            block_first.append(first)
        means = np.asarray(block_sum) / np.asarray(block_weight)
        firsts = np.asarray(block_first)
        lasts = np.append(firsts[1:] - 1, len(unique) - 1)
        # Each block contributes its first and last score (one point when they coincide).
        x = np.column_stack((unique[firsts], unique[lasts])).reshape(-1)
        y = np.repeat(means, 2)
        keep = np.append(True, x[1:] != x[:-1])
        return cls(x[keep], y[keep])

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(scores, self.x, self.y)

    def state(self) -> dict[str, Any]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Isotonic":
        return cls(np.asarray(state["x"]), np.asarray(state["y"]))


class CBPE:
    """Estimated accuracy, precision, recall and F1 of the last ``window`` predictions from their
    calibrated scores (see the module docstring for the formulas and the calibration).

    Parameters
    ----------
    window : int, default 1000
        Predictions in the estimation window (labelled or not).
    reference_size : int, default 1000
        Labelled pairs the calibration is fitted on, >= 2: the first ``reference_size``, then
        (with ``refit_every``) the latest ``reference_size``. No estimate before the first fit.
    refit_every : int, default 0
        Refit the calibration after every this many further labelled pairs; 0 keeps the first fit.
    positive : int or str, default 1
        Binary models: the class ``scores`` is the probability of.
    classes : list, optional
        Multiclass models: the class of each column of the 2-D ``scores``, at least two; None
        for binary models.

    Attributes
    ----------
    fitted : bool
        The calibration has been fitted (estimates are ``nan`` until then).
    predictions : CountWindow
        The window of predictions the estimate is made over.

    Examples
    --------
    A model whose scores are calibrated already: of its predictions scored 0.75, three in four
    were positive; of those scored 0.25, one in four. ``learn_many`` takes labelled pairs (label,
    score), ``update_many`` predictions (predicted class, score), labelled or not.

    >>> cbpe = CBPE(window=4, reference_size=8)
    >>> cbpe.learn_many([1, 1, 1, 0, 0, 0, 0, 1], [0.75] * 4 + [0.25] * 4)
    >>> cbpe.update_many([1, 0, 1, 0], [0.75, 0.25, 0.75, 0.75])  # no labels needed
    >>> cbpe.fitted, cbpe.estimate()["accuracy"].value               # (0.75 + 0.75 + 0.75 + 0.25) / 4
    (True, 0.625)
    >>> CBPE.from_state(cbpe.state()).estimate()["precision"].value  # 1.5 of 2 predicted positives
    0.75
    """

    kind: ClassVar[str] = kinds.CBPE

    def __init__(self, window: int = 1000, reference_size: int = 1000, refit_every: int = 0,
                 positive: Any = 1, classes: list[Any] | None = None):
        if int(reference_size) < 2:
            raise ValueError(f"reference_size must be >= 2, got {reference_size!r}")
        if int(refit_every) < 0:
            raise ValueError(f"refit_every must be >= 0, got {refit_every!r}")
        if classes is not None and len(classes) < 2:
            raise ValueError("classes: a multiclass estimate needs at least two classes")
        self.reference_size = int(reference_size)
        self.refit_every = int(refit_every)
        self.positive = plain_label(positive)
        self.classes = None if classes is None else [plain_label(c) for c in classes]
        self._codes = {c: i for i, c in enumerate(self.classes or [])}
        width = 1 + (len(self.classes) if self.classes else 1)
        #: the predictions: predicted code (binary: 1 if positive; multiclass: class index, -1 unknown), scores
        self.predictions = CountWindow(window, width)
        #: the labelled pairs the calibration is (re)fitted on: true code, scores
        self.reference = CountWindow(self.reference_size, width)
        self.calibrators: list[Isotonic] | None = None
        #: labels as first seen -> small codes (derived, not checkpointed: the windows hold targets)
        self._labels = LabelCodes()
        #: the last estimate and the (predictions, pairs) counts it was made at
        self._estimated: tuple[tuple[int, int], dict[str, Estimate]] | None = None

    # -- updates ------------------------------------------------------------------------
    def update(self, y_pred: Any, score: Any) -> None:
        self.update_many([y_pred], np.asarray(score, dtype=np.float64)[None, ...])

    def update_many(self, y_pred: Any, scores: Any) -> None:
        """Predictions (labelled or not): their class and score (binary) or probability row."""
        self.predictions.push(self._rows(y_pred, scores, "y_pred"))

    def learn(self, y_true: Any, score: Any) -> None:
        self.learn_many([y_true], np.asarray(score, dtype=np.float64)[None, ...])

    def learn_many(self, y_true: Any, scores: Any) -> None:
        """Labelled pairs: the true class and the score the prediction had. The calibration is
        fitted at fixed pair counts (``reference_size``, then every ``refit_every``), wherever
        the batch boundaries fall."""
        rows = self._rows(y_true, scores, "y_true")
        seen = self.reference.seen
        fit_at = self._last_fit_point(seen, seen + len(rows))
        if fit_at is None:
            self.reference.push(rows)
            return
        self.reference.push(rows[: fit_at - seen])
        self._fit()
        self.reference.push(rows[fit_at - seen:])

    def _last_fit_point(self, before: int, after: int) -> int | None:
        """The last pair count in (before, after] at which the calibration is fitted."""
        first = self.reference_size
        if after < first:
            return None
        if not self.refit_every:
            return first if before < first else None
        last = first + (after - first) // self.refit_every * self.refit_every
        return last if last > before else None

    def _fit(self) -> None:
        rows = self.reference.rows()
        truth, scores = rows[:, 0], rows[:, 1:]
        if self.classes is None:
            self.calibrators = [Isotonic.fit(scores[:, 0], truth == 1)]
        else:
            self.calibrators = [Isotonic.fit(scores[:, k], truth == k) for k in range(len(self.classes))]

    def _rows(self, labels: Any, scores: Any, name: str) -> np.ndarray:
        scores = as_finite_array(scores, "scores")
        labels = np.asarray(labels)
        labels = labels.reshape(-1) if labels.ndim else labels.reshape(1)
        columns = 1 if self.classes is None else len(self.classes)
        if columns == 1 and scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if (scores.ndim != 1) if columns == 1 else (scores.ndim != 2 or scores.shape[1] != columns):
            raise InvalidInput(f"scores must be {'1-D' if columns == 1 else f'rows of {columns} probabilities'}")
        if len(scores) != len(labels):
            raise InvalidInput(f"scores has {len(scores)} rows but {name} has {len(labels)} values")
        if ((scores < 0) | (scores > 1)).any():
            raise InvalidInput("scores must be probabilities in [0, 1]")
        codes = self._labels.encode(labels, name)
        # each distinct label's target: 1/0 for the positive class (binary), its column or -1
        if self.classes is None:
            targets = np.array([float(label == self.positive) for label in self._labels.labels])
        else:
            targets = np.array([float(self._codes.get(label, -1)) for label in self._labels.labels])
        return np.column_stack((targets[codes] if len(codes) else np.zeros(0), scores.reshape(len(labels), columns)))

    # -- results ------------------------------------------------------------------------
    def estimate(self) -> dict[str, Estimate]:
        """Every estimated metric of the window (``nan`` with n=0 before the calibration is fitted
        or while the window is empty)."""
        key = (self.predictions.seen, self.reference.seen)
        if self._estimated is None or self._estimated[0] != key:  # read by rules and the exporter alike
            self._estimated = key, self._estimate()
        return dict(self._estimated[1])

    def _estimate(self) -> dict[str, Estimate]:
        rows = self.predictions.rows()
        if self.calibrators is None or not len(rows):
            return {metric: Estimate(float("nan"), float("nan"), 0) for metric in ESTIMATED_METRICS}
        predicted, scores = rows[:, 0], rows[:, 1:]
        if self.classes is None:
            return _binary(predicted == 1, self.calibrators[0](scores[:, 0]))
        return _multiclass(predicted.astype(np.int64), self._calibrated(scores))

    def _calibrated(self, scores: np.ndarray) -> np.ndarray:
        calibrated = np.column_stack([c(scores[:, k]) for k, c in enumerate(self.calibrators)])
        total = calibrated.sum(axis=1, keepdims=True)
        return np.divide(calibrated, total, out=np.full_like(calibrated, 1.0 / calibrated.shape[1]),
                         where=total > 0)

    @property
    def fitted(self) -> bool:
        return self.calibrators is not None

    # -- checkpoints --------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"window": self.predictions.size, "reference_size": self.reference_size,
                "refit_every": self.refit_every, "positive": self.positive, "classes": self.classes}

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self._params(), "predictions": self.predictions.state(),
                "reference": self.reference.state(),
                "calibrators": None if self.calibrators is None else [c.state() for c in self.calibrators]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CBPE":
        cbpe = cls(**state["params"])
        cbpe.predictions = CountWindow.from_state(state["predictions"])
        cbpe.reference = CountWindow.from_state(state["reference"])
        calibrators = state["calibrators"]
        cbpe.calibrators = None if calibrators is None else [Isotonic.from_state(c) for c in calibrators]
        return cbpe


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def _binary(positive: np.ndarray, p: np.ndarray) -> dict[str, Estimate]:
    """The expected confusion matrix of a window and each metric's delta-method standard error.

    With ``A = #true positives`` (a sum of Bernoulli(p) over the predicted positives, fixed in
    number) and ``B = #false negatives`` (over the predicted negatives), independent."""
    n = len(p)
    correct = np.where(positive, p, 1.0 - p)
    variance = p * (1.0 - p)  # the same for "right" and for "is positive"
    tp, n_pos = float(p[positive].sum()), int(positive.sum())
    fn = float(p[~positive].sum())
    var_a, var_b = float(variance[positive].sum()), float(variance[~positive].sum())
    accuracy = Estimate(float(correct.mean()), float(np.sqrt(variance.sum())) / n, n)
    precision = Estimate(_ratio(tp, n_pos), _ratio(np.sqrt(var_a), n_pos), n)
    actual = tp + fn
    # recall = A / (A + B): dR/dA = B / (A+B)^2, dR/dB = -A / (A+B)^2
    recall_se = _ratio(np.sqrt(fn ** 2 * var_a + tp ** 2 * var_b), actual ** 2)
    recall = Estimate(_ratio(tp, actual), recall_se, n)
    # F1 = 2A / (n_pos + A + B): dF/dA = 2 (n_pos + B) / D^2, dF/dB = -2A / D^2
    d = n_pos + actual
    f1_se = _ratio(2 * np.sqrt((n_pos + fn) ** 2 * var_a + tp ** 2 * var_b), d ** 2)
    f1 = Estimate(_ratio(2 * tp, d), f1_se, n)
    return dict(zip(ESTIMATED_METRICS, (accuracy, precision, recall, f1)))


def _multiclass(predicted: np.ndarray, p: np.ndarray) -> dict[str, Estimate]:
    """Accuracy with its Poisson-binomial error; macro precision, recall and F1 one-vs-rest."""
    n, k = p.shape
    known = predicted >= 0  # a class outside ``classes`` is never right
    correct = np.where(known, p[np.arange(n), np.maximum(predicted, 0)], 0.0)
    accuracy = Estimate(float(correct.mean()), float(np.sqrt((correct * (1.0 - correct)).sum())) / n, n)
    onehot = np.zeros_like(p)
    onehot[np.flatnonzero(known), predicted[known]] = 1.0
    tp = (onehot * p).sum(axis=0)
    predicted_count = onehot.sum(axis=0)
    actual = p.sum(axis=0)
    precision = np.divide(tp, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denominator = predicted_count + actual
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    nan = float("nan")
    return dict(zip(ESTIMATED_METRICS, (accuracy, Estimate(float(precision.mean()), nan, n),
                                        Estimate(float(recall.mean()), nan, n), Estimate(float(f1.mean()), nan, n))))
