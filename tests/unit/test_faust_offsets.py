"""The Faust engine's offsets: commits exactly what its stored state covers, whatever Faust acked;
seeks back to offsets Faust skipped."""
from __future__ import annotations

import asyncio
from collections import defaultdict

from intervaltree import IntervalTree

from streams.runtime import faust_engine
from streams.runtime.faust_engine import FaustEngine, _Consumer

TP = ("labels", 1)


def consumer(committed: int | None, acked: list[int], gaps: list[tuple[int, int]] = ()) -> _Consumer:
    """The bookkeeping part of a consumer, as Faust keeps it (no broker, no app)."""
    c = object.__new__(_Consumer)
    c._acked, c._acked_index, c._gap = defaultdict(list), defaultdict(set), defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None, {TP: committed})
    c._acked[TP] = list(acked)
    c._acked_index[TP] = set(acked)
    for begin, end in gaps:
        c._gap[TP].addi(begin, end)
    return c


def test_nothing_is_committed_past_what_the_stored_state_covers():
    # Faust acks events its stream passes on after take_events' generator closed at a stop (and
    # events of an older generation after a rebalance) without the agent seeing them: CI saw one
    # offset committed past the state at every SIGTERM restart. The state's frontier caps it.
    c = consumer(1500, list(range(1500, 1596)))
    frontier = {TP: 1595}
    c.app = type("App", (), {"commit_frontier": staticmethod(lambda tp: frontier.get(tp))})()
    assert c._new_offset(TP) == 1595
    assert c._acked[TP] == [1595]  # kept, committable once the state covers it
    c._committed_offset[TP] = 1595
    c._acked[TP] += [1596]
    assert c._new_offset(TP) is None  # acked, but not in the stored state yet
    frontier[TP] = 1597
    assert c._new_offset(TP) == 1597
    frontier.clear()  # a partition whose state is unknown (revoked, not loaded): no commit
    c._committed_offset[TP] = 1597
    c._acked[TP] += [1597]
    assert c._new_offset(TP) is None


def test_offsets_the_state_covers_are_committed_even_if_faust_never_acked_them():
    # After a SIGTERM restart Faust resumed a partition at 1000 but gave the agent only replays from
    # 1005 on (faust-streaming#216): 1000..1004 were never acked, and the commits stayed at 1000 for
    # good (CI: "not all 7500 events per topic were committed"). The state covers up to 1200.
    c = consumer(1000, list(range(1005, 1011)))
    c.app = type("App", (), {"commit_frontier": staticmethod(lambda tp: 1200)})()
    assert c._new_offset(TP) == 1200
    assert c._acked[TP] == []


def test_offsets_never_delivered_are_committed_past_with_the_state():
    # Faust's fetcher resumed after a rebalance past 1554..1555 (faust-streaming#216), or they
    # are transaction markers: nothing ever acks them, and an ack-based commit stopped at 1554 for
    # good (CI: "not all 7500 events per topic were committed"). Faust recorded them as a gap.
    c = consumer(1554, [1556, 1557, 1558], gaps=[(1554, 1556)])
    c.app = type("App", (), {"commit_frontier": staticmethod(lambda tp: 1559)})()
    assert c._new_offset(TP) == 1559
    assert c._acked[TP] == [] and not c._gap[TP]  # Faust's records trimmed below the commit


class _Seeks:
    """Faust's consumer as the engine uses it for a seek back: records each seek."""

    def __init__(self):
        self.seeks = []

    async def seek(self, tp, offset):
        self.seeks.append((tp.topic, tp.partition, offset))


def rewinding_engine(first_record: int | None) -> FaustEngine:
    """The gap handling of a Faust engine (no broker, no app): the broker's first record at or
    after an offset is ``first_record``."""
    engine = object.__new__(FaustEngine)
    engine.rewinding, engine.app = {}, type("App", (), {"consumer": _Seeks()})()
    engine._first_record_from = lambda topic, partition, offset: first_record
    return engine


