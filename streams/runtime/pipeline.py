"""The batch pipeline that both engines and the backtest drive; no Kafka, no Prometheus here.

::

    a batch of messages (topic, partition, offset, bytes)
      -> decode: each message's event, or its rejection in its place    (Pipeline.decode)
      -> rejections to the dead letters, with their reason              (Pipeline.hand_over)
      -> each partition's events, in order, to that partition's Monitor
      -> the triggers they cause, to the outputs                        (Pipeline.process)
      -> the counters and statistics, to the metrics

Where results go is given: :class:`Outputs` (the engines: a Kafka producer; the backtest: a
list) and :class:`Metrics` (the engines: the Prometheus exporter; the backtest: its totals and
timeline). The default engine puts its aligner between decoding and handing over; the backtest,
which reads files and rejects bad lines as it reads them, hands ordered events straight to
:meth:`Pipeline.process`.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from retrain_trigger.events import TriggerEvent

from streams.core.codecs import InvalidEvent, Label, Prediction
from streams.core.config import Config
from streams.core.monitor import InputDecoder, ModelRegistry, Monitor, Source

log = logging.getLogger("driftline.pipeline")

#: One message decoded: ``(event, source)`` (what :meth:`Monitor.process` takes, so a batch
#: without rejections goes to it as it is), or ``(rejection, source, message)`` with the message
#: itself (the engine's own object: the dead-letter output copies its key and bytes).
Item = tuple[Prediction | Label, Source] | tuple[InvalidEvent, Source, Any]


class Outputs(Protocol):
    """Where a batch's results are sent."""

    def dead_letter(self, message: Any, source: Source, error: InvalidEvent) -> None:
        """A rejected message, to the dead-letter topic (see :func:`dead_letter_headers`)."""

    def trigger(self, trigger: TriggerEvent) -> None:
        """A trigger, to publish."""


class Metrics:
    """What the pipeline counts. These defaults count nothing and drain the Monitor's counters
    unread; the exporter overrides every one."""

    def count_consumed(self, topic: str, count: int) -> None:
        """``count`` messages read from ``topic``."""

    def count_rejected(self, topic: str, reason: str) -> None:
        """A message of ``topic`` rejected to the dead letters."""

    def count_trigger(self, trigger: TriggerEvent) -> None:
        """A trigger handed to the outputs."""

    def observe(self, monitor: Monitor) -> None:
        """After a batch or a restore: take the Monitor's counters (:meth:`Monitor.drain_counters`)
        and look at the statistics of the models it touched or restored."""
        monitor.drain_counters()


def dead_letter_headers(reason: str, detail: str, source: Source) -> list[tuple[str, bytes]]:
    """DLQ messages keep the original key and bytes; what went wrong travels in headers."""
    return [
        ("driftline.reason", reason.encode()),
        ("driftline.detail", detail.encode()),
        ("driftline.topic", source.topic.encode()),
        ("driftline.partition", str(source.partition).encode()),
        ("driftline.offset", str(source.offset).encode()),
        ("driftline.rejected_at_ms", str(int(time.time() * 1000)).encode()),
    ]


