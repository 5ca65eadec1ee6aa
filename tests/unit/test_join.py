"""Join's bulk path: the label hashes it takes from the batch's predictions are the labels' own."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from streams.core.codecs import Label, Prediction
from streams.core.join import Batch, Join
from streams.core.monitor import ModelCounters, Source
from streams.core.recent_ids import id_hashes

T0 = 1_700_000_000_000


@settings(max_examples=60, deadline=None)
@given(pending=st.integers(0, 20), fresh=st.integers(0, 20), labelled=st.lists(st.booleans(), min_size=1, max_size=40),
       joined_before=st.booleans(), remembered=st.lists(st.booleans(), min_size=1, max_size=20))
def test_label_hashes_from_the_batch_are_the_labels_own(pending, fresh, labelled, joined_before, remembered):
    """From the batch's predictions, from those remembered from an earlier batch, or hashed."""
    join = Join(60_000, 60_000, ModelCounters())
    if joined_before:
        join.joined_ids.add_many(id_hashes(["old"]), [T0], [T0])
    for i in range(pending):
        join.pending[f"w{i}"] = (T0 + i, 1, 0.5)
        if remembered[i % len(remembered)]:
            join._hashes[f"w{i}"] = int(id_hashes([f"w{i}"])[0])
    events = [(Prediction(prediction_id=f"n{i}", model_id="m", timestamp=T0 + 100 + i, prediction=1),
               Source("predictions", 0, i)) for i in range(fresh)]
    label_ids = [f"w{i}" for i in range(pending)] + [f"n{i}" for i in range(fresh)]
    label_ids = [pid for k, pid in enumerate(label_ids) if labelled[k % len(labelled)]]
    events += [(Label(prediction_id=pid, model_id="m", label=1, timestamp=T0 + 200), Source("labels", 0, k))
               for k, pid in enumerate(label_ids)]
    batch = Batch(events)
    pids = Batch.column(batch.predictions, "prediction_id")
    assert join.can_join_plain(batch, pids, label_ids)
    assert (batch.prediction_hashes is not None) == joined_before
    assert join._label_hashes(batch, label_ids).tolist() == id_hashes(label_ids).tolist()


def test_remembered_hashes_follow_the_pending_predictions():
    """Predictions that expire unlabelled are not remembered past a purge that finds many."""
    join = Join(1_000, 1_000, ModelCounters())
    join.joined_ids.add_many(id_hashes(["old"]), [T0], [T0])
    for b in range(80):
        events = [(Prediction(prediction_id=f"p{b}-{i}", model_id="m", timestamp=T0 + 100 * b, prediction=1),
                   Source("predictions", 0, i)) for i in range(100)]
        batch = Batch(events)
        pids = Batch.column(batch.predictions, "prediction_id")
        assert join.can_join_plain(batch, pids, [])
        assert join.join_plain(batch, pids, [], [T0 + 100 * b] * 100, [0.5] * 100) is not None
        join.purge()
        assert len(join._hashes) <= 2 * len(join.pending) + 1024
    assert join.counts.expired_predictions > 2 * len(join.pending) + 1024  # more than the bound kept


def test_batch_fields_are_the_events_attributes_whatever_their_types():
    """Read whole (astuple) or by name, a batch's columns are its events' fields, for plain and
    decoded (subclass) events mixed, and with types whose fields are in another order or not a struct's."""
    import types

    import msgspec

    from streams.core.codecs import prediction_type
    from streams.core.join import LABEL_FIELDS, PREDICTION_FIELDS

    class Reordered(msgspec.Struct):
        score: float
        timestamp: int
        model_id: str
        prediction_id: str
        prediction: int
        model_version: str | None = None
        features: dict = {}
        segment: dict | None = None

    watched = prediction_type(["x"], [])
    kinds = [Prediction, watched, Reordered]
    events = [(kinds[i % 3](prediction_id=f"p{i}", model_id="m", timestamp=T0 + i, prediction=i % 2,
                            model_version=None if i % 4 else "v1", score=0.25),
               Source("predictions", 0, i)) for i in range(12)]
    events += [(Label(prediction_id=f"p{i}", model_id="m", label=1, timestamp=T0 + 20 + i), Source("labels", 0, i))
               for i in range(5)]
    plain = types.SimpleNamespace(prediction_id="q", model_id="m", timestamp=T0, prediction=0, score=0.5,
                                  features={}, model_version=None, segment=None)  # not a struct at all
    for chosen in (events, events[:12:3] + events[1::3], events[:2] + [(plain, Source("predictions", 0, 99))]):
        batch = Batch(chosen)
        for name in PREDICTION_FIELDS:
            assert list(batch.prediction_fields[name]) == [getattr(e, name) for e in batch.predictions]
        for name in LABEL_FIELDS:
            assert list(batch.label_fields[name]) == [getattr(e, name) for e in batch.labels]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(-30, 30), st.integers(0, 3)), min_size=1, max_size=40),
       ttl=st.sampled_from([5_000, 60_000]), dedup=st.sampled_from([1_000, 8_000]))
