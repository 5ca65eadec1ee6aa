"""The Monitor: joins, windows, detectors and rules for every model, with no I/O.

The engines (and the backtest) hand it decoded events in the order they were read; it returns
the trigger events to publish. It is deterministic: a model's stream is cut into segments at
evaluation points — every ``evaluate_every`` predictions and every ``evaluate_every`` labelled
predictions, counted from the model's first event (or, with an event-time window, each closed
window) — and rules are judged there, so the same events in the same order give the same
triggers however they were cut into batches.

Each model's predictions and labels are joined by ``prediction_id`` within its label TTL of
event time (:class:`~streams.core.join.Join`, which also tells duplicates, early and late labels).
"""
from __future__ import annotations

import functools
import heapq
import logging
import operator
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import msgspec
import numpy as np

from detectors.windows import CountWindow
from retrain_trigger.events import TriggerEvent, TriggerWindow
from retrain_trigger.policy import Observation, TriggerPolicy
from retrain_trigger.rules import load_rules

from streams.core.codecs import (LABEL_TYPES, InvalidEvent, Label, Prediction, decode_buffer, decode_label, decode_many,
                     decode_prediction, format_timestamp, prediction_type, unread_features)
from streams.core.config import Config, Model
from streams.core.join import Batch, Join, running_max
from streams.core.statistics import ModelStatistics

log = logging.getLogger("driftline.monitor")

#: below this many events of one model in a batch, event by event is as fast as the bulk path
_BULK_MIN = 16


class Source(msgspec.Struct, gc=False):
    """Where an event was read: its topic, partition and offset (for DLQ and trigger evidence).
    A msgspec Struct: made for every input message, and its C constructor is the cheapest."""

    topic: str
    partition: int
    offset: int


@dataclass
class ModelCounters:
    """What happened since they were last taken (:meth:`Monitor.drain_counters`)."""

    predictions: int = 0
    #: predictions by segment ("k=v,k=v", or "none")
    segments: dict[str, int] = field(default_factory=dict)
    labels: int = 0
    joined: int = 0
    expired_predictions: int = 0
    expired_labels: int = 0
    duplicate_predictions: int = 0
    duplicate_labels: int = 0
    late_labels: int = 0
    #: label lag (label time - prediction time, seconds) of the pairs joined since the last drain
    label_lags: list[float] = field(default_factory=list)
    #: changes each change detector signalled
    change_detections: dict[str, int] = field(default_factory=dict)
    #: (rule, reason) -> breaches the policy held back (cooldown, min_samples)
    suppressed: dict[tuple[str, str], int] = field(default_factory=dict)

    def take(self) -> "ModelCounters":
        """These counts, handed over; this object starts again from zero."""
        taken = object.__new__(type(self))
        taken.__dict__, self.__dict__ = self.__dict__, {}  # the counts, lists and dicts as they are
        self.__init__()
        return taken


@dataclass
class Columns:
    """The columns of a model's stream since its last flush: each prediction's, and each labelled
    pair's, in order (the segments say where each stretch between evaluation points ends)."""

    #: each prediction's ``features`` object, as decoded; made into columns once, at flush
    rows: list[dict[str, Any]] = field(default_factory=list)
    prediction_values: list = field(default_factory=list)
    prediction_ts: list[int] = field(default_factory=list)
    prediction_offsets: list[int] = field(default_factory=list)
    #: with estimation: each prediction's class and score (or probability row), for the estimator
    predicted: list = field(default_factory=list)
    prediction_scores: list = field(default_factory=list)
    y_true: list = field(default_factory=list)
    y_pred: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    pair_ts: list[int] = field(default_factory=list)
    pair_offsets: list[int] = field(default_factory=list)


@dataclass
class Segment:
    """One stretch of a model's stream, between two evaluation points: where it ends in the
    columns (:class:`Columns`), and what is judged there."""

    #: the predictions and the labelled pairs in the columns up to its end (the open segment's
    #: are set when it is closed)
    predictions_end: int = 0
    pairs_end: int = 0
    #: whether the segment ends at an evaluation point of the predictions' clock (drift rules)
    #: or of the labelled pairs' clock (every other rule); the batch's last segment may end at none
    evaluate_predictions: bool = False
    evaluate_pairs: bool = False
    #: the event time of each evaluation point (its clock's largest timestamp) and the version
    predictions_at_ms: int = 0
    pairs_at_ms: int = 0
    version: str | None = None
    #: the segment ends at a mark (see :meth:`Monitor.process`): what the counters counted up
    #: to it since the previous one
    mark: ModelCounters | None = None


