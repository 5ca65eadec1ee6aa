"""A batch read at marks (:meth:`Monitor.process` with ``marks``, what the backtest's timeline
does inside a flush) reads at each mark what handing the batch over in pieces, cut at the marks,
reads after each piece: the statistics, the counters, the triggers made; and leaves the same
state. For any events (duplicates, early, late and orphan labels, versions, TTL expiries), count
and event-time windows, and any marks (none, at the start, together, at the end)."""
from __future__ import annotations

import dataclasses
from unittest import mock

from hypothesis import given, settings, strategies as st

from streams.core.config import parse_config
from streams.core.monitor import ModelMonitor, Monitor
from tests.unit.test_monitor_bulk import _event, _model, _sources, _stream, events_strategy

#: counted while a batch is read in: what a mark takes (the rest is counted at the flush)
INGESTED = ("predictions", "segments", "labels", "joined", "expired_predictions", "expired_labels",
            "duplicate_predictions", "duplicate_labels", "label_lags")


def _config(window: dict) -> object:
    a, b = _model("a"), _model("b", "multiclass")
    a["window"] = b["window"] = window
    return parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [a, b]})


CONFIGS = [_config({"size": 12}), _config({"kind": "tumbling", "size_seconds": 15, "grace_seconds": 2})]


def _trigger(trigger) -> dict:
    return {f: str(getattr(trigger, f)) for f in trigger.__struct_fields__ if f != "emitted_at"}


def _reading(model, counters) -> tuple:
    return model.stats.values(), {name: getattr(counters, name) for name in INGESTED}


def _in_pieces(config, items, marks) -> tuple[dict, dict]:
    monitor, read, start = Monitor(config), {}, 0
    for k, end in enumerate([*marks, len(items)]):
        made = monitor.process(items[start:end])
        for model_id, model in monitor.models.items():
            read[k, model_id] = (*_reading(model, model.counters.take()),
                                 [_trigger(t) for t in made if t.model_id == model_id])
        start = end
    return read, monitor.state()


def _at_marks(config, items, marks) -> tuple[dict, dict]:
    monitor, read = Monitor(config), {}

    def on_mark(model, k, counters, triggers):
        read[k, model.model.id] = (*_reading(model, counters), [_trigger(t) for t in triggers])

    made = monitor.process(items, marks, on_mark)
    for model_id, model in monitor.models.items():  # the last piece: after the batch
        earlier = {t["trigger_id"] for k in range(len(marks)) for t in read.get((k, model_id), (0, 0, []))[2]}
        read[len(marks), model_id] = (*_reading(model, model.counters.take()),
                                      [_trigger(t) for t in made if t.model_id == model_id
                                       and t.trigger_id not in earlier])
    return read, monitor.state()


@settings(max_examples=150, deadline=None)
@given(raw=events_strategy, marks=st.lists(st.integers(0, 400), max_size=6), config=st.sampled_from(CONFIGS))
def test_reads_at_marks_equal_reads_after_pieces(raw, marks, config):
    _assert_marks_read_as_pieces(config, _sources(_stream(raw)), marks)


def _assert_marks_read_as_pieces(config, items: list, marks: list[int]) -> None:
    marks = sorted(min(mark, len(items)) for mark in marks)
    pieces, pieces_state = _in_pieces(config, items, marks)
    read, state = _at_marks(config, items, marks)
    assert state == pieces_state
    # a model is called at marks before its first event too: one not there yet is not compared;
    # repr: a NaN equals a NaN there
    assert set(pieces) <= set(read)
    assert repr(sorted((key, read[key]) for key in pieces)) == repr(sorted(pieces.items()))


def test_a_mark_reads_the_statistics_there_not_the_batchs_end():
    items = _sources(_stream([("prediction", "a", 0, 1, 1, 0.5, "v1", False)] * 60))
    read, _ = _at_marks(CONFIGS[0], items, [30, 90])
    first, second = read[0, "a"][0], read[1, "a"][0]
    assert first["feature.x.psi"][1] < second["feature.x.psi"][1]  # the drift window's count grows
    assert read[0, "a"][1]["predictions"] + read[1, "a"][1]["predictions"] + read[2, "a"][1]["predictions"] == 60


def _plain_stream(raw) -> list:
    """Predictions in time order, each labelled after its delay (past the 20 s TTL: a late label)
    or never (it expires), the labels put in time order among them: the batches that take the
    bulk path whole, and some that do not."""
    events, clock = [], 0
    for n, (model, step, delay, value, x, version, segment) in enumerate(raw):
        clock += step
        events.append((clock, 0, n, _event("prediction", model, n, clock, value, x, version, segment)))
        if delay is not None:
            events.append((clock + delay, 1, n, _event("label", model, n, clock + delay, (value + n) % 2, x, None, False)))
    return [event for *_, event in sorted(events, key=lambda e: e[:3])]


plain_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "a", "b"]), st.integers(0, 4),
              # the delay: one in ten never labelled, one in a hundred late
              st.integers(0, 99).map(lambda k: None if k < 10 else 24 if k == 99 else k % 20),
              st.integers(0, 2), st.floats(-3, 3), st.sampled_from(["v1", "v1", "v2", None]), st.booleans()),
    min_size=20, max_size=120)


@settings(max_examples=150, deadline=None)
@given(raw=plain_strategy, marks=st.lists(st.integers(0, 240), min_size=1, max_size=6), config=st.sampled_from(CONFIGS))
def test_plain_batches_read_at_marks_equal_reads_after_pieces(raw, marks, config):
    """Plain streams, whose batches the bulk path applies whole, with each mark's expiries
    (unlabelled predictions past the TTL) worked out from the batch."""
    _assert_marks_read_as_pieces(config, _sources(_plain_stream(raw)), marks)


def test_a_plain_batch_with_marks_is_applied_whole_and_expires_at_each_mark():
    # one prediction a second, every third one never labelled (it expires 20 s later), the others
    # labelled 5 s later
    raw = [("a", 1, None if n % 3 == 0 else 5, n % 2, 0.5, "v1", False) for n in range(90)]
    items = _sources(_plain_stream(raw))
    marks = [40, 80, 120]
    with mock.patch.object(ModelMonitor, "_on_events", autospec=True, side_effect=ModelMonitor._on_events) as stretch:
        read, state = _at_marks(CONFIGS[0], items, marks)
    assert not stretch.called  # the batch was applied whole, not a stretch between marks at a time
    expired = [read[k, "a"][1]["expired_predictions"] for k in range(len(marks) + 1)]
    assert all(expired[:3])  # counted at each mark, as it expires them
    pieces, pieces_state = _in_pieces(CONFIGS[0], items, marks)
    assert state == pieces_state
    assert repr(sorted(read.items())) == repr(sorted(pieces.items()))
