"""The state stores keep the layouts deployed checkpoints have (so they restore), and a Faust
table entry reads back what was written. Reading the state topic is tested on the broker
(tests/integration/test_exactly_once.py restarts from it)."""
from __future__ import annotations

import asyncio

import msgspec

from streams.core.config import parse_config
from streams.runtime.state import (Checkpoint, FaustTableStore, KafkaStateStore, decode_table_value,
                                   encode_table_value)

CONFIG = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "topics": {"state": "st"},
                       "engine": {"group_id": "g"}, "models": [{"id": "m"}]})


class _Producer:
    def __init__(self):
        self.produced = []

    def produce(self, topic, value, key, partition):
        self.produced.append((topic, key, value, partition))


def test_the_state_topic_holds_one_message_per_touched_model_keyed_group_partition_model():
    producer, sizes = _Producer(), []
    store = KafkaStateStore(CONFIG, producer, sized=lambda p, n: sizes.append((p, n)))
    store.write(3, Checkpoint({"a": {"x": 1}, "b": {"y": [1, 2]}}))
    assert producer.produced == [("st", b"g:3:a", b'{"x":1}', 3), ("st", b"g:3:b", b'{"y":[1,2]}', 3)]
    store.write(3, Checkpoint({"a": {"x": 22}}))  # only a touched: b's latest state stays as it was
    assert producer.produced[-1] == ("st", b"g:3:a", b'{"x":22}', 3)
    assert sizes == [(3, 7 + 11), (3, 8 + 11)]  # the partition's latest state of each model
    store.write(3, Checkpoint())
    assert len(producer.produced) == 3 and sizes[-1] == (3, 19)


class _Table:
    key_serializer = value_serializer = "raw"

    def __init__(self):
        self.data = {}
        self.sent = []
        table = self

        class Changelog:
            async def send(self, **kwargs):
                table.sent.append(kwargs)
                return "delivery"

        self.changelog_topic = Changelog()


def test_the_faust_table_holds_one_entry_per_partition_with_its_next_offsets_and_every_model():
    assert encode_table_value(Checkpoint({"m": {"a": 1}}, {"labels": 3})) == \
        b'{"next_offsets":{"labels":3},"monitor":{"m":{"a":1}}}'
    table, sizes = _Table(), []
    store = FaustTableStore(table, "g", sized=lambda p, n: sizes.append((p, n)))
    assert store.read(2) == Checkpoint()
    written = Checkpoint({"m": {"a": 1}, "n": {}}, {"predictions": 7, "labels": 5})
    assert asyncio.run(store.write(2, written)) == "delivery"
    raw = table.data[b"g:2"]
    assert msgspec.json.decode(raw) == {"next_offsets": {"predictions": 7, "labels": 5},
                                        "monitor": {"m": {"a": 1}, "n": {}}}
    assert table.sent == [{"key": b"g:2", "value": raw, "partition": 2, "key_serializer": "raw",
                           "value_serializer": "raw", "force": True}]
    assert sizes == [(2, len(raw))]
    assert store.read(2) == Checkpoint(written.models, written.next_offsets, len(raw)) == decode_table_value(raw)


def test_id_buckets_go_apart_and_only_the_changed_ones_are_written_again():
    producer, sizes = _Producer(), []
    store = KafkaStateStore(CONFIG, producer, sized=lambda p, n: sizes.append((p, n)))
    old, new = "QUFBQUFBQUE=", "QkJCQkJCQkI="
    store.write(1, Checkpoint({"m": {"x": 1, "joined_ids": {"horizon_ms": 8, "buckets": {"5": old, "6": new}}}}))
    assert producer.produced == [
        ("st", b"g:1/joined_ids/5/m", old.encode(), 1), ("st", b"g:1/joined_ids/6/m", new.encode(), 1),
        ("st", b"g:1:m", b'{"x":1,"joined_ids":{"horizon_ms":8,"buckets":{},"apart":["5","6"]}}', 1)]
    grown = new + "Q0NDQ0NDQ0M="
    del producer.produced[:]
    # bucket 5 dropped by the horizon, 6 grew, 7 opened
    store.write(1, Checkpoint({"m": {"x": 2, "joined_ids": {"horizon_ms": 8, "buckets": {"6": grown, "7": old}}}}))
    assert producer.produced[:3] == [("st", b"g:1/joined_ids/5/m", None, 1),
                                     ("st", b"g:1/joined_ids/6/m", grown.encode(), 1),
                                     ("st", b"g:1/joined_ids/7/m", old.encode(), 1)]
    del producer.produced[:]
    state = {"x": 3, "joined_ids": {"horizon_ms": 8, "buckets": {"6": grown, "7": old}}}
    store.write(1, Checkpoint({"m": state}))  # nothing changed in the buckets: the model's message alone
    assert [key for _, key, _, _ in producer.produced] == [b"g:1:m"]
    assert state["joined_ids"]["buckets"] == {"6": grown, "7": old}  # the caller's state is left as it was
    assert sizes[-1] == (1, len(producer.produced[0][2]) + len(grown) + len(old))
    store.aborted()  # what the aborted transaction wrote is gone: every bucket again
    del producer.produced[:]
    store.write(1, Checkpoint({"m": state}))
    assert [key for _, key, _, _ in producer.produced] == [b"g:1/joined_ids/6/m", b"g:1/joined_ids/7/m", b"g:1:m"]


