"""Act on retrain triggers: run a command or POST to a URL, once per trigger.

``Listener(kafka, action, group=..., state_dir=...).run()`` consumes the trigger topic in a
consumer group (``isolation.level=read_committed``: triggers of aborted engine transactions
are never seen; ``enable.auto.commit=false``). For each trigger, in order:

1. decode it; an undecodable message goes to the failure topic and is committed;
2. skip it if its ``trigger_id`` is in the local record of handled triggers (a redelivery);
3. run the action, retried with exponential backoff up to ``max_retries`` times;
4. on success append ``trigger_id`` to the record (fsynced), then commit the offset;
   on final failure produce the trigger with the error to the failure topic
   (default ``retrain-triggers-failed``), record it as failed, then commit.

So a listener killed after the action ran but before the commit does not run it again:
the record says it was handled. A listener killed while the action runs (before the
record) runs it again after the restart, so actions should still de-duplicate by
``trigger_id`` (passed to them), e.g. when a rebalance moves a partition to a listener
with another state dir. The record is per consumer group: ``<state_dir>/handled-<group>.jsonl``.

While an action runs, the listener pauses its partitions and keeps polling, so a
retraining job longer than ``max.poll.interval.ms`` does not cost the group membership.

Actions:

* :class:`ExecAction`: a shell command, with the trigger JSON on stdin and in the
  environment ``DRIFTLINE_TRIGGER_ID``, ``DRIFTLINE_MODEL_ID``, ``DRIFTLINE_MODEL_VERSION``,
  ``DRIFTLINE_RULE``, ``DRIFTLINE_METRIC``, ``DRIFTLINE_VALUE``, ``DRIFTLINE_THRESHOLD``,
  ``DRIFTLINE_SEVERITY``, ``DRIFTLINE_TRIGGERED_AT``, ``DRIFTLINE_WINDOW_START``,
  ``DRIFTLINE_WINDOW_END``, ``DRIFTLINE_WINDOW_COUNT``, ``DRIFTLINE_ATTEMPT``. Exit 0 is success.
* :class:`HttpAction`: POST of the trigger JSON with ``Idempotency-Key: <trigger_id>``. A 2xx
  is success; 4xx other than 408/425/429 is permanent (not retried).

``tail(kafka, topic, ...)`` prints triggers as they arrive, one readable line each or JSON.
Every function takes a plain dict of librdkafka settings (``bootstrap.servers``, security, …).
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from retrain_trigger.events import TriggerEvent, decode_trigger, encode_trigger

log = logging.getLogger("driftline.listener")
# librdkafka's own lines (one per failed connection attempt); the CLI shows them only with --debug.
librdkafka_log = logging.getLogger("driftline.librdkafka")

DEFAULT_TOPIC = "retrain-triggers"
DEFAULT_FAILURE_TOPIC = "retrain-triggers-failed"
DEFAULT_GROUP = "driftline-retrain-listener"

#: Test hook: seconds to sleep between recording a trigger and committing its offset, so a
#: test can SIGKILL the listener exactly there. Never set it in production.
PAUSE_BEFORE_COMMIT_ENV = "DRIFTLINE_LISTENER_TEST_PAUSE_BEFORE_COMMIT"

# Keys that belong to one client type only; dropped from the other so librdkafka does not warn.
_CONSUMER_ONLY = ("group.", "auto.", "enable.auto", "isolation.level", "session.timeout.ms",
                  "heartbeat.interval.ms", "max.poll.interval.ms", "partition.assignment.strategy",
                  "fetch.", "enable.partition.eof", "check.crcs")
_PRODUCER_ONLY = ("transactional.id", "transaction.timeout.ms", "enable.idempotence", "acks",
                  "linger.ms", "batch.", "partitioner", "compression.", "queue.buffering.",
                  "message.timeout.ms", "delivery.timeout.ms", "retries", "retry.backoff.ms")


class ListenerError(RuntimeError):
    """The listener cannot go on (e.g. the failure topic cannot be written)."""


class ActionFailed(Exception):
    """An action attempt failed; ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class Stopped(Exception):
    """A stop was asked for while a trigger waited for its next attempt: it gets no verdict (no
    failure topic, no record, no commit), so the next start runs it again."""


class Action(Protocol):
    def __call__(self, event: TriggerEvent, payload: bytes, attempt: int) -> None: ...


# -- actions --------------------------------------------------------------------------------