def test_offsets_faust_skipped_are_sought_back_to_and_the_later_events_set_aside(monkeypatch):
    # faust-streaming#216: after a restart the worker's state ends at 1569 but Faust delivers 1570
    # on; the broker holds 1569. Seek back, set 1570.. aside; seek again only every few seconds.
    clock = [100.0]
    monkeypatch.setattr(faust_engine.time, "monotonic", lambda: clock[0])
    engine = rewinding_engine(first_record=1569)
    gap = asyncio.run
    assert gap(engine._past_gap(TP, 1569, 1570)) is False
    assert gap(engine._past_gap(TP, 1569, 1571)) is False
    assert engine.app.consumer.seeks == [("labels", 1, 1569)]
    clock[0] += faust_engine.REWIND_RETRY_SECONDS
    assert gap(engine._past_gap(TP, 1569, 1572)) is False
    assert engine.app.consumer.seeks == [("labels", 1, 1569)] * 2
    # No later event may come to ask again (Faust delivered them all before the seek took): the
    # timer seeks again on its own.
    gap(engine._retry_rewinds())
    assert len(engine.app.consumer.seeks) == 2
    clock[0] += faust_engine.REWIND_RETRY_SECONDS
    gap(engine._retry_rewinds())
    assert engine.app.consumer.seeks == [("labels", 1, 1569)] * 3
    # Still not there after the give-up time: go on without them (logged as lost).
    clock[0] += faust_engine.REWIND_GIVE_UP_SECONDS
    assert gap(engine._past_gap(TP, 1569, 1573)) is True
    assert TP not in engine.rewinding


def test_a_gap_with_no_record_in_it_is_passed_without_a_seek():
    # Transaction markers or retention: the broker's first record from 1569 is 1570 itself.
    engine = rewinding_engine(first_record=1570)
    assert asyncio.run(engine._past_gap(TP, 1569, 1570)) is True
    assert engine.app.consumer.seeks == [] and not engine.rewinding
    # No answer from the broker: go on (logged), rather than stall the partition.
    engine = rewinding_engine(first_record=None)
    assert asyncio.run(engine._past_gap(TP, 1569, 1570)) is True and engine.app.consumer.seeks == []


def test_the_recovered_tables_statistics_are_exported_before_the_first_event(tmp_path, monkeypatch):
    """After a restart the Faust engine reads a partition's state when its first batch comes;
    the metrics show the restored statistics as soon as the table is recovered, not then, and
    drop them when the partition is revoked."""
    from prometheus_client import generate_latest

    from streams.core.codecs import Label, Prediction
    from streams.core.config import parse_config
    from streams.core.monitor import Monitor, Source
    from streams.runtime.exporter import Exporter
    from streams.runtime.state import Checkpoint, encode_table_value

    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:1"}, "engine": {"group_id": f"g-{tmp_path.name}"},
                           "models": [{"id": "m", "evaluate_every": 5}]})
    before = Monitor(config)
    before.process([(Prediction(f"p{i}", "m", 1_000 + i, 1, {}), Source("predictions", 2, i)) for i in range(40)]
                   + [(Label(f"p{i}", "m", i % 4 > 0, 2_000 + i), Source("labels", 2, i)) for i in range(30)])
    exporter = Exporter(config)
    monkeypatch.setattr(faust_engine, "input_partitions", lambda config: 3)  # no broker to ask
    engine = FaustEngine(config, exporter)
    engine.table.data[engine.store._key(2)] = encode_table_value(Checkpoint(before.state(), {"predictions": 40}))
    engine.active = {2}

    def exported(name: str) -> list[str]:
        return [line for line in generate_latest(exporter.registry).decode().splitlines() if line.startswith(name)]

    assert exported("driftline_window_samples") == []
    asyncio.run(engine.table.call_recover_callbacks())  # what Faust calls when the table is recovered
    assert exported("driftline_window_samples") == ['driftline_window_samples{model="m"} 30.0']
    assert exported("driftline_pending_predictions") == ['driftline_pending_predictions{model="m"} 10.0']
    assert exported("driftline_performance{") == [f'driftline_performance{{metric="accuracy",model="m",version="none"}} '
                                                  f'{22 / 30!r}']  # 22 of the 30 labels are 1
    assert engine.states == {}  # the agent's own state is read at the partition's first batch, as before
    # revoked before its first batch: the exported gauges go with it (the next owner exports them)
    from faust.types import TP as FaustTP

    asyncio.run(engine._on_revoked(engine.app, {FaustTP(config.topics.predictions, 2), FaustTP(config.topics.labels, 2)}))
    assert exported("driftline_window_samples") == exported("driftline_performance{") == []
    assert engine.recovered == {}