def test_an_abort_goes_back_to_the_buckets_of_the_last_commit():
    producer = _Producer()
    store = KafkaStateStore(CONFIG, producer, sized=lambda p, n: None)
    a, b, c = "QUFBQUFBQUE=", "QkJCQkJCQkI=", "Q0NDQ0NDQ0M="
    store.write(1, Checkpoint({"m": {"joined_ids": {"horizon_ms": 8, "buckets": {"5": a, "6": b}}}}))
    store.committed()
    # the next transaction drops bucket 5 and opens 7, then aborts: the topic still holds 5 and 6
    store.write(1, Checkpoint({"m": {"joined_ids": {"horizon_ms": 8, "buckets": {"6": b, "7": c}}}}))
    store.aborted()
    del producer.produced[:]
    store.write(1, Checkpoint({"m": {"joined_ids": {"horizon_ms": 8, "buckets": {"6": b, "7": c}}}}))
    # 5 is tombstoned again (the aborted one is gone), 6 is in the topic already, 7 is written again
    assert [(key, value) for _, key, value, _ in producer.produced[:2]] == [
        (b"g:1/joined_ids/5/m", None), (b"g:1/joined_ids/7/m", c.encode())]
    assert producer.produced[2][1] == b"g:1:m"



DRIFT_CONFIG = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "topics": {"state": "st"},
                             "engine": {"group_id": "g"}, "models": [
    {"id": "m", "features": {"numeric": ["a", "b"]}, "drift": {"numeric": ["psi", "ks"], "prediction": ["psi"],
                                                            "reference_size": 50, "window": 50}}]})


def _drift_monitor(events: int = 80):
    """A Monitor of a model with drift detectors, their references learned."""
    from streams.core.monitor import Monitor
    monitor = Monitor(DRIFT_CONFIG)
    _feed(monitor, 0, events)
    return monitor


def _feed(monitor, start: int, count: int) -> None:
    from streams.core.codecs import Prediction
    from streams.core.monitor import Source
    monitor.process([(Prediction(prediction_id=f"p{i}", model_id="m", timestamp=1_700_000_000_000 + i, prediction=i % 2,
                                 features={"a": float(i % 7), "b": float(i % 3)}), Source("predictions", 0, i))
                     for i in range(start, start + count)])


def _json(value):
    return msgspec.json.decode(msgspec.json.encode(value))


def _stored(producer: _Producer) -> list[tuple[bytes, bytes | None]]:
    return [(key, value) for _, key, value, _ in producer.produced]