def trigger_env(event: TriggerEvent, attempt: int) -> dict[str, str]:
    """The DRIFTLINE_* environment a command action sees."""
    return {
        "DRIFTLINE_TRIGGER_ID": event.trigger_id,
        "DRIFTLINE_MODEL_ID": event.model_id,
        "DRIFTLINE_MODEL_VERSION": event.model_version or "",
        "DRIFTLINE_RULE": event.rule,
        "DRIFTLINE_METRIC": event.metric,
        "DRIFTLINE_VALUE": repr(event.value),
        "DRIFTLINE_THRESHOLD": repr(event.threshold),
        "DRIFTLINE_SEVERITY": event.severity,
        "DRIFTLINE_TRIGGERED_AT": event.triggered_at,
        "DRIFTLINE_WINDOW_START": event.window.start,
        "DRIFTLINE_WINDOW_END": event.window.end,
        "DRIFTLINE_WINDOW_COUNT": str(event.window.count),
        "DRIFTLINE_ATTEMPT": str(attempt),
    }


class ExecAction:
    """Run ``command`` with /bin/sh; the trigger is on stdin and in DRIFTLINE_* variables.

    The trigger never becomes part of the command line, so its content cannot inject
    shell code. stdout passes through; stderr passes through and its last lines go into
    the error of a failed attempt.
    """

    STDERR_LINES_KEPT = 20

    def __init__(self, command: str, timeout: float | None = None):
        self.command = command
        self.timeout = timeout

    def __call__(self, event: TriggerEvent, payload: bytes, attempt: int) -> None:
        env = {**os.environ, **trigger_env(event, attempt)}
        # Own session: a timeout kills the whole process group the shell started.
        proc = subprocess.Popen(self.command, shell=True, env=env, stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        tail: collections.deque[str] = collections.deque(maxlen=self.STDERR_LINES_KEPT)
        relay = threading.Thread(target=_relay_stderr, args=(proc.stderr, tail), daemon=True)
        relay.start()
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the command does not read stdin; that is its choice
        try:
            status = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            relay.join(5)
            raise ActionFailed(f"command timed out after {self.timeout:g}s{_stderr_suffix(tail)}") from None
        relay.join(5)
        if status != 0:
            raise ActionFailed(f"command exited with status {status}{_stderr_suffix(tail)}")


def _relay_stderr(stream, tail: collections.deque[str]) -> None:
    for line in iter(stream.readline, b""):
        text = line.decode("utf-8", "replace")
        sys.stderr.write(text)
        sys.stderr.flush()
        tail.append(text.rstrip())
    stream.close()


def _stderr_suffix(tail: collections.deque[str]) -> str:
    return f"; stderr: {' | '.join(tail)}" if tail else ""


class HttpAction:
    """POST the trigger JSON to ``url``; 2xx is success."""

    RETRYABLE_CLIENT_ERRORS = (408, 425, 429)

    def __init__(self, url: str, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.url = url
        self.timeout = timeout
        self.headers = headers or {}

    def __call__(self, event: TriggerEvent, payload: bytes, attempt: int) -> None:
        request = urllib.request.Request(self.url, data=payload, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": "driftline-listener",
            "Idempotency-Key": event.trigger_id,
            "X-Driftline-Attempt": str(attempt),
            **self.headers,
        })
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            permanent = 400 <= exc.code < 500 and exc.code not in self.RETRYABLE_CLIENT_ERRORS
            body = exc.read(500).decode("utf-8", "replace").strip()
            raise ActionFailed(f"POST {self.url} returned HTTP {exc.code}: {body}", permanent=permanent) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ActionFailed(f"POST {self.url} failed: {reason}") from None


class Backoff(msgspec.Struct, frozen=True):
    """Delay before retry k (1-based): initial * 2**(k-1), at most ``maximum`` seconds."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, retry: int) -> float:
        return min(self.initial * 2 ** (retry - 1), self.maximum)


def run_with_retries(
    action: Action, event: TriggerEvent, payload: bytes, max_retries: int, backoff: Backoff,
    sleep: Callable[[float], object] = time.sleep,
) -> tuple[str | None, int]:
    """Run ``action`` until it succeeds; returns (last error or None, attempts made).

    ``sleep(delay)`` waits between attempts; a true result (``threading.Event.wait`` of the stop
    request) raises :class:`Stopped` instead of retrying: a stop must not turn a trigger whose
    action could still succeed into a final failure.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            action(event, payload, attempt)
            return None, attempt
        except ActionFailed as exc:
            error, permanent = str(exc), exc.permanent
        except Exception as exc:  # an action bug must not kill the listener: report it
            error, permanent = f"{type(exc).__name__}: {exc}", False
        if permanent or attempt > max_retries:
            return error, attempt
        delay = backoff.delay(attempt)
        log.warning("trigger %s: attempt %d failed (%s); retrying in %.1fs", event.trigger_id, attempt, error, delay)
        if sleep(delay):
            raise Stopped(f"trigger {event.trigger_id}: stopped before attempt {attempt + 1}")


# -- the record of handled triggers -----------------------------------------------------------


class HandledLog:
    """Append-only, fsynced JSON lines of handled trigger ids; survives a SIGKILL.

    A torn last line (killed mid-write) is ignored: that trigger was not recorded. Other
    listeners of the group may append to the same file (a shared state dir): a lookup that
    misses re-reads the file if it grew.
    """

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        _fsync_dir(self.path.parent)
        self._terminate_torn_line()
        self._ids: set[str] = set()
        self._loaded_bytes = 0
        self._load()

    def _terminate_torn_line(self) -> None:
        """End a torn last line so the next record starts on a line of its own."""
        size = self.path.stat().st_size
        if size:
            with open(self.path, "rb") as existing:
                existing.seek(size - 1)
                if existing.read(1) != b"\n":
                    self._file.write(b"\n")
                    self._file.flush()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete[self._loaded_bytes:].splitlines():
            try:
                self._ids.add(json.loads(line)["trigger_id"])
            except (ValueError, KeyError):
                log.warning("%s: skipping an unreadable line", self.path)
        self._loaded_bytes = len(complete)

    def __contains__(self, trigger_id: str) -> bool:
        if trigger_id not in self._ids and self.path.stat().st_size > self._loaded_bytes:
            self._load()
        return trigger_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def record(self, trigger_id: str, outcome: str, source: str) -> None:
        line = json.dumps({"trigger_id": trigger_id, "outcome": outcome, "source": source,
                           "at": _now_iso()}, separators=(",", ":"))
        self._file.write(line.encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._ids.add(trigger_id)

    def close(self) -> None:
        self._file.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- Kafka clients ----------------------------------------------------------------------------


def _settings_for(kafka: dict[str, Any], drop_prefixes: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in kafka.items() if not k.startswith(drop_prefixes)}


def consumer_settings(kafka: dict[str, Any], group: str, *, offset_reset: str = "earliest") -> dict[str, Any]:
    settings = {"auto.offset.reset": offset_reset, **_settings_for(kafka, _PRODUCER_ONLY)}
    settings.update({"group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed"})
    return settings


def producer_settings(kafka: dict[str, Any]) -> dict[str, Any]:
    # Never transactional: the failure record is a plain idempotent write, even when the
    # shared [kafka] table carries the engine's transactional.id.
    settings = _settings_for(kafka, _CONSUMER_ONLY + ("transactional.",))
    return {**settings, "enable.idempotence": True, "acks": "all"}


def ensure_topic(kafka: dict[str, Any], topic: str, timeout: float = 30.0) -> None:
    """Create ``topic`` (1 partition, broker-default replication) unless it exists; warn if we may not."""
    refused: list[KafkaError] = []
    admin = AdminClient({**_settings_for(_settings_for(kafka, _CONSUMER_ONLY), _PRODUCER_ONLY),
                         "error_cb": lambda err: refused.append(err) if _is_fatal(err) else None,
                         "logger": librdkafka_log})
    deadline = time.monotonic() + timeout
    try:
        while True:  # in short tries, so that a refused login ends the wait at once
            try:
                metadata = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
                break
            except KafkaException:
                admin.poll(0)
                if refused or time.monotonic() >= deadline:
                    raise
        if topic in metadata.topics:
            return
        admin.create_topics([NewTopic(topic, 1)], operation_timeout=timeout)[topic].result()
        log.info("created topic %s", topic)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callbacks: a refused login is why, not worth a warning
        if refused:
            raise KafkaException(refused[-1]) from None
        error = exc.args[0]
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            log.warning("could not check or create topic %s: %s", topic, error)


def _source(message: Message) -> str:
    return f"{message.topic()}:{message.partition()}:{message.offset()}"


# Errors no retry will cure: the listener stops with the error instead of spinning.
_FATAL_CODES = (
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION, KafkaError._SSL,
)


def _raise_if_fatal(error: KafkaError) -> None:
    """A client's ``error_cb``: end the poll() that served it on an error no retry cures."""
    if _is_fatal(error):
        raise KafkaException(error)
    # librdkafka retries connections by itself; it says "all brokers down" once per outage
    log.log(logging.WARNING if error.code() == KafkaError._ALL_BROKERS_DOWN else logging.DEBUG, "Kafka: %s", error.str())


def _is_fatal(error: KafkaError) -> bool:
    # Everything else (broker down, a topic the engine has not created yet, ...) librdkafka
    # retries by itself; the listener logs it and keeps polling.
    return error.fatal() or error.code() in _FATAL_CODES


# -- the listener -----------------------------------------------------------------------------


class Listener:
    def __init__(
        self,
        kafka: dict[str, Any],
        action: Action,
        *,
        topic: str = DEFAULT_TOPIC,
        group: str = DEFAULT_GROUP,
        state_dir: str | Path = ".driftline-listener",
        max_retries: int = 5,
        failure_topic: str = DEFAULT_FAILURE_TOPIC,
        backoff: Backoff = Backoff(),
        poll_interval: float = 0.5,
    ):
        self.action = action
        self.topic = topic
        self.group = group
        self.max_retries = max_retries
        self.failure_topic = failure_topic
        self.backoff = backoff
        self.poll_interval = poll_interval
        self.kafka = dict(kafka)
        self.handled = HandledLog(Path(state_dir) / f"handled-{_safe_filename(group)}.jsonl")
        # Errors no retry cures (a refused login, ...) end the listener through poll(); librdkafka's
        # own lines go to logging (shown with --debug), not straight to stderr.
        clients = {"error_cb": _raise_if_fatal, "logger": librdkafka_log}
        self.consumer = Consumer({**consumer_settings(kafka, group), **clients})
        self.producer = Producer({**producer_settings(kafka), **clients})
        self.counts = collections.Counter()  # succeeded, failed, duplicate, invalid
        self._stop = threading.Event()

    def run(self, stop: threading.Event | None = None) -> None:
        """Handle triggers until ``stop`` is set (a running action is finished first)."""
        stop = self._stop = stop or threading.Event()
        ensure_topic(self.kafka, self.failure_topic)
        self.consumer.subscribe([self.topic])
        log.info("listening on %s as group %s; %d triggers already handled", self.topic, self.group, len(self.handled))
        try:
            while not stop.is_set():
                message = self.consumer.poll(self.poll_interval)
                if message is None:
                    continue
                if message.error():
                    self._on_error(message.error())
                    continue
                try:
                    self._run_paused(lambda: self._handle(message))
                except Stopped as exc:
                    log.info("%s; not committed, so the next start runs it again", exc)
                    break
                self._commit(message)
        finally:
            self.close()

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)
        self.handled.close()

    def _on_error(self, error: KafkaError) -> None:
        if _is_fatal(error):
            raise KafkaException(error)
        log.warning("Kafka: %s", error.str())

    def _handle(self, message: Message) -> None:
        payload, source = message.value() or b"", _source(message)
        try:
            event = decode_trigger(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("%s: not a valid trigger (%s); sent to %s", source, exc, self.failure_topic)
            self._publish_failure(message, None, f"invalid trigger: {exc}", attempts=0)
            self.counts["invalid"] += 1
            return
        if event.trigger_id in self.handled:
            log.info("trigger %s (%s) already handled; skipping the redelivery", event.trigger_id, source)
            self.counts["duplicate"] += 1
            return
        log.info("trigger %s: %s %s=%g (threshold %g); running the action",
                 event.trigger_id, event.rule, event.metric, event.value, event.threshold)
        error, attempts = run_with_retries(self.action, event, payload, self.max_retries, self.backoff,
                                           sleep=self._stop.wait)
        if error is None:
            self.handled.record(event.trigger_id, "succeeded", source)
            self.counts["succeeded"] += 1
            log.info("trigger %s: action succeeded (attempt %d)", event.trigger_id, attempts)
            return
        log.error("trigger %s: action failed after %d attempts: %s; sent to %s",
                  event.trigger_id, attempts, error, self.failure_topic)
        self._publish_failure(message, event, error, attempts)
        self.handled.record(event.trigger_id, "failed", source)
        self.counts["failed"] += 1

    def _publish_failure(self, message: Message, event: TriggerEvent | None, error: str, attempts: int) -> None:
        record = {
            "error": error,
            "attempts": attempts,
            "failed_at": _now_iso(),
            "group": self.group,
            "source": {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()},
            "trigger": msgspec.to_builtins(event) if event else None,
            "raw": None if event else (message.value() or b"").decode("utf-8", "replace"),
        }
        delivery: list[KafkaError | None] = []
        self.producer.produce(self.failure_topic, key=message.key(), value=json.dumps(record).encode(),
                              on_delivery=lambda err, _msg: delivery.append(err))
        self.producer.flush(30)
        if not delivery or delivery[0] is not None:
            reason = delivery[0].str() if delivery else "not delivered within 30s"
            raise ListenerError(f"could not write to failure topic {self.failure_topic}: {reason}")

    def _commit(self, message: Message) -> None:
        pause = float(os.environ.get(PAUSE_BEFORE_COMMIT_ENV, "0") or 0)
        if pause:
            time.sleep(pause)
        next_offset = TopicPartition(message.topic(), message.partition(), message.offset() + 1)
        try:
            self.consumer.commit(offsets=[next_offset], asynchronous=False)
        except KafkaException as exc:
            # E.g. the partition was revoked while the action ran; the record still
            # keeps this listener from running the trigger twice.
            log.warning("%s: offset commit failed: %s", _source(message), exc.args[0])

    def _run_paused(self, work: Callable[[], None]) -> None:
        """Run ``work`` in a thread while polling the paused consumer to keep the group membership."""
        failure: list[BaseException] = []

        def target() -> None:
            try:
                work()
            except BaseException as exc:  # re-raised in this thread below
                failure.append(exc)

        worker = threading.Thread(target=target, name="driftline-action", daemon=True)
        assigned = self.consumer.assignment()
        self.consumer.pause(assigned)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(self.poll_interval)
                self._hold_back(self.consumer.poll(0))
        finally:
            self.consumer.resume(self.consumer.assignment())
        if failure:
            raise failure[0]

    def _hold_back(self, message: Message | None) -> None:
        """A message polled while busy (a partition assigned meanwhile, so not paused): rewind and pause it."""
        if message is None:
            return
        if message.error():
            self._on_error(message.error())
            return
        partition = TopicPartition(message.topic(), message.partition(), message.offset())
        self.consumer.pause([partition])
        self.consumer.seek(partition)


def _safe_filename(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# -- tail -------------------------------------------------------------------------------------


def format_trigger(event: TriggerEvent) -> str:
    """One line a person can read: when, what, how bad, against what, and the top drifted features."""
    evidence = event.evidence
    version = f"@{event.model_version}" if event.model_version else ""
    op = evidence.get("op", "vs")
    breach = f"{event.metric} fired" if op == "fired" else f"{event.metric}={event.value:.4g} {op} {event.threshold:.4g}"
    parts = [event.triggered_at, f"{event.model_id}{version}", f"{event.rule} [{event.severity}]", breach]
    details = []
    for key, label in (("baseline", "baseline"), ("n", "n"), ("p_value", "p"), ("detector", "detector")):
        if evidence.get(key) is not None:
            value = evidence[key]
            details.append(f"{label}={value:.4g}" if isinstance(value, float) else f"{label}={value}")
    if details:
        parts.append(f"({', '.join(details)})")
    parts.append(f"window {event.window.start}..{event.window.end} count={event.window.count}")
    top = evidence.get("top_features") or []
    if top:
        parts.append("top: " + ", ".join(_feature_text(f) for f in top))
    parts.append(f"id={event.trigger_id}")
    return " ".join(parts)


def _feature_text(feature: dict[str, Any]) -> str:
    value = feature.get("value")
    text = f"{feature.get('feature')} {feature.get('kind')}={value:.3g}" if isinstance(value, (int, float)) else \
        f"{feature.get('feature')} {feature.get('kind')}"
    if feature.get("p_value") is not None:
        text += f" p={feature['p_value']:.2g}"
    return text


def tail(
    kafka: dict[str, Any],
    topic: str = DEFAULT_TOPIC,
    *,
    as_json: bool = False,
    from_beginning: bool = False,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
    max_messages: int | None = None,
) -> int:
    """Print triggers as they arrive; returns how many were printed. Commits nothing."""
    stop = stop or threading.Event()
    group = f"driftline-tail-{uuid.uuid4().hex[:12]}"
    consumer = Consumer({**consumer_settings(kafka, group, offset_reset="earliest" if from_beginning else "latest"),
                         "error_cb": _raise_if_fatal, "logger": librdkafka_log})
    consumer.subscribe([topic])
    printed = 0
    try:
        while not stop.is_set() and (max_messages is None or printed < max_messages):
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if _is_fatal(message.error()):
                    raise KafkaException(message.error())
                log.warning("Kafka: %s", message.error().str())
                continue
            try:
                event = decode_trigger(message.value() or b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                print(f"{_source(message)}: not a valid trigger: {exc}", file=sys.stderr)
                continue
            print(encode_trigger(event).decode() if as_json else format_trigger(event), file=out, flush=True)
            printed += 1
    finally:
        consumer.close()
    return printed
