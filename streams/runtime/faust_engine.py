"""The Faust engine: the same Monitor inside faust-streaming agents (``driftline run --engine faust``).

One agent reads both input topics (co-partitioned: keyed by ``model_id``, same partition count;
Faust's assignor gives partition *p* of both topics to the same worker) in batches
(``Stream.take_events``), and keeps one :class:`~streams.core.monitor.Monitor` per input partition::

    take a batch -> decode (bad ones to the DLQ) -> Monitor.process -> send triggers
    -> wait until triggers and dead letters are acknowledged -> write each touched partition's
       state to the Faust table (changelog partition = input partition)
    -> Faust acks the batch and commits the input offsets later (every commit interval, on stop)

Delivery is **at-least-once** (Faust's exactly-once mode is experimental). A batch is acked (and
its offsets become committable) only after its triggers, dead letters and then its changelog
writes were acknowledged by the broker, so committed offsets never run ahead of the table's
changelog, and the changelog never runs ahead of the triggers. Each partition's table entry
records the next input offset of each topic it covers: after a crash, Faust replays from the
committed offsets and the engine skips what the state already holds, so windows and counters
are not double counted; a trigger sent just before a crash may be sent again with the same
``trigger_id``, which consumers use to de-duplicate.

Differences from the default engine (see README, "Faust engine"): the consumer group is
``<engine.group_id>-faust`` (Faust's app id); the state lives in the Faust table's changelog
topic ``<app id>-monitor-state-changelog``, not in ``topics.state``; inputs are read with
``read_uncommitted`` (Faust only reads committed data in its exactly-once mode); only the
librdkafka security keys listed in :data:`PASSED_THROUGH` reach aiokafka.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from retrain_trigger.events import TriggerEvent

from streams.core.codecs import InvalidEvent, encode_trigger
from streams.core.config import Config, ConfigError
from streams.core.monitor import Monitor, Source
from streams.runtime.admin import STATE_MAX_BYTES, ensure_topics, librdkafka_log
from streams.runtime.exporter import Exporter
from streams.runtime.health import BrokerHealth, BrokerLost, export_lag
from streams.runtime.pipeline import Pipeline, by_partition, dead_letter_headers
from streams.runtime.state import Checkpoint, FaustTableStore

log = logging.getLogger("driftline.faust")

TABLE = "monitor-state"

#: librdkafka keys the Faust engine maps onto aiokafka; any other key is logged and ignored.
PASSED_THROUGH = {
    "bootstrap.servers", "client.id", "security.protocol", "sasl.mechanism", "sasl.mechanisms",
    "sasl.username", "sasl.password", "ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
    "ssl.key.password", "enable.ssl.certificate.verification", "ssl.endpoint.identification.algorithm",
    "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms",
}
#: librdkafka millisecond settings and the Faust settings (seconds) they become.
TIMEOUTS = {"session.timeout.ms": "broker_session_timeout", "heartbeat.interval.ms": "broker_heartbeat_interval",
            "max.poll.interval.ms": "broker_max_poll_interval"}


class FaustConfigError(ConfigError):
    """A [kafka] setting the Faust engine cannot express (the CLI prints it as one line, exit 2)."""


def broker_urls(bootstrap: str) -> list[str]:
    """librdkafka's ``host:port,host:port`` as Faust broker URLs."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    if not hosts:
        raise FaustConfigError("kafka.bootstrap.servers is empty")
    return [f"kafka://{h.split('://', 1)[-1]}" for h in hosts]