class Pipeline:
    """Decode, reject, monitor, publish and count, for one engine instance or one backtest.

    Parameters
    ----------
    config
        The config; its models are the :class:`ModelRegistry` that the decoder and every Monitor
        made by :meth:`monitor` share.
    outputs, metrics
        Where results go and what counts them (see the module docstring).
    log_triggers
        Log each trigger and each model registered at INFO (the engines; a backtest writes
        triggers to a file, and its loader has logged the models it registered).
    """

    def __init__(self, config: Config, outputs: Outputs, metrics: Metrics, log_triggers: bool = True):
        self.config = config
        self.models = ModelRegistry(config, announce=log_triggers)
        self.decoder = InputDecoder(config, self.models)
        self.outputs = outputs
        self.metrics = metrics
        self.log_triggers = log_triggers

    def monitor(self, checkpoint: dict[str, Any] | None = None, partition: int | None = None) -> Monitor:
        """A partition's Monitor, with the models of a checkpoint (model id -> state) restored
        and observed by the metrics: a dashboard shows the restored statistics at once, not
        after the model's next event. ``partition``: the input partition it is for (see
        :meth:`~streams.core.monitor.ModelRegistry.placed`)."""
        monitor = Monitor(self.config, self.models, partition)
        if checkpoint:
            monitor.restore(checkpoint)
            self.metrics.observe(monitor)
        return monitor

    def decode(self, topics: list[str], partitions: list[int], offsets: list[int], values: list[bytes],
               messages: list[Any]) -> list[Item]:
        """A consumed batch, as columns (one entry per message, in the order read), decoded: an
        :data:`Item` per message, a rejection in its place. Counted as consumed, by topic."""
        for topic, count in Counter(topics).items():
            self.metrics.count_consumed(topic, count)
        # Decoded a topic at a time (the same events and rejections as one by one), in message order.
        decoded = self.decoder.messages(list(zip(topics, values)))
        return _items(decoded, map(Source, topics, partitions, offsets), messages)

    def decode_run(self, topic: str, partition: int, offsets: list[int], values: list[bytes],
                   messages: list[Any]) -> list[Item]:
        """:meth:`decode` of a run of messages read in order from one partition, as a consumer
        hands them over: one decode call for the run, and no column of topics or partitions."""
        self.metrics.count_consumed(topic, len(values))
        # With unknown_model = "register" the models are registered in message order, as in
        # decode: the runs of a batch are decoded in the order read.
        decoded = self.decoder.many(topic, values)
        return _items(decoded, map(Source, itertools.repeat(topic), itertools.repeat(partition), offsets), messages)

    def hand_over(self, monitor: Monitor, items: list[Item]) -> list[TriggerEvent]:
        """One partition's items, in order: the rejected ones to the dead letters, the events to
        the partition's Monitor (:meth:`process`). Returns the triggers."""
        if _REJECTION not in set(map(len, items)):  # the usual batch: every item an event
            return self.process(monitor, items) if items else []
        events: list[tuple[Prediction | Label, Source]] = []
        for item in items:
            if len(item) == _REJECTION:
                error, source, message = item
                self.outputs.dead_letter(message, source, error)
                self.metrics.count_rejected(source.topic, error.reason)
            else:
                events.append(item)
        return self.process(monitor, events) if events else []

    def process(self, monitor: Monitor, events: list[tuple[Prediction | Label, Source]], marks: Sequence[int] = (),
                on_mark: Callable | None = None) -> list[TriggerEvent]:
        """Valid events of one partition, in order, to its Monitor (``marks`` and ``on_mark``:
        see :meth:`Monitor.process`); the triggers they cause to the outputs; then the metrics
        observe the Monitor. Returns the triggers."""
        triggers = monitor.process(events, marks, on_mark)
        for trigger in triggers:
            self.outputs.trigger(trigger)
            self.metrics.count_trigger(trigger)
            if self.log_triggers:
                log.info("trigger %s: %s=%s (threshold %s)", trigger.trigger_id, trigger.metric, trigger.value,
                         trigger.threshold, extra={"model": trigger.model_id, "partition": events[0][1].partition})
        self.metrics.observe(monitor)
        return triggers


#: the length of a rejection's :data:`Item` (an event's is 2)
_REJECTION = 3


def _items(decoded: list[Prediction | Label | InvalidEvent], sources: Iterable[Source], messages: list[Any]) -> list[Item]:
    """The :data:`Item` of each message: its message kept only with a rejection."""
    if InvalidEvent not in set(map(type, decoded)):
        return list(zip(decoded, sources))
    return [(event, source, message) if type(event) is InvalidEvent else (event, source)
            for event, source, message in zip(decoded, sources, messages)]


def by_partition(items: list[Item]) -> dict[int, list[Item]]:
    """A batch's items per partition, each partition's in order (the partitions as first seen)."""
    out: dict[int, list[Item]] = {}
    for item in items:
        out.setdefault(item[1].partition, []).append(item)
    return out
