"""The default engine: confluent-kafka, batches, one transaction per commit interval.

The loop, as in confluent-kafka-python's ``examples/eos_transactions.py``::

    consume a batch -> decode (bad ones to the DLQ) -> Monitor.process -> produce triggers
    every commit interval: produce state checkpoints, send_offsets_to_transaction, commit

Input offsets, triggers, dead letters and the state checkpoint of every owned partition commit
together, so a crash anywhere loses nothing and publishes nothing twice (downstream reads with
``isolation.level=read_committed``). On partition assignment the engine restores each
partition's Monitor from the compacted state topic before it consumes.
"""
from __future__ import annotations

import itertools
import logging
import signal
import socket
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from retrain_trigger.events import TriggerEvent

from streams.core.codecs import InvalidEvent, encode_trigger
from streams.core.config import Config
from streams.core.monitor import Monitor, Source
from streams.runtime.admin import STATE_MAX_BYTES, ensure_topics
from streams.runtime.align import LABELS, PREDICTIONS, Aligner, merge_key, rejected_key
from streams.runtime.exporter import Exporter
from streams.runtime.health import COMMIT_TIMEOUT, BrokerHealth, BrokerLost, export_lag
from streams.runtime.pipeline import Pipeline, dead_letter_headers
from streams.runtime.state import Checkpoint, KafkaStateStore

log = logging.getLogger("driftline.engine")
# librdkafka's own log lines (one per failed connection attempt) go here; the engine reports
# broker trouble itself, once per state change, so they show only with --debug.
librdkafka_log = logging.getLogger("driftline.librdkafka")


