"""The default engine's loop with stand-ins for Kafka: what a batch waits for, and what a commit
for a trigger holds (the partitions that produced outputs, each with its own state and offsets)."""
from __future__ import annotations

import time

from confluent_kafka import TopicPartition

from streams.core.config import parse_config
from streams.runtime.engine import Engine

CONFIG = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:1"}, "models": [{"id": "m"}],
                       "engine": {"batch_size": 100, "batch_wait_ms": 10, "poll_timeout_ms": 200,
                                  "trigger_commit_min_interval_ms": 50}}, "test")
TOPICS = (CONFIG.topics.predictions, CONFIG.topics.labels)


class FakeConsumer:
    def __init__(self, batches=(), polled=None):
        self.batches, self.polled, self.calls = list(batches), polled, []

    def consume(self, num_messages, timeout):
        self.calls.append(("consume", num_messages, timeout))
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout):
        self.calls.append(("poll", timeout))
        polled, self.polled = self.polled, None
        return polled

    def assignment(self):
        return [TopicPartition(t, p) for t in TOPICS for p in range(3)]

    def position(self, tps):
        return [TopicPartition(tp.topic, tp.partition, 100 + tp.partition) for tp in tps]

    def get_watermark_offsets(self, tp, cached=False):
        return 0, 100 + tp.partition

    def consumer_group_metadata(self):
        return "group-metadata"


class FakeProducer:
    def __init__(self):
        self.offsets, self.commits = [], 0

    def produce(self, *args, **kwargs):
        pass

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.offsets.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))

    def commit_transaction(self, timeout):
        self.commits += 1

    def begin_transaction(self):
        pass


class FakeStore:
    def __init__(self):
        self.written = []

    def write(self, partition, checkpoint):
        self.written.append(partition)


def engine(consumer=None) -> Engine:
    e = Engine(CONFIG)
    e.consumer = e.inputs.consumer = consumer or FakeConsumer()
    e.producer, e.store = FakeProducer(), FakeStore()
    e.monitors = {p: e.pipeline.monitor({}) for p in range(3)}
    return e


def test_a_batch_is_what_came_within_batch_wait_and_an_idle_wait_ends_at_the_first_message():
    busy = FakeConsumer(batches=[["a", "b"]])
    assert engine(busy)._consume() == ["a", "b"]
    assert busy.calls == [("consume", 100, 0.01)]
    # Nothing within batch_wait_ms: wait up to the poll timeout for one message, not for a
    # full batch, then take what came with it.
    idle = FakeConsumer(batches=[[], ["b", "c"]], polled="a")
    assert engine(idle)._consume() == ["a", "b", "c"]
    assert idle.calls == [("consume", 100, 0.01), ("poll", 0.2), ("consume", 99, 0)]


def test_a_commit_for_a_trigger_holds_the_partitions_that_produced_outputs_and_no_other():
    e = engine()
    full_commit_at = e.last_full_commit
    assert e.commit({1})
    assert e.store.written == [1]
    assert e.producer.offsets == [sorted([(TOPICS[0], 1, 101), (TOPICS[1], 1, 101)])]
    assert e.last_full_commit == full_commit_at  # the others still commit on the commit interval
    assert e.commit()
    assert e.store.written == [1, 0, 1, 2]
    assert e.producer.offsets[-1] == sorted((t, p, 100 + p) for t in TOPICS for p in range(3))


def test_a_trigger_commits_its_partition_at_once_but_not_sooner_than_the_interval_after_the_last(monkeypatch):
    e = engine()
    triggering = {2}
    monkeypatch.setattr(e.inputs, "release", lambda owned: iter([(p, ["item"]) for p in (0, 2)]))
    monkeypatch.setattr(e.pipeline, "hand_over",
                        lambda monitor, items: ["trigger"] if monitor is e.monitors[2] and triggering else [])
    e.last_commit = time.monotonic() - 1.0
    e.last_full_commit = time.monotonic()  # the commit interval is not up
    e.step()
    assert e.producer.commits == 1 and e.store.written == [2] and not e.trigger_pending
    # Another trigger right after: it waits out trigger_commit_min_interval_ms, and the wait for
    # messages meanwhile ends when its commit falls due.
    e.step()
    assert e.producer.commits == 1 and e.trigger_pending and e._idle_timeout() <= 0.05
    triggering.clear()
    e.last_commit -= 0.05
    e.step()
    assert e.producer.commits == 2 and e.store.written == [2, 2] and not e.trigger_pending
