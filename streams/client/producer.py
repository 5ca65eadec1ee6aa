"""Log predictions and labels from a model server to driftline's input topics.

::

    from streams.client.producer import PredictionLogger

    logger = PredictionLogger("kafka:9092")                   # or a dict of librdkafka settings
    pid = logger.log_prediction("churn", features={"age": 41, "plan": "pro"},
                                prediction=1, score=0.83, model_version="2024-06-01")
    ...                                                       # later, when the truth is known
    logger.log_label(pid, "churn", label=0)
    logger.close()                                            # or use it as a context manager

Guarantees for the serving path:

* **never blocks, never raises.** ``log_*`` encode the event (msgspec, per the event contract)
  and hand it to librdkafka's queue, which is bounded (``max_buffered`` messages). When the
  queue is full, or the event cannot be encoded, the event is dropped and counted in
  :attr:`PredictionLogger.dropped` (by reason) and in the Prometheus counter
  ``driftline_producer_dropped_total{reason}``; the call returns ``None`` instead of the id.
* **batched.** librdkafka batches per partition (``linger.ms``, default 20 ms, lz4).
* **co-partitioned.** The key is ``model_id`` and the partitioner ``murmur2_random`` (the Java
  client's), as the contract requires, so a model's predictions and labels meet on one engine.
* **quiet when the broker is down.** Delivery failures are counted; the logger logs one line
  when deliveries start failing and one when they recover, not one per message.
* **flushes on shutdown.** :meth:`close` waits up to ``timeout`` seconds for queued events and
  counts what could not be delivered as ``dropped["unflushed"]``; a process that exits without
  calling it still flushes for up to 5 s (``atexit``).

From asyncio code use :class:`AsyncPredictionLogger`: the same calls (they never block), and
``await logger.aclose()`` flushes in a worker thread so the event loop keeps running.
"""
from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from collections import Counter as _Tally
from typing import Any, Mapping

import msgspec
from confluent_kafka import KafkaError, Producer

# The broker refused the credentials or the certificate (streams.runtime.admin.LOGIN_REFUSED; not
# imported from there so that a model server imports this module alone).
_LOGIN_REFUSED = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED)

__all__ = ["PredictionLogger", "AsyncPredictionLogger", "DROP_REASONS"]

log = logging.getLogger("driftline.producer")


class _DebugLog:
    """What confluent-kafka's ``logger`` setting calls (``log(level, msg, *args)``): every
    librdkafka line to ``logger`` at DEBUG, whatever librdkafka's level. Its FAIL lines are
    errors to librdkafka; at that level, Python's last-resort handler prints them on a server
    that configures no logging, one per connection retry while the broker is down."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def log(self, level: int, msg: str, *args: Any) -> None:
        self.logger.debug(msg, *args)


#: Why an event can be dropped (the ``reason`` label of ``driftline_producer_dropped_total``).
DROP_REASONS = ("buffer_full", "encode_error", "produce_error", "delivery_failed", "unflushed", "closed")

def _enc_hook(value: Any) -> Any:
    """numpy scalars and arrays (what model code hands over) as plain numbers and lists."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

_counters: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_counters_lock = threading.Lock()


def _dropped_counter(registry):
    """One ``driftline_producer_dropped_total`` per registry, shared by every logger in the process."""
    from prometheus_client import REGISTRY, Counter

    registry = registry or REGISTRY
    with _counters_lock:
        counter = _counters.get(registry)
        if counter is None:
            counter = _counters[registry] = Counter(
                "driftline_producer_dropped_total",
                "Prediction/label events a PredictionLogger dropped instead of blocking the caller, by reason.",
                ["reason"], registry=registry)
        return counter


