"""Broker health, for both engines: is the broker answering, for how long has it not, when to
give up; a watchdog for Kafka calls that block past their timeout; the consumer lag gauges.

The default engine learns of trouble from librdkafka's error callback and from failed calls,
and asks the broker again before each batch while it is down; the Faust engine (aiokafka retries
forever and says nothing) asks on a timer. Either gives up with :class:`BrokerLost` once the
broker has been unreachable for ``engine.broker_retry_budget_seconds``; a state change is logged
once, not once per retry.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException, Message

from streams.core.config import Config

log = logging.getLogger("driftline.health")

#: errors that mean the broker is not answering (retried within the budget, logged once)
BROKER_DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._TIMED_OUT)
COMMIT_TIMEOUT = 10.0  # seconds one transaction call may block


class BrokerLost(RuntimeError):
    """The broker stayed unreachable past the configured retry budget."""


class CallWatchdog:
    """Ends the process with one line when a blocking Kafka call outlives its limit.

    librdkafka's ``send_offsets_to_transaction`` can block far past its timeout while the group
    coordinator is down (confluentinc/librdkafka#5456: minutes after the broker was killed),
    which would hold the engine past its retry budget. The open transaction is never committed,
    so leaving is safe: the broker aborts it, the next instance fences it.
    """

    def __init__(self, message: str, on_stall: Callable[[str, float], None]):
        self.message = message
        self.on_stall = on_stall
        self._deadline: float | None = None
        self._stall_at: float | None = None
        self._call = ""
        threading.Thread(target=self._watch, name="driftline-call-watchdog", daemon=True).start()

    @contextmanager
    def guard(self, call: str, timeout_s: float, limit_s: float):
        """Watch one call: past ``timeout_s`` it is reported once as a stall (the broker is
        not answering), past ``limit_s`` the process ends."""
        started = time.monotonic()
        self._call, self._stall_at, self._deadline = call, started + timeout_s, started + limit_s
        try:
            yield
        finally:
            self._deadline = self._stall_at = None

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            deadline, stall_at, now = self._deadline, self._stall_at, time.monotonic()
            if deadline is None:
                continue
            if stall_at is not None and now > stall_at:
                self._stall_at = None
                self.on_stall(self._call, now - stall_at)
            if now > deadline:
                print(f"driftline: {self.message} ({self._call} blocked past its timeout)", file=sys.stderr,
                      flush=True)
                os._exit(1)


class BrokerHealth:
    """Whether the broker answers, and since when it has not.

    Parameters
    ----------
    config
        ``engine.broker_retry_budget_seconds`` and the bootstrap servers (named in the messages).
    answers
        Asks the broker something small; True when it answered.
    on_change
        Called with False when the broker is found unreachable and True when it answers again.
    """

    def __init__(self, config: Config, answers: Callable[[], bool],
                 on_change: Callable[[bool], None] | None = None):
        self.budget = config.engine.broker_retry_budget_seconds
        self.bootstrap = config.kafka.get("bootstrap.servers")
        self.answers = answers
        self.on_change = on_change
        self.down_since: float | None = None
        self._watchdog: CallWatchdog | None = None

    @property
    def up(self) -> bool:
        """Not known to be unreachable (nothing is committed into the void while it is)."""
        return self.down_since is None

    @property
    def lost_message(self) -> str:
        return (f"Kafka at {self.bootstrap} unreachable for more than {self.budget:.0f}s "
                "(engine.broker_retry_budget_seconds); exiting")

    def unreachable(self, reason: str) -> None:
        if self.down_since is None:  # log once per state change
            self.down_since = time.monotonic()
            log.warning("broker unreachable (%s); retrying for up to %.0fs", reason, self.budget)
            if self.on_change is not None:
                self.on_change(False)

    def reachable(self) -> None:
        if self.down_since is not None:
            log.info("broker reachable again")
            self.down_since = None
            if self.on_change is not None:
                self.on_change(True)

    def check(self) -> None:
        """While the broker is thought down: :meth:`probe` it."""
        if self.down_since is not None:
            self.probe()

    def probe(self) -> None:
        """Ask the broker: it is reachable again, or still not (:class:`BrokerLost` once that
        has lasted past the budget)."""
        if self.answers():
            self.reachable()
            return
        self.unreachable(f"{self.bootstrap} does not answer")
        if time.monotonic() - self.down_since > self.budget:
            raise BrokerLost(self.lost_message)

    def retry(self, attempt: Callable[[], None]) -> None:
        """Call ``attempt`` until it raises no ``KafkaException``, retrying a non-fatal one within
        the budget; then :class:`BrokerLost` naming the broker and why."""
        deadline = time.monotonic() + self.budget
        backoff = 0.5
        while True:
            try:
                attempt()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.fatal() or time.monotonic() > deadline:
                    reason = err.str() if isinstance(err, KafkaError) else str(err)
                    raise BrokerLost(f"cannot reach Kafka at {self.bootstrap} (kafka.bootstrap.servers): "
                                     f"{reason}") from None
                self.unreachable((err if isinstance(err, KafkaError) else KafkaError(KafkaError._TRANSPORT)).str())
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(2 * backoff, 8.0)

    # -- librdkafka's reports ---------------------------------------------------------------
    def on_error(self, err: KafkaError) -> None:
        """librdkafka's ``error_cb``."""
        if err.code() in BROKER_DOWN:
            self.unreachable(err.str())
        elif err.fatal():
            raise KafkaException(err)

    def on_message_error(self, msg: Message) -> None:
        """A consumed message that is an error."""
        err = msg.error()
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.code() in BROKER_DOWN:  # logged once per state change, not once per message
            self.unreachable(err.str())
            return
        log.warning("consume error: %s", err.str())

    # -- blocking calls ---------------------------------------------------------------------
    def guard(self, call: str):
        """Watch a transaction call (a context manager): past :data:`COMMIT_TIMEOUT` it counts
        as the broker not answering; past that plus the budget the process ends (a call that
        honours its timeout never meets that limit)."""
        if self._watchdog is None:
            self._watchdog = CallWatchdog(self.lost_message, self._stalled)
        return self._watchdog.guard(call, COMMIT_TIMEOUT, COMMIT_TIMEOUT + self.budget)

    def _stalled(self, call: str, overdue_s: float) -> None:
        # From the watchdog's thread: a transaction call blocked past its timeout is the broker
        # not answering, and the error callback that would say so is not served meanwhile.
        self.unreachable(f"{call} blocked past its {COMMIT_TIMEOUT:.0f}s timeout")


def export_lag(set_lag: Callable[[str, int, int], None], positions: Iterable[tuple[str, int, int]],
               highwater: Callable[[str, int], int | None]) -> None:
    """Set each input partition's lag: its high watermark less the engine's position there.
    ``positions`` are ``(topic, partition, next offset to read)``; ``highwater(topic, partition)``
    is the partition's end as last fetched (None or below 0: not known). Best effort: a partition
    whose end cannot be had is skipped."""
    for topic, partition, position in positions:
        try:
            high = highwater(topic, partition)
        except Exception:  # noqa: BLE001 - lag is best effort
            continue
        if position >= 0 and high is not None and high >= 0:
            set_lag(topic, partition, max(0, high - position))