class Engine:
    def __init__(self, config: Config, exporter: Exporter | None = None, instance: str = "0"):
        self.config = config
        self.exporter = exporter or Exporter(config)
        self.topics = config.topics
        kafka = dict(config.kafka)
        group = config.engine.group_id
        self.transactional_id = config.engine.transactional_id or f"{group}-{socket.gethostname()}-{instance}"
        # Static membership: a restarted instance rejoins under the same id and gets its
        # partitions back at once, with no rebalance and no wait for its old session to expire.
        self.group_instance_id = f"{group}-{socket.gethostname()}-{instance}"
        self.health = BrokerHealth(config, answers=self._broker_answers)
        self.consumer = Consumer({
            # librdkafka prefetches up to 64 MB by default; a batch is ~2 MB, 16 MB keeps the pipe
            # full at a quarter of the memory (a [kafka] setting overrides it) ...
            "queued.max.messages.kbytes": 16384,
            # ... provided a full queue delays the next fetch briefly: the default 1000 ms left the
            # engine waiting on an empty queue (0.54x of the raw consumer's rate; 0.66x with 64 MB)
            "fetch.queue.backoff.ms": 20,
            "session.timeout.ms": config.engine.session_timeout_ms,
            **kafka,
            "group.id": group,
            "group.instance.id": self.group_instance_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # Range assigns partition p of both input topics to the same instance: co-partitioning.
            "partition.assignment.strategy": "range",
            "enable.partition.eof": False,
            "error_cb": self.health.on_error,
            "logger": librdkafka_log,
        })
        self.producer = Producer({
            **kafka,
            "transactional.id": self.transactional_id,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "transaction.timeout.ms": 60000,
            # A model's checkpoint can be large (pending predictions of a long label TTL).
            "compression.type": "lz4",
            "message.max.bytes": STATE_MAX_BYTES,
            "error_cb": self.health.on_error,
            "logger": librdkafka_log,
        })
        self.monitors: dict[int, Monitor] = {}
        self.store = KafkaStateStore(config, self.producer, sized=self.exporter.set_checkpoint_bytes)
        self.stopping = False
        self.events_since_commit = 0
        self.last_commit = time.monotonic()
        self._prepared = False  # checkpoints and offsets are in the open transaction
        self.pipeline = Pipeline(config, outputs=self, metrics=self.exporter)
        self.roles = {self.topics.predictions: PREDICTIONS, self.topics.labels: LABELS}
        self.aligner = Aligner(config.engine.max_idle_ms / 1000)
        #: input partitions paused because their pair holds a full batch of their events unreleased
        self.paused: set[tuple[str, int]] = set()
        self.started = time.monotonic()
        self._start_offsets: dict[tuple[str, int], int] = {}
        self._first_batch_logged = False

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until SIGTERM/SIGINT; then commit what was processed and return."""
        # Before connecting: a stop that comes while the topics are created still ends cleanly.
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self._connect()
        self.consumer.subscribe([self.topics.predictions, self.topics.labels],
                                on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.producer.begin_transaction()
        self.exporter.up.set(1)
        log.info("consuming %s and %s as %s", self.topics.predictions, self.topics.labels, self.transactional_id)
        try:
            while not self.stopping:
                self.step()
            self._final_commit()
        except BrokerLost:
            # No goodbye to a broker that is gone: closing would block on it. The open
            # transaction times out on the broker; the next instance fences it anyway.
            self.exporter.up.set(0)
            raise
        self.exporter.up.set(0)
        if self.config.engine.leave_group_on_stop:
            self._leave_group()
        self.consumer.close()

    def _leave_group(self, timeout: float = 10.0) -> None:
        """Leave the consumer group now, so the other instances take over the partitions.

        A static member's close() keeps its place (KIP-345: librdkafka sends no LeaveGroup when
        a static member terminates) until the session times out. An unsubscribe does send one,
        once its revocation is served, and only if close() has not begun: so serve it here
        until the broker no longer lists this instance in the group.
        """
        from confluent_kafka.admin import AdminClient

        self.consumer.unsubscribe()
        admin = AdminClient({**self.config.kafka, "logger": librdkafka_log})
        group = self.config.engine.group_id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.consumer.consume(1, 0.1)  # serves the revocation; nothing is assigned any more
            try:
                description = admin.describe_consumer_groups([group], request_timeout=2)[group].result()
            except KafkaException:
                continue
            if all(m.group_instance_id != self.group_instance_id for m in description.members):
                log.info("left the consumer group %s", group)
                return
        log.warning("still a member of the consumer group %s after %.0fs; its partitions move when the "
                    "session times out (engine.session_timeout_ms)", group, timeout)

    def _connect(self) -> None:
        """Create missing topics and fence older instances, retrying within the broker budget."""
        def connect() -> None:
            ensure_topics(self.config, librdkafka_log)
            self.producer.init_transactions(COMMIT_TIMEOUT)

        self.health.retry(connect)

    def _final_commit(self) -> None:
        deadline = time.monotonic() + self.config.engine.broker_retry_budget_seconds
        while not self.commit():
            if time.monotonic() > deadline:
                raise BrokerLost(f"could not commit the last transaction to Kafka at "
                                 f"{self.config.kafka.get('bootstrap.servers')} before stopping; the events "
                                 "since the last commit will be processed again on restart")
            time.sleep(0.5)

    def _request_stop(self, signum, frame) -> None:
        log.info("signal %s: draining and committing", signum)
        self.stopping = True

    def step(self) -> None:
        messages = self.consumer.consume(self.config.engine.batch_size, self._poll_timeout())
        self.health.check()
        if messages:
            self.process(messages)
        self.release()
        if self._commit_due() and self.health.up:  # no commit into the void
            self.commit()

    # -- one batch ------------------------------------------------------------------------
    def process(self, messages: list[Message]) -> None:
        """Decode a consumed batch and buffer it, per partition pair, for :meth:`release`."""
        good: list[Message] = []
        for msg in messages:
            if msg.error():
                self.health.on_message_error(msg)
            else:
                good.append(msg)
        topics, partitions = list(map(Message.topic, good)), list(map(Message.partition, good))
        offsets = list(map(Message.offset, good))
        items = self.pipeline.decode(topics, partitions, offsets, [msg.value() or b"" for msg in good], good)
        # A consumed batch holds runs of messages of one partition: each run is buffered at once.
        start = 0
        for (topic, partition), run in itertools.groupby(zip(topics, partitions)):
            end = start + len(list(run))
            role, run_items = self.roles[topic], items[start:end]
            try:  # merge_key(timestamp, role) of each, inlined
                keys = [2 * item[0].timestamp + role for item in run_items]
            except AttributeError:  # a rejected message among them
                keys = [rejected_key(role) if type(item[0]) is InvalidEvent else merge_key(item[0].timestamp, role)
                        for item in run_items]
            self.aligner.extend(partition, role, keys, offsets[start:end], run_items)
            start = end
        self.events_since_commit += len(messages)

    def release(self) -> None:
        """Hand each partition pair's aligned events to its Monitor (rejected ones to the DLQ),
        produce the triggers, and pause an input partition that is far ahead of its pair."""
        now = time.monotonic()
        for partition in self.aligner.partitions():
            monitor = self.monitors.get(partition)
            if monitor is None:  # revoked while the batch was in flight
                self.aligner.drop(partition)
                continue
            items = self.aligner.release(partition, lambda role: self._lag(role, partition), now)
            if items:
                self._hand_over(partition, monitor, items)
        self._flow_control()

    def _hand_over(self, partition: int, monitor: Monitor, items: list) -> None:
        self.pipeline.hand_over(monitor, items)
        if not self._first_batch_logged:
            self._first_batch_logged = True
            log.info("first events handed to the Monitor, %.2fs after start", time.monotonic() - self.started)

    # -- the pipeline's outputs: in the open transaction ------------------------------------
    def dead_letter(self, message: Message, source: Source, error: InvalidEvent) -> None:
        self.producer.produce(self.topics.dlq, message.value(), key=message.key(),
                              headers=dead_letter_headers(error.reason, error.detail, source))

    def trigger(self, trigger: TriggerEvent) -> None:
        self.producer.produce(self.topics.triggers, encode_trigger(trigger), key=trigger.model_id)

    def _lag(self, role: int, partition: int) -> int | None:
        """Records of that input partition on the broker and not consumed yet (None: not known).
        The high watermark is the one the last fetch brought (no request to the broker)."""
        topic = self.topics.predictions if role == PREDICTIONS else self.topics.labels
        tp = TopicPartition(topic, partition)
        try:
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self.consumer.position([tp])[0].offset
            if position < 0:  # nothing consumed since the assignment: it starts where the group committed
                position = self._start_offset(tp, low)
        except KafkaException:
            return None
        if high < 0 or position < 0:
            return None
        return max(0, high - position)

    def _start_offset(self, tp: TopicPartition, low: int) -> int:
        """Where consuming ``tp`` began: the group's committed offset (asked once per assignment),
        or the log start without one (``auto.offset.reset = earliest``)."""
        key = (tp.topic, tp.partition)
        start = self._start_offsets.get(key)
        if start is None:
            start = self.consumer.committed([tp], timeout=COMMIT_TIMEOUT)[0].offset
            self._start_offsets[key] = start
        return start if start >= 0 else low

    def _flow_control(self) -> None:
        """Pause an input partition whose pair holds a batch of its events unreleased: the pair
        waits for the other partition, and reading more of this one would only grow the buffer.
        The partition a pair waits for is never paused (it has nothing buffered)."""
        limit = self.config.engine.batch_size
        pause, resume = [], []
        for partition in self.monitors:
            for role, topic in ((PREDICTIONS, self.topics.predictions), (LABELS, self.topics.labels)):
                key, full = (topic, partition), self.aligner.buffered(partition, role) >= limit
                if full and key not in self.paused:
                    pause.append(key)
                elif not full and key in self.paused:
                    resume.append(key)
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
            self.paused.update(pause)
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])
            self.paused.difference_update(resume)

    def _poll_timeout(self) -> float:
        """consume()'s wait: shorter while a pair waits out its idle time, so it is released on time."""
        timeout = self.config.engine.poll_timeout_ms / 1000
        if any(pair.blocked_since is not None for pair in self.aligner.pairs.values()):
            return min(timeout, max(0.01, self.aligner.max_idle_s / 4))
        return timeout

    def _commit_offsets(self, assignment: list[TopicPartition]) -> list[TopicPartition]:
        """What to commit per input partition: the first offset not handed to the Monitor yet
        (buffered by the aligner), else the consumer's position."""
        offsets = []
        for tp in self.consumer.position(assignment) if assignment else []:
            first = self.aligner.first_offset(tp.partition, self.roles[tp.topic])
            offset = first if first is not None else tp.offset
            if offset >= 0:
                offsets.append(TopicPartition(tp.topic, tp.partition, offset))
        return offsets

    # -- transactions and state -----------------------------------------------------------
    def _commit_due(self) -> bool:
        engine = self.config.engine
        return (self.events_since_commit >= engine.commit_every_events
                or (time.monotonic() - self.last_commit) * 1000 >= engine.commit_every_ms)

    def commit(self) -> bool:
        """Checkpoint every owned partition's state, add the input offsets, commit, begin anew.

        A retriable failure (broker unreachable) leaves the transaction open to be committed
        later; one that requires an abort aborts it and rewinds the Monitors and the consumer
        to the last committed checkpoint, so nothing is lost and nothing counted twice.
        """
        started = time.perf_counter()
        assignment = self.consumer.assignment()
        try:
            if not self._prepared:
                for partition, monitor in self.monitors.items():
                    self.store.write(partition, Checkpoint(monitor.dirty_states()))
                positions = self._commit_offsets(assignment)
                if positions:
                    with self.health.guard("send_offsets_to_transaction"):
                        self.producer.send_offsets_to_transaction(
                            positions, self.consumer.consumer_group_metadata(), COMMIT_TIMEOUT)
                self._prepared = True
            with self.health.guard("commit_transaction"):
                self.producer.commit_transaction(COMMIT_TIMEOUT)
        except KafkaException as exc:
            self._commit_failed(exc.args[0])
            return False
        self._prepared = False
        self.producer.begin_transaction()
        self.health.reachable()
        self.exporter.commit_seconds.observe(time.perf_counter() - started)
        self.events_since_commit = 0
        self.last_commit = time.monotonic()
        export_lag(self.exporter.set_consumer_lag,
                   [(tp.topic, tp.partition, tp.offset) for tp in self.consumer.position(assignment)] if assignment else [],
                   lambda topic, partition: self.consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                                                cached=True)[1])
        return True

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
        self.last_commit = time.monotonic()

    def _rewind(self) -> None:
        """Back to the last committed state: Monitors from the state topic, consumer to committed offsets."""
        assignment = self.consumer.assignment()
        self.aligner.clear()  # what it buffered is read again from the committed offsets
        self._start_offsets.clear()
        for p in {tp.partition for tp in assignment}:
            self.monitors[p] = self._restore(p)
        for tp in self.consumer.committed(assignment, timeout=COMMIT_TIMEOUT):
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
        self.events_since_commit = 0

    def _restore(self, partition: int) -> Monitor:
        """The partition's Monitor as its last committed checkpoint left it."""
        checkpoint = self.store.read(partition)
        if checkpoint.models:
            log.info("restored partition %d: %d models (%d bytes)", partition, len(checkpoint.models),
                     checkpoint.nbytes, extra={"partition": partition})
        return self.pipeline.monitor(checkpoint.models)

    # -- rebalances -----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._start_offsets.clear()
        for p in {tp.partition for tp in partitions}:
            if p not in self.monitors:
                self.monitors[p] = self._restore(p)
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

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Drop revoked or lost partitions: their Monitors and what their pairs buffered (not
        committed, so their next owner reads it again)."""
        for p in {tp.partition for tp in partitions}:
            self.monitors.pop(p, None)
            self.aligner.drop(p)
        if self.paused:
            revoked = [TopicPartition(tp.topic, tp.partition) for tp in partitions
                       if (tp.topic, tp.partition) in self.paused]
            self.paused.difference_update((tp.topic, tp.partition) for tp in revoked)
            try:  # not paused when it comes back in a later assignment
                self.consumer.resume(revoked)
            except KafkaException:
                pass

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._abort()
        self._forget(partitions)

    def _abort(self) -> None:
        self._prepared = False
        try:
            with self.health.guard("abort_transaction"):
                self.producer.abort_transaction(COMMIT_TIMEOUT)
            self.producer.begin_transaction()
        except KafkaException as exc:
            log.warning("abort failed: %s", exc)

    def _broker_answers(self) -> bool:
        try:
            return bool(self.consumer.list_topics(self.topics.predictions, timeout=1).brokers)
        except KafkaException:
            return False
