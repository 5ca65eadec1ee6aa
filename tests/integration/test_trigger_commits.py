"""The default engine's commit for a trigger, on the real broker.

With the periodic commit far off, a trigger still becomes readable (read_committed) at once: its
transaction holds the checkpoint and input offsets of the partition that made it and of no other.
Triggers that come within ``trigger_commit_min_interval_ms`` of the last commit share one commit.
A kill -9 after such partial commits, and a restart, still publish every trigger once and count
every event once."""
from __future__ import annotations

import json
import signal
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from .harness import Deployment, models_config, pair
from .test_exactly_once import final_gauges, trigger_key

pytestmark = pytest.mark.kafka

#: One model per input partition (murmur2 of the key, 3 partitions: 2, 1, 0; checked below).
TRIGGERING, QUIET = "churn", ("fraud", "spam")
MODELS = [TRIGGERING, *QUIET]
#: Pairs per model in each phase of the stream; the triggering model's accuracy falls below the
#: rule's floor once in phase A, twice in phase B (re-armed in between), once in phase C.
PHASE_A, PHASE_B, PHASE_C = range(0, 500), range(500, 1300), range(1300, 2000)
BAD = [range(250, 500), range(800, 950), range(1200, 1300), range(1550, 1700)]
INTERVAL_MS = 5000


def correct(model: str, i: int) -> bool:
    """Quiet models are always right; the triggering one is right every other time when bad."""
    return model != TRIGGERING or i % 2 == 0 or not any(i in bad for bad in BAD)


def events(pairs: range) -> list:
    out = []
    for i in pairs:
        for model in MODELS:
            out += pair(i, model, correct(model, i))
    return out


def reader(d: Deployment, topic: str) -> Consumer:
    """A read_committed consumer assigned (no group join to wait for) to every partition of ``topic``."""
    consumer = Consumer({"bootstrap.servers": d.bootstrap, "group.id": f"reader-{d.suffix}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    partitions = consumer.list_topics(d.topics[topic], timeout=10).topics[d.topics[topic]].partitions
    consumer.assign([TopicPartition(d.topics[topic], p, 0) for p in partitions])
    return consumer


def read_until(d: Deployment, topic: str, count: int, timeout: float = 60) -> list:
    """The committed messages of ``topic`` once there are ``count`` of them (or what came in ``timeout``)."""
    consumer = reader(d, topic)
    messages: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(500, 0.1) if not m.error()]
    finally:
        consumer.close()
    return messages


def read_all(d: Deployment, topic: str) -> list:
    """Every committed message of ``topic`` now (to the last stable offset of each partition)."""
    consumer = reader(d, topic)
    messages: list = []
    try:
        while batch := consumer.consume(500, 1.0):
            messages += [m for m in batch if not m.error()]
    finally:
        consumer.close()
    return messages


def committed(d: Deployment) -> dict[tuple[str, int], int]:
    """The group's committed offset of each input partition (negative: none)."""
    consumer = Consumer({"bootstrap.servers": d.bootstrap, "group.id": d.group})
    try:
        parts = [TopicPartition(d.topics[t], p) for t in ("predictions", "labels") for p in range(d.partitions)]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=30)}
    finally:
        consumer.close()


def trigger_keys(d: Deployment) -> list[tuple]:
    """The triggers committed so far (once the inputs are committed: every one)."""
    return [trigger_key(json.loads(m.value())) for m in read_all(d, "retrain-triggers")]


def model_of_partition(d: Deployment) -> dict[int, str]:
    """Input partition -> the model whose predictions it holds (the key of its first message)."""
    consumer = Consumer({"bootstrap.servers": d.bootstrap, "group.id": f"reader-{d.suffix}"})
    found = {}
    try:
        for p in range(d.partitions):
            consumer.assign([TopicPartition(d.topics["predictions"], p, 0)])
            msg = consumer.poll(10)
            if msg is not None and not msg.error():
                found[p] = msg.key().decode()
    finally:
        consumer.close()
    return found