def credentials(kafka: dict[str, Any]) -> Any:
    """Map librdkafka's security settings onto Faust credentials (None for PLAINTEXT)."""
    protocol = str(kafka.get("security.protocol", "plaintext")).upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        try:
            context = ssl.create_default_context(cafile=kafka.get("ssl.ca.location"))
            if kafka.get("ssl.certificate.location"):
                context.load_cert_chain(kafka["ssl.certificate.location"], kafka.get("ssl.key.location"),
                                        kafka.get("ssl.key.password"))
        except (OSError, ssl.SSLError) as exc:
            raise FaustConfigError(f"kafka.ssl.*: cannot load the CA/certificate/key files: {exc}") from exc
        if str(kafka.get("enable.ssl.certificate.verification", "true")).lower() == "false":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif str(kafka.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
            context.check_hostname = False
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism = str(kafka.get("sasl.mechanism", kafka.get("sasl.mechanisms", "PLAIN"))).upper()
        if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise FaustConfigError(f"kafka.sasl.mechanism: {mechanism} is not supported by the faust engine "
                                   "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 are); use --engine confluent")
        return faust.SASLCredentials(username=kafka.get("sasl.username"), password=kafka.get("sasl.password"),
                                     mechanism=mechanism, ssl_context=context)
    raise FaustConfigError(f"kafka.security.protocol: unknown value {protocol!r}")


def input_partitions(config: Config) -> int:
    """Partition count of the (already created, co-partitioned) input topics."""
    from confluent_kafka.admin import AdminClient

    topics = AdminClient(dict(config.kafka)).list_topics(config.topics.predictions, timeout=30).topics
    return len(topics[config.topics.predictions].partitions)


@dataclass
class PartitionState:
    """One input partition: its Monitor and the next input offset per topic that it covers."""

    monitor: Monitor
    next_offsets: dict[str, int] = field(default_factory=dict)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.monitor.state(), self.next_offsets)


#: how long a batch waits for the table's recovery to reach its offsets before using what is there
RECOVERY_WAIT_SECONDS = 30.0
#: a seek back to offsets Faust skipped (faust-streaming#216): repeated this often while the
#: offsets still do not come, given up after the second figure (the events are then lost)
REWIND_RETRY_SECONDS, REWIND_GIVE_UP_SECONDS = 2.0, 60.0
#: how long the probe for records between two offsets waits for the broker
PROBE_TIMEOUT_SECONDS = 10.0


@dataclass
class _Rewind:
    """A partition of an input topic sought back to ``offset``, the next one its state needs."""

    offset: int
    started: float
    sought: float = float("-inf")


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, committing exactly what the engine's stored state covers
    (``_App.commit_frontier``, see :meth:`_offset_at_frontier`) instead of what Faust acked.
    Without a frontier (an app the engine did not set up) Faust's own bookkeeping decides."""

    logger = logging.getLogger("faust.driftline")  # under Faust's logger, quieted with it

    def _new_offset(self, tp):
        frontier = getattr(getattr(self, "app", None), "commit_frontier", None)
        if frontier is None:
            return super()._new_offset(tp)
        return self._offset_at_frontier(tp, frontier(tp))

    def _offset_at_frontier(self, tp, frontier: int | None) -> int | None:
        """With the engine: commit exactly what the partition's state in the table covers
        (``frontier``, None when unknown: revoked or not loaded yet), whatever Faust acked.
        Everything below is durable in the state, and Faust's acks are no guide either way: it
        acks events it never gave the agent (ones its stream passes on after take_events'
        generator closed at a stop, ones of an older generation after a rebalance), and never
        delivers some it fetched (faust-streaming#216), which left replayed offsets unacked and
        the commits stuck below them after a restart. Offsets with no record (transaction
        markers) or that Faust skipped are behind the frontier once a later event is in the
        state, so they never hold the commits back either."""
        committed = self._committed_offset[tp]
        if frontier is None or (committed is not None and frontier <= committed):
            return None
        # Faust's own records of what it acked and of the gaps it saw, trimmed to what is left
        # above the commit so that they do not grow for good.
        acked = self._acked[tp]
        acked[:] = sorted(o for o in set(acked) if o >= frontier)
        self._acked_index[tp] = set(acked)
        self._gap[tp].chop(0, frontier)
        return frontier


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    logger = logging.getLogger("faust.driftline")  # under Faust's logger, quieted with it
    #: TP -> the next offset the partition's state in the table covers (None: unknown); set by
    #: the engine, read by the consumer so that no offset is committed before its state is stored
    commit_frontier = None

    def _new_transport(self):
        return _Transport(self.conf.broker_consumer, self)