def test_a_plain_batch_leaves_the_state_event_by_event_leaves(steps, ttl, dedup):
    """Time going back and forth by seconds: labels whose ids are remembered by their own
    watermark but not by the batch's last one, predictions near the TTL; whatever join_plain
    decides by the batch's last watermark is what each event's own gives."""
    events, clock, unlabelled = [], T0, []
    for k, (is_label, step, pick) in enumerate(steps):
        clock += step * 1000
        if is_label and unlabelled:
            pid = unlabelled.pop(pick % len(unlabelled))
            events.append((Label(prediction_id=pid, model_id="m", label=1, timestamp=clock), Source("labels", 0, k)))
        else:
            unlabelled.append(f"p{k}")
            events.append((Prediction(prediction_id=f"p{k}", model_id="m", timestamp=clock, prediction=1),
                           Source("predictions", 0, k)))
    bulk, one = Join(ttl, min(ttl, dedup), ModelCounters()), Join(ttl, min(ttl, dedup), ModelCounters())
    for join in (bulk, one):  # ids joined before, so that the batch's are looked up and hashed once
        join.joined_ids.add_many(id_hashes(["old"]), [T0 - 30_000], [T0 - 30_000])
    batch = Batch(events)
    pids, label_pids = Batch.column(batch.predictions, "prediction_id"), Batch.column(batch.labels, "prediction_id")
    if not bulk.can_join_plain(batch, pids, label_pids):
        return
    joined = bulk.join_plain(batch, pids, label_pids, Batch.column(batch.predictions, "timestamp"), [0.5] * len(pids))
    for event, source in events:
        one.advance(event.timestamp)
        if isinstance(event, Label):
            one.label(event.prediction_id, event.timestamp, event.label, source.offset)
        else:
            one.prediction(event.prediction_id, event.timestamp, event.prediction, 0.5)
    if joined is not None:
        assert bulk.state() == one.state() and bulk.counts == one.counts


def _replay(events, purge_at: set[int], ttl_ms: int, dedup_ms: int) -> tuple:
    counts = ModelCounters()
    join, outcomes = Join(ttl_ms, dedup_ms, counts), []
    for k, (is_label, pid, t) in enumerate(events):
        join.advance(T0 + t)
        if is_label:
            outcomes.append(join.label(pid, T0 + t, 1, k))
        elif join.duplicate_prediction(pid):
            outcomes.append("duplicate")
        else:
            outcomes.append(join.prediction(pid, T0 + t, 1, 0.5))
        if k in purge_at:
            join.purge()
    join.purge()
    return outcomes, counts, join.state()


@settings(max_examples=500, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(-5, 40)), max_size=80),
       purges=st.sets(st.integers(0, 80)), ttl=st.integers(1, 60), dedup=st.integers(1, 120))
def test_what_a_label_or_prediction_meets_does_not_depend_on_when_the_join_was_purged(steps, purges, ttl, dedup):
    """Each event's outcome (joined, waiting, duplicate, late, early) and the counts are those of
    event time alone: a purge (at a batch's end, or a backtest's mark) only does upkeep early.
    Except how long an expired id is remembered: one horizon from the purge that found it, so
    whether a label that long after is late or an orphan depends on the batches; the streams here
    are shorter than the TTL and the horizon together, so no expired id is forgotten."""
    dedup = min(dedup, ttl)  # as a model's join has it
    events, clock = [], 0
    for is_label, pid, step in steps:
        clock = min(max(0, clock + step), ttl + dedup - 1)
        events.append((is_label, f"p{pid}", clock * 1000))
    purged = _replay(events, purges, ttl * 1000, dedup * 1000)
    never = _replay(events, set(), ttl * 1000, dedup * 1000)
    assert purged[0] == never[0] and purged[1] == never[1]
