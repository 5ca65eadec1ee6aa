"""The default engine's state store on the broker: a model's id buckets, kept in messages of
their own and written only when they change, come back with its state; an aborted transaction's
writes do not."""
from __future__ import annotations

import msgspec
import numpy as np
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.core.config import parse_config
from streams.core.recent_ids import RecentIds
from streams.runtime.admin import ensure_topics
from streams.runtime.state import Checkpoint, KafkaStateStore

pytestmark = pytest.mark.kafka

T0 = 1_800_000_000_000


def ids_state(ids: RecentIds, seconds: range) -> dict:
    for s in seconds:
        hashes = np.random.default_rng(s).integers(0, 2**63, 50, dtype=np.uint64)
        ts = np.full(50, T0 + s * 1000, dtype=np.int64)
        ids.add_many(hashes, ts, ts)
        ids.purge(int(ts[-1]))
    return ids.state()


def test_id_buckets_stored_apart_restore_with_their_model_and_an_abort_leaves_no_trace(kafka_bootstrap, unique):
    config = parse_config({"kafka": {"bootstrap.servers": kafka_bootstrap},
                           "topics": {"predictions": f"p-{unique}", "labels": f"l-{unique}", "triggers": f"t-{unique}",
                                      "dlq": f"d-{unique}", "state": f"s-{unique}", "partitions": 2},
                           "engine": {"group_id": f"g-{unique}"}, "models": [{"id": "m"}]})
    ensure_topics(config)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{unique}"})
    producer.init_transactions(10)
    sizes: dict[int, int] = {}
    store = KafkaStateStore(config, producer, sized=sizes.__setitem__)
    ids = RecentIds(8000)  # buckets of 1 s

    def commit(models: dict) -> None:
        producer.begin_transaction()
        store.write(1, Checkpoint(models))
        producer.commit_transaction(10)
        store.committed()

    first = {"m": {"n": 1, "joined_ids": ids_state(ids, range(0, 5))},
             "other": {"n": 2, "joined_ids": ids_state(RecentIds(8000), range(2, 4))}}
    commit(first)
    assert len(first["m"]["joined_ids"]["buckets"]) == 5
    second = {"m": {"n": 3, "joined_ids": ids_state(ids, range(5, 12))}}  # the oldest buckets dropped
    commit(second)
    producer.begin_transaction()  # a write that never commits
    store.write(1, Checkpoint({"m": {"n": 4, "joined_ids": ids_state(ids, range(12, 14))}}))
    producer.abort_transaction(10)
    store.aborted()

    reader = KafkaStateStore(config, producer, sized=sizes.__setitem__)
    read = reader.read(1)
    assert read.models == {**first, **second}
    buckets = second["m"]["joined_ids"]["buckets"]
    assert reader.buckets[(1, "m")] == buckets  # what is stored, so the next write skips it
    assert read.nbytes == sum(reader.sizes[1].values()) > sum(map(len, buckets.values()))
    assert RecentIds.from_state(read.models["m"]["joined_ids"], 8000).state() == second["m"]["joined_ids"]
    assert KafkaStateStore(config, producer, sized=sizes.__setitem__).read(0) == Checkpoint()
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(
        [config.topics.predictions, config.topics.labels, config.topics.triggers, config.topics.dlq, config.topics.state])


def test_drift_references_stored_apart_restore_with_their_model_and_an_abort_leaves_no_trace(kafka_bootstrap, unique):
    from streams.core.codecs import Prediction
    from streams.core.monitor import Monitor, Source

    config = parse_config({"kafka": {"bootstrap.servers": kafka_bootstrap},
                           "topics": {"predictions": f"p-{unique}", "labels": f"l-{unique}", "triggers": f"t-{unique}",
                                      "dlq": f"d-{unique}", "state": f"s-{unique}", "partitions": 1},
                           "engine": {"group_id": f"g-{unique}"},
                           "models": [{"id": "m", "features": {"numeric": ["a"]},
                                       "drift": {"numeric": ["psi", "ks"], "reference_size": 50, "window": 50}}]})
    ensure_topics(config)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{unique}"})
    producer.init_transactions(10)
    store = KafkaStateStore(config, producer, sized=lambda p, n: None)
    monitor = Monitor(config)

    def feed(start: int, count: int, shift: float = 0.0) -> None:
        monitor.process([(Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i, prediction=1,
                                     features={"a": float(i % 7) + shift}), Source(f"p-{unique}", 0, i))
                         for i in range(start, start + count)])

    def write() -> None:
        producer.begin_transaction()
        store.write(0, Checkpoint(dict(monitor.dirty_states())))

    feed(0, 80)  # the references are learned
    write()
    producer.commit_transaction(10)
    store.committed()
    feed(80, 40, shift=3.0)
    write()
    producer.commit_transaction(10)
    store.committed()
    committed = msgspec.json.decode(msgspec.json.encode(monitor.state()))
    feed(120, 10)
    write()  # a write that never commits
    producer.abort_transaction(10)
    store.aborted()

    read = KafkaStateStore(config, producer, sized=lambda p, n: None).read(0)
    assert msgspec.json.decode(msgspec.json.encode(read.models)) == committed
    restored = Monitor(config)
    restored.restore(read.models)
    assert msgspec.json.decode(msgspec.json.encode(restored.state())) == committed
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(
        [config.topics.predictions, config.topics.labels, config.topics.triggers, config.topics.dlq, config.topics.state])
