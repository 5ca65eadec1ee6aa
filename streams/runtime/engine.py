"""The default engine: confluent-kafka, batches, exactly once.

The loop, as in confluent-kafka-python's ``examples/eos_transactions.py``::

    consume a batch -> pipeline (decode, dead letters, Monitor, triggers) -> produce the outputs
    every commit interval, one partition at a time (the intervals of the partitions staggered):
        produce its state checkpoint, send its input offsets to the transaction, commit
    as soon as a partition's events made a trigger (at most one such commit per
    trigger_commit_min_interval_ms):
        the same for the partitions that produced outputs since the last commit only
    while a commit's round trips to the broker run (in a thread of their own):
        go on consuming and handing events to the Monitors; hold their outputs for the next
        transaction

A partition's input offsets and state checkpoint commit together with the triggers and dead
letters its events produced (a transaction holds the partitions it commits and every partition
that produced outputs since the last commit), so a crash anywhere loses nothing and publishes
nothing twice (downstream reads with ``isolation.level=read_committed``). On partition
assignment the engine restores each partition's Monitor from the state store before it consumes.
Around the loop, each in its own module: the pipeline (:mod:`~streams.runtime.pipeline`), the
input pairs and their aligner (:mod:`~streams.runtime.inputs`), the state store
(:mod:`~streams.runtime.state`) and broker health (:mod:`~streams.runtime.health`).
"""
from __future__ import annotations

import itertools
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from retrain_trigger.events import TriggerEvent

from streams.core.codecs import InvalidEvent, encode_trigger
from streams.core.config import Config
from streams.core.monitor import Monitor, Source
from streams.runtime.admin import STATE_MAX_BYTES, ensure_topics, leave_group, librdkafka_log
from streams.runtime.exporter import Exporter
from streams.runtime.health import COMMIT_TIMEOUT, BrokerHealth, BrokerLost, export_lag
from streams.runtime.inputs import AlignedInputs
from streams.runtime.pipeline import Pipeline, dead_letter_headers
from streams.runtime.state import Checkpoint, KafkaStateStore

__all__ = ["BrokerLost", "Engine"]

log = logging.getLogger("driftline.engine")