def _gap(state: PartitionState, first_offsets: dict[str, int]) -> bool:
    """Whether events lie between what ``state`` covers and the first offsets about to be read."""
    return any(offset > state.next_offsets.get(topic, 0) for topic, offset in first_offsets.items())


class FaustEngine:
    def __init__(self, config: Config, exporter: Exporter, instance: str = "0"):
        self.config = config
        self.exporter = exporter
        self.pipeline = Pipeline(config, outputs=self, metrics=exporter)
        self._sends: list[Any] = []  # the batch's sends to the triggers and dead-letter topics, not awaited yet
        self.topics = config.topics
        self.app_id = f"{config.engine.group_id}-faust"
        self.datadir = Path(tempfile.gettempdir()) / "driftline-faust" / f"{self.app_id}-{instance}"
        self.datadir.mkdir(parents=True, exist_ok=True)
        kafka = dict(config.kafka)
        ignored = sorted(k for k in kafka if k not in PASSED_THROUGH)
        if ignored:
            log.warning("faust engine: kafka settings not passed to aiokafka: %s", ", ".join(ignored))
        self.partitions = input_partitions(config)
        engine = config.engine
        timeouts = {setting: float(kafka[key]) / 1000 for key, setting in TIMEOUTS.items() if key in kafka}
        self.app = _App(
            self.app_id,
            broker=broker_urls(kafka["bootstrap.servers"]),
            broker_credentials=credentials(kafka),
            broker_client_id=kafka.get("client.id", f"driftline-{instance}"),
            store="memory://",
            datadir=str(self.datadir),
            web_enabled=False,
            topic_partitions=self.partitions,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            broker_commit_every=engine.commit_every_events,
            broker_commit_interval=engine.commit_every_ms / 1000,
            producer_max_request_size=STATE_MAX_BYTES,  # state messages, as below
            **timeouts,
        )
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.inputs = self.app.topic(self.topics.predictions, self.topics.labels, **raw)
        self.triggers_topic = self.app.topic(self.topics.triggers, **raw)
        self.dlq_topic = self.app.topic(self.topics.dlq, **raw)
        # A partition's state can outgrow Kafka's 1 MB default: the changelog takes what the default
        # engine's state topic takes (a changelog created before this setting keeps its own limit).
        self.table = self.app.Table(TABLE, partitions=self.partitions, key_type=bytes, value_type=bytes,
                                    extra_topic_configs={"max.message.bytes": str(STATE_MAX_BYTES)})
        self.store = FaustTableStore(self.table, config.engine.group_id, sized=exporter.set_checkpoint_bytes)
        self.table.on_recover(self._export_recovered)
        #: input partition -> the models _export_recovered exported, to forget if it is revoked unread
        self.recovered: dict[int, list[str]] = {}
        self.states: dict[int, PartitionState] = {}
        #: input partition -> next offset per topic of its state as last written to or read from
        #: the table: the most the consumer may commit (see _Consumer._new_offset)
        self.stored_offsets: dict[int, dict[str, int]] = {}
        self.app.commit_frontier = self._commit_frontier
        self.active: set[int] = set()  # input partitions this worker owns now
        #: (topic, partition) -> the highest offset Faust delivered since the partition was assigned
        self.delivered: dict[tuple[str, int], int] = {}
        #: (topic, partition) -> the seek back to offsets Faust skipped, until they come
        self.rewinding: dict[tuple[str, int], _Rewind] = {}
        self._probe = None  # a confluent consumer that looks for records between two offsets
        self.health = BrokerHealth(config, answers=self._broker_answers, on_change=exporter.up.set)
        self._admin = None
        self.app.timer(3.0, name="driftline-broker-check")(self._check_broker)
        self.app.timer(REWIND_RETRY_SECONDS / 2, name="driftline-rewind")(self._retry_rewinds)
        self.app.timer(max(0.05, config.metrics.refresh_ms / 1000), name="driftline-metrics")(self._refresh_metrics)
        self.app.agent(self.inputs, name="driftline-monitor")(self._agent)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    # -- the agent ----------------------------------------------------------------------------
    async def _agent(self, stream) -> None:
        engine = self.config.engine
        async for events in stream.take_events(engine.batch_size, within=engine.poll_timeout_ms / 1000):
            # take_events acks a batch once the loop moves on, or when the generator is closed; a stop
            # that cancels the agent mid-batch must not ack events whose outputs and state are unsent.
            work = asyncio.ensure_future(self.process(events))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await work
                raise

    async def process(self, events: list) -> None:
        """One batch: the messages no partition state holds yet through the pipeline; then its
        sends, then each touched partition's state, acknowledged before Faust acks the batch."""
        await self._load_states(events)
        new, touched, last_offset = await self._unseen(events)
        self._sends = []
        items = self.pipeline.decode([msg.topic for msg in new], [msg.partition for msg in new],
                                     [msg.offset for msg in new], [msg.value or b"" for msg in new], new)
        for partition, partition_items in by_partition(items).items():
            self.pipeline.hand_over(touched[partition].monitor, partition_items)
        # The sends, in the order the pipeline made them; each gives its delivery's future.
        pending = [await send for send in self._sends]
        if pending:  # outputs first: the state must never claim work whose outputs could be lost
            await asyncio.gather(*pending)
        # Then the state, acknowledged before the batch is acked: Faust's producer.flush() before an
        # offset commit gives up after 0.1 s without a delivery, so only this wait keeps the committed
        # offsets from running ahead of the changelog (which, after a stop, would lose the events
        # between the two).
        await asyncio.gather(*[await self.store.write(partition, state.checkpoint())
                               for partition, state in touched.items()])
        for partition, state in touched.items():
            self.stored_offsets[partition] = dict(state.next_offsets)
        consumer = self.app.consumer
        export_lag(self.exporter.set_consumer_lag,
                   [(topic, partition, offset + 1) for (topic, partition), offset in last_offset.items()],
                   lambda topic, partition: consumer.highwater(_tp(topic, partition)))

    async def _unseen(self, events: list) -> tuple[list, dict[int, PartitionState], dict[tuple[str, int], int]]:
        """The batch's messages that no partition state holds yet, in order, with each one's
        partition state advanced past it, and the last such offset per input partition. Replays
        after a crash are skipped; a message past offsets Faust skipped waits (:meth:`_past_gap`)."""
        touched: dict[int, PartitionState] = {}
        skipped = rewound = 0
        late: dict[tuple[str, int], list[int]] = {}
        last_offset: dict[tuple[str, int], int] = {}
        new = []
        for event in events:
            msg = event.message
            if msg.partition not in self.active:
                continue  # revoked while buffered: its new owner reads it from the committed offset
            state = self._state(msg.partition)
            tp = (msg.topic, msg.partition)
            highest = self.delivered.get(tp, -1)
            self.delivered[tp] = max(highest, msg.offset)
            expected = state.next_offsets.get(msg.topic)
            if expected is not None and msg.offset < expected:
                skipped += 1  # already in this partition's table state (replay after a crash)
                if msg.offset < highest:
                    late.setdefault(tp, []).append(msg.offset)
                continue
            if expected is not None and msg.offset > expected and not await self._past_gap(tp, expected, msg.offset):
                rewound += 1  # Faust delivers it again after the offsets before it
                continue
            if self.rewinding and self.rewinding.pop(tp, None) is not None:
                log.info("partition %d: %s offset %d delivered after the seek back; continuing in order",
                         msg.partition, msg.topic, msg.offset, extra={"partition": msg.partition})
            state.next_offsets[msg.topic] = msg.offset + 1
            touched[msg.partition] = state
            last_offset[(msg.topic, msg.partition)] = msg.offset
            new.append(msg)
        if skipped:
            log.info("skipped %d replayed events the table state already covers", skipped)
        if rewound:
            log.info("set aside %d events past offsets Faust skipped, until those come", rewound)
        for (topic, partition), offsets in late.items():
            # Copies, after later offsets, of events the state holds: Faust delivered messages it
            # had fetched before a seek (faust-streaming#216). Nothing is lost: a gap they leave is
            # sought back to (_past_gap).
            log.info("partition %d: %s offsets %d..%d delivered again after later ones (Faust's fetcher after a "
                     "seek)", partition, topic, min(offsets), max(offsets), extra={"partition": partition})
        return new, touched, last_offset

    # -- the pipeline's outputs: sends, awaited in order after the batch ---------------------
    def dead_letter(self, message, source: Source, error: InvalidEvent) -> None:
        self._sends.append(self.dlq_topic.send(key=message.key, value=message.value,
                                               headers=dead_letter_headers(error.reason, error.detail, source)))

    def trigger(self, trigger: TriggerEvent) -> None:
        self._sends.append(self.triggers_topic.send(key=trigger.model_id.encode(), value=encode_trigger(trigger)))

    # -- state in the Faust table -------------------------------------------------------------
    def _state(self, partition: int) -> PartitionState:
        state = self.states.get(partition)
        if state is None:
            checkpoint = self.store.read(partition)
            state = self.states[partition] = self._restore(checkpoint, partition)
            self.stored_offsets[partition] = dict(state.next_offsets)
            if checkpoint.nbytes:
                log.info("restored partition %d state (%d bytes) from the table", partition, checkpoint.nbytes,
                         extra={"partition": partition})
        return state

    def _restore(self, checkpoint: Checkpoint, partition: int) -> PartitionState:
        return PartitionState(self.pipeline.monitor(checkpoint.models, partition), dict(checkpoint.next_offsets))

    async def _export_recovered(self) -> None:
        """Once the table is recovered, the restored statistics of each owned partition to the
        metrics, before its first event. From a Monitor of its own: the agent restores the state
        it works on at the partition's first batch, where it checks it against the offsets."""
        for partition in sorted(self.active - self.states.keys()):
            self.recovered[partition] = list(self.pipeline.monitor(self.store.read(partition).models, partition).models)

    async def _load_states(self, events: list) -> None:
        """Make sure the state of each partition in the batch reaches the batch's first offsets.

        Faust resumes from the committed offsets, which never run ahead of the changelog, so a
        state that ends before them was read while Faust was still replaying the changelog into
        the table (seen after a rebalance: the worker read a state mid-recovery, and later events
        jumped past it). Then read the table again until it catches up, for at most
        ``RECOVERY_WAIT_SECONDS``. A state in hand that equals the table's is the newest there
        is: a jump past it is offsets Kafka holds no records at (transaction markers), not a lag.
        """
        first: dict[int, dict[str, int]] = {}
        for event in events:
            msg = event.message
            first.setdefault(msg.partition, {}).setdefault(msg.topic, msg.offset)
        # One deadline for the whole batch, not one per partition: partitions waited for one after
        # the other would stall the worker for the wait times the number of partitions.
        deadline = time.monotonic() + RECOVERY_WAIT_SECONDS
        for partition, offsets in first.items():
            if partition not in self.active:
                continue
            in_hand = self.states.get(partition)
            if in_hand is not None:
                if not _gap(in_hand, offsets):
                    continue
                if self.store.read(partition).next_offsets == in_hand.next_offsets:
                    self._skipped(partition, in_hand, offsets)
                    continue
                self.states.pop(partition)
            waited = False
            while _gap(self._state(partition), offsets):
                if time.monotonic() > deadline:
                    log.warning("partition %d: the table state still ends before the batch after %.0fs; "
                                "continuing from it", partition, RECOVERY_WAIT_SECONDS, extra={"partition": partition})
                    self._skipped(partition, self.states[partition], offsets)
                    break
                if not waited:
                    log.info("partition %d: waiting for the table's recovery (at next offsets %s) to reach offsets %s",
                             partition, self.states[partition].next_offsets, offsets, extra={"partition": partition})
                    waited = True
                await asyncio.sleep(0.1)
                self.states[partition] = self._restore(self.store.read(partition), partition)

    def _skipped(self, partition: int, state: PartitionState, first_offsets: dict[str, int]) -> None:
        """Offsets before the first one Faust delivered of a topic the state has no offset of yet
        (input retention, or a state lost while its offsets were committed): logged, nothing to
        seek back to. A gap after an offset the state has is :meth:`_past_gap`'s."""
        for topic, offset in first_offsets.items():
            if topic not in state.next_offsets and offset > 0:
                log.warning("partition %d: %s offsets 0..%d never reached the worker (input retention, or a state "
                            "lost while its offsets were committed)", partition, topic, offset - 1,
                            extra={"partition": partition})

    async def _past_gap(self, tp: tuple[str, int], expected: int, offset: int) -> bool:
        """Whether to go on with ``offset`` though the state's next offset is ``expected``: yes if
        the partition holds no record in between (transaction markers, retention). Else Faust
        skipped them (faust-streaming#216: its fetcher resumed from messages fetched before a
        seek): seek the partition back to ``expected`` and set ``offset`` aside, Faust delivers
        it again in order. Sought again every ``REWIND_RETRY_SECONDS`` while the offsets do not
        come (here and by :meth:`_retry_rewinds`); an event past them after
        ``REWIND_GIVE_UP_SECONDS`` goes on without them, logged as lost."""
        topic, partition = tp
        rewind, now = self.rewinding.get(tp), time.monotonic()
        if rewind is None or rewind.offset != expected:
            first = await asyncio.to_thread(self._first_record_from, topic, partition, expected)
            if first is not None and first >= offset:
                return True  # nothing in between to get back
            if first is None:
                log.warning("partition %d: %s offsets %d..%d never reached the worker, and the broker did not say "
                            "within %.0fs whether it holds them", partition, topic, expected, offset - 1,
                            PROBE_TIMEOUT_SECONDS, extra={"partition": partition})
                return True
            rewind = self.rewinding[tp] = _Rewind(expected, now)
            log.warning("partition %d: %s offsets %d..%d were skipped by Faust's fetcher (faust-streaming#216); "
                        "seeking back to %d", partition, topic, expected, offset - 1, expected,
                        extra={"partition": partition})
        elif now - rewind.started > REWIND_GIVE_UP_SECONDS:
            del self.rewinding[tp]
            log.warning("partition %d: %s offsets %d..%d never reached the worker after seeking back for %.0fs "
                        "(faust-streaming#216); continuing without them", partition, topic, expected, offset - 1,
                        REWIND_GIVE_UP_SECONDS, extra={"partition": partition})
            return True
        await self._seek_back(tp, rewind, now)
        return False

    async def _seek_back(self, tp: tuple[str, int], rewind: _Rewind, now: float) -> None:
        """Seek the partition back to the rewind's offset, unless that was done less than
        ``REWIND_RETRY_SECONDS`` ago (Faust's seek also resets the read offset it filters by)."""
        if now - rewind.sought >= REWIND_RETRY_SECONDS:
            rewind.sought = now
            await self.app.consumer.seek(_tp(*tp), rewind.offset)

    async def _retry_rewinds(self) -> None:
        """Seek again where the skipped offsets have not come yet. Faust can deliver the rest of a
        batch it fetched before the seek after it, and then drop the offsets sought back to as
        already read; no later event may come to ask again (a partition whose remaining events
        were all set aside would wait for ever)."""
        now = time.monotonic()
        for tp, rewind in list(self.rewinding.items()):
            await self._seek_back(tp, rewind, now)

    def _first_record_from(self, topic: str, partition: int, offset: int) -> int | None:
        """The offset of the partition's first record at or after ``offset`` (None: no answer)."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        if self._probe is None:  # reading what Faust reads: uncommitted records too (README)
            self._probe = Consumer({**self.config.kafka, "group.id": f"{self.app_id}-probe",
                                    "enable.auto.commit": False, "enable.partition.eof": True,
                                    "isolation.level": "read_uncommitted",
                                    "logger": librdkafka_log})
        self._probe.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + PROBE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            msg = self._probe.poll(0.5)
            if msg is None:
                continue
            if msg.error() is None:
                return msg.offset()
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return msg.offset()  # nothing from there on: the end offset
        return None

    def _commit_frontier(self, tp) -> int | None:
        return self.stored_offsets.get(tp.partition, {}).get(tp.topic)

    async def _on_revoked(self, app, revoked, **kwargs) -> None:
        for partition in self._inputs(revoked):
            state = self.states.pop(partition, None)
            self.exporter.forget([*(state.monitor.models if state else ()), *self.recovered.pop(partition, ())],
                                 [partition])
            self.stored_offsets.pop(partition, None)
            self.active.discard(partition)
        self.delivered = {tp: offset for tp, offset in self.delivered.items() if tp[1] in self.active}
        self.rewinding = {tp: rewind for tp, rewind in self.rewinding.items() if tp[1] in self.active}

    async def _on_assigned(self, app, assigned, **kwargs) -> None:
        # Eager rebalancing: ``assigned`` is the whole new assignment. Each partition's Monitor is
        # (re)built from the table, which Faust recovers before the agent sees the partition's events.
        self.active = self._inputs(assigned)
        self.states = {p: s for p, s in self.states.items() if p in self.active}
        self.exporter.up.set(1)
        log.info("assigned partitions %s", sorted(self.active))

    def _inputs(self, tps) -> set[int]:
        return {tp.partition for tp in tps if tp.topic in (self.topics.predictions, self.topics.labels)}

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> None:
        """Run the worker until SIGTERM/SIGINT; Faust then commits the acked offsets and stops."""
        class Worker(faust.Worker):
            def _setup_logging(self) -> None:
                """Keep the CLI's logging (format, stderr) instead of Faust's own handlers."""

        level = logging.getLogger("driftline").getEffectiveLevel()
        for chatty in ("faust", "mode", "aiokafka"):  # their INFO lines are tables of partitions
            logging.getLogger(chatty).setLevel(level if level <= logging.DEBUG else logging.WARNING)
        if level > logging.DEBUG:  # aiokafka logs every failed reconnect (~20 a second) as an error
            for handler in logging.getLogger().handlers:
                handler.addFilter(_OncePerInterval(prefixes=("aiokafka",), seconds=30.0))
        worker = Worker(self.app, quiet=True, redirect_stdouts=False, loop=asyncio.get_event_loop())
        worker.spinner = None  # a terminal progress spinner; logs are not a terminal
        log.info("consuming %s and %s as %s (faust, at-least-once)", self.topics.predictions,
                 self.topics.labels, self.app_id)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
        finally:
            self.exporter.up.set(0)
            if self._probe is not None:
                self._probe.close()

    # -- broker health ----------------------------------------------------------------------
    async def _refresh_metrics(self) -> None:
        """The gauges of what the last batches touched, when a stream goes quiet."""
        self.exporter.refresh()

    async def _check_broker(self) -> None:
        """aiokafka retries forever; like the default engine, give up after the retry budget."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.health.probe)
        except BrokerLost as lost:
            # A graceful Faust stop needs the broker (commit, LeaveGroup) and hangs or dies noisily
            # without it; nothing is lost by leaving now: the table state and committed offsets
            # are what a restart resumes from (at-least-once).
            print(f"driftline: {lost}", file=sys.stderr, flush=True)  # as the CLI prints BrokerLost
            logging.shutdown()
            os._exit(1)

    def _broker_answers(self) -> bool:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            # a probe: its failed reconnects are this check's business, not librdkafka log lines
            self._admin = AdminClient({**self.config.kafka, "log_level": 2})
        try:
            self._admin.list_topics(self.topics.predictions, timeout=2)
        except KafkaException:
            return False
        return True


class _OncePerInterval(logging.Filter):
    """Lets a given message of the named loggers through once per ``seconds``."""

    def __init__(self, prefixes: tuple[str, ...], seconds: float):
        super().__init__()
        self.prefixes = prefixes
        self.seconds = seconds
        self.last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self.last.get(key, -self.seconds) < self.seconds:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


def _tp(topic: str, partition: int):
    from faust.types import TP

    return TP(topic, partition)


def run_faust(config: Config, exporter: Exporter, instance: str = "0") -> None:
    """``driftline run --engine faust``: create the topics, then run one Faust worker."""
    credentials(dict(config.kafka))  # a setting the faust engine cannot use fails before any connection
    ensure_topics(config)
    asyncio.set_event_loop(asyncio.new_event_loop())
    FaustEngine(config, exporter, instance=instance).run()