class PredictionLogger:
    """A non-blocking producer of prediction and label events (see the module docstring).

    ``kafka`` is a bootstrap address (``"host:9092"``) or a dict of librdkafka settings (SASL,
    TLS, ... pass through); ``max_buffered`` bounds the messages waiting for the broker;
    ``prometheus`` registers ``driftline_producer_dropped_total`` in ``registry`` (the default
    registry when ``None``); ``producer_config`` overrides any producer setting.
    """

    def __init__(self, kafka: str | Mapping[str, Any], predictions_topic: str = "predictions",
                 labels_topic: str = "labels", *, max_buffered: int = 100_000, linger_ms: int = 20,
                 prometheus: bool = True, registry=None, producer_config: Mapping[str, Any] | None = None):
        settings = {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)
        settings.update({
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            "compression.type": "lz4",
            "queue.buffering.max.messages": max_buffered,
            "enable.idempotence": True,   # retries neither reorder nor duplicate a model's events
            # Only failures call back into Python: a callback per delivered message would take
            # the GIL from the serving threads once per event.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            # librdkafka's own lines (a connect failure every retry, ...) go to logging at DEBUG, not
            # to the server's stderr: the one warning of _note_failure says what they would.
            "logger": _DebugLog(logging.getLogger("driftline.producer.librdkafka")),
        })
        settings.update(producer_config or {})
        self.predictions_topic = predictions_topic
        self.labels_topic = labels_topic
        self._producer = Producer(settings)
        self._max_buffered = int(settings["queue.buffering.max.messages"])
        # prediction ids: a random 64-bit prefix per logger and a counter (a uuid4 costs 10x more)
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()
        #: events accepted into the queue
        self.sent = 0
        #: events dropped, by reason (see :data:`DROP_REASONS`)
        self.dropped: _Tally[str] = _Tally()
        self._metric = _dropped_counter(registry) if prometheus else None
        self._failing = False
        self._last_error: str | None = None
        self._closed = False
        self._stop = threading.Event()
        # Delivery reports are served here, off the caller's thread.
        self._poller = threading.Thread(target=self._poll_loop, name="driftline-producer-poll", daemon=True)
        self._poller.start()
        # A server that exits without close() still delivers what is queued (up to 5 s).
        atexit.register(self._close_at_exit)

    # -- the serving path -------------------------------------------------------------------
    def log_prediction(self, model_id: str, features: Mapping[str, Any] | None = None, prediction: Any = None, *,
                       score: float | None = None, probabilities: Mapping[str, float] | None = None,
                       prediction_id: str | None = None, timestamp: int | str | None = None,
                       model_version: str | None = None, segment: Mapping[str, str] | None = None) -> str | None:
        """Queue one prediction; returns its ``prediction_id`` (generated when not given: unique
        per logger, a random 64-bit prefix and a counter), or ``None`` when the event was dropped. ``timestamp``: epoch ms or ISO-8601; default now."""
        if len(self._producer) >= self._max_buffered:  # full: drop before paying for the encoding
            self._drop("buffer_full")
            return None
        pid = prediction_id or f"{self._id_prefix}{next(self._ids):012x}"
        event: dict[str, Any] = {
            "prediction_id": pid, "model_id": model_id,
            "timestamp": int(time.time() * 1000) if timestamp is None else timestamp,
            "prediction": prediction, "features": features or {},
        }
        if score is not None:
            event["score"] = score
        if probabilities is not None:
            event["probabilities"] = probabilities
        if model_version is not None:
            event["model_version"] = model_version
        if segment is not None:
            event["segment"] = segment
        return pid if self._send(self.predictions_topic, model_id, event) else None

    def log_label(self, prediction_id: str, model_id: str, label: Any, *, timestamp: int | str | None = None) -> bool:
        """Queue the ground truth of one prediction; ``False`` when it was dropped."""
        if len(self._producer) >= self._max_buffered:
            self._drop("buffer_full")
            return False
        event = {"prediction_id": prediction_id, "model_id": model_id, "label": label,
                 "timestamp": int(time.time() * 1000) if timestamp is None else timestamp}
        return self._send(self.labels_topic, model_id, event)

    def produce_raw(self, topic: str, key: str | bytes | None, value: bytes) -> bool:
        """Queue pre-encoded bytes as they are (replays, tests, the simulator's malformed events)."""
        if self._closed:
            self._drop("closed")
            return False
        return self._produce(topic, key, value)

    def _send(self, topic: str, key: str, event: dict) -> bool:
        if self._closed:
            self._drop("closed")
            return False
        try:
            value = _encoder.encode(event)
        except Exception as exc:  # noqa: BLE001 - a bad feature value must not reach the caller
            self._drop("encode_error", f"cannot encode a {topic} event of {key!r}: {exc}")
            return False
        return self._produce(topic, key, value)

    def _produce(self, topic: str, key, value: bytes) -> bool:
        try:
            self._producer.produce(topic, value, key)
        except BufferError:
            self._producer.poll(0)  # serve delivery reports once, then give up: never wait
            try:
                self._producer.produce(topic, value, key)
            except BufferError:
                self._drop("buffer_full")
                return False
            except Exception as exc:  # noqa: BLE001
                self._drop("produce_error", f"produce to {topic} failed: {exc}")
                return False
        except Exception as exc:  # noqa: BLE001 - e.g. a message larger than message.max.bytes
            self._drop("produce_error", f"produce to {topic} failed: {exc}")
            return False
        self.sent += 1
        return True

    def _drop(self, reason: str, detail: str | None = None, n: int = 1) -> None:
        first = self.dropped[reason] == 0
        self.dropped[reason] += n
        if self._metric is not None:
            self._metric.labels(reason).inc(n)
        if first and detail:
            log.warning("dropping events (%s): %s; further drops are only counted", reason, detail)

    # -- delivery reports (poll thread) ---------------------------------------------------------
    def _poll_loop(self) -> None:
        last_check, failures = time.monotonic(), 0
        while not self._stop.is_set():
            self._producer.poll(0.1)
            if self._failing and time.monotonic() - last_check >= 1.0:
                # Recovered: no delivery failed for a second and the broker answers.
                now_failures = self.dropped["delivery_failed"]
                if now_failures == failures and self._broker_answers():
                    self._failing = False
                    log.info("Kafka reachable again; deliveries resume")
                last_check, failures = time.monotonic(), now_failures

    def _broker_answers(self) -> bool:
        try:
            self._producer.list_topics(self.predictions_topic, timeout=1.0)
        except Exception:  # noqa: BLE001
            return False
        return True

    def _on_delivery(self, err: KafkaError | None, msg) -> None:
        if err is None:  # only with delivery.report.only.error overridden to False
            return
        self._drop("delivery_failed")
        self._note_failure(f"delivery to {msg.topic()} failed: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        # A refused login comes before "all brokers down", so the one warning names it.
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, *_LOGIN_REFUSED) or err.fatal():
            self._note_failure(f"Kafka: {err.str()}")

    def _note_failure(self, message: str) -> None:
        self._last_error = message
        if not self._failing:
            self._failing = True
            log.warning("%s; events are queued (up to the buffer) and retried; logging again on recovery", message)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Events waiting in librdkafka's queue (not yet acknowledged)."""
        return len(self._producer)

    @property
    def delivered(self) -> int:
        """Events the broker acknowledged: sent, minus still queued, minus failed."""
        return max(0, self.sent - len(self._producer) - self.dropped["delivery_failed"])

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` s for queued events; returns how many are still queued."""
        return self._producer.flush(timeout)

    def _close_at_exit(self) -> None:
        self.close(5.0)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting events, deliver what is queued (up to ``timeout`` s), count the rest."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        left = self._producer.flush(timeout)
        self._stop.set()
        self._poller.join(1.0)
        self._producer.poll(0)
        if left:
            self._drop("unflushed", f"{left} events still queued after {timeout:.0f}s at close "
                                    f"({self._last_error or 'broker slow or unreachable'})", n=left)

    def __enter__(self) -> "PredictionLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncPredictionLogger:
    """:class:`PredictionLogger` for asyncio servers (FastAPI, aiohttp, ...).

    ``log_prediction``/``log_label`` are plain (non-async) methods because they never block;
    call them straight from a coroutine. ``await aflush()``/``await aclose()`` wait for the
    broker in a worker thread, so the event loop keeps serving. ``async with`` closes on exit.
    """

    def __init__(self, *args, **kwargs):
        self.logger = PredictionLogger(*args, **kwargs)

    def log_prediction(self, *args, **kwargs) -> str | None:
        return self.logger.log_prediction(*args, **kwargs)

    def log_label(self, *args, **kwargs) -> bool:
        return self.logger.log_label(*args, **kwargs)

    @property
    def dropped(self):
        return self.logger.dropped

    async def aflush(self, timeout: float = 10.0) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self.logger.flush, timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.logger.close, timeout)

    async def __aenter__(self) -> "AsyncPredictionLogger":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