class ModelMonitor:
    """Join + statistics + rules for one model."""

    def __init__(self, model: Model, source: str = "<memory>"):
        self.model = model
        self.evaluate_every = model.evaluate_every
        self._binary = model.task == "binary"
        self._estimating = model.estimation is not None and model.task != "regression"
        self.rules = load_rules(model.rules, where=f"models[{model.id}].rules")
        # Rules on drift statistics only are judged on the predictions' clock, every other rule
        # on the labelled pairs' clock: each then depends on one ordered stream, not on how
        # predictions and labels happened to interleave.
        self.drift_rules = [r for r in self.rules if all(_is_drift(c.statistic) for c in r.conditions)]
        self.label_rules = [r for r in self.rules if r not in self.drift_rules]
        self.policy = TriggerPolicy(model.id, self.label_rules)
        self.drift_policy = TriggerPolicy(model.id, self.drift_rules)
        self.stats = ModelStatistics(model, source)
        self.counters = ModelCounters()
        ttl_ms = int(model.label_ttl_seconds * 1000)
        self.join = Join(ttl_ms, min(ttl_ms, int(model.dedup_seconds * 1000)), self.counters)
        # Each evaluation clock's own time: the largest prediction timestamp, and the largest pair
        # time (the later of prediction and label). Unlike the watermark, neither depends on how
        # the two topics interleave.
        self.clock_ms = {"predictions": 0, "pairs": 0}
        self.version: str | None = None
        self.predictions_total = 0
        self.joined_total = 0
        # (event time, label offset) of the pairs in the count window: the trigger's evidence
        self.pair_window = CountWindow(model.window.size, width=2)
        self.label_partition: tuple[str, int] | None = None
        # (event time, offset) of the predictions drift is computed over: drift triggers' evidence
        self.prediction_window = CountWindow(model.drift.window if model.drift else model.window.size, width=2)
        self._pending_rows()
        self.prediction_partition: tuple[str, int] | None = None
        self._late_seen = 0  # labels the event-time windows had counted late at the last flush
        self._columns = Columns()
        self._segments: list[Segment] = [Segment()]

    def _pending_rows(self) -> None:
        """The evidence windows' rows not pushed yet (see :class:`_Pending`), none, for the
        windows as they are now."""
        self._pairs = _Pending(self.pair_window, "pair_ts", "pair_offsets")
        self._predictions = _Pending(self.prediction_window, "prediction_ts", "prediction_offsets")

    def _close(self, ends: tuple[int, int] | None) -> Segment:
        """Close the open segment where it ends in the columns (``ends``: its predictions and
        pairs; None: the columns' ends), a new one opened after it."""
        segment = self._segments[-1]
        if ends is None:
            ends = len(self._columns.rows), len(self._columns.y_true)
        segment.predictions_end, segment.pairs_end = ends
        segment.version = self.version
        self._segments.append(Segment())
        return segment

    def _cut(self, clock: str, ends: tuple[int, int] | None = None) -> None:
        segment = self._close(ends)
        setattr(segment, f"evaluate_{clock}", True)
        setattr(segment, f"{clock}_at_ms", self.clock_ms[clock])

    def _cut_mark(self, counters: ModelCounters, ends: tuple[int, int] | None = None) -> None:
        """End the open segment at a mark, with the counters taken there."""
        self._close(ends).mark = counters

    # -- events ---------------------------------------------------------------------------
    def on_prediction(self, event: Prediction, source: Source) -> None:
        counters = self.counters
        counters.predictions += 1
        segment_key = _segment_key(event.segment)
        counters.segments[segment_key] = counters.segments.get(segment_key, 0) + 1
        join = self.join
        join.advance(event.timestamp)
        if event.timestamp > self.clock_ms["predictions"]:
            self.clock_ms["predictions"] = event.timestamp
        if event.model_version is not None and event.model_version != self.version:
            self.version = event.model_version
        if join.duplicate_prediction(event.prediction_id):
            counters.duplicate_predictions += 1
            return
        self._segments[-1].version = self.version
        columns = self._columns
        columns.rows.append(event.features)
        columns.prediction_ts.append(event.timestamp)
        columns.prediction_offsets.append(source.offset)
        self.prediction_partition = (source.topic, source.partition)
        if self._binary:  # _score and _watched_prediction of a binary model, inlined
            score = event.score
            columns.prediction_values.append(score)
        else:
            score = self._score(event)
            columns.prediction_values.append(self._watched_prediction(event, score))
        if self._estimating:
            columns.predicted.append(event.prediction)
            columns.prediction_scores.append(score)
        early = join.prediction(event.prediction_id, event.timestamp, event.prediction, score)
        if early is not None:
            label_ts, label, offset = early
            self._pair(event.prediction, score, event.timestamp, label, label_ts, offset)
        self.predictions_total += 1
        if self.predictions_total % self.evaluate_every == 0:
            self._cut("predictions")

    def on_label(self, event: Label, source: Source) -> None:
        self.counters.labels += 1
        self.label_partition = (source.topic, source.partition)
        self.join.advance(event.timestamp)
        waiting = self.join.label(event.prediction_id, event.timestamp, event.label, source.offset)
        if waiting is not None:
            pred_ts, prediction, score = waiting
            self._pair(prediction, score, pred_ts, event.label, event.timestamp, source.offset)

    def on_events(self, events: list[tuple[Prediction | Label, Source]], marks: Sequence[int] = ()) -> None:
        """This model's events of one batch, in order: ``on_prediction``/``on_label`` of each.
        ``marks``: the counts of events after which the batch is read as if it ended there (see
        :meth:`Monitor.process`); the join expires what it would at such an end (its upkeep
        waits for the batch's), and the counters are taken for the mark. The usual batch is
        applied whole (:meth:`_bulk` with the marks), each mark's expiry worked out from it."""
        if marks and len(events) >= _BULK_MIN and self._bulk(events, marks):
            return
        start = 0
        for end in marks:
            self._on_events(events[start:end])
            self.join.expire()
            self._cut_mark(self.counters.take())
            start = end
        self._on_events(events[start:] if start else events)

    def _on_events(self, events: list[tuple[Prediction | Label, Source]]) -> None:
        """:meth:`on_events` of a stretch with no mark: the usual batch goes through
        :meth:`_bulk`, a few passes over its columns."""
        if len(events) < _BULK_MIN or not self._bulk(events):
            for event, source in events:
                if type(event) not in LABEL_TYPES:
                    self.on_prediction(event, source)
                else:
                    self.on_label(event, source)

    def _bulk(self, events: list[tuple[Prediction | Label, Source]], marks: Sequence[int] = ()) -> bool:
        """Apply a batch in which every event takes the plain path (each prediction new, with no
        early label waiting for it; each label new and finding its prediction, pending or earlier
        in the batch, within the TTL), leaving the state, counters and segments exactly as event
        by event would, with :meth:`on_events`' expiry and counters at each of ``marks``.
        Returns False, having changed nothing, if any event would not."""
        batch = Batch(events)
        predictions = batch.predictions
        fields = batch.prediction_fields
        pids, label_pids = fields["prediction_id"], batch.label_fields["prediction_id"]
        if not self.join.can_join_plain(batch, pids, label_pids):
            return False  # a duplicate, an early label in play, or a label before its prediction
        prediction_ts = fields["timestamp"]
        if self._binary:
            scores = watched = fields["score"]
        else:
            scores = [self._score(e) for e in predictions]
            watched = [self._watched_prediction(e, s) for e, s in zip(predictions, scores)]
        if marks:
            # the watermark at each mark: the largest event time of the events before it
            watermarks = running_max(batch.timestamps(), self.join.watermark_ms).tolist()
            watermarks = [watermarks[end - 1] if end else self.join.watermark_ms for end in marks]
            expiries = self.join.mark_expiries(batch, pids, label_pids, marks, watermarks)
            if expiries is None:
                return False  # a label comes after a mark that expired its prediction
        joined = self.join.join_plain(batch, pids, label_pids, prediction_ts, scores)
        if joined is None:
            return False  # an early, late or orphan label, or one for a prediction that expired
        waiting, joined_ts, label_ts = joined
        lags = (np.maximum(label_ts - joined_ts, 0) / 1000.0).tolist()  # each label's, in seconds
        taken = []  # each mark's counters
        p0 = q0 = 0
        if marks:
            prediction_ends = np.searchsorted(batch.positions, marks).tolist()
            pair_ends = np.searchsorted(batch.label_positions, marks).tolist()
            for p1, q1, watermark, expired in zip(prediction_ends, pair_ends, watermarks, expiries):
                self._apply_predictions(batch, p0, p1)
                self._apply_labels(batch, lags, q0, q1)
                self.join.expire(watermark, expired)
                taken.append(self.counters.take())
                p0, q0 = p1, q1
        self._apply_predictions(batch, p0, len(batch.predictions))
        self._apply_labels(batch, lags, q0, len(lags))
        self._apply_segments(batch, prediction_ts, watched, np.maximum(joined_ts, label_ts), waiting, marks, taken)
        return True

    def _apply_predictions(self, batch: Batch, start: int, end: int) -> None:
        """Count the batch's predictions ``start:end``."""
        if end <= start:
            return
        counters = self.counters
        counters.predictions += end - start
        segments = batch.prediction_fields["segment"]
        if start or end < len(segments):
            segments = segments[start:end]
        counts = Counter(map(_segment_key, segments)) if any(segments) else {"none": len(segments)}
        for key, count in counts.items():
            if count:
                counters.segments[key] = counters.segments.get(key, 0) + count
        last = batch.prediction_sources[end - 1]
        self.prediction_partition = (last.topic, last.partition)

    def _apply_labels(self, batch: Batch, lags: list[float], start: int, end: int) -> None:
        """Count the batch's labels ``start:end`` (each joined, with its lag: ``lags``, the batch's)."""
        if end <= start:
            return
        counters = self.counters
        counters.labels += end - start
        counters.joined += end - start
        counters.label_lags.extend(_part(lags, start, end))
        last = batch.label_sources[end - 1]
        self.label_partition = (last.topic, last.partition)

    def _apply_segments(self, batch: Batch, prediction_ts: list[int], watched: list, pair_ts: np.ndarray,
                        waiting: list[tuple], marks: Sequence[int] = (), taken: Sequence[ModelCounters] = ()) -> None:
        """Append the batch to the columns, cutting the open segment at each evaluation point inside
        (``pair_ts``: each label's pair time, the later of its prediction's time and its own)
        and at each of ``marks`` (a segment that ends there holds the mark's counters, ``taken``)."""
        predictions, labels = batch.predictions, batch.labels
        positions, label_positions = batch.positions, batch.label_positions
        # Evaluation points: every evaluate_every-th prediction and pair, counted from the
        # model's first; each is (the event's place in the batch, 0, its clock). A mark after
        # the event is (its place, 1, the mark's counters): after an evaluation point there.
        every = self.evaluate_every
        cuts = [(int(positions[k - 1]), 0, "predictions")
                for k in range(every - self.predictions_total % every, len(predictions) + 1, every)]
        cuts += [(int(label_positions[k - 1]), 0, "pairs")
                 for k in range(every - self.joined_total % every, len(labels) + 1, every)]
        cuts.sort()
        if marks:
            cuts = list(heapq.merge(cuts, [(end - 1, 1, counters) for end, counters in zip(marks, taken)],
                                    key=operator.itemgetter(0, 1)))
        self.predictions_total += len(predictions)
        self.joined_total += len(labels)
        pair_ts = pair_ts.tolist()
        prediction_columns = [
            ("rows", batch.prediction_fields["features"]), ("prediction_values", watched),
            ("prediction_ts", prediction_ts), ("prediction_offsets", batch.column(batch.prediction_sources, "offset")),
        ]
        pair_columns = [
            ("y_true", batch.label_fields["label"]), ("y_pred", list(map(operator.itemgetter(1), waiting))),
            ("scores", list(map(operator.itemgetter(2), waiting))), ("pair_ts", pair_ts),
            ("pair_offsets", batch.column(batch.label_sources, "offset")),
        ]
        if self._estimating:
            prediction_columns += [("predicted", batch.prediction_fields["prediction"]),
                                   ("prediction_scores", watched if self._binary else list(map(self._score, predictions)))]
        model_versions = batch.prediction_fields["model_version"]
        # The batch's columns go in whole; the segments only say where each stretch ends.
        columns = self._columns
        before_p, before_q = len(columns.rows), len(columns.y_true)
        for name, column in prediction_columns + pair_columns:
            getattr(columns, name).extend(column)
        # Where each stretch ends (after the cut's event; the last one at the batch's end), in
        # predictions and in pairs: the usual batch, with no cut, is one stretch.
        prediction_ends, pair_ends = [len(predictions)], [len(labels)]
        if cuts:
            ats = [cut[0] for cut in cuts]
            prediction_ends[:0] = np.searchsorted(positions, ats, side="right").tolist()
            pair_ends[:0] = np.searchsorted(label_positions, ats, side="right").tolist()
        # Each stretch's clocks and version are read from its own slice of the columns (a C
        # loop each, over the batch once in all): a few stretches, where arrays of running
        # values would cost a numpy call or two per column, whatever the batch's size.
        clock_ms = self.clock_ms
        p0 = q0 = 0
        for (_, is_mark, clock), p1, q1 in zip(cuts + [(None, 0, None)], prediction_ends, pair_ends):
            if p1 > p0:
                # the model's version after the stretch: the last one named up to its end
                self.version = next(filter(_is_named, reversed(model_versions[p0:p1])), self.version)
                self._segments[-1].version = self.version
                clock_ms["predictions"] = max(clock_ms["predictions"], max(prediction_ts[p0:p1]))
            if q1 > q0:
                clock_ms["pairs"] = max(clock_ms["pairs"], max(pair_ts[q0:q1]))
            if is_mark:
                self._cut_mark(clock, (before_p + p1, before_q + q1))
            elif clock is not None:
                self._cut(clock, (before_p + p1, before_q + q1))
            p0, q0 = p1, q1

    def _score(self, event: Prediction) -> Any:
        """Binary: the positive class's probability; multiclass: a row in ``classes`` order."""
        if self.model.task == "binary":
            return event.score
        if self.model.task == "multiclass" and event.probabilities and self.model.classes:
            row = [event.probabilities.get(str(c)) for c in self.model.classes]
            return None if None in row else row
        return None

    def _watched_prediction(self, event: Prediction, score: Any) -> Any:
        if self.model.task == "binary":
            return score
        return event.prediction

    def _pair(self, prediction: Any, score: Any, pred_ts: int, label: Any, label_ts: int, offset: int) -> None:
        """A prediction and its label, joined: counted, and added to the columns."""
        self.counters.joined += 1
        self.counters.label_lags.append(max(0, label_ts - pred_ts) / 1000.0)
        columns = self._columns
        columns.y_true.append(label)
        columns.y_pred.append(prediction)
        columns.scores.append(score)
        pair_ts = pred_ts if pred_ts > label_ts else label_ts
        columns.pair_ts.append(pair_ts)
        columns.pair_offsets.append(offset)
        if pair_ts > self.clock_ms["pairs"]:
            self.clock_ms["pairs"] = pair_ts
        self.joined_total += 1
        if self.joined_total % self.evaluate_every == 0:
            self._cut("pairs")

    # -- end of batch ---------------------------------------------------------------------
    def flush(self, on_mark: Callable[[ModelMonitor, int, ModelCounters, list[TriggerEvent]], None] | None = None
              ) -> list[TriggerEvent]:
        """Feed the batch's segments to the statistics, judging rules at each evaluation point.

        The drift detectors get the batch's predictions at once, with the evaluation points
        where drift rules will read them and the marks (measured there together), and each
        segment's end is where the statistics are read while its rules are judged. At the k-th
        mark, once its rules are judged: ``on_mark(self, k, its counters, the triggers since the
        previous mark)``, the statistics read there."""
        triggers: list[TriggerEvent] = []
        columns, self._columns = self._columns, Columns()
        segments, self._segments = self._segments, [Segment()]
        segments[-1].predictions_end, segments[-1].pairs_end = len(columns.rows), len(columns.y_true)  # the open one
        ends = [segment.predictions_end for segment in segments]
        pair_ends = [segment.pairs_end for segment in segments]
        # (a mark may fall where an evaluation point or another mark does)
        points = list(dict.fromkeys(end for end, segment in zip(ends, segments)
                                    if (segment.evaluate_predictions and self.drift_rules) or segment.mark is not None))
        self.stats.update_predictions(columns.rows, columns.prediction_values, points)
        marked = since = 0  # the marks passed, and the triggers made before the last one
        if any(segment.evaluate_pairs or segment.mark is not None for segment in segments):  # read there: told at once
            self.stats.pairs_ahead(columns.y_true, columns.y_pred)
        # The evidence windows get the batch's rows as late as they can (see _Pending): up to a
        # segment's end only when a trigger made there reads them (a window holds the same rows
        # however they were pushed).
        predictions, pairs = self._predictions, self._pairs
        predictions.begin(columns, ends)
        pairs.begin(columns, pair_ends)
        ending = _versions_ending(segments, self.version) if self.stats.event_time else None
        p0 = q0 = 0
        for k, (end, q1, segment) in enumerate(zip(ends, pair_ends, segments)):
            self.stats.seek(end)
            if self._estimating and end > p0:
                self.stats.update_estimation(_part(columns.predicted, p0, end), _part(columns.prediction_scores, p0, end))
            closed = []
            if q1 > q0:
                y_true, scores = _part(columns.y_true, q0, q1), _part(columns.scores, q0, q1)
                closed = self.stats.update_pairs(y_true, _part(columns.y_pred, q0, q1), scores,
                                                 _part(columns.pair_ts, q0, q1))
                if self._estimating:
                    self.stats.learn_estimation(y_true, scores)
            p0, q0 = end, q1
            for window in closed:  # event-time windows judge each closed window
                span = TriggerWindow(start=format_timestamp(window.start_ms), end=format_timestamp(window.end_ms),
                                     count=window.count)
                triggers.extend(self._judge(self.policy, self.stats.observations(window.results),
                                            segment.version or ending[k], span, window.end_ms))
            if segment.evaluate_pairs and not self.stats.event_time:
                at_ms = segment.pairs_at_ms
                window = functools.partial(self._window, pairs, k, self.label_partition, at_ms)
                triggers.extend(self._judge(self.policy, self.stats.observations(), segment.version, window, at_ms))
            if segment.evaluate_predictions and self.drift_rules:
                at_ms = segment.predictions_at_ms
                drift = self.stats.drift_observations()
                window = functools.partial(self._window, predictions, k, self.prediction_partition, at_ms)
                triggers.extend(self._judge(self.drift_policy, drift, segment.version, window, at_ms))
            if segment.mark is not None:
                on_mark(self, marked, segment.mark, triggers[since:])
                marked, since = marked + 1, len(triggers)
        predictions.end()
        pairs.end()
        self.stats.catch_up()  # the checkpoint and the exporter see every event of the batch
        detections = self.counters.change_detections
        for kind, count in self.stats.new_detections.items():
            detections[kind] = detections.get(kind, 0) + count
        self.stats.new_detections.clear()
        late = self.stats.late_labels()
        self.counters.late_labels += late - self._late_seen
        self._late_seen = late
        self.join.purge()
        return triggers

    @staticmethod
    def _window(events: "_Pending", segment: int, partition: tuple[str, int] | None, at_ms: int) -> TriggerWindow:
        """A trigger's window at the end of the batch's ``segment``: the span, count and input
        offsets of the events behind it (labelled pairs for performance rules, predictions for
        drift rules)."""
        events.push(segment)
        rows = events.window.rows()
        if not len(rows):
            at = format_timestamp(at_ms)
            return TriggerWindow(start=at, end=at, count=0)
        ts, offsets = rows[:, 0], rows[:, 1]
        ranges = {}
        if partition is not None:
            topic, number = partition
            ranges[f"{topic}:{number}"] = [int(offsets.min()), int(offsets.max())]
        return TriggerWindow(start=format_timestamp(int(ts.min())), end=format_timestamp(int(ts.max())),
                             count=len(rows), offsets=ranges)

    def observations(self) -> dict[str, Observation]:
        return self.stats.observations()

    def _judge(self, policy: TriggerPolicy, observations: dict[str, Observation], version: str | None,
               window: TriggerWindow | Callable[[], TriggerWindow], at_ms: int) -> list[TriggerEvent]:
        """One evaluation point: the policy decides; count what it held back. ``window``: the
        trigger window, or what makes it when a rule fires (see :meth:`TriggerPolicy.evaluate`)."""
        triggers = policy.evaluate(observations, model_version=version, window=window, at_ms=at_ms)
        if policy is self.policy:  # change detectors speak to the labelled pairs' clock
            self.stats.end_evaluation()
        held = policy.take_held()
        if held:
            suppressed = self.counters.suppressed
            for key, count in held.items():
                suppressed[key] = suppressed.get(key, 0) + count
        return triggers

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        self._pairs.push()  # the rows waiting for the windows, in them
        self._predictions.push()
        join = self.join.state()
        return {
            "watermark_ms": join.pop("watermark_ms"),
            "clock_ms": self.clock_ms,
            "version": self.version,
            **join,  # pending, early_labels, joined_ids, expired_ids
            "predictions_total": self.predictions_total,
            "joined_total": self.joined_total,
            "pair_window": self.pair_window.state(),
            "prediction_window": self.prediction_window.state(),
            "prediction_partition": self.prediction_partition,
            "label_partition": self.label_partition,
            "stats": self.stats.state(),
            "policy": self.policy.state(),
            "drift_policy": self.drift_policy.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.join.restore(state)
        self.clock_ms = dict(state["clock_ms"])
        self.version = state["version"]
        self.predictions_total = state["predictions_total"]
        self.joined_total = state["joined_total"]
        self.pair_window = CountWindow.from_state(state["pair_window"])
        self.prediction_window = CountWindow.from_state(state["prediction_window"])
        self._pending_rows()
        self.prediction_partition = tuple(state["prediction_partition"]) if state["prediction_partition"] else None
        self.label_partition = tuple(state["label_partition"]) if state["label_partition"] else None
        self.stats.restore(state["stats"])
        self._late_seen = self.stats.late_labels()
        self.policy = TriggerPolicy.from_state(self.model.id, self.label_rules, state["policy"])
        self.drift_policy = TriggerPolicy.from_state(self.model.id, self.drift_rules, state["drift_policy"])


#: The most feature names :class:`InputDecoder` decodes into a struct (more go into dicts).
MAX_FEATURE_NAMES = 512


def _sample_lines(data: bytes, count: int) -> list[bytes]:
    """Up to ``count`` lines spread over ``data``: the first, and the next one from each of
    ``count - 1`` evenly spaced places."""
    starts = {0}
    for k in range(1, count):
        newline = data.find(b"\n", k * len(data) // count)
        if newline >= 0:
            starts.add(newline + 1)
    ends = [data.find(b"\n", start) for start in sorted(starts)]
    return [data[start:end if end >= 0 else len(data)] for start, end in zip(sorted(starts), ends)]


def _rows(ts: list[int], offsets: list[int]) -> np.ndarray:
    """A window's rows (timestamp, offset) from the two columns: floats, as the window keeps
    them, converted in one pass (``np.column_stack`` makes each list an array first)."""
    return np.array((ts, offsets), dtype=np.float64).T


class _Pending:
    """An evidence window, and the rows (timestamp, offset) for it not pushed yet: those of the
    batch in hand (:meth:`begin`), and those earlier batches left waiting.

    Rows go in as late as they can: up to a segment's end when a trigger made there reads the
    window (:meth:`push`), and otherwise once a window's worth waits or a checkpoint takes the
    window's state. A push costs a few numpy calls however many rows it holds, and small
    hand-overs bring a few rows at a time; the window holds the same rows however pushed."""

    def __init__(self, window: CountWindow, ts: str, offsets: str):
        self.window = window
        self._names = ts, offsets
        self._ts: list[int] = []  # rows taken from the batch's columns, not pushed yet
        self._offsets: list[int] = []
        self._columns: tuple[list[int], list[int]] = ([], [])
        self._ends: list[int] = []
        self._taken = 0  # the batch's rows taken

    def begin(self, columns: Columns, ends: list[int]) -> None:
        """A batch's columns, and where each of its segments ends in them (to push up to one)."""
        ts, offsets = self._names
        self._columns, self._ends, self._taken = (getattr(columns, ts), getattr(columns, offsets)), ends, 0

    def push(self, segment: int | None = None) -> None:
        """Push the waiting rows, with the batch's up to the end of ``segment`` (included)."""
        if segment is not None:
            self._take(self._ends[segment])
        if self._ts:
            self.window.push(_rows(self._ts, self._offsets))
            self._ts, self._offsets = [], []

    def end(self) -> None:
        """The batch's rows not pushed wait with the others; pushed once a window's worth waits
        (so that at most that many wait beside a batch's)."""
        self._take(len(self._columns[0]))
        self._columns, self._ends = ([], []), []
        if len(self._ts) >= self.window.size:
            self.push()

    def _take(self, end: int) -> None:
        """The batch's rows before ``end`` not taken yet, to the waiting rows."""
        if end > self._taken:
            ts, offsets = self._columns
            self._ts += ts[self._taken:end]
            self._offsets += offsets[self._taken:end]
            self._taken = end


def _versions_ending(segments: list[Segment], version: str | None) -> list[str | None]:
    """Each segment's model version as its stretch ended: at the next mark, or the batch's end
    (``version``); what a closed window is judged with when its segment names none."""
    out = []
    for segment in reversed(segments):
        if segment.mark is not None:
            version = segment.version
        out.append(version)
    return out[::-1]


def _part(column: list, start: int, end: int) -> list:
    """``column[start:end]``: the column itself when that is all of it (the usual batch's one
    segment), not a copy."""
    return column if start == 0 and end == len(column) else column[start:end]


#: whether a prediction names its model's version
_is_named = functools.partial(operator.is_not, None)


def _is_drift(statistic: str) -> bool:
    """Statistics computed from predictions alone (feature and prediction drift, and the
    estimated performance: its calibration comes from labelled pairs, its window from predictions)."""
    return statistic.startswith(("feature.", "prediction.", "estimated."))


def _segment_key(segment: dict[str, str] | None) -> str:
    if not segment:
        return "none"
    return ",".join(f"{k}={v}" for k, v in sorted(segment.items()))


class ModelRegistry:
    """The models a process monitors: the configured ones, and those added with the defaults for
    an unconfigured ``model_id`` when ``engine.unknown_model = "register"`` (at most
    ``engine.max_registered_models``). The config itself is never changed: the decoder, which
    rejects the models not here, and the Monitors of every partition share one registry, so the
    cap holds for the process and a model registered by one is known to all.

    Each registration is logged at INFO, unless ``announce`` is false (a backtest's replay, whose
    loader has announced the models already).
    """

    def __init__(self, config: Config, announce: bool = True):
        self.config = config
        self.announce = announce
        self._models: dict[str, Model] = {}
        for model in config.models:
            self._models.setdefault(model.id, model)
        self._registered = 0
        #: model id -> the input partitions whose Monitors keep a state of it
        self._partitions: dict[str, set[int]] = {}

    def get(self, model_id: str) -> Model | None:
        """The model of ``model_id``, registering an unconfigured one if the config allows it."""
        model = self._models.get(model_id)
        engine = self.config.engine
        if model is not None or engine.unknown_model != "register" or self._registered >= engine.max_registered_models:
            return model
        model = self._models[model_id] = Model(id=model_id, registered=True)
        self._registered += 1
        if self.announce:
            log.info("registered model %r with the default settings (engine.unknown_model = \"register\")",
                     model_id, extra={"model": model_id})
        return model

    def placed(self, model_id: str, partition: int) -> None:
        """The Monitor of input ``partition`` keeps a state of the model. The event contract keys
        events by ``model_id``, so all of a model's events come on one partition. On a second
        one (a producer keyed them otherwise, or the topics' partition count changed), the
        model's state is split in two that never meet: its gauges show whichever partition
        refreshed last, and its windows and rules each see part of its events. That is worth a
        warning, once per model and partition."""
        seen = self._partitions.setdefault(model_id, set())
        if partition in seen:
            return
        seen.add(partition)
        if len(seen) > 1:
            log.warning("model %r has events on input partitions %s: each keeps a state of its own, so its "
                        "metrics show one partition's and its rules judge part of its events; key prediction "
                        "and label events by model_id (README: The event contract)",
                        model_id, ", ".join(map(str, sorted(seen))), extra={"model": model_id})

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    def __iter__(self) -> Iterator[Model]:
        """The configured models in config order, then the registered ones as they came."""
        return iter(self._models.values())


class Monitor:
    """Every model of one input partition. ``process`` one batch, get the triggers back.

    What the engines, the exporter and the backtest use: :meth:`process`, :meth:`drain_counters`
    (what happened since the last drain), :meth:`dirty_states` (the checkpoint of the models
    touched since the last one), :meth:`state` and :meth:`restore`, and :attr:`models` to read a
    model's statistics.
    """

    def __init__(self, config: Config, models: ModelRegistry | None = None, partition: int | None = None):
        self.config = config
        self.registry = models if models is not None else ModelRegistry(config)
        #: the input partition whose events it gets (None: no partitions, a backtest)
        self.partition = partition
        self._models: dict[str, ModelMonitor] = {}
        #: models touched since the last dirty_states()
        self._dirty: set[str] = set()
        #: models touched or restored since the last drain_counters(); the others' metrics have not changed
        self._unobserved: set[str] = set()

    @property
    def models(self) -> Mapping[str, ModelMonitor]:
        """Each model's monitor, by id (read only: the Monitor adds them)."""
        return MappingProxyType(self._models)

    def model(self, model_id: str) -> ModelMonitor | None:
        """The model's monitor, made on first use (None for a model the registry does not have or add)."""
        monitor = self._models.get(model_id)
        if monitor is None:
            model = self.registry.get(model_id)  # a registered model's state survives a restart
            if model is None:
                return None
            monitor = self._models[model_id] = ModelMonitor(model, self.config.source)
            if self.partition is not None:
                self.registry.placed(model_id, self.partition)
        return monitor

    def process(self, events: Iterable[tuple[Prediction | Label, Source]], marks: Sequence[int] = (),
                on_mark: Callable[[ModelMonitor, int, ModelCounters, list[TriggerEvent]], None] | None = None
                ) -> list[TriggerEvent]:
        """Feed events in order; returns the triggers they caused. Unknown models are skipped
        (the engine routes them to the DLQ before they get here).

        ``marks``: counts of events, in order, after which the batch is read as if it ended
        there (the backtest's timeline samples, inside a batch that flushes once): each model
        touched ingests up to a mark, expires what its join would at a batch's end and takes
        its counters; its flush then calls ``on_mark(model monitor, k, the counters taken at
        mark k, the model's triggers since the previous mark)`` at each mark, once the rules
        there are judged, its statistics read as of the mark (a model whose events all come
        after a mark is called there too, before any of its events)."""
        events = events if isinstance(events, list) else list(events)
        by_model: dict[str, list[tuple[Prediction | Label, Source]]] = {}
        places: list[dict[str, int]] = []  # each model's count of events at each mark
        # One model's batch (the usual one of a partition that has one) stays whole: checked with
        # a C-level pass, unless its first and last events tell already that it has several.
        if events and events[0][0].model_id == events[-1][0].model_id \
                and len(set(map(operator.attrgetter("model_id"), map(operator.itemgetter(0), events)))) == 1:
            by_model[events[0][0].model_id] = events
            places = [dict.fromkeys(by_model, end) for end in marks]
        else:
            start = 0
            for end in [*marks, len(events)]:
                for item in events[start:end]:
                    by_model.setdefault(item[0].model_id, []).append(item)
                places.append({model_id: len(model_events) for model_id, model_events in by_model.items()})
                start = end
            del places[-1]
        # Models are independent: each gets its own events in order, first seen first.
        touched: dict[str, ModelMonitor] = {}
        for model_id, model_events in by_model.items():
            monitor = self._models.get(model_id) or self.model(model_id)
            if monitor is not None:
                touched[model_id] = monitor
                monitor.on_events(model_events, [counts.get(model_id, 0) for counts in places])
        triggers: list[TriggerEvent] = []
        for monitor in touched.values():
            triggers.extend(monitor.flush(on_mark))
        self._dirty.update(touched)
        self._unobserved.update(touched)
        return triggers

    def drain_counters(self) -> list[tuple[str, ModelCounters, ModelMonitor]]:
        """``(model id, its counters since the last drain, its monitor)`` of each model touched or
        restored since the last drain, by id; their counters start again from zero."""
        drained = [(model_id, self._models[model_id].counters.take(), self._models[model_id])
                   for model_id in sorted(self._unobserved)]
        self._unobserved.clear()
        return drained

    def dirty_states(self) -> Mapping[str, dict[str, Any]]:
        """The state of each model touched since the last call, by id: what a checkpoint that
        keeps each model's latest state (a changelog) must write; idle models are left out.

        Each state is made when read (read them before the next batch), so a store that
        encodes one model at a time never holds every model's state at once: a model whose
        drift references are still filling has thousands of Python floats in its state."""
        touched = {model_id: self._models[model_id] for model_id in sorted(self._dirty)}
        self._dirty.clear()
        return _States(touched)

    def state(self) -> dict[str, Any]:
        return {model_id: m.state() for model_id, m in self._models.items()}

    def restore(self, state: dict[str, Any]) -> None:
        for model_id, model_state in state.items():
            monitor = self.model(model_id)
            if monitor is not None:
                monitor.restore(model_state)
                self._unobserved.add(model_id)


class _States(Mapping):
    """Each model's ``state()`` by id, made when read (see :meth:`Monitor.dirty_states`)."""

    def __init__(self, models: dict[str, ModelMonitor]):
        self._models = models

    def __getitem__(self, model_id: str) -> dict[str, Any]:
        return self._models[model_id].state()

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)


class InputDecoder:
    """Decodes one input message and checks its model, for every engine and the backtest.

    Raises :class:`InvalidEvent` (the engines send it to the dead-letter topic). A ``model_id``
    that ``models`` (a :class:`ModelRegistry`, shared with the Monitors) does not have or add is
    ``unknown_model``; known ids are a set lookup.

    >>> from streams.core.config import parse_config
    >>> decode = InputDecoder(parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "models": [{"id": "churn"}]}))
    >>> decode("predictions", b'{"prediction_id": "p1", "model_id": "churn", "timestamp": 0, "prediction": 1}').model_id
    'churn'
    >>> decode("labels", b'{"prediction_id": "p1", "model_id": "fraud", "timestamp": 0, "label": 1}')
    Traceback (most recent call last):
    ...
    streams.core.codecs.InvalidEvent: unknown_model: model_id 'fraud' is not in the config
    """

    def __init__(self, config: Config, models: ModelRegistry | None = None):
        self.config = config
        self.models = models if models is not None else ModelRegistry(config)
        self.predictions_topic = config.topics.predictions
        self.max_bytes = config.engine.max_message_bytes
        self.known = {m.id for m in self.models}
        # Batches decode each prediction's features into a struct of the features the config
        # watches (see decode_many), and of those the events carry besides (_learn_features);
        # a feature a model reads as categories, or none reads, may hold any scalar.
        self._numeric = [f for m in config.models for f in m.features.numeric]
        self._other = [f for m in config.models for f in m.features.categorical]
        self.prediction_type = prediction_type(self._numeric, self._other)

    def __call__(self, topic: str, data: bytes) -> Prediction | Label:
        if topic == self.predictions_topic:
            event = decode_prediction(data, self.max_bytes)
        else:
            event = decode_label(data, self.max_bytes)
        if event.model_id not in self.known:
            self._unknown(event.model_id)
        return event

    def many(self, topic: str, lines: list[bytes], lines_checked: bool = False) -> list[Prediction | Label | InvalidEvent]:
        """``self(topic, line)`` of every line, a rejection returned in its place (see
        :func:`streams.core.codecs.decode_many`, also for ``lines_checked``)."""
        return self._check_models(self._decode_many(topic, lines, lines_checked))

    def buffer(self, topic: str, data: bytes) -> list[Prediction | Label | InvalidEvent] | None:
        """:meth:`many` of ``data``'s lines in one call when every line is a valid event (see
        :func:`streams.core.codecs.decode_buffer`); None when not, and the caller splits the lines."""
        if topic == self.predictions_topic:
            self._learn_features(_sample_lines(data, 32))  # a file may hold several models' features
        events = decode_buffer(data, labels=topic != self.predictions_topic, max_bytes=self.max_bytes,
                               predictions=self.prediction_type)
        return None if events is None else self._check_models(events)

    def messages(self, messages: list[tuple[str, bytes]]) -> list[Prediction | Label | InvalidEvent]:
        """``self(topic, data)`` of every message, in order, a rejection returned in its place.
        Each topic's messages are decoded together (:meth:`many`'s speed), and the models are
        then checked in message order: with ``unknown_model = "register"``, which new model
        takes the last free place is the one whose message came first, as one by one."""
        by_topic: dict[str, list[bytes]] = {}
        for topic, data in messages:
            by_topic.setdefault(topic, []).append(data)
        decoded = {topic: iter(self._decode_many(topic, lines)) for topic, lines in by_topic.items()}
        return self._check_models([next(decoded[topic]) for topic, _ in messages])

    def _decode_many(self, topic: str, lines: list[bytes],
                     lines_checked: bool = False) -> list[Prediction | Label | InvalidEvent]:
        if topic == self.predictions_topic and lines:
            self._learn_features(lines[:1])
        return decode_many(lines, labels=topic != self.predictions_topic, max_bytes=self.max_bytes,
                           predictions=self.prediction_type, lines_checked=lines_checked)

    def _learn_features(self, lines: list[bytes]) -> None:
        """Add the features of these predictions (a batch's first, a sample of a file's) that no
        model watches to the struct features decode into (as any scalar): events usually carry
        more features than a config watches, and a dict of them costs a decode twice what a
        struct does. Up to ``MAX_FEATURE_NAMES`` names, so that events with ever new names
        cannot grow it forever."""
        names = list(dict.fromkeys(name for line in lines for name in unread_features(self.prediction_type, line)))
        if names and len(self.prediction_type.row.attributes) + len(names) <= MAX_FEATURE_NAMES:
            self._other += names
            self.prediction_type = prediction_type(self._numeric, self._other)

    def _check_models(self, events: list[Prediction | Label | InvalidEvent]) -> list[Prediction | Label | InvalidEvent]:
        """Each valid event's model known, registered, or its rejection put in its place (in order)."""
        try:
            model_ids = set(map(operator.attrgetter("model_id"), events))
        except AttributeError:  # a rejection among them
            model_ids = {e.model_id for e in events if not isinstance(e, InvalidEvent)}
        if model_ids <= self.known:
            return events
        for i, event in enumerate(events):
            if not isinstance(event, InvalidEvent) and event.model_id not in self.known:
                try:
                    self._unknown(event.model_id)
                except InvalidEvent as exc:
                    events[i] = exc
        return events

    def _unknown(self, model_id: str) -> None:
        if self.models.get(model_id) is None:
            engine = self.config.engine
            full = (f"; the {engine.max_registered_models} allowed by engine.max_registered_models are "
                    "registered already" if engine.unknown_model == "register" else "")
            raise InvalidEvent("unknown_model", f"model_id {model_id!r} is not in the config{full}")
        self.known.add(model_id)
