"""A model's statistics: performance metrics, change detectors and data drift, built from its
config section, fed one stretch of the stream (a segment) at a time with numpy columns.

The Monitor cuts each model's stream into segments at its evaluation points and hands every
segment here: the predictions' feature columns (drift), and the labelled pairs (metrics and
change detectors). ``observations()`` names every statistic the way rules refer to it:
``accuracy``…, ``feature.<name>.<kind>``, ``prediction.<kind>``, ``detector.<kind>``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import Result
from detectors.calibration import reject
from detectors.registry import build, restore
from detectors.windows import HoppingWindow, TumblingWindow
from retrain_trigger.policy import Observation
from retrain_trigger.rules import DETECTOR_KINDS, DRIFT_KINDS

from .config import Model

CLASSIFICATION_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "brier", "ece")
REGRESSION_METRICS = ("mae", "rmse", "bias")
SCORE_METRICS = ("log_loss", "brier", "ece")



@dataclass(frozen=True)
class ClosedPerformance:
    """The performance metrics of one closed event-time window [start_ms, end_ms)."""

    start_ms: int
    end_ms: int
    count: int
    results: dict[str, Result]


class ModelStatistics:
    def __init__(self, model: Model, source: str = "<memory>"):
        self.model = model
        self.regression = model.task == "regression"
        self.metric_kinds = list(model.metrics) or (["mae"] if self.regression else ["accuracy"])
        allowed = REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS
        for i, kind in enumerate(self.metric_kinds):
            if kind not in allowed:
                raise ValueError(f"metrics[{i}]: {kind!r} is not a {model.task} metric; expected one of "
                                 f"{', '.join(allowed)}")
        self.event_time = model.window.kind != "count"
        self.metrics: dict[str, Any] = {}
        self.windows: dict[str, HoppingWindow] = {}
        for kind in self.metric_kinds:
            if self.event_time:
                self.windows[kind] = self._event_time_window(kind)
            else:
                self.metrics[kind] = build(kind, self._metric_params(kind, model.window.size))
        self.changes = {}
        for i, spec in enumerate(model.detectors):
            params = {k: v for k, v in spec.items() if k != "kind"}
            kind = spec.get("kind")
            if kind not in DETECTOR_KINDS:
                raise ValueError(f"detectors[{i}].kind: {kind!r} is not a change detector")
            try:
                self.changes[kind] = build(kind, params)
            except ValueError as exc:
                raise ValueError(f"detectors[{i}]: {exc}") from None
        self.feature_drift: dict[tuple[str, str], Any] = {}
        self.prediction_drift: dict[str, Any] = {}
        #: each drift detector's result as of its last update (``update_many`` returns it): a
        #: result changes only with an update, and observations are asked for far more often
        self._drift_results: dict[Any, Result] = {}
        if model.drift is not None:
            self._build_drift(model, source)
        #: the last closed event-time window's results, by metric (event-time mode)
        self.closed: dict[str, Result] = {}
        #: change detectors that signalled since the last evaluation point. A detector's own
        #: ``fired`` speaks of its last ``update_many`` only, which depends on batching.
        self.change_fired: dict[str, bool] = {}

    # -- construction ---------------------------------------------------------------------
    def _metric_params(self, kind: str, window: int) -> dict[str, Any]:
        params: dict[str, Any] = {"window": window}
        if not self.regression:
            params["positive"] = self.model.positive
            if self.model.classes:
                params["classes"] = list(self.model.classes)
        return params

    def _event_time_window(self, kind: str) -> HoppingWindow:
        w = self.model.window
        params = self._metric_params(kind, 1 << 30)  # an event-time window holds all its pairs
        size, grace = w.size_seconds * 1000, w.grace_seconds * 1000
        if w.kind == "tumbling":
            return TumblingWindow(size=size, grace=grace, kind=kind, params=params)
        return HoppingWindow(size=size, step=(w.hop_seconds or w.size_seconds) * 1000, grace=grace, kind=kind,
                             params=params)

    def _build_drift(self, model: Model, source: str) -> None:
        drift = model.drift
        references = _load_references(Path(source).parent / drift.reference_file) if drift.reference_file else {}
        common = {"window": drift.window, "reference_size": drift.reference_size}

        def make(kind: str, where: str, categorical: bool, reference) -> Any:
            if kind not in DRIFT_KINDS:
                raise ValueError(f"drift.{where}: {kind!r} is not a drift statistic; expected one of "
                                 f"{', '.join(DRIFT_KINDS)}")
            params = {**common, **drift.params.get(kind, {}), "categorical": categorical}
            if reference is not None:
                params["reference"] = reference
            try:
                return build(kind, params)
            except ValueError as exc:
                raise ValueError(f"drift.{where}: {exc}") from None

        for feature in model.features.numeric:
            for kind in drift.numeric:
                self.feature_drift[feature, kind] = make(kind, "numeric", False, references.get(feature))
        for feature in model.features.categorical:
            for kind in drift.categorical:
                self.feature_drift[feature, kind] = make(kind, "categorical", True, references.get(feature))
        categorical_prediction = model.task == "multiclass"
        for kind in drift.prediction:
            self.prediction_drift[kind] = make(kind, "prediction", categorical_prediction, references.get("prediction"))

    # -- updates ----------------------------------------------------------------------------
    def update_predictions(self, columns: dict[str, list], prediction_values: list) -> None:
        """One segment's predictions: a list per watched feature (None where missing), and the
        value prediction drift watches (score, class or number; None where missing)."""
        results = self._drift_results
        for key, detector in self.feature_drift.items():
            values = _present(columns.get(key[0], ()), detector.categorical)
            if len(values):
                results[key] = detector.update_many(values)
        if self.prediction_drift:
            for kind, detector in self.prediction_drift.items():
                values = _present(prediction_values, detector.categorical)
                if len(values):
                    results[kind] = detector.update_many(values)

    def update_pairs(self, y_true: list, y_pred: list, scores: list | None,
                     times_ms: list[int]) -> list[ClosedPerformance]:
        """One segment's labelled pairs. Returns the event-time windows that closed, oldest first."""
        truth, predicted = np.asarray(y_true), np.asarray(y_pred)
        score_array = _scores(scores)
        if self.changes:
            errors = self._errors(truth, predicted)
            for kind, detector in self.changes.items():
                if detector.update_many(errors).fired:
                    self.change_fired[kind] = True
        if not self.event_time:
            for kind, metric in self.metrics.items():
                metric.update_many(truth, predicted, score_array if kind in SCORE_METRICS else None)
            return []
        closed_by_kind = {kind: window.update_many(np.asarray(times_ms, dtype=np.float64), truth, predicted,
                                                   score_array if kind in SCORE_METRICS else None)
                          for kind, window in self.windows.items()}
        closed = []
        for per_window in zip(*closed_by_kind.values()):
            results = {kind: w.result for kind, w in zip(closed_by_kind, per_window)}
            first = per_window[0]
            closed.append(ClosedPerformance(int(first.start), int(first.end), first.count, results))
            self.closed = results
        return closed

    def _errors(self, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        if self.regression:
            return np.abs(truth.astype(np.float64) - predicted.astype(np.float64))
        return (truth != predicted).astype(np.float64)

    # -- results ----------------------------------------------------------------------------
    def performance(self) -> dict[str, Result]:
        if self.event_time:
            return dict(self.closed)
        return {kind: metric.result() for kind, metric in self.metrics.items()}

    def window_samples(self) -> int:
        results = self.performance()
        return next(iter(results.values())).n if results else 0

    def late_labels(self) -> int:
        return max((w.late for w in self.windows.values()), default=0)

    def observations(self, performance: dict[str, Result] | None = None) -> dict[str, Observation]:
        obs = {kind: _observation(r) for kind, r in (performance or self.performance()).items()}
        for kind, detector in self.changes.items():
            obs[f"detector.{kind}"] = _observation(detector.result(), detector=kind,
                                                   fired=self.change_fired.get(kind, False))
        results = self._drift_results
        feature_results = {key: results.get(key) or d.result() for key, d in self.feature_drift.items()}
        fired = self._corrected_alarms(feature_results)
        for (feature, kind), result in feature_results.items():
            obs[f"feature.{feature}.{kind}"] = _observation(result, detector=kind, fired=fired[feature, kind])
        for kind, detector in self.prediction_drift.items():
            obs[f"prediction.{kind}"] = _observation(results.get(kind) or detector.result(), detector=kind)
        return obs

    def end_evaluation(self) -> None:
        """An evaluation point has judged the rules: change detectors start a fresh interval."""
        self.change_fired.clear()

    def _corrected_alarms(self, results: dict[tuple[str, str], Result]) -> dict[tuple[str, str], bool]:
        """Tests (KS, chi-squared) over many features alarm after the configured correction."""
        fired = {key: r.fired for key, r in results.items()}
        drift = self.model.drift
        if drift is None or drift.correction == "none":
            return fired
        tests = [key for key, r in results.items() if r.p_value is not None and math.isfinite(r.p_value)
                 and r.n >= self.feature_drift[key].min_samples]
        if tests:
            rejected = reject([results[key].p_value for key in tests], drift.alpha, drift.correction)
            for key, is_rejected in zip(tests, rejected):
                fired[key] = bool(is_rejected)
        return fired

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "metrics": {kind: m.state() for kind, m in self.metrics.items()},
            "windows": {kind: w.state() for kind, w in self.windows.items()},
            "changes": {kind: d.state() for kind, d in self.changes.items()},
            "feature_drift": [[feature, kind, d.state()] for (feature, kind), d in self.feature_drift.items()],
            "prediction_drift": {kind: d.state() for kind, d in self.prediction_drift.items()},
            "closed": {kind: _result_state(r) for kind, r in self.closed.items()},
            "change_fired": self.change_fired,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.metrics = {kind: restore(s) for kind, s in state["metrics"].items()}
        window_class = TumblingWindow if self.model.window.kind == "tumbling" else HoppingWindow
        self.windows = {kind: window_class.from_state(s) for kind, s in state["windows"].items()}
        self.changes = {kind: restore(s) for kind, s in state["changes"].items()}
        self.feature_drift = {(feature, kind): restore(s) for feature, kind, s in state["feature_drift"]}
        self.prediction_drift = {kind: restore(s) for kind, s in state["prediction_drift"].items()}
        self._drift_results = {}
        self.closed = {kind: Result(**r) for kind, r in state["closed"].items()}
        self.change_fired = dict(state["change_fired"])


def _present(values, categorical: bool) -> np.ndarray:
    """The usable values of a column: numbers for numeric detectors, strings for categorical."""
    if categorical:
        return np.asarray([str(v) for v in values if v is not None], dtype=object)
    if set(map(type, values)) <= _NUMBERS:  # the usual column: numbers only, converted in one C pass
        column = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(column)
        return column if finite.all() else column[finite]
    return np.asarray([v for v in values if type(v) in (int, float) and math.isfinite(v)], dtype=np.float64)


_NUMBERS = {int, float}


def _scores(scores: list | None) -> np.ndarray | None:
    if not scores or any(s is None for s in scores):
        return None
    return np.asarray(scores, dtype=np.float64)


def _observation(result: Result, detector: str | None = None, fired: bool | None = None) -> Observation:
    return Observation(value=result.statistic, n=result.n, fired=result.fired if fired is None else fired,
                       p_value=result.p_value, threshold=result.threshold, detector=detector)


def _result_state(result: Result) -> dict[str, Any]:
    return {"statistic": result.statistic, "threshold": result.threshold, "p_value": result.p_value,
            "n": result.n, "fired": result.fired}


def _load_references(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"drift.reference_file: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and v for v in data.values()):
        raise ValueError(f"drift.reference_file: {path} must be a JSON object of feature -> non-empty list")
    return data