def test_drift_references_go_apart_are_written_when_they_change_and_restore_with_their_model():
    producer = _Producer()
    store = KafkaStateStore(DRIFT_CONFIG, producer, sized=lambda p, n: None)
    monitor = _drift_monitor()
    state = _json(monitor.state())
    store.write(0, Checkpoint(monitor.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0/references/m", b"g:0:m"]
    model_message = msgspec.json.decode(producer.produced[-1][2])
    assert model_message["references_apart"] is True
    assert all(d["profile"] is None and d["params"] for _, _, d in model_message["stats"]["feature_drift"])
    assert _json(monitor.state()) == state  # the caller's state is left as it was
    restored = KafkaStateStore(DRIFT_CONFIG, _Producer(), sized=lambda p, n: None).assemble(0, _stored(producer))
    assert _json(restored.models) == state
    assert restored.nbytes == sum(len(value) for _, value in _stored(producer))

    store.committed()
    _feed(monitor, 80, 30)  # the windows move on, the references stay
    del producer.produced[:]
    store.write(0, Checkpoint(monitor.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0:m"]


def test_an_abort_writes_the_references_again_unless_a_commit_stored_them():
    producer = _Producer()
    store = KafkaStateStore(DRIFT_CONFIG, producer, sized=lambda p, n: None)
    monitor = _drift_monitor()
    store.write(0, Checkpoint(monitor.state()))
    store.aborted()  # the references never reached the topic
    del producer.produced[:]
    store.write(0, Checkpoint(monitor.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0/references/m", b"g:0:m"]
    store.committed()
    store.write(0, Checkpoint(monitor.state()))
    store.aborted()  # they are in the topic since the commit
    del producer.produced[:]
    store.write(0, Checkpoint(monitor.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0:m"]


def test_a_store_that_read_the_references_does_not_write_them_again():
    writer = KafkaStateStore(DRIFT_CONFIG, _Producer(), sized=lambda p, n: None)
    monitor = _drift_monitor()
    writer.write(0, Checkpoint(monitor.state()))
    producer = _Producer()
    reader = KafkaStateStore(DRIFT_CONFIG, producer, sized=lambda p, n: None)
    restored = _drift_monitor(0)
    restored.restore(reader.assemble(0, _stored(writer.producer)).models)
    reader.write(0, Checkpoint(restored.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0:m"]


def test_a_checkpoint_holding_its_drift_references_restores_and_one_missing_them_does_not():
    monitor = _drift_monitor()
    store = KafkaStateStore(DRIFT_CONFIG, _Producer(), sized=lambda p, n: None)
    whole = msgspec.json.encode(monitor.state()["m"])  # as earlier versions wrote it
    assert _json(store.assemble(0, [(b"g:0:m", whole)]).models) == _json({"m": monitor.state()["m"]})
    store.write(0, Checkpoint(monitor.state()))
    model_only = [(key, value) for key, value in _stored(store.producer) if key == b"g:0:m"]
    try:
        store.assemble(0, model_only)
    except ValueError as exc:
        assert "references" in str(exc)
    else:
        raise AssertionError("a checkpoint without its references restored")


def test_a_build_that_reads_the_model_message_alone_restores_its_drift_detectors_without_their_reference():
    """What a build from before the references went apart finds: each drift detector's reference
    None, so it learns it again from the stream instead of failing to start."""
    from streams.core.monitor import Monitor
    monitor = _drift_monitor()
    store = KafkaStateStore(DRIFT_CONFIG, _Producer(), sized=lambda p, n: None)
    store.write(0, Checkpoint(monitor.state()))
    model_message = msgspec.json.decode(next(value for key, value in _stored(store.producer) if key == b"g:0:m"))
    older = Monitor(DRIFT_CONFIG)
    older.restore({"m": model_message})
    detectors = older.model("m").stats.feature_drift.values()
    assert detectors and all(d.profile is None for d in detectors)
    _feed(older, 80, 60)  # and it goes on: the reference is learned again
    assert all(d.profile is not None for d in detectors)


def test_a_model_with_a_reference_file_keeps_its_references_in_its_own_message(tmp_path):
    """A build from before the references went apart reads a model's message alone: a model
    whose reference comes from drift.reference_file keeps it there, so such a build restores
    the file's reference rather than learning one from the stream; the store reads it back."""
    from streams.core.codecs import Prediction
    from streams.core.monitor import Monitor, Source
    (tmp_path / "ref.json").write_text(msgspec.json.encode({"a": [float(i % 7) for i in range(200)]}).decode())
    config = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "topics": {"state": "st"},
                           "engine": {"group_id": "g"}, "models": [
        {"id": "m", "features": {"numeric": ["a"]},
         "drift": {"numeric": ["psi"], "prediction": [], "reference_file": "ref.json", "window": 50}}]},
                          source=str(tmp_path / "driftline.toml"))
    monitor = Monitor(config)
    monitor.process([(Prediction(prediction_id=f"p{i}", model_id="m", timestamp=1_700_000_000_000 + i, prediction=1,
                                 features={"a": 100.0 + i}), Source("predictions", 0, i)) for i in range(10)])
    producer = _Producer()
    store = KafkaStateStore(config, producer, sized=lambda p, n: None)
    state = _json(monitor.state())
    store.write(0, Checkpoint(monitor.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0:m"]
    older = Monitor(config)  # what a build that reads the model's message alone restores
    older.restore({"m": msgspec.json.decode(producer.produced[-1][2])})
    assert all(d.profile is not None for d in older.model("m").stats.feature_drift.values())
    restored = KafkaStateStore(config, _Producer(), sized=lambda p, n: None).assemble(0, _stored(producer))
    assert _json(restored.models) == state


def test_references_of_two_partitions_survive_an_abort_and_the_restore_of_one_of_them():
    """One store, a model on two partitions: a restore of partition 1 during a transaction, then
    an abort, leaves both partitions' committed references known (neither written again), and
    the restored model is the one written."""
    producer = _Producer()
    store = KafkaStateStore(DRIFT_CONFIG, producer, sized=lambda p, n: None)
    first, second = _drift_monitor(), _drift_monitor(90)
    store.write(0, Checkpoint(first.state()))
    store.write(1, Checkpoint(second.state()))
    store.committed()
    topic = _stored(producer)
    del producer.produced[:]
    store.write(0, Checkpoint(first.state()))
    restored = _drift_monitor(0)
    restored.restore(store.assemble(1, [(key, value) for key, value in topic if key.startswith(b"g:1")]).models)
    store.aborted()
    del producer.produced[:]
    store.write(0, Checkpoint(first.state()))
    store.write(1, Checkpoint(restored.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0:m", b"g:1:m"]
    assert _json(restored.state()) == _json(second.state())


def test_references_learned_in_an_aborted_transaction_are_written_again_after_another_partition_restored():
    producer = _Producer()
    store = KafkaStateStore(DRIFT_CONFIG, producer, sized=lambda p, n: None)
    monitor = _drift_monitor(10)  # its references not learned yet
    store.write(0, Checkpoint(monitor.state()))
    store.committed()
    _feed(monitor, 10, 80)  # learned now
    store.write(0, Checkpoint(monitor.state()))
    store.assemble(1, [])  # partition 1 assigned while the transaction is open
    store.aborted()
    del producer.produced[:]
    store.write(0, Checkpoint(monitor.state()))
    assert [key for key, _ in _stored(producer)] == [b"g:0/references/m", b"g:0:m"]
