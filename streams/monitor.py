"""The Monitor: joins, windows, detectors and rules for every model, with no I/O.

The engines (and the backtest) hand it decoded events in the order they were read; it returns
the trigger events to publish. It is deterministic: rules are evaluated after every
``evaluate_every`` joined pairs of a model (a model setting), counted from its first pair, so the same
events in the same order give the same triggers however they were cut into batches.

Join: a prediction waits for its label (and a label for its prediction) keyed by
``prediction_id``, for at most the model's ``label_ttl_seconds`` of event time. The clock is the
model's watermark, the largest event timestamp it has seen; a prediction older than
``watermark - ttl`` expires (counted), and so does an early label nobody claims.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from detectors.metrics import Accuracy
from detectors.windows import CountWindow
from retrain_trigger.events import TriggerEvent, TriggerWindow
from retrain_trigger.policy import Observation, TriggerPolicy
from retrain_trigger.rules import load_rules

from .codecs import InvalidEvent, Label, Prediction, decode_label, decode_prediction, format_timestamp
from .config import Config, Model


@dataclass(slots=True)
class Source:
    """Where an event was read: its topic, partition and offset (for DLQ and trigger evidence)."""

    topic: str
    partition: int
    offset: int


@dataclass
class ModelCounters:
    predictions: int = 0
    labels: int = 0
    joined: int = 0
    expired_predictions: int = 0
    expired_labels: int = 0
    duplicate_predictions: int = 0
    duplicate_labels: int = 0
    late_labels: int = 0
    #: label lag (label time - prediction time, seconds) of the pairs joined since the last drain
    label_lags: list[float] = field(default_factory=list)


class ModelMonitor:
    """Join + accuracy window + rules for one model."""

    def __init__(self, model: Model):
        self.model = model
        self.ttl_ms = int(model.label_ttl_seconds * 1000)
        self.evaluate_every = model.evaluate_every
        self.rules = load_rules(model.rules, where=f"models[{model.id}].rules")
        self.policy = TriggerPolicy(model.id, self.rules)
        self.accuracy = Accuracy(window=model.window.size)
        self.counters = ModelCounters()
        self.watermark_ms = 0
        self.version: str | None = None
        # prediction_id -> (timestamp ms, prediction, version); insertion order ~ event time
        self.pending: dict[str, tuple[int, Any, str | None]] = {}
        # prediction_id -> (timestamp ms, label, source offset) for labels that came first
        self.early_labels: dict[str, tuple[int, Any, int]] = {}
        # prediction_id -> label timestamp, kept one TTL to recognise duplicates
        self.joined_ids: dict[str, int] = {}
        self.joined_total = 0
        # the pairs joined in this batch, not yet pushed into the window
        self._y_true: list[Any] = []
        self._y_pred: list[Any] = []
        self._pair_ts: list[int] = []
        self._pair_offsets: list[int] = []
        # (event time, label offset) of the pairs in the window: the trigger's window evidence
        self.pair_window = CountWindow(model.window.size, width=2)
        self.label_partition: tuple[str, int] | None = None

    # -- events ---------------------------------------------------------------------------
    def on_prediction(self, event: Prediction) -> None:
        self.counters.predictions += 1
        self._advance(event.timestamp)
        if event.model_version is not None:
            self.version = event.model_version
        pid = event.prediction_id
        if pid in self.pending or pid in self.joined_ids:
            self.counters.duplicate_predictions += 1
            return
        early = self.early_labels.pop(pid, None)
        if early is not None and early[0] < self.watermark_ms - self.ttl_ms:
            self.counters.expired_labels += 1  # the label waited longer than the TTL
            early = None
        if early is not None:
            label_ts, label, offset = early
            self._join(event.prediction, event.timestamp, label, label_ts, offset)
            self.joined_ids[pid] = label_ts
        else:
            self.pending[pid] = (event.timestamp, event.prediction, event.model_version)

    def on_label(self, event: Label, source: Source) -> None:
        self.counters.labels += 1
        self.label_partition = (source.topic, source.partition)
        self._advance(event.timestamp)
        pid = event.prediction_id
        if pid in self.joined_ids or pid in self.early_labels:
            self.counters.duplicate_labels += 1
            return
        waiting = self.pending.pop(pid, None)
        if waiting is None:
            self.early_labels[pid] = (event.timestamp, event.label, source.offset)
            return
        pred_ts, prediction, _ = waiting
        if pred_ts < self.watermark_ms - self.ttl_ms:
            # It expired by event time; the periodic purge simply had not run yet.
            self.counters.expired_predictions += 1
            self.counters.late_labels += 1
            return
        self._join(prediction, pred_ts, event.label, event.timestamp, source.offset)
        self.joined_ids[pid] = event.timestamp

    def _advance(self, ts_ms: int) -> None:
        if ts_ms > self.watermark_ms:
            self.watermark_ms = ts_ms

    def _join(self, prediction: Any, pred_ts: int, label: Any, label_ts: int, offset: int) -> None:
        self.counters.joined += 1
        self.counters.label_lags.append(max(0, label_ts - pred_ts) / 1000.0)
        self._y_true.append(label)
        self._y_pred.append(prediction)
        self._pair_ts.append(max(pred_ts, label_ts))
        self._pair_offsets.append(offset)

    # -- end of batch ---------------------------------------------------------------------
    def flush(self) -> list[TriggerEvent]:
        """Push the batch's pairs into the window, evaluating rules at each evaluation point."""
        triggers: list[TriggerEvent] = []
        n = len(self._y_true)
        start = 0
        while start < n:
            to_next_point = self.evaluate_every - self.joined_total % self.evaluate_every
            stop = min(n, start + to_next_point)
            self._update_window(start, stop)
            if self.joined_total % self.evaluate_every == 0:
                triggers.extend(self._evaluate())
            start = stop
        self._y_true.clear()
        self._y_pred.clear()
        self._pair_ts.clear()
        self._pair_offsets.clear()
        self._purge()
        return triggers

    def _update_window(self, start: int, stop: int) -> None:
        self.accuracy.update_many(np.asarray(self._y_true[start:stop]), np.asarray(self._y_pred[start:stop]))
        self.pair_window.push(np.column_stack((self._pair_ts[start:stop], self._pair_offsets[start:stop])))
        self.joined_total += stop - start

    def _window(self) -> TriggerWindow:
        rows = self.pair_window.rows()
        ts, offsets = rows[:, 0], rows[:, 1]
        ranges = {}
        if self.label_partition is not None:
            topic, partition = self.label_partition
            ranges[f"{topic}:{partition}"] = [int(offsets.min()), int(offsets.max())]
        return TriggerWindow(start=format_timestamp(int(ts.min())), end=format_timestamp(int(ts.max())),
                             count=len(rows), offsets=ranges)

    def observations(self) -> dict[str, Observation]:
        result = self.accuracy.result()
        return {"accuracy": Observation(value=result.statistic, n=result.n)}

    def _evaluate(self) -> list[TriggerEvent]:
        window = self._window()
        at_ms = int(self.pair_window.rows()[-1, 0])  # the newest pair's event time
        return self.policy.evaluate(self.observations(), model_version=self.version, window=window, at_ms=at_ms)

    def _purge(self) -> None:
        horizon = self.watermark_ms - self.ttl_ms
        self.counters.expired_predictions += _drop_older(self.pending, horizon, key=lambda v: v[0])
        self.counters.expired_labels += _drop_older(self.early_labels, horizon, key=lambda v: v[0])
        _drop_older(self.joined_ids, horizon, key=lambda v: v)

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark_ms,
            "version": self.version,
            "pending": self.pending,
            "early_labels": self.early_labels,
            "joined_ids": self.joined_ids,
            "joined_total": self.joined_total,
            "pair_window": self.pair_window.state(),
            "label_partition": self.label_partition,
            "accuracy": self.accuracy.state(),
            "policy": self.policy.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.watermark_ms = state["watermark_ms"]
        self.version = state["version"]
        self.pending = {k: tuple(v) for k, v in state["pending"].items()}
        self.early_labels = {k: tuple(v) for k, v in state["early_labels"].items()}
        self.joined_ids = dict(state["joined_ids"])
        self.joined_total = state["joined_total"]
        self.pair_window = CountWindow.from_state(state["pair_window"])
        self.label_partition = tuple(state["label_partition"]) if state["label_partition"] else None
        self.accuracy = Accuracy.from_state(state["accuracy"])
        self.policy = TriggerPolicy.from_state(self.model.id, self.rules, state["policy"])


