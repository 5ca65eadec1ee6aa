"""A model's statistics: performance metrics, change detectors and data drift, built from its
config section, fed one stretch of the stream (a segment) at a time with numpy columns.

The Monitor cuts each model's stream into segments at its evaluation points and hands every
segment here: the predictions (drift), and the labelled pairs (metrics and change detectors).
``observations()`` names every statistic the way rules refer to it: ``accuracy``…,
``feature.<name>.<kind>``, ``prediction.<kind>``, ``detector.<kind>``, ``estimated.<metric>``.

With an ``estimation`` table, :class:`detectors.estimation.CBPE` estimates the performance of
the latest predictions from their scores (fed by every prediction, calibrated on the labelled
pairs): the ``estimated.*`` statistics, available before any label of the window arrives.

Drift detectors and change detectors are fed lazily: a segment's predictions and errors are
queued, and the queue goes to the detectors in one vectorized call when one of their statistics
is read (a rule that names it, a trigger's evidence, the exporter) or at :meth:`catch_up`. Their
windows do not depend on how the values were chunked, so a statistic read at an evaluation point
is the same as if every segment had been fed on its own; most evaluation points read only the
performance metrics, and skipping the drift work there is most of the Monitor's speed. The
count-window metrics' pairs wait in a queue too, until the performance is read; told a batch's
pairs ahead (:meth:`~ModelStatistics.pairs_ahead`), the metrics give their results at each
point without them, and the queue is fed once, at :meth:`~ModelStatistics.catch_up`.

The Monitor queues a whole batch of predictions at once, with the evaluation points where drift
rules will read it, and moves to each point (:meth:`~ModelStatistics.seek`) before judging there:
the numeric feature detectors (and the prediction drift ones, when the batch's watched values
are finite numbers) are then measured at all the points together, from the batch binned once
(:class:`~detectors.drift.Foresight`), and fed the batch at :meth:`catch_up`.
"""
from __future__ import annotations

import functools
import itertools
import math
import operator
import struct
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from detectors.base import Result
from detectors.calibration import reject
from detectors.estimation import CBPE, ESTIMATED_METRICS, Estimate
from detectors.drift import (Foresight, add_columns, can_foresee, results as drift_results,
                             statistics as drift_statistics)
from detectors.event_windows import HoppingWindow, TumblingWindow
from detectors.kinds import TUMBLING
from detectors.registry import SCORE_METRIC_KINDS, build, restore
from retrain_trigger.policy import Observation

from streams.core.checks import change_detectors, drift_detectors, metric_kinds, metric_params
from streams.core.codecs import LARGEST_INT, FeatureRow
from streams.core.config import Model




@dataclass(frozen=True)
class ClosedPerformance:
    """The performance metrics of one closed event-time window [start_ms, end_ms)."""

    start_ms: int
    end_ms: int
    count: int
    results: dict[str, Result]


