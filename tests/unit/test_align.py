"""Event-time alignment (streams/runtime/align.py): whatever order and chunks the two input partitions
arrive in, the Monitor gets the merge by event time, which is the backtest's order."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streams.runtime.align import LABELS, PREDICTIONS, Aligner, merge_key, merge_order, rejected_key
from streams.tools.backtest import load_events
from streams.core.codecs import Label, Prediction, encode_label, encode_prediction
from streams.core.config import parse_config
from streams.core.monitor import Monitor, Source

T0 = 1_700_000_000_000
NEVER = 1e9  # a "now" at which no wait has run out, and the lag callback saying "records coming"


def no_timeout(role):
    return 5  # records on the broker, not read yet: wait for them


def feed(aligner: Aligner, arrivals: list[tuple[int, list[tuple[int, object]]]], now: float = 0.0) -> list:
    """Add each chunk (role, [(key, item), ...]) in turn, releasing after each; the released items."""
    out = []
    offsets = [0, 0]
    for role, chunk in arrivals:
        for key, item in chunk:
            aligner.add(0, role, key, offsets[role], item)
            offsets[role] += 1
        out += aligner.release(0, no_timeout, now)
    return out


def chunked(items: list, cuts: list[int]) -> list[list]:
    bounds = [0] + sorted(c for c in set(cuts) if 0 < c < len(items)) + [len(items)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def interleave(p_chunks: list, l_chunks: list, order: list[bool]) -> list:
    """The chunks of both partitions in one arrival order (``order``: take a label chunk next?)."""
    arrivals, p, q = [], iter(p_chunks), iter(l_chunks)
    for take_label in order:
        chunk = next(q, None) if take_label else next(p, None)
        if chunk is not None:
            arrivals.append((LABELS if take_label else PREDICTIONS, chunk))
    arrivals += [(PREDICTIONS, c) for c in p] + [(LABELS, c) for c in q]
    return arrivals


timestamps = st.lists(st.integers(0, 50), min_size=1, max_size=40)


@given(p_ts=timestamps, l_ts=timestamps, p_cuts=st.lists(st.integers(0, 40)), l_cuts=st.lists(st.integers(0, 40)),
       order=st.lists(st.booleans(), max_size=30))
@settings(max_examples=300, deadline=None)
def test_any_arrival_releases_the_head_by_head_merge(p_ts, l_ts, p_cuts, l_cuts, order):
    """Unsorted timestamps too: the release order is the merge that compares the partitions'
    next events, never a sort inside a partition."""
    predictions = [(ts, ("p", k)) for k, ts in enumerate(p_ts)]
    labels = [(ts, ("l", k)) for k, ts in enumerate(l_ts)]
    expected = merge_order(predictions, labels)
    aligner = Aligner(max_idle_s=1.0)
    arrivals = interleave(chunked([(merge_key(ts, PREDICTIONS), i) for ts, i in predictions], p_cuts),
                          chunked([(merge_key(ts, LABELS), i) for ts, i in labels], l_cuts), order)
    released = feed(aligner, arrivals)
    assert released == expected[:len(released)]
    # What is left waits for the other partition; a caught-up partition's wait ends at max_idle.
    assert aligner.release(0, lambda role: 0, now=0.5) == []
    assert released + aligner.release(0, lambda role: 0, now=1.5) == expected


def test_a_caught_up_partition_is_waited_for_max_idle_and_a_lagging_one_until_fetched():
    aligner = Aligner(max_idle_s=2.0, fetch_wait_s=30.0)
    aligner.add(0, PREDICTIONS, merge_key(10, PREDICTIONS), 0, "p0")
    assert aligner.release(0, lambda role: 0, now=100.0) == []
    assert aligner.release(0, lambda role: 0, now=101.9) == []
    assert aligner.release(0, lambda role: 0, now=102.0) == ["p0"]
    aligner.add(0, PREDICTIONS, merge_key(11, PREDICTIONS), 1, "p1")
    for now in (200.0, 205.0, 229.9):  # labels on the broker not read yet: no idle timeout
        assert aligner.release(0, lambda role: 3, now=now) == []
    aligner.add(0, LABELS, merge_key(5, LABELS), 0, "l0")  # fetched: an earlier label goes first
    assert aligner.release(0, lambda role: 3, now=230.0) == ["l0"]
    assert aligner.first_offset(0, PREDICTIONS) == 1 and aligner.first_offset(0, LABELS) is None


def test_a_rejected_message_goes_with_its_partition_and_offsets_stop_at_the_first_unreleased():
    aligner = Aligner(max_idle_s=60.0)
    aligner.add(0, LABELS, rejected_key(LABELS), 0, "bad-label")
    aligner.add(0, LABELS, merge_key(50, LABELS), 1, "l1")
    aligner.add(0, PREDICTIONS, merge_key(10, PREDICTIONS), 0, "p0")
    aligner.add(0, PREDICTIONS, merge_key(60, PREDICTIONS), 1, "p1")
    assert aligner.release(0, no_timeout, 0.0) == ["bad-label", "p0", "l1"]
    assert aligner.first_offset(0, PREDICTIONS) == 1  # p1 waits: committing stops before it
    assert aligner.first_offset(0, LABELS) is None
    aligner.drop(0)
    assert aligner.first_offset(0, PREDICTIONS) is None and aligner.buffered(0, PREDICTIONS) == 0


# -- the Monitor's triggers: live (aligned) equals the backtest, with early labels and backlogs --

CONFIG = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [
    {"id": "m", "label_ttl_seconds": 3600, "window": {"kind": "count", "size": 100}, "evaluate_every": 5,
     "rules": [{"name": "floor", "min_samples": 50, "conditions": [
         {"statistic": "accuracy", "op": "<", "threshold": 0.8, "rearm": 0.85}]}]},
    {"id": "n", "label_ttl_seconds": 600, "window": {"kind": "count", "size": 60}, "evaluate_every": 3,
     "rules": [{"name": "floor", "min_samples": 30, "consecutive": 2, "conditions": [
         {"statistic": "accuracy", "op": "<", "threshold": 0.75}]}]},
]})


def history(n: int, seed: int, early: float = 0.05) -> tuple[list[Prediction], list[Label]]:
    """Two models with bad phases; labels 1-60 s after their predictions, ``early`` of them
    stamped before (a label source's clock ahead); each topic in event-time order."""
    rng = np.random.default_rng(seed)
    predictions, labels = [], []
    for i in range(n):
        model = "m" if i % 3 else "n"
        ts = T0 + i * 500
        bad = (i // 400) % 2 == 1
        correct = rng.random() < (0.5 if bad else 0.95)
        pid = f"{model}-{i}"
        predictions.append(Prediction(prediction_id=pid, model_id=model, timestamp=ts, prediction=1, features={}))
        delay = -int(rng.integers(1, 3000)) if rng.random() < early else int(rng.integers(1000, 60000))
        labels.append(Label(prediction_id=pid, model_id=model, label=1 if correct else 0, timestamp=ts + delay))
    labels.sort(key=lambda e: e.timestamp)  # a label topic is in the order labels happen
    return predictions, labels


def as_json(triggers) -> dict[str, list[dict]]:
    """Each model's triggers in order (across models the order is the batches', as on Kafka)."""
    per_model: dict[str, list[dict]] = {}
    for t in triggers:
        per_model.setdefault(t.model_id, []).append(
            json.loads(json.dumps(t, default=lambda s: {f: getattr(s, f) for f in s.__struct_fields__})))
    return per_model


def backtest_triggers(tmp_path, predictions, labels) -> dict[str, list[dict]]:
    """The backtest's triggers: load_events' order (event time, predictions first on ties)."""
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(map(encode_prediction, predictions)) + b"\n")
    (tmp_path / "l.jsonl").write_bytes(b"\n".join(map(encode_label, labels)) + b"\n")
    loaded = load_events(CONFIG, tmp_path / "p.jsonl", tmp_path / "l.jsonl")
    return as_json(Monitor(CONFIG).process(loaded.events))


def aligned_triggers(predictions, labels, arrivals_order: list[tuple[int, int]]) -> dict[str, list[dict]]:
    """Live: chunks ``(role, size)`` of each partition arrive in this order; after each, the
    aligner's release goes to the Monitor (as the engine does batch by batch)."""
    topic = {PREDICTIONS: CONFIG.topics.predictions, LABELS: CONFIG.topics.labels}
    streams = {PREDICTIONS: predictions, LABELS: labels}
    read = {PREDICTIONS: 0, LABELS: 0}
    aligner, monitor, triggers = Aligner(max_idle_s=1.0), Monitor(CONFIG), []
    for role, size in arrivals_order + [(PREDICTIONS, len(predictions)), (LABELS, len(labels))]:
        for event in streams[role][read[role]:read[role] + size]:
            aligner.add(0, role, merge_key(event.timestamp, role), read[role], (event, Source(topic[role], 0, read[role])))
            read[role] += 1
        triggers += monitor.process(aligner.release(0, no_timeout, 0.0))
    triggers += monitor.process(aligner.release(0, lambda role: 0, NEVER))  # the end: the tail goes
    return as_json(triggers)


@pytest.fixture(scope="module")
def stream():
    return history(2400, seed=7)


def test_the_history_has_early_labels_and_triggers(stream):
    predictions, labels = stream
    stamped = {p.prediction_id: p.timestamp for p in predictions}
    assert sum(label.timestamp < stamped[label.prediction_id] for label in labels) > 50


@given(chunks=st.lists(st.tuples(st.sampled_from([PREDICTIONS, LABELS]), st.integers(1, 700)), max_size=25))
@settings(max_examples=25, deadline=None)
def test_any_arrival_gives_the_backtest_triggers(tmp_path_factory, stream, chunks):
    predictions, labels = stream
    expected = backtest_triggers(tmp_path_factory.mktemp("bt"), predictions, labels)
    assert set(expected) == {"m", "n"}
    assert aligned_triggers(predictions, labels, chunks) == expected


@pytest.mark.parametrize("ahead", [PREDICTIONS, LABELS])
def test_a_backlog_read_one_topic_far_ahead_gives_the_backtest_triggers(tmp_path, stream, ahead):
    """After downtime the consumer may read hours of one topic before the other's first fetch."""
    predictions, labels = stream
    behind = 1 - ahead
    backlog = [(ahead, 2000), (behind, 10), (ahead, 500), (behind, 300), (behind, 3000)]
    assert aligned_triggers(predictions, labels, backlog) == backtest_triggers(tmp_path, predictions, labels)


def test_without_alignment_a_backlog_gives_other_triggers(tmp_path, stream):
    """The case the aligner exists for: handing each batch over as read (all predictions of a
    backlog, then the labels) pairs differently from the backtest."""
    predictions, labels = stream
    topic = {PREDICTIONS: CONFIG.topics.predictions, LABELS: CONFIG.topics.labels}
    monitor = Monitor(CONFIG)
    raw = as_json(monitor.process([(e, Source(topic[PREDICTIONS], 0, k)) for k, e in enumerate(predictions)])
                  + monitor.process([(e, Source(topic[LABELS], 0, k)) for k, e in enumerate(labels)]))
    assert raw != backtest_triggers(tmp_path, predictions, labels)