def _drop_older(entries: dict, horizon: int, key) -> int:
    """Drop entries older than ``horizon`` from the front of an insertion-ordered dict."""
    dropped = 0
    while entries:
        first = next(iter(entries))
        if key(entries[first]) >= horizon:
            break
        del entries[first]
        dropped += 1
    return dropped


class Monitor:
    """Every model of one input partition. ``process`` one batch, get the triggers back."""

    def __init__(self, config: Config):
        self.config = config
        self.models: dict[str, ModelMonitor] = {}

    def model(self, model_id: str) -> ModelMonitor | None:
        monitor = self.models.get(model_id)
        if monitor is None:
            model = self.config.model(model_id)
            if model is None:
                return None
            monitor = self.models[model_id] = ModelMonitor(model)
        return monitor

    def process(self, events: Iterable[tuple[Prediction | Label, Source]]) -> list[TriggerEvent]:
        """Feed events in order; returns the triggers they caused. Unknown models are skipped
        (the engine routes them to the DLQ before they get here)."""
        touched: dict[str, ModelMonitor] = {}
        for event, source in events:
            monitor = self.model(event.model_id)
            if monitor is None:
                continue
            touched[event.model_id] = monitor
            if isinstance(event, Prediction):
                monitor.on_prediction(event)
            else:
                monitor.on_label(event, source)
        triggers: list[TriggerEvent] = []
        for monitor in touched.values():
            triggers.extend(monitor.flush())
        return triggers

    def state(self) -> dict[str, Any]:
        return {model_id: m.state() for model_id, m in self.models.items()}

    def restore(self, state: dict[str, Any]) -> None:
        for model_id, model_state in state.items():
            monitor = self.model(model_id)
            if monitor is not None:
                monitor.restore(model_state)


def decode_input(config: Config, topic: str, data: bytes) -> Prediction | Label:
    """Decode one input message of ``topic`` and check its model is configured.

    Raises :class:`InvalidEvent`; every engine sends those to the dead-letter topic.
    """
    if topic == config.topics.predictions:
        event = decode_prediction(data, config.engine.max_message_bytes)
    else:
        event = decode_label(data, config.engine.max_message_bytes)
    if config.model(event.model_id) is None:
        raise InvalidEvent("unknown_model", f"model_id {event.model_id!r} is not in the config")
    return event
