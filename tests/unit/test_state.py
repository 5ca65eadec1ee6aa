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