class Engine:
    """One engine instance: a consumer of both input topics, a transactional producer, and a
    Monitor per owned input partition."""

    def __init__(self, config: Config, exporter: Exporter | None = None, instance: str = "0"):
        self.config = config
        self.exporter = exporter or Exporter(config)
        self.topics = config.topics
        group = config.engine.group_id
        self.transactional_id = config.engine.transactional_id or f"{group}-{socket.gethostname()}-{instance}"
        # Static membership: a restarted instance rejoins under the same id and gets its
        # partitions back at once, with no rebalance and no wait for its old session to expire.
        self.group_instance_id = f"{group}-{socket.gethostname()}-{instance}"
        self.health = BrokerHealth(config, answers=self._broker_answers)
        self.consumer = Consumer(_consumer_settings(config, self.group_instance_id, self.health))
        self.producer = Producer(_producer_settings(config, self.transactional_id, self.health))
        self.pipeline = Pipeline(config, outputs=self, metrics=self.exporter)
        self.inputs = AlignedInputs(config, self.consumer)
        self.store = KafkaStateStore(config, self.producer, sized=self.exporter.set_checkpoint_bytes)
        self.monitors: dict[int, Monitor] = {}
        self.stopping = False
        #: partition -> events handed to its Monitor since its last commit
        self.events_since_commit: dict[int, int] = {}
        #: partition -> when (monotonic seconds) its last commit ended
        self.committed_at: dict[int, float] = {}
        #: a trigger was produced into the open transaction (it commits as soon as allowed)
        self.trigger_pending = False
        #: partitions that produced triggers or dead letters into the open transaction
        self.produced: set[int] = set()
        #: when the last commit that carried a trigger ended, and when the last one the commit
        #: interval called for began
        self.last_trigger_commit = self.last_interval_commit = self.started = time.monotonic()
        self._prepared = False  # checkpoints and offsets are in the open transaction
        self._prepared_partitions: set[int] | None = None  # ... of these partitions (None: all)
        #: partition -> its events handed on when the commit in the open transaction was prepared
        self._prepared_counts: dict[int, int] = {}
        #: a commit whose broker round trips run while the step goes on (see :meth:`_commit_in_flight`)
        self._flight: _Flight | None = None
        #: outputs made while a commit is in flight, ``(topic, value, key, headers)``: produced
        #: when the next transaction begins, with the partitions that made them and whether a
        #: trigger is among them
        self._held: list[tuple[str, bytes | None, bytes | str | None, list | None]] = []
        self._held_partitions: set[int] = set()
        self._held_trigger = False
        self._first_batch_logged = False

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until SIGTERM/SIGINT; then commit what was processed and return."""
        # Before connecting: a stop that comes while the topics are created still ends cleanly.
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self.health.retry(self._connect)
        self.consumer.subscribe([self.topics.predictions, self.topics.labels],
                                on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.producer.begin_transaction()
        self.exporter.up.set(1)
        log.info("consuming %s and %s as %s", self.topics.predictions, self.topics.labels, self.transactional_id)
        # A commit in flight needs the GIL between its broker calls: by default the loop, busy
        # in Python, lets it go 5 ms after it is asked, and a trigger's commit waits that long.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        try:
            while not self.stopping:
                self.step()
            self._final_commit()
        except BrokerLost:
            # No goodbye to a broker that is gone: closing would block on it. The open
            # transaction times out on the broker; the next instance fences it anyway.
            self.exporter.up.set(0)
            raise
        finally:
            sys.setswitchinterval(switch_interval)
        self.exporter.up.set(0)
        if self.config.engine.leave_group_on_stop:
            leave_group(self.consumer, self.config, self.group_instance_id)
        self.consumer.close()

    def step(self) -> None:
        """Consume a batch; hand what the input pairs release to the pipeline; commit when a
        batch made a trigger or the commit interval is up."""
        messages = self._consume()
        self.health.check()
        self._land(wait=False)
        if messages:
            self._buffer(messages)
        # While a prepared commit that failed waits for the broker, nothing more goes into its
        # transaction: the events wait in their pairs (flow control pauses what fills up).
        for partition, items in [] if self._prepared else self.inputs.release(self.monitors):
            self.events_since_commit[partition] = self.events_since_commit.get(partition, 0) + len(items)
            if self.pipeline.hand_over(self.monitors[partition], items):
                self._made_outputs(partition, trigger=True)
            self._first_batch()
            # A trigger is readable (read_committed) once its transaction commits: not a commit
            # interval later, nor after the rest of the batch, but now (or as soon as the bound
            # on trigger commits allows; a commit in flight that lands lets it go).
            if self._land(wait=False) and self._trigger_commit_due() and self.health.up:  # no commit into the void
                self._commit_in_flight(self.produced)
            if self._prepared:
                # That commit failed and waits for the broker: the pairs not handed on yet keep
                # their items (and offsets) for a later step, rather than putting outputs of
                # their partitions into a transaction that holds neither their checkpoints nor
                # offsets.
                break
        self.inputs.flow_control(self.monitors)
        self.exporter.refresh()
        if self.health.up and self._land(wait=False):
            due = self._interval_commit_due()
            if due is not None:
                self._commit_in_flight(self.produced | {due})
            elif self._trigger_commit_due() or self._prepared:
                self._commit_in_flight(self.produced)

    def _consume(self) -> list[Message]:
        """The next batch: what comes in within ``batch_wait_ms`` (at once when a full batch is
        fetched already). When nothing does, wait for the first message rather than for a full
        batch, and take it with whatever came along: a label that arrives on quiet topics goes
        on at once, and one on busy topics waits at most ``batch_wait_ms`` for its batch."""
        size = self.config.engine.batch_size
        messages = self.consumer.consume(size, self.config.engine.batch_wait_ms / 1000)
        if messages:
            return messages
        first = self.consumer.poll(self._idle_timeout())
        if first is None:
            return []
        return [first, *self.consumer.consume(size - 1, 0)] if size > 1 else [first]

    def _idle_timeout(self) -> float:
        """How long to wait for a message: the inputs' poll timeout, cut short when a trigger
        commit or a partition's commit for the interval falls due before it.

        Only a commit that can begin cuts it short: none begins while one is in flight (the
        wait is then a short one, to look for the landing) or while the broker is away. A commit
        due that cannot begin would cut every wait to nothing, and the loop would spin, a core
        busy for nothing, for as long (a whole outage of the broker, with a trigger waiting)."""
        timeout = self.inputs.poll_timeout()
        if self._flight is not None:  # wake up soon after it lands: its trigger commit may follow
            return min(timeout, _FLIGHT_POLL_S)
        if not self.health.up:  # no commits while the broker is away: no wake-ups for them
            return timeout
        now = time.monotonic()
        if self.trigger_pending:
            timeout = min(timeout, max(0.0, self._trigger_commit_at() - now))
        if self.monitors:
            timeout = min(timeout, max(0.0, self._next_turn()[1] - now))
        return timeout

    def commit(self, partitions: set[int] | None = None) -> bool:
        """Checkpoint every owned partition's state, add the input offsets, commit, begin anew.

        With ``partitions`` (a partition's turn in the interval, or a commit for a trigger), only
        those partitions' states and offsets: each partition's Monitor is its own, so a
        partition whose state and offsets stay at its last commit is as consistent as before,
        provided it produced nothing into this transaction (``partitions`` holds every one that
        did: :attr:`produced`). A checkpoint of one partition costs a fraction of all of them.

        A retriable failure (broker unreachable) leaves the transaction open to be committed
        later (what it prepared first, then the partitions asked for now); one that requires an
        abort aborts it and rewinds the Monitors and the consumer to the last committed
        checkpoint, so nothing is lost and nothing counted twice.
        """
        self._land()
        if self._prepared and partitions != self._prepared_partitions:
            prepared = self._prepared_partitions
            if not self.commit(prepared):
                return False
            if prepared is None or (partitions is not None and partitions <= prepared):
                return True
        started = time.perf_counter()
        try:
            # else a commit that failed retriably: its offsets are in, commit what it prepared
            offsets = [] if self._prepared else self._prepare(partitions)
            _send_and_commit(self.producer, self.health, offsets, self.consumer.consumer_group_metadata(),
                             sent=lambda: setattr(self, "_prepared", True))
        except KafkaException as exc:
            self._commit_failed(exc.args[0])
            return False
        self._committed(started)
        return True

    def _commit_in_flight(self, partitions: set[int]) -> None:
        """:meth:`commit`, with the broker's round trips (the input offsets, the commit) in a
        thread of their own while the step goes on reading and handing events to the Monitors.

        The checkpoints and offsets go into the transaction first, so it holds the state as of
        now; what the Monitors make meanwhile (triggers, dead letters) is held and produced
        once the next transaction begins, with the checkpoints and offsets of the events that
        made it, as if the loop had waited. The loop then waits for the broker only when it
        commits again before the last commit lands. A commit that failed retriably is retried
        as :meth:`commit` retries it."""
        self._land()
        if self._prepared:
            self.commit(partitions)
            return
        started = time.perf_counter()
        try:
            offsets = self._prepare(partitions)
        except KafkaException as exc:
            self._commit_failed(exc.args[0])
            return
        self._flight = _Flight(self.producer, self.health, offsets, self.consumer.consumer_group_metadata(), started)

    def _land(self, wait: bool = True) -> bool:
        """End the commit in flight, if any: wait for it (with ``wait=False``, only if it is
        done). Returns whether no commit is in flight now."""
        flight = self._flight
        if flight is None:
            return True
        if not wait and flight.thread.is_alive():
            return False
        flight.thread.join()
        self._flight = None
        if flight.error is None:
            self._prepared = True
            self._committed(flight.started, flight.ended)
            return True
        self._prepared = flight.prepared  # a failed commit_transaction leaves its offsets in
        self._commit_failed(flight.error)
        if self._flight is None and not self._prepared and self._held:
            # The offsets did not go in and the transaction is still open: the held outputs go
            # into it, and commit with the checkpoints and offsets of a later commit.
            self._release_held()
        return True

    def _prepare(self, partitions: set[int] | None) -> list[TopicPartition]:
        """Write the checkpoints of ``partitions`` (None: all) into the open transaction and
        return their input offsets to commit with them."""
        partitions = None if partitions is None else set(partitions)
        for partition, monitor in self.monitors.items():
            if partitions is None or partition in partitions:
                self.store.write(partition, Checkpoint(monitor.dirty_states()))
        self._prepared_partitions = partitions
        owned = self.monitors if partitions is None else partitions & self.monitors.keys()
        self._prepared_counts = {partition: self.events_since_commit.get(partition, 0) for partition in owned}
        return self.inputs.commit_offsets(self._assignment(partitions))

    def _assignment(self, partitions: set[int] | None) -> list[TopicPartition]:
        assignment = self.consumer.assignment()
        return assignment if partitions is None else [tp for tp in assignment if tp.partition in partitions]

    def _committed(self, started: float, ended: float | None = None) -> None:
        """The prepared transaction committed (between ``started`` and ``ended``, by
        ``time.perf_counter()``; None: now): begin the next one, with the outputs held."""
        partitions = self._prepared_partitions
        self.store.committed()
        self._prepared = False
        self.producer.begin_transaction()
        self.health.reachable()
        self.exporter.commit_seconds.observe((time.perf_counter() if ended is None else ended) - started)
        now = time.monotonic()
        if self.trigger_pending:
            self.trigger_pending, self.last_trigger_commit = False, now
        if partitions is None:
            self.produced.clear()
        else:
            self.produced.difference_update(partitions)
        for partition, count in self._prepared_counts.items():
            # the events handed on while the commit was in flight are for the next one
            self.events_since_commit[partition] = max(0, self.events_since_commit.get(partition, 0) - count)
            self.committed_at[partition] = now
        self._prepared_counts = {}
        self._release_held()
        export_lag(self.exporter.set_consumer_lag, self.inputs.positions(self._assignment(partitions)),
                   self.inputs.highwater)

    def _made_outputs(self, partition: int, trigger: bool = False) -> None:
        """Note that ``partition``'s events produced outputs (a trigger among them): into the
        open transaction, or held while a commit is in flight."""
        if self._flight is not None:
            self._held_partitions.add(partition)
            self._held_trigger |= trigger
        else:
            self.produced.add(partition)
            self.trigger_pending |= trigger

    def _produce(self, topic: str, value: bytes | None, key: bytes | str | None, headers: list | None = None) -> None:
        if self._flight is not None:  # the transaction is committing: nothing can go into it
            self._held.append((topic, value, key, headers))
        else:
            self.producer.produce(topic, value, key=key, headers=headers)

    def _release_held(self) -> None:
        """Produce the outputs held while a commit was in flight into the open transaction."""
        held, partitions, trigger = self._take_held()
        for topic, value, key, headers in held:
            self.producer.produce(topic, value, key=key, headers=headers)
        self.produced |= partitions
        self.trigger_pending |= trigger

    def _take_held(self) -> tuple[list, set[int], bool]:
        """The held outputs, the partitions that made them and whether a trigger is among them;
        none are held after."""
        taken = self._held, self._held_partitions, self._held_trigger
        self._held, self._held_partitions, self._held_trigger = [], set(), False
        return taken

    def _buffer(self, messages: list[Message]) -> None:
        """A consumed batch, decoded and buffered in its pairs: a consumed batch is runs of
        messages of one partition, and each run is decoded and buffered at once."""
        if any(map(Message.error, messages)):
            for msg in messages:
                if msg.error():
                    self.health.on_message_error(msg)
            messages = [msg for msg in messages if not msg.error()]
        offsets, values = list(map(Message.offset, messages)), list(map(Message.value, messages))
        if not all(values):  # a null value (a tombstone) decodes as empty bytes: invalid_json
            values = [value or b"" for value in values]
        start = 0
        for (topic, partition), run in itertools.groupby(zip(map(Message.topic, messages),
                                                             map(Message.partition, messages))):
            end = start + sum(1 for _ in run)
            run_offsets = offsets[start:end]
            items = self.pipeline.decode_run(topic, partition, run_offsets, values[start:end], messages[start:end])
            self.inputs.buffer(topic, partition, run_offsets, items)
            start = end

    def _interval_commit_due(self) -> int | None:
        """The partition whose commit is due: ``commit_every_ms`` since its last commit (the
        longest ago first, at most one per ``commit_every_ms / partitions``), else one with its
        share of ``commit_every_events`` handed on since. One partition per step: committing all
        partitions at once stalls the loop for all their checkpoints, and every label that
        arrives meanwhile waits for it; a partition at a time spreads that over the interval.
        A partition with nothing handed on and nothing produced since its last commit has
        nothing to commit: its turn passes without a transaction."""
        if not self.monitors:
            return None
        engine, now = self.config.engine, time.monotonic()
        stalest, turn_at = self._next_turn()
        if now >= turn_at:
            self.last_interval_commit = now
            if self.events_since_commit.get(stalest, 0) or stalest in self.produced:
                return stalest
            self.committed_at[stalest] = now
        busiest = max(self.monitors, key=lambda p: self.events_since_commit.get(p, 0))
        if self.events_since_commit.get(busiest, 0) >= engine.commit_every_events / len(self.monitors):
            return busiest
        return None

    def _next_turn(self) -> tuple[int, float]:
        """The partition whose turn in the interval comes next (the one committed longest ago)
        and when (monotonic seconds): its ``commit_every_ms`` is up, and a share of the interval
        has passed since the last turn. Only while partitions are owned."""
        interval = self.config.engine.commit_every_ms / 1000
        stalest = min(self.monitors, key=lambda p: self.committed_at.get(p, self.started))
        return stalest, max(self.committed_at.get(stalest, self.started) + interval,
                            self.last_interval_commit + interval / len(self.monitors))

    def _trigger_commit_at(self) -> float:
        """The earliest a commit for a trigger may start (monotonic seconds): the bound is on
        commits for triggers; one the commit interval called for does not hold the next back."""
        return self.last_trigger_commit + self.config.engine.trigger_commit_min_interval_ms / 1000

    def _trigger_commit_due(self) -> bool:
        return self.trigger_pending and time.monotonic() >= self._trigger_commit_at()

    def _first_batch(self) -> None:
        if not self._first_batch_logged:
            self._first_batch_logged = True
            log.info("first events handed to the Monitor, %.2fs after start", time.monotonic() - self.started)

    # -- the pipeline's outputs: in the open transaction ------------------------------------
    def dead_letter(self, message: Message, source: Source, error: InvalidEvent) -> None:
        self._made_outputs(source.partition)
        self._produce(self.topics.dlq, message.value(), message.key(),
                      dead_letter_headers(error.reason, error.detail, source))

    def trigger(self, trigger: TriggerEvent) -> None:
        self._produce(self.topics.triggers, encode_trigger(trigger), trigger.model_id)

    # -- starting and stopping --------------------------------------------------------------
    def _connect(self) -> None:
        """Create missing topics and fence older instances (retried within the broker budget)."""
        ensure_topics(self.config)
        self.producer.init_transactions(COMMIT_TIMEOUT)

    def _request_stop(self, signum, frame) -> None:
        log.info("signal %s: draining and committing", signum)
        self.stopping = True

    def _final_commit(self) -> None:
        deadline = time.monotonic() + self.config.engine.broker_retry_budget_seconds
        while not self.commit():
            if time.monotonic() > deadline:
                raise BrokerLost(f"could not commit the last transaction to Kafka at "
                                 f"{self.config.kafka.get('bootstrap.servers')} before stopping; the events "
                                 "since the last commit will be processed again on restart")
            time.sleep(0.5)

    def _broker_answers(self) -> bool:
        try:
            return bool(self.consumer.list_topics(self.topics.predictions, timeout=1).brokers)
        except KafkaException:
            return False

    # -- failed transactions ----------------------------------------------------------------
    def _commit_failed(self, err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)
        if err.txn_requires_abort():
            log.warning("transaction aborted (%s); rewinding to the last checkpoint", err.str())
            self._abort()
            self._rewind()
            return
        # Retriable: the broker is unreachable or slow. Keep the transaction; try again later.
        self.health.unreachable(err.str())
        self.last_trigger_commit = self.last_interval_commit = time.monotonic()

    def _abort(self) -> None:
        self._land()
        self._prepared = False
        # Its outputs are gone with it, and those held for the next; processed again, they
        # note themselves again.
        self.trigger_pending = False
        self.produced.clear()
        self._take_held()
        self.store.aborted()
        try:
            with self.health.guard("abort_transaction"):
                self.producer.abort_transaction(COMMIT_TIMEOUT)
            self.producer.begin_transaction()
        except KafkaException as exc:
            log.warning("abort failed: %s", exc)

    def _rewind(self) -> None:
        """Back to the last committed state: Monitors from the state store, consumer to committed offsets."""
        assignment = self.consumer.assignment()
        self.inputs.rewind()
        for p in {tp.partition for tp in assignment}:
            self.monitors[p] = self._restore(p)
        for tp in self.consumer.committed(assignment, timeout=COMMIT_TIMEOUT):
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
        self.events_since_commit.clear()
        self.committed_at = dict.fromkeys(self.monitors, time.monotonic())

    def _restore(self, partition: int) -> Monitor:
        """The partition's Monitor as its last committed checkpoint left it."""
        checkpoint = self.store.read(partition)
        if checkpoint.models:
            log.info("restored partition %d: %d models (%d bytes)", partition, len(checkpoint.models),
                     checkpoint.nbytes, extra={"partition": partition})
        return self.pipeline.monitor(checkpoint.models, partition)

    # -- rebalances -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.inputs.assigned()
        for p in {tp.partition for tp in partitions}:
            if p not in self.monitors:
                self.monitors[p] = self._restore(p)
                self.committed_at[p] = time.monotonic()
        log.info("assigned partitions %s", sorted({tp.partition for tp in partitions}))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we processed for these partitions before another instance takes them;
        # if that fails, abort: the next owner restarts from the last committed checkpoint.
        try:
            committed = self.commit()
        except KafkaException as exc:
            log.warning("commit on revoke failed: %s", exc)
            committed = False
        if not committed:
            self._abort()
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._abort()
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Drop revoked or lost partitions: their Monitors and what their pairs buffered (not
        committed, so their next owner reads it again)."""
        for p in {tp.partition for tp in partitions}:
            self.exporter.forget(self.monitors.pop(p).models if p in self.monitors else (), [p])
            self.events_since_commit.pop(p, None)
            self.committed_at.pop(p, None)
            self.produced.discard(p)
        self.inputs.forget(partitions)


#: how long the loop waits for a message while a commit is in flight (it looks for the landing
#: between waits)
_FLIGHT_POLL_S = 0.002

#: the interpreter's switch interval while the engine runs: how long another thread that wants
#: the GIL (the commit in flight, the metrics server) waits for the loop to let it go
_SWITCH_INTERVAL_S = 0.0005


class _Flight:
    """A commit's broker round trips (send the input offsets, commit the transaction) in a thread
    of their own: the transaction holds its checkpoints and outputs already.

    Parameters
    ----------
    producer, health
        The engine's transactional producer, and the broker health that watches its calls.
    offsets, group
        The input offsets to commit and the consumer's group metadata (taken in the loop's
        thread).
    started
        When the commit began (``time.perf_counter()``).
    """

    def __init__(self, producer: Producer, health: BrokerHealth, offsets: list[TopicPartition], group,
                 started: float):
        self.started = started
        #: the offsets are in the transaction (a commit_transaction that fails leaves them in)
        self.prepared = False
        #: the error the calls ended with (None: committed), and when they ended
        self.error: KafkaError | None = None
        self.ended = started
        self.thread = threading.Thread(target=self._run, args=(producer, health, offsets, group),
                                       name="driftline-commit", daemon=True)
        self.thread.start()

    def _run(self, producer: Producer, health: BrokerHealth, offsets: list[TopicPartition], group) -> None:
        try:
            _send_and_commit(producer, health, offsets, group, sent=lambda: setattr(self, "prepared", True))
        except KafkaException as exc:
            self.error = exc.args[0]
        self.ended = time.perf_counter()


def _send_and_commit(producer: Producer, health: BrokerHealth, offsets: list[TopicPartition], group,
                     sent: Callable[[], None]) -> None:
    """A prepared transaction's round trips to the broker, each watched by ``health``: its input
    offsets (none: they are in already), then the commit. ``sent()`` once the offsets are in: a
    commit_transaction that fails retriably leaves them in, and its retry only commits."""
    if offsets:
        with health.guard("send_offsets_to_transaction"):
            producer.send_offsets_to_transaction(offsets, group, COMMIT_TIMEOUT)
    sent()
    with health.guard("commit_transaction"):
        producer.commit_transaction(COMMIT_TIMEOUT)


def _consumer_settings(config: Config, instance_id: str, health: BrokerHealth) -> dict:
    return {
        # librdkafka prefetches up to 64 MB by default, many batches ahead; a quarter of that
        # keeps the pipe full (a [kafka] setting overrides it) ...
        "queued.max.messages.kbytes": 16384,
        # ... provided a full queue delays the next fetch briefly: with the default 1000 ms
        # the engine drains the queue and then waits on it, empty, for most of a second
        "fetch.queue.backoff.ms": 20,
        # librdkafka drops what it prefetched of a partition when flow control pauses it, and
        # the resumed partition joins the next fetch only when the one in flight returns, which
        # the broker holds up to fetch.wait.max.ms (default 500) while its partitions have
        # nothing new: meanwhile a pair waiting on that partition stalls the engine. A short
        # wait bounds that; an idle consumer then asks its broker 20 times a second.
        "fetch.wait.max.ms": 50,
        "session.timeout.ms": config.engine.session_timeout_ms,
        **config.kafka,
        "group.id": config.engine.group_id,
        "group.instance.id": instance_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # Range assigns partition p of both input topics to the same instance: co-partitioning.
        "partition.assignment.strategy": "range",
        "enable.partition.eof": False,
        "error_cb": health.on_error,
        "logger": librdkafka_log,
    }


def _producer_settings(config: Config, transactional_id: str, health: BrokerHealth) -> dict:
    return {
        # A transaction that begins while the broker still writes the previous one's commit
        # markers is told CONCURRENT_TRANSACTIONS when it adds the input offsets, and librdkafka
        # retries after retry.backoff.ms (default 100): a commit that follows another closely
        # (a trigger's right after a partition's turn) would wait that long for the broker's
        # few ms. Retries back off exponentially from here up to retry.backoff.max.ms; a
        # [kafka] setting overrides it.
        "retry.backoff.ms": 10,
        **config.kafka,
        "transactional.id": transactional_id,
        "linger.ms": 5,
        "partitioner": "murmur2_random",
        "transaction.timeout.ms": 60000,
        # The engine never polls its producer for delivery reports: commit_transaction serves
        # them while it flushes, each in Python, so the commit thread waits for the loop to
        # let go of the GIL once per message. A failed message fails the commit anyway.
        "delivery.report.only.error": True,
        # A model's checkpoint can be large (pending predictions of a long label TTL).
        "compression.type": "lz4",
        "message.max.bytes": STATE_MAX_BYTES,
        "error_cb": health.on_error,
        "logger": librdkafka_log,
    }