class ModelStatistics:
    """A model's statistics, their detectors built by :mod:`streams.core.checks` (what the config
    checks build too, so a config that loads builds here)."""

    def __init__(self, model: Model, source: str = "<memory>"):
        self.model = model
        self.regression = model.task == "regression"
        self.metric_kinds = metric_kinds(model)
        self.event_time = model.window.kind != "count"
        self.metrics: dict[str, Any] = {}
        self.windows: dict[str, HoppingWindow] = {}
        for kind in self.metric_kinds:
            if self.event_time:
                self.windows[kind] = self._event_time_window(kind)
            else:
                self.metrics[kind] = build(kind, metric_params(model, model.window.size))
        #: some metric is computed from the scores (the others are fed none)
        self._score_metrics = any(kind in SCORE_METRIC_KINDS for kind in self.metric_kinds)
        self.changes = change_detectors(model)
        self.feature_drift, self.prediction_drift = drift_detectors(model, source)
        #: each drift detector's result since its last update (dropped at the next one): a
        #: result changes only with an update, and observations are often asked for in between
        self._drift_results: dict[Any, Result] = {}
        self.watched = sorted({feature for feature, _ in self.feature_drift})
        self._numeric_features = frozenset(model.features.numeric)
        #: the last closed event-time window's results, by metric (event-time mode)
        self.closed: dict[str, Result] = {}
        # Queued for the detectors (see the module docstring): predictions' feature objects and
        # watched prediction values, and the error arrays of labelled pairs.
        self._queued_errors: list[np.ndarray] = []
        #: labelled pairs queued for the count-window metrics, a segment each (see _feed_pairs)
        self._queued_pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._clear_ahead()
        self._clear_predictions()  # the queued predictions and their read positions
        #: values() has been called: each batch's end is then measured with its points, as a
        #: timeline reads every batch's end (see values)
        self._reads_end = False
        #: labelled pairs seen, and how many there were at the last evaluation point: a change
        #: detector "fired" at an evaluation point when it detected a change after that count
        self.pairs_seen = 0
        self.evaluated_pairs = 0
        #: each change detector's latest detection (a position in its error stream), -1 for none
        self.last_detection: dict[str, int] = {kind: -1 for kind in self.changes}
        #: detections since the Monitor last took them (it counts them for the exporter)
        self.new_detections: dict[str, int] = {}
        self._derive()
        self.estimator: CBPE | None = self._build_estimation(model)

    # -- construction ---------------------------------------------------------------------
    def _event_time_window(self, kind: str) -> HoppingWindow:
        w = self.model.window
        params = metric_params(self.model, 1 << 30)  # an event-time window holds all its pairs
        size, grace = w.size_seconds * 1000, w.grace_seconds * 1000
        if w.kind == TUMBLING:
            return TumblingWindow(size=size, grace=grace, kind=kind, params=params)
        return HoppingWindow(size=size, step=(w.hop_seconds or w.size_seconds) * 1000, grace=grace, kind=kind,
                             params=params)

    def _build_estimation(self, model: Model) -> CBPE | None:
        estimation = model.estimation
        if estimation is None:
            return None
        return CBPE(window=estimation.window or model.window.size, reference_size=estimation.reference_size,
                    refit_every=estimation.refit_every, positive=model.positive,
                    classes=list(model.classes) if model.task == "multiclass" else None)

    # -- updates ----------------------------------------------------------------------------
    def update_predictions(self, rows: list[dict[str, Any]], prediction_values: list,
                           points: list[int] | None = None) -> None:
        """Predictions: each one's ``features`` object, and the value prediction drift watches
        (score, class or number; None where missing). Queued for the drift detectors, and
        read as of all of them until :meth:`seek` says otherwise.

        ``points``: the counts of these predictions after which the drift statistics will be
        read (a batch's evaluation points, see :meth:`seek`), so that the numeric feature
        detectors are measured at all of them together (:class:`~detectors.drift.Foresight`)."""
        if self.feature_drift:
            self._queued_rows.extend(rows)
        if self.prediction_drift:
            self._queued_predictions.extend(prediction_values)
        self._base = self._queued
        self._queued += len(rows)
        self._position = self._queued
        self._end_measured = None
        if points:
            self._points.extend(self._base + point for point in points)
            if self._reads_end and points[-1] != len(rows):
                self._points.append(self._queued)  # measured with the points (see values)

    def seek(self, position: int) -> None:
        """Reads from now on see the first ``position`` predictions of the last
        :meth:`update_predictions` (and everything queued before it): the statistics as if
        they had been fed those alone. Positions only move forward until :meth:`catch_up`."""
        self._position = self._base + position

    def _clear_predictions(self) -> None:
        """No prediction queued: nothing fed from the queue, nothing foreseen."""
        self._queued_rows, self._queued_predictions = [], []
        #: predictions queued, those fed to the feature and to the prediction detectors, and
        #: those reads see
        self._queued = self._fed_rows = self._fed_predictions = self._position = self._base = 0
        #: where the queued predictions will be read (see update_predictions)
        self._points: list[int] = []
        #: the numeric feature detectors' results at the points, while the queue is read part
        #: by part: None until decided, False when they are fed part by part instead
        self._foresight: Foresight | bool | None = None
        #: the prediction drift detectors that Foresight measures too (after the numeric feature
        #: detectors, reading the matrix's last column), by kind: none unless it can
        self._foreseen_predictions: list[str] = []

    def update_pairs(self, y_true: list, y_pred: list, scores: list | None,
                     times_ms: list[int]) -> list[ClosedPerformance]:
        """One segment's labelled pairs. Returns the event-time windows that closed, oldest first."""
        truth, predicted = np.asarray(y_true), np.asarray(y_pred)
        score_array = _scores(scores) if self._score_metrics else None
        self.pairs_seen += len(truth)
        if self.changes:
            self._queued_errors.append(self._errors(truth, predicted))
        if not self.event_time:
            self._queued_pairs.append((truth, predicted, score_array))
            self._queued_count += len(truth)
            return []
        closed_by_kind = {kind: window.update_many(np.asarray(times_ms, dtype=np.float64), truth, predicted,
                                                   score_array if kind in SCORE_METRIC_KINDS else None)
                          for kind, window in self.windows.items()}
        closed = []
        for per_window in zip(*closed_by_kind.values()):
            results = {kind: w.result for kind, w in zip(closed_by_kind, per_window)}
            first = per_window[0]
            closed.append(ClosedPerformance(int(first.start), int(first.end), first.count, results))
            self.closed = results
        return closed

    def _feed_pairs(self) -> None:
        """Feed the queued pairs to the count-window metrics: in one call when that gives the
        same state as a call per segment (class ids all coded already, so no code depends on
        the parts; checked on the joined arrays, which int64 and uint64 parts would make floats),
        else segment by segment."""
        queued, self._queued_pairs = self._queued_pairs, []
        self._clear_ahead()
        if len(queued) > 1 and not self.regression and not self._score_metrics:
            truth = np.concatenate([t for t, _, _ in queued])
            predicted = np.concatenate([p for _, p, _ in queued])
            labels = np.concatenate((truth, predicted))
            if all(metric.codes.knows_ints(labels) for metric in self.metrics.values()):
                queued = [(truth, predicted, None)]
        for truth, predicted, scores in queued:
            for kind, metric in self.metrics.items():
                metric.update_many(truth, predicted, scores if kind in SCORE_METRIC_KINDS else None)

    def update_estimation(self, predicted: list, scores: list) -> None:
        """One segment's predictions for the estimator: each one's class and score (binary) or
        probability row (multiclass); those without scores are left out."""
        predicted, scores = _scored(predicted, scores)
        if scores:
            self.estimator.update_many(predicted, np.asarray(scores, dtype=np.float64))

    def learn_estimation(self, y_true: list, scores: list) -> None:
        """One segment's labelled pairs for the estimator's calibration (those without scores left out)."""
        y_true, scores = _scored(y_true, scores)
        if scores:
            self.estimator.learn_many(y_true, np.asarray(scores, dtype=np.float64))

    def estimated(self) -> dict[str, Estimate]:
        """The estimated metrics by name (``accuracy``, …), with their standard errors; empty
        without an ``estimation`` table."""
        return {} if self.estimator is None else self.estimator.estimate()

    def estimated_observations(self) -> dict[str, Observation]:
        return {f"estimated.{metric}": Observation(value=e.value, n=e.n) for metric, e in self.estimated().items()}

    def _estimated_groups(self) -> dict[str, str]:
        """The estimated statistics as one observation group: estimated only when a rule or the
        exporter reads them, not at every evaluation point."""
        return {} if self.estimator is None else {f"estimated.{metric}": "estimated" for metric in ESTIMATED_METRICS}

    def _observe_any(self, group: str) -> dict[str, Observation]:
        return self.estimated_observations() if group == "estimated" else self._observe_group(group)

    def catch_up(self) -> None:
        """Feed everything queued to the drift and change detectors."""
        self._catch_up_features(self._queued)
        self._catch_up_predictions(self._queued)
        end = None
        if isinstance(self._foresight, Foresight):
            end = self._foresight.measured(self._queued)
            self._foresight.commit()
            foreseen = self._foreseen_keys()
            for key in foreseen:
                self._drift_results.pop(key, None)
        self._clear_predictions()
        if end is not None:
            self._end_measured = (foreseen, end)
        self._catch_up_changes()
        self._feed_pairs()

    def _foresee(self) -> Foresight | None:
        """The numeric feature detectors' results at the points, measured together, when the
        queue is read before its end, every numeric detector can be foreseen and every queued
        row has every numeric feature as a finite number (decided at the first read before the
        end)."""
        if self._foresight is None:
            if self._position >= self._queued:
                # Not a read before the end (the exporter's between batches reads an empty
                # queue): nothing to foresee, and a decision now would hold for the next batch.
                return None
            self._foresight = False
            numeric, _, detectors, order = self._numeric_plan()
            if (self._fed_rows == 0 and self._queued_rows and detectors
                    and can_foresee(detectors)):
                rows = self._queued_rows
                matrix = _numeric_matrix(rows, numeric, _row_kind(rows))
                if matrix is not None:
                    # the prediction drift detectors measured with the features when they can
                    # be: the timeline reads them at every sample
                    detectors, matrix, order, self._foreseen_predictions = self._with_predictions(matrix, 0)
                    self._foresight = Foresight(detectors, matrix, self._points, columns=order)
        return self._foresight or None

    def _with_predictions(self, matrix: np.ndarray, start: int) -> tuple[list[Any], np.ndarray, np.ndarray, list[str]]:
        """The numeric feature detectors, ``matrix`` (the queued rows' numeric features from
        ``start`` on) and each detector's column, with the prediction drift detectors after them
        reading the rows' watched values as a last column when they can be fed and measured
        with the features: numeric ones a Foresight can measure, fed up to ``start``, every
        value a finite number. Both :meth:`_foresee` and :meth:`_catch_up_features` take them
        together then, so that the detectors' kept layout (see :func:`~detectors.drift.add_columns`)
        is the same either way. Also the prediction kinds added (none, or all)."""
        _, _, detectors, order = self._numeric_plan()
        together, together_order, kinds = self._predicting_plan()
        if not kinds or self._fed_predictions != start or not can_foresee(together[len(detectors):]):
            return detectors, matrix, order, []
        column = _present(self._queued_predictions[start:start + len(matrix)], categorical=False)
        if len(column) != len(matrix):
            return detectors, matrix, order, []
        return together, np.column_stack((matrix, column)), together_order, kinds

    def _predicting_plan(self) -> tuple[list[Any], np.ndarray, list[str]]:
        """The numeric feature detectors then the prediction drift ones, each one's column (the
        prediction drift ones the column after the numeric features) and the prediction kinds,
        as :meth:`_with_predictions` takes them together; kept while the detectors are."""
        if self._predicting is None:
            numeric, _, detectors, order = self._numeric_plan()
            predicting = list(self.prediction_drift.values())
            self._predicting = ([*detectors, *predicting],
                                np.concatenate((order, np.full(len(predicting), len(numeric), dtype=np.intp))),
                                list(self.prediction_drift))
        return self._predicting

    def _catch_up_features(self, upto: int) -> None:
        """Feed the features of the queued predictions up to ``upto`` to their detectors (the
        numeric ones excepted while a Foresight measures them)."""
        if upto <= self._fed_rows:
            return
        start, self._fed_rows = self._fed_rows, upto
        read = self._drift_results  # a detector fed here loses its remembered result
        foreseen = isinstance(self._foresight, Foresight)
        if self._queued_rows and not (foreseen and self._all_numeric()):
            rows = self._queued_rows[start:upto] if start or upto < len(self._queued_rows) else self._queued_rows
            numeric, numeric_keys, numeric_detectors, order = self._numeric_plan()
            kind = _row_kind(rows)  # one pass over the rows, for the matrix and every column
            matrix = None if foreseen else _numeric_matrix(rows, numeric, kind)
            columns: dict[str, Any] = {}
            if matrix is not None:  # the usual batch: every numeric detector fed from one matrix
                detectors, matrix, order, predicted = self._with_predictions(matrix, start)
                add_columns(detectors, matrix, columns=order)
                if predicted:  # fed here with the features
                    self._fed_predictions = upto
                if read:
                    for key in [*numeric_keys, *predicted]:
                        read.pop(key, None)
            for key, detector in self.feature_drift.items():
                if (matrix is not None or foreseen) and not detector.categorical:
                    continue
                feature = key[0]
                column = columns.get(feature)
                if column is None:
                    column = columns[feature] = _feature_column(rows, feature, kind)
                values = _present(column, detector.categorical)
                if len(values):
                    detector.add_many(values)
                    read.pop(key, None)

    def _catch_up_predictions(self, upto: int) -> None:
        """Feed the watched values of the queued predictions up to ``upto`` to the prediction
        drift detectors."""
        if upto <= self._fed_predictions:
            return
        start, self._fed_predictions = self._fed_predictions, upto
        if self._queued_predictions:
            predictions = self._queued_predictions[start:upto]
            for kind, detector in self.prediction_drift.items():
                if kind in self._foreseen_predictions and isinstance(self._foresight, Foresight):
                    continue  # the Foresight's commit feeds it
                values = _present(predictions, detector.categorical)
                if len(values):
                    detector.add_many(values)
                    self._drift_results.pop(kind, None)

    def _all_numeric(self) -> bool:
        """Every feature detector is a numeric one (in :meth:`_numeric_plan`)."""
        return len(self._numeric_plan()[1]) == len(self.feature_drift)

    def _drift_result(self, key: Any, detector: Any) -> Result:
        result = self._drift_results.get(key)
        if result is None:
            result = self._drift_results[key] = detector.result()
        return result

    def _derive(self) -> None:
        """What follows from the detectors, made again whenever they are (built or restored):
        the observation groups, and the lookups built from them on first use."""
        self._groups = self._observation_groups()
        #: group -> its detectors' keys and their statistics' names (see _group_members)
        self._members: dict[str, tuple[list[tuple[str, str]], list[str]]] = {}
        #: every observation group, and the drift and estimated ones (see observations and
        #: drift_observations)
        self._all_groups: dict[str, str] | None = None
        self._drift_groups: dict[str, str] | None = None
        #: the drift observations' names, in order (their ``names``)
        self._drift_names: tuple[str, ...] = ()
        #: what _catch_up_features feeds the numeric detectors from one matrix (see _numeric_plan)
        self._plan: tuple[list[str], list[tuple[str, str]], list[Any], np.ndarray] | None = None
        #: the same with the prediction drift detectors after them (see _predicting_plan)
        self._predicting: tuple[list[Any], np.ndarray, list[str]] | None = None
        self._numeric_places: dict[tuple[str, str], int] | None = None
        #: each feature detector's key and statistic name (see _feature_names)
        self._named: list[tuple[tuple[str, str], str]] | None = None
        #: the keys of the detectors the last batch's Foresight measured (see _foreseen_keys) and
        #: their (statistic, n) as they are now, measured at its end (None: not measured, or
        #: updated since)
        self._end_measured: tuple[list, list[tuple[float, int]]] | None = None
        #: the feature and prediction drift statistics' names, in order (see _drift_names_in_order)
        self._drift_in_order: list[str] | None = None
        #: group -> its detectors' places among the numeric ones, and kinds (see _foreseen_members)
        self._foreseen: dict[str, tuple[list[int], list[str]] | None] = {}
        #: groups judged together -> their places and names one group after the other, or None
        #: when a Foresight does not measure them all (see _judgement): what decides it (the
        #: groups' members, the multiple-testing correction) changes only with the detectors
        self._together: dict[tuple[str, ...], tuple[list[int], list[str]] | None] = {}
        #: names a rule reads -> the groups they are exactly, or None (see _Observations._judged;
        #: a group is the same in every mapping that holds it)
        self._covers: dict[tuple[str, ...], list[str] | None] = {}

    def _numeric_plan(self) -> tuple[list[str], list[tuple[str, str]], list[Any], np.ndarray]:
        """The watched numeric features (the matrix's columns), the numeric detectors' keys and
        the detectors, and each one's column in the matrix; kept while the detectors are."""
        if self._plan is None:
            numeric = [f for f in self.watched if f in self._numeric_features]
            position = {feature: i for i, feature in enumerate(numeric)}
            keys = [key for key, d in self.feature_drift.items() if not d.categorical]
            self._plan = (numeric, keys, [self.feature_drift[key] for key in keys],
                          np.array([position[feature] for feature, _ in keys], dtype=np.intp))
        return self._plan

    def _feature_results(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Result]:
        """These feature detectors' results as of the position read; those updated since they
        were last read are measured together (:func:`detectors.drift.results`), those a
        Foresight measures taken from it."""
        foresight = self._foresight
        if isinstance(foresight, Foresight):
            index = self._numeric_index()
            foreseen = [key for key in keys if key in index]
            if foreseen:
                found = dict(zip(foreseen, foresight.results(self._position, [index[key] for key in foreseen])))
                rest = [key for key in keys if key not in index]
                found.update(self._present_results(rest) if rest else {})
                return {key: found[key] for key in keys}
        return self._present_results(keys)

    def _numeric_index(self) -> dict[tuple[str, str], int]:
        """Each numeric feature detector's place in :meth:`_numeric_plan`'s list."""
        if self._numeric_places is None:
            self._numeric_places = {key: i for i, key in enumerate(self._numeric_plan()[1])}
        return self._numeric_places

    def _foreseen_keys(self) -> list:
        """The keys of the detectors the batch's Foresight measures, in its order: the numeric
        feature detectors', then the kinds of the prediction drift detectors it measures."""
        return [*self._numeric_plan()[1], *self._foreseen_predictions]

    def _present_results(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Result]:
        known = self._drift_results
        stale = [key for key in keys if key not in known]
        if stale:
            known.update(zip(stale, drift_results([self.feature_drift[key] for key in stale])))
        return {key: known[key] for key in keys}

    def _catch_up_changes(self) -> None:
        if not self._queued_errors:
            return
        errors = np.concatenate(self._queued_errors)
        self._queued_errors = []
        for kind, detector in self.changes.items():
            detector.update_many(errors)
            if detector.last_detections:
                self.last_detection[kind] = detector.last_detections[-1]
                self.new_detections[kind] = self.new_detections.get(kind, 0) + len(detector.last_detections)

    def _errors(self, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        if self.regression:
            return np.abs(truth.astype(np.float64) - predicted.astype(np.float64))
        return (truth != predicted).astype(np.float64)

    # -- results ----------------------------------------------------------------------------
    def performance(self) -> dict[str, Result]:
        if self.event_time:
            return dict(self.closed)
        if self._queued_pairs:
            ahead = self._results_ahead()
            if ahead is not None:
                return ahead
            self._feed_pairs()
        return {kind: metric.result() for kind, metric in self.metrics.items()}

    def pairs_ahead(self, y_true: list, y_pred: list) -> None:
        """The labelled pairs the next :meth:`update_pairs` calls will bring, in order (a
        batch's, its segments one after the other): the count-window metrics then tell their
        results after each segment from these, all at once (:meth:`~detectors.metrics.Ahead.
        result`), without feeding the queue each time rules read them; it is fed at
        :meth:`catch_up`, in one call."""
        self._feed_pairs()  # told from the metrics as they are, nothing queued (and nothing told)
        if self.event_time or not self.metrics or not y_true:
            return
        aheads = {kind: metric.ahead(y_true, y_pred) for kind, metric in self.metrics.items()}
        if all(ahead is not None for ahead in aheads.values()):
            self._aheads = aheads

    def _results_ahead(self) -> dict[str, Result] | None:
        """The count-window metrics' results with the queued pairs, as feeding them would
        give, when :meth:`pairs_ahead` told them (see there); else None."""
        if self._aheads is None:
            return None
        results = {kind: ahead.result(self._queued_count) for kind, ahead in self._aheads.items()}
        return None if any(result is None for result in results.values()) else results

    def _clear_ahead(self) -> None:
        """The metrics changed, or the queue did: the results ahead no longer hold."""
        #: each metric's Ahead of the pairs queued from here on (see pairs_ahead), and how many
        #: are queued
        self._aheads: dict[str, Any] | None = None
        self._queued_count = 0

    def window_samples(self) -> int:
        results = self.performance()
        return next(iter(results.values())).n if results else 0

    def late_labels(self) -> int:
        return max((w.late for w in self.windows.values()), default=0)

    def observations(self, performance: dict[str, Result] | None = None) -> Mapping[str, Observation]:
        """Every statistic by name, as of now. The detectors' entries are computed (and the
        queues fed to them) when first read, a group at a time (see :meth:`_observe_group`), so
        read it before the next update."""
        eager = {kind: _observation(r) for kind, r in (performance or self.performance()).items()}
        if self._all_groups is None:
            self._all_groups = {**self._groups, **self._estimated_groups()}
        if not self._all_groups:
            return eager
        return _Observations(eager, self._all_groups, self._observe_any, self._judgement, self._covers)

    def drift_observations(self) -> Mapping[str, Observation]:
        """The feature and prediction drift entries of :meth:`observations`, and the estimated
        ones (what the rules judged on the predictions' clock read)."""
        if self._drift_groups is None:
            drift = {name: group for name, group in self._groups.items() if not name.startswith("detector.")}
            self._drift_groups = {**drift, **self._estimated_groups()}
            self._drift_names = tuple(self._drift_groups)
        return _Observations({}, self._drift_groups, self._observe_any, self._judgement, self._covers,
                             self._drift_names)

    def values(self) -> dict[str, tuple[float, int]]:
        """Every statistic's value and sample count as of the position read, named and ordered as
        in :meth:`observations`, without what only rules need (multiple-testing decisions,
        p-values): the backtest's timeline records these at every sample, after a batch or at a
        place inside one (:meth:`seek`; what a batch ending there would give)."""
        out = {kind: (r.statistic, r.n) for kind, r in self.performance().items()}
        self._reads_end = True
        self.feed_to_position()
        for kind, detector in self.changes.items():
            result = detector.result()
            out[f"detector.{kind}"] = (result.statistic, result.n)
        # The numeric detectors' statistics here: from the batch's Foresight inside a batch (a
        # remembered result may be older: nothing is fed while it measures), or at its end when
        # it measured there; a result read since the last update is at hand; the others are
        # measured, not judged (a sample between evaluation points needs no p-value, and no
        # rule reads them).
        foresight = self._foresight or None
        if foresight is not None:
            keys, found = self._foreseen_keys(), foresight.statistics(self._position)
        else:
            keys, found = self._end_measured or ((), ())
        names = self._drift_names_in_order()
        if len(found) == len(names):  # every drift detector measured, in the order named (the usual sample)
            out.update(zip(names, found))
            out.update((f"estimated.{metric}", (e.value, e.n)) for metric, e in self.estimated().items())
            return out
        measured = dict(zip(keys, found))
        known = self._drift_results
        stale = [key for key in self.feature_drift if key not in known and key not in measured]
        if stale:
            measured = {**measured, **dict(zip(stale, drift_statistics([self.feature_drift[key] for key in stale])))}
        for key, name in self._feature_names():
            value = measured.get(key)
            out[name] = (known[key].statistic, known[key].n) if value is None else value
        for kind, detector in self.prediction_drift.items():
            value = measured.get(kind)
            if value is None:
                result = self._drift_result(kind, detector)
                value = (result.statistic, result.n)
            out[f"prediction.{kind}"] = value
        out.update((f"estimated.{metric}", (e.value, e.n)) for metric, e in self.estimated().items())
        return out

    def feed_to_position(self, foreseen: bool = False) -> None:
        """Feed the detectors what is queued up to the position read, for a reader of their own
        state (the report's test sizes and bins): all but the numeric ones a batch's Foresight
        measures (whose reference it needs complete, so fixed until the batch is fed), or with
        ``foreseen`` those too, giving the Foresight up (its measures are of detectors fed
        nothing of the batch; later reads feed the detectors part by part)."""
        if self._foresight is None and self._position < self._queued:
            self._foresee()  # decided at the first read before the end, as a rule's would
        foresight = self._foresight
        self._catch_up_features(self._position)
        if foreseen and isinstance(foresight, Foresight):
            foresight.commit(self._position)
            self._foresight = False
            for key in self._foreseen_keys():
                self._drift_results.pop(key, None)
            if self._foreseen_predictions:  # the commit fed them up to here
                self._fed_predictions = self._position
        self._catch_up_predictions(self._position)
        self._catch_up_changes()

    def _drift_names_in_order(self) -> list[str]:
        """The feature drift statistics' names in ``feature_drift`` order, then the prediction
        drift ones in ``prediction_drift`` order: the order of :meth:`_foreseen_keys` when a
        Foresight measures every drift detector (every feature detector is numeric, so the
        numeric ones are in ``feature_drift`` order)."""
        if self._drift_in_order is None:
            self._drift_in_order = [*(name for _, name in self._feature_names()),
                                    *(f"prediction.{kind}" for kind in self.prediction_drift)]
        return self._drift_in_order

    def _feature_names(self) -> list[tuple[tuple[str, str], str]]:
        """Each feature detector's key and its statistic's name, in ``feature_drift`` order;
        kept while the detectors are (the timeline names them at every sample)."""
        if self._named is None:
            self._named = [(key, f"feature.{key[0]}.{key[1]}") for key in self.feature_drift]
        return self._named

    def statistic_names(self) -> list[str]:
        """Every statistic :meth:`observations` holds (what a rule may name)."""
        return [*self.metric_kinds, *self._groups, *self._estimated_groups()]

    def _observation_groups(self) -> dict[str, str]:
        """Detector statistic name -> the group computed with it: the change detectors, each
        distance kind of feature drift, all feature tests (one multiple-testing family), the
        prediction drift."""
        groups = {f"detector.{kind}": "detector" for kind in self.changes}
        for (feature, kind), detector in self.feature_drift.items():
            groups[f"feature.{feature}.{kind}"] = "feature tests" if detector.is_test else f"feature {kind}"
        groups.update((f"prediction.{kind}", "prediction") for kind in self.prediction_drift)
        return groups

    def _observe_group(self, group: str) -> dict[str, Observation]:
        if group == "detector":
            self._catch_up_changes()
            # n is the labelled pairs the model has seen, not the detector's window: a rule's
            # min_samples asks whether the model has seen enough, and ADWIN's window shrinks
            # exactly when it detects a change
            return {f"detector.{kind}": _observation(detector.result(), detector=kind, n=self.pairs_seen,
                                                     fired=self.last_detection[kind] >= self.evaluated_pairs)
                    for kind, detector in self.changes.items()}
        if group == "prediction":
            self._catch_up_predictions(self._position)
            results = {}
            foresight = self._foresight
            if isinstance(foresight, Foresight) and self._foreseen_predictions:
                first = len(self._numeric_plan()[1])  # measured after the numeric feature detectors
                places = list(range(first, first + len(self._foreseen_predictions)))
                results = dict(zip(self._foreseen_predictions, foresight.results(self._position, places)))
            return {f"prediction.{kind}": _observation(results[kind] if kind in results
                                                       else self._drift_result(kind, detector), detector=kind)
                    for kind, detector in self.prediction_drift.items()}
        foreseen = self._foreseen_group(group)
        self._catch_up_features(self._position)
        keys, names = self._group_members(group)
        if foreseen is not None:  # every detector of the group foreseen: no Result made
            foresight, members, kinds = foreseen
            values, thresholds, p_values, counts, fired = foresight.columns(self._position, members)
            return dict(zip(names, map(Observation, values, counts, fired, p_values, thresholds, kinds)))
        results = self._feature_results(keys)
        if group == "feature tests":
            fired = self._corrected_alarms(results)
            return {name: Observation(r.statistic, r.n, fired[key], r.deferred_p_value(), r.threshold, key[1])
                    for key, name, r in zip(keys, names, results.values())}
        # what _observation(result, detector=kind) makes, for each of the group's detectors
        return {name: Observation(r.statistic, r.n, r.fired, r.deferred_p_value(), r.threshold, key[1])
                for key, name, r in zip(keys, names, results.values())}

    def _judgement(self, groups: list[str]) -> tuple[list[str], list, list] | None:
        """Each statistic of these feature groups by name, one group after the other, with its
        n and whether it fired, as :meth:`_observe_group` would observe them, without making
        the observations (a rule on ``fired`` reads nothing else): when a Foresight measures
        every group whole; else None. The groups are read from the Foresight together."""
        # the Foresight decided where _foreseen_group of the first group would decide it
        foresight = None if not groups or groups[0] in _OTHER_GROUPS else self._foresee()
        if foresight is None:
            return None
        key = tuple(groups)
        together = self._together.get(key, False)
        if together is False:  # what _foreseen_group decides of each group, once (see _together)
            together = self._together[key] = self._foreseen_together(groups)
        if together is None:
            return None
        self._catch_up_features(self._position)
        members, names = together
        return (names, *foresight.judgement(self._position, members))

    def _foreseen_together(self, groups: list[str]) -> tuple[list[int], list[str]] | None:
        """The places among :meth:`_numeric_plan`'s detectors of these feature groups' detectors,
        one group after the other, and their statistics' names, when a Foresight measures every
        group whole (see :meth:`_foreseen_group`); else None."""
        found = []
        for group in groups:
            foreseen = None if group in _OTHER_GROUPS else self._foreseen_group(group)
            if foreseen is None:
                return None
            found.append(foreseen)
        return ([i for _, members, _ in found for i in members],
                [name for group in groups for name in self._group_members(group)[1]])

    def _foreseen_group(self, group: str) -> tuple[Foresight, list[int], list[str]] | None:
        """A feature group's Foresight and its detectors' places and kinds there, when the
        Foresight measures the whole group (a multiple-testing correction judges the feature
        tests from their results instead); else None. Decides the Foresight first, before any
        feeding of the queue can rule it out."""
        foresight = self._foresee()
        if foresight is None or (group == "feature tests" and self._corrects_tests()):
            return None
        foreseen = self._foreseen_members(group)
        return None if foreseen is None else (foresight, *foreseen)

    def _group_members(self, group: str) -> tuple[list[tuple[str, str]], list[str]]:
        """The feature detectors of an observation group and their statistics' names, in
        ``feature_drift`` order; kept until the groups are made again (restore)."""
        members = self._members.get(group)
        if members is None:
            keys = [key for key in self.feature_drift if self._groups[f"feature.{key[0]}.{key[1]}"] == group]
            members = self._members[group] = (keys, [f"feature.{feature}.{kind}" for feature, kind in keys])
        return members

    def _foreseen_members(self, group: str) -> tuple[list[int], list[str]] | None:
        """The places in :meth:`_numeric_plan`'s list of a feature group's detectors and their
        kinds, or None when some detector of the group is not there; kept as the groups are."""
        if group not in self._foreseen:
            keys = self._group_members(group)[0]
            index = self._numeric_index()
            self._foreseen[group] = ([index[key] for key in keys], [kind for _, kind in keys]) \
                if all(key in index for key in keys) else None
        return self._foreseen[group]

    def _corrects_tests(self) -> bool:
        """Whether the feature tests' alarms go through a multiple-testing correction (see
        :meth:`_corrected_alarms`)."""
        drift = self.model.drift
        return not (drift is None or drift.budgeted or drift.test_correction == "none")

    def end_evaluation(self) -> None:
        """An evaluation point has judged the rules: change detectors start a fresh interval."""
        self.evaluated_pairs = self.pairs_seen

    def _corrected_alarms(self, results: dict[tuple[str, str], Result]) -> dict[tuple[str, str], bool]:
        """Tests (KS, chi-squared) over many features alarm after the configured correction."""
        fired = {key: r.fired for key, r in results.items()}
        if not self._corrects_tests():
            return fired  # under the budget each test's level already has its share (Bonferroni)
        drift = self.model.drift
        tests = [key for key, r in results.items() if self.feature_drift[key].is_test
                 and r.n >= self.feature_drift[key].min_samples and math.isfinite(r.statistic)]
        if tests:
            # A p-value above alpha is never rejected, and the ranks of those at or below it do not
            # depend on how far above the others are: only p-values <= alpha are computed.
            above = np.nextafter(drift.test_alpha, 1.0)
            p_values = [results[key].p_value if results[key].p_value_below(above) else 1.0 for key in tests]
            for key, is_rejected in zip(tests, reject(p_values, drift.test_alpha, drift.test_correction)):
                fired[key] = bool(is_rejected)
        return fired

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        self._feed_pairs()
        return {
            "metrics": {kind: m.state() for kind, m in self.metrics.items()},
            "windows": {kind: w.state() for kind, w in self.windows.items()},
            "changes": {kind: d.state() for kind, d in self.changes.items()},
            "feature_drift": [[feature, kind, d.state()] for (feature, kind), d in self.feature_drift.items()],
            "prediction_drift": {kind: d.state() for kind, d in self.prediction_drift.items()},
            "closed": {kind: _result_state(r) for kind, r in self.closed.items()},
            "pairs_seen": self.pairs_seen,
            "evaluated_pairs": self.evaluated_pairs,
            "last_detection": self.last_detection,
            "estimation": None if self.estimator is None else self.estimator.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.metrics = {kind: restore(s) for kind, s in state["metrics"].items()}
        window_class = TumblingWindow if self.model.window.kind == TUMBLING else HoppingWindow
        self.windows = {kind: window_class.from_state(s) for kind, s in state["windows"].items()}
        self.changes = {kind: restore(s) for kind, s in state["changes"].items()}
        self.feature_drift = {(feature, kind): restore(s) for feature, kind, s in state["feature_drift"]}
        self.prediction_drift = {kind: restore(s) for kind, s in state["prediction_drift"].items()}
        self._derive()
        self._drift_results = {}
        self.closed = {kind: Result(**r) for kind, r in state["closed"].items()}
        self.pairs_seen, self.evaluated_pairs = state["pairs_seen"], state["evaluated_pairs"]
        self.last_detection = dict(state["last_detection"])
        self._clear_predictions()
        self._queued_errors, self._queued_pairs = [], []
        self._clear_ahead()
        if self.estimator is not None and state.get("estimation") is not None:
            self.estimator = CBPE.from_state(state["estimation"])


class _Observations(Mapping):
    """A model's observations whose detector entries are computed when first read, a group at
    a time: a rule on ``feature.*.psi`` never pays for the KS tests. A rule on whether
    statistics fired can read just that (:meth:`fired_counts`, :meth:`fired_names`)."""

    def __init__(self, eager: dict[str, Observation], groups: dict[str, str],
                 load: Callable[[str], dict[str, Observation]],
                 judge: Callable[[list[str]], tuple[list[str], list, list] | None] | None = None,
                 covers: dict[tuple[str, ...], list[str] | None] | None = None,
                 names: tuple[str, ...] | None = None):
        self._eager = tuple(eager)  # the names, in order: these, then the groups' (_data grows)
        #: every name, in order: given by a caller that keeps them, else made when first asked
        self._names = names
        self._data = eager
        self._groups = groups
        self._load = load
        self._loaded: set[str] = set()
        #: ModelStatistics._judgement, and the groups that some names are exactly (see _covered)
        self._judge, self._covers = judge, covers
        #: what _judged found of some names: a rule on fired counts them, then names them
        self._judgements: dict[tuple[str, ...], tuple[list[str], list, list] | None] = {}

    def _judged(self, names: tuple[str, ...]) -> tuple[list[str], list, list] | None:
        """The names, n and fired of the statistics of the groups these names are exactly,
        one group after the other (``_judge``), when none of them is loaded and they can be
        judged so; else None."""
        if self._judge is None:
            return None
        groups = self._covers.get(names, False)
        if groups is False:
            groups = self._covers[names] = _covered(names, self._groups)
        if groups is None or not self._loaded.isdisjoint(groups):
            return None
        judgements = self._judgements
        return judgements[names] if names in judgements else judgements.setdefault(names, self._judge(groups))

    def fired_counts(self, names: tuple[str, ...], min_samples: int) -> tuple[int, int] | None:
        """How many of these statistics fired with at least ``min_samples`` samples, and how
        many have fewer (what a rule judges of ``observation.fired`` and ``observation.n``),
        without making the observations when they are whole groups a Foresight measures;
        None when they must be read (then a rule reads them)."""
        judged = self._judged(names)
        if judged is None:
            return None
        _, counts, fired = judged
        if min_samples <= 0:
            return fired.count(True), 0
        breaching = unknown = 0
        for n, is_fired in zip(counts, fired):
            if n < min_samples:
                unknown += 1
            elif is_fired:
                breaching += 1
        return breaching, unknown

    def fired_names(self, names: tuple[str, ...], min_samples: int) -> list[str] | None:
        """Those of these statistics that fired with at least ``min_samples`` samples, in the
        order named, as :meth:`fired_counts` reads them; None when they must be read."""
        judged = self._judged(names)
        if judged is None:
            return None
        breaching = {name for name, n, is_fired in zip(*judged) if is_fired and n >= min_samples}
        return [name for name in names if name in breaching]

    def __getitem__(self, name: str) -> Observation:
        if name not in self._data:
            group = self._groups.get(name)
            if group is None or group in self._loaded:
                raise KeyError(name)
            self._loaded.add(group)
            self._data.update(self._load(group))
        return self._data[name]

    def values_of(self, names: Sequence[str]) -> list[Observation]:
        """``[self[name] for name in names]``, each group loaded when first named, as there,
        without a method call per name once loaded (what a rule's glob reads, see
        :mod:`retrain_trigger.policy`)."""
        data = self._data
        try:
            return list(map(data.__getitem__, names))
        except KeyError:
            return [data[name] if name in data else self[name] for name in names]

    @property
    def names(self) -> tuple[str, ...]:
        """Every name, in order (``tuple(self)``), made once: a rule's glob matches them at
        every evaluation point (see :mod:`retrain_trigger.policy`)."""
        if self._names is None:
            self._names = (*self._eager, *self._groups)
        return self._names

    def __iter__(self) -> Iterator[str]:
        return itertools.chain(self._eager, self._groups)

    def __len__(self) -> int:
        return len(self._eager) + len(self._groups)


#: the observation groups that are not a feature group (see ModelStatistics._observation_groups)
_OTHER_GROUPS = frozenset({"detector", "prediction", "estimated"})


def _covered(names: tuple[str, ...], groups: dict[str, str]) -> list[str] | None:
    """The groups whose statistics are exactly these names, or None when the names are not
    whole groups (or name a statistic of no group)."""
    named = set(names)
    wanted = list(dict.fromkeys(groups.get(name) for name in names))
    if None in wanted or len(named) != len(names):
        return None
    members = sum(1 for group in groups.values() if group in wanted)
    return wanted if members == len(named) else None


def _numeric_matrix(rows: list[dict[str, Any] | FeatureRow], features: list[str],
                    kind: type[FeatureRow] | None) -> np.ndarray | None:
    """The features as columns of one float array, built in a few C passes, when every row has
    every feature as a finite int or float (the usual batch); None otherwise (then each column
    is cleaned on its own by :func:`_present`). ``kind`` is :func:`_row_kind` of the rows."""
    if not features or not rows:
        return None
    if kind is not None:  # decoded as a FeatureRow: numbers or None, nothing else
        if not kind.numeric.issuperset(features):
            return None
        # one tuple per row (a value for one feature), packed as a row of doubles, the rows
        # joined: C passes, no Python step per row or value (struct converts each number as
        # float() does); struct refuses a None and an int beyond any float, the finiteness
        # check below NaN and inf
        values = map(kind.getter(features), rows)
        row = _packed_row(len(features))
        try:
            packed = b"".join(itertools.starmap(row.pack, values) if len(features) > 1 else map(row.pack, values))
        except struct.error:  # a None, or an int beyond any float
            return None
        matrix = np.frombuffer(packed, dtype=np.float64)  # read-only: every reader copies its columns
    else:
        try:
            tuples = list(map(operator.itemgetter(*features), rows))
        except (KeyError, TypeError):  # a missing feature, or rows of more than one kind
            return None
        flat = list(itertools.chain.from_iterable(tuples)) if len(features) > 1 else tuples
        if not set(map(type, flat)) <= _NUMBERS:
            return None
        try:
            matrix = np.asarray(flat, dtype=np.float64)
        except OverflowError:
            return None
    matrix = matrix.reshape(len(rows), len(features))
    return matrix if np.isfinite(matrix).all() else None


@functools.lru_cache(maxsize=64)
def _packed_row(width: int) -> struct.Struct:
    """A row of ``width`` doubles, in the machine's order (what numpy reads back)."""
    return struct.Struct(f"={width}d")


def _row_kind(rows: list[dict[str, Any] | FeatureRow]) -> type[FeatureRow] | None:
    """The FeatureRow type every row is, or None (dicts, or rows of more than one kind)."""
    kinds = set(map(type, rows))
    kind = kinds.pop() if len(kinds) == 1 else None
    return kind if kind is not None and issubclass(kind, FeatureRow) else None


def _feature_column(rows: list[dict[str, Any] | FeatureRow], feature: str, kind: type[FeatureRow] | None) -> list:
    """Each row's value of the feature, None where absent (``row.get(feature)``). ``kind`` is
    :func:`_row_kind` of the rows."""
    if kind is not None and feature in kind.attributes:
        return list(map(kind.getter([feature]), rows))
    return [row.get(feature) for row in rows]


def _present(values, categorical: bool) -> np.ndarray:
    """The usable values of a column: numbers for numeric detectors, strings for categorical."""
    if categorical:
        return np.asarray([str(v) for v in values if v is not None], dtype=object)
    if set(map(type, values)) <= _NUMBERS:  # the usual column: numbers only, converted in one C pass
        try:
            column = np.asarray(values, dtype=np.float64)
        except OverflowError:  # JSON has no limit on integers; one beyond any float is unusable
            pass
        else:
            finite = np.isfinite(column)
            return column if finite.all() else column[finite]
    return np.asarray([v for v in values if _usable_number(v)], dtype=np.float64)


_NUMBERS = {int, float}


def _usable_number(value: Any) -> bool:
    """A finite number a float can hold (not a bool, not None, not a string)."""
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and -LARGEST_INT <= value <= LARGEST_INT


def _scored(labels: list, scores: list) -> tuple[list, list]:
    """The labels and scores of the events that have a score (the usual segment: all of them)."""
    if None not in scores:
        return labels, scores
    kept = [i for i, score in enumerate(scores) if score is not None]
    return [labels[i] for i in kept], [scores[i] for i in kept]


def _scores(scores: list | None) -> np.ndarray | None:
    if not scores or None in scores:
        return None
    return np.asarray(scores, dtype=np.float64)


def _observation(result: Result, detector: str | None = None, fired: bool | None = None,
                 n: int | None = None) -> Observation:
    return Observation(value=result.statistic, n=result.n if n is None else n,
                       fired=result.fired if fired is None else fired,
                       p_value=result.deferred_p_value(), threshold=result.threshold, detector=detector)


def _result_state(result: Result) -> dict[str, Any]:
    return {"statistic": result.statistic, "threshold": result.threshold, "p_value": result.p_value,
            "n": result.n, "fired": result.fired}
