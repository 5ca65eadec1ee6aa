"""The Faust engine's commits: exactly the offsets its stored state covers, whatever Faust acked."""
from __future__ import annotations

from collections import defaultdict

from intervaltree import IntervalTree

from streams.faust_engine import _Consumer

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