def total(d: Deployment, name: str) -> float:
    """The sum of a metric's samples over all its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(d.metrics()) for s in family.samples
               if s.name == name)


def commits(d: Deployment) -> float:
    return total(d, "driftline_transaction_commit_seconds_count")


@pytest.fixture
def make(kafka_bootstrap, unique, tmp_path):
    made: list[Deployment] = []

    def factory(**settings) -> Deployment:
        sub = tmp_path / str(len(made))
        sub.mkdir()
        d = Deployment(kafka_bootstrap, f"{unique}{len(made)}", sub, models_config(MODELS), **settings)
        made.append(d)
        return d

    yield factory
    for d in made:
        d.stop_all()


def test_a_trigger_commits_its_partition_alone_and_a_kill_after_it_loses_nothing(make):
    stream = events(range(PHASE_C.stop))
    per_topic = len(stream) // 2

    # The reference: one uninterrupted run, default commit settings.
    ref = make()
    proc = ref.start()
    ref.send(stream)
    ref.wait_until_committed(per_topic)
    expected_gauges = final_gauges(ref, MODELS)
    ref.stop(proc)
    expected = sorted(trigger_keys(ref))
    assert len(expected) == len(BAD), expected

    # No periodic commit within the test: every commit until the restart is one for a trigger.
    # Small batches: the triggers of phase B come in different batches, each its own hand-over.
    d = make(commit_every_ms=120_000, engine_extra=f"commit_every_events = 1000000\nbatch_size = 100\n"
                                                   f"trigger_commit_min_interval_ms = {INTERVAL_MS}")
    proc = d.start()
    d.wait_for_metric("driftline_engine_up", 1)
    d.send(events(PHASE_A))
    assert len(read_until(d, "retrain-triggers", 1)) == 1
    d.wait_for_metric("driftline_transaction_commit_seconds_count", 1)
    assert commits(d) == 1
    # Two more triggers, within the interval after that commit: they wait for it and share one commit.
    d.send(events(PHASE_B))

    models = model_of_partition(d)
    assert sorted(models.values()) == sorted(MODELS), f"one model per partition: {models}"
    mine = next(p for p, model in models.items() if model == TRIGGERING)
    offsets = committed(d)
    for topic in ("predictions", "labels"):
        assert offsets[(d.topics[topic], mine)] > 0, offsets
        assert all(offsets[(d.topics[topic], p)] < 0 for p in range(3) if p != mine), offsets
    states = read_all(d, "driftline-state")
    # the model's state, and its id buckets in messages of their own, in its partition only
    assert states and {m.partition() for m in states} == {mine}
    assert {m.key() for m in states if b"/joined_ids/" not in m.key()} == {f"{d.group}:{mine}:{TRIGGERING}".encode()}
    assert all(m.key().startswith(f"{d.group}:{mine}/joined_ids/".encode()) and m.key().endswith(TRIGGERING.encode())
               for m in states if b"/joined_ids/" in m.key())

    triggers = read_until(d, "retrain-triggers", 3)
    assert len(triggers) == 3
    d.wait_for_metric("driftline_transaction_commit_seconds_count", 2)
    assert commits(d) == 2
    # In one transaction: no commit marker between them on the (single-partition) triggers topic.
    assert triggers[2].offset() == triggers[1].offset() + 1

    # Phase C, a kill -9 while the quiet partitions have never been committed, and a restart
    # with a short commit interval, so that the end of the stream shows in the committed offsets
    # (and full batches: the restart's settings play no part in what it restores).
    d.send(events(PHASE_C))
    d.wait_for_metric("driftline_events_joined_total", PHASE_C.start + 100, model=TRIGGERING)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    config = d.config_path.read_text()
    assert "commit_every_ms = 120000" in config
    d.config_path.write_text(config.replace("commit_every_ms = 120000", "commit_every_ms = 300")
                             .replace("batch_size = 100\n", ""))
    d.start()
    d.wait_until_committed(per_topic)
    got = trigger_keys(d)
    ids = [key[0] for key in got]
    assert len(ids) == len(set(ids)), f"duplicate trigger ids: {ids}"
    assert sorted(got) == expected
    # Every event counted once: the restored state goes on where its checkpoint left off, and
    # the restarted instance saw no event its state had already counted.
    assert final_gauges(d, MODELS) == expected_gauges
    assert total(d, "driftline_events_duplicate_total") == 0
