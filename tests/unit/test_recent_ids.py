"""Remembered ids: how long, independent of purges, exact checkpoints, and a Monitor whose
memory and checkpoint follow its de-duplication horizon, not the length of its stream."""
from __future__ import annotations

import base64
import json

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streams.core.codecs import Label, Prediction
from streams.core.config import ConfigError, parse_config
from streams.core.monitor import Monitor, Source
from streams.core.recent_ids import (BUCKETS, MAX_WIDTH_MS, SEAL_IDS, RecentIds, SealedIndex, _Layout, bucket_width, id_hash,
                                     id_hashes)

T0 = 1_700_000_000_000


def test_an_id_is_remembered_for_the_horizon_and_at_most_one_bucket_more():
    ids = RecentIds(8000)  # buckets of 1000 ms
    h = id_hash("p1")
    ids.add(h, T0 + 500, T0 + 500)
    assert ids.contains(h, T0 + 500) and not ids.contains(id_hash("p2"), T0 + 500)
    bucket_end = T0 + 1000  # T0 is a multiple of the width
    assert ids.contains(h, bucket_end + 8000 - 1)  # 8.5 s after it was added: still there
    ids.purge(bucket_end + 8000 - 1)
    assert ids.contains(h, bucket_end + 8000 - 1)
    assert not ids.contains(h, bucket_end + 8000)
    ids.purge(bucket_end + 8000)
    assert len(ids) == 0


def test_an_id_already_older_than_the_horizon_is_not_kept():
    ids = RecentIds(8000)
    ids.add(id_hash("old"), T0, T0 + 20_000)
    assert len(ids) == 0


def test_hashes_are_the_same_one_by_one_and_in_bulk_and_in_every_process():
    pids = ["p1", "churn-0001", "ü"]
    assert id_hashes(pids).tolist() == [id_hash(p) for p in pids]
    assert id_hash("p1") == 0x91ce9478c96516e8  # checkpoints hold hashes: they must never change


@settings(max_examples=100, deadline=None)
@given(pids=st.lists(st.text(min_size=1) | st.text(min_size=3000, max_size=3000), max_size=8))
def test_hashes_are_blake2b_of_8_bytes_of_the_id(pids):
    import hashlib
    expected = [int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little") for p in pids]
    assert id_hashes(pids).tolist() == [id_hash(p) for p in pids] == expected


ops = st.lists(st.tuples(st.sampled_from(["add", "ask", "purge"]), st.integers(0, 30), st.integers(-3, 4)),
               max_size=120)


@settings(max_examples=300, deadline=None)
@given(ops=ops, horizon=st.integers(1, 60_000), shard_ids=st.sampled_from([1, 3, SealedIndex.SHARD_IDS]))
def test_answers_depend_on_event_times_alone_not_on_purges_or_sealing_or_checkpoints(ops, horizon, shard_ids):
    # small shards: the index has many, each upkeep merges a few, a lay-out comes often
    default, SealedIndex.SHARD_IDS = SealedIndex.SHARD_IDS, shard_ids
    try:
        _answers_depend_on_event_times_alone(ops, horizon)
    finally:
        SealedIndex.SHARD_IDS = default


def _answers_depend_on_event_times_alone(ops, horizon):
    purged, never, restored = RecentIds(horizon), RecentIds(horizon), RecentIds(horizon)
    stepwise = RecentIds(horizon)  # purged after every step: seals a bucket or two at a time
    added: dict[int, set[int]] = {}  # the reference: hash -> the buckets it was added to
    width = bucket_width(horizon)
    assert width == min(-(-horizon // BUCKETS), MAX_WIDTH_MS)
    watermark, clock = T0, T0
    for op, pid, step in ops:
        clock = max(T0, clock + step * 997)
        watermark = max(watermark, clock)
        h = id_hash(f"p{pid}")
        if op == "add":
            for ids in (purged, never, restored, stepwise):
                ids.add(h, clock, watermark)
            if (clock // width + 1) * width > watermark - horizon:
                added.setdefault(h, set()).add(clock // width)
        elif op == "ask":
            answers = {ids.contains(h, watermark) for ids in (purged, never, restored)}
            assert answers == {any((b + 1) * width > watermark - horizon for b in added.get(h, ()))}
            never.state()  # a checkpoint folds what waits into the sorted arrays: same answers
        else:
            purged.purge(watermark)
            restored.purge(watermark)
            state = json.loads(json.dumps(restored.state()))
            restored = RecentIds.from_state(state, horizon)
            assert restored.state() == state
        stepwise.purge(watermark)
    for pid in range(31):
        h = id_hash(f"p{pid}")
        assert purged.contains(h, watermark) == never.contains(h, watermark) == restored.contains(h, watermark)
        assert never.may_contain_any(np.array([h], dtype=np.uint64)) or not never.contains(h, watermark)
    # checkpoints in between change no later checkpoint
    assert purged.state() == restored.state()
    # nor does how many buckets a purge seals at once
    purged.purge(watermark)
    stepwise.purge(watermark)
    assert purged.state() == stepwise.state()


def test_many_at_once_equals_one_by_one():
    one, many = RecentIds(4000), RecentIds(4000)
    pids = [f"p{i}" for i in range(50)]
    ts = np.arange(50, dtype=np.int64) * 300 + T0
    watermarks = np.maximum.accumulate(ts)
    for pid, t, w in zip(pids, ts.tolist(), watermarks.tolist()):
        one.add(id_hash(pid), t, w)
    many.add_many(id_hashes(pids), ts, watermarks)
    assert one.state() == many.state()
    assert many.may_contain_any(id_hashes(["x", "p3"])) and not many.may_contain_any(id_hashes(["x", "y"]))


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 40), st.integers(-5, 5)), max_size=60), horizon=st.integers(1, 20_000))
def test_many_at_once_equals_one_by_one_in_any_time_order(steps, horizon):
    # timestamps that go back and forth over several buckets, some already forgotten, repeats
    one, many = RecentIds(horizon), RecentIds(horizon)
    ts = T0 + np.cumsum([step * 701 for _, step in steps], dtype=np.int64)
    watermarks = np.maximum.accumulate(ts) if len(ts) else ts
    hashes = id_hashes([f"p{pid}" for pid, _ in steps])
    for h, t, w in zip(hashes.tolist(), ts.tolist(), watermarks.tolist()):
        one.add(h, t, w)
    many.add_many(hashes, ts, watermarks)
    assert one._open == many._open
    assert one.state() == many.state()


@settings(max_examples=100, deadline=None)
@given(times=st.lists(st.integers(0, 12), min_size=1, max_size=80), purge_at=st.integers(0, 12))
def test_a_purge_that_seals_many_buckets_at_once_keeps_what_one_at_a_time_keeps(times, purge_at):
    horizon = 8000  # buckets of 1 s
    at_once, stepwise = RecentIds(horizon), RecentIds(horizon)
    hashes = id_hashes([f"p{i}" for i in range(len(times))]).tolist()
    for h, second in zip(hashes, times):
        for ids in (at_once, stepwise):
            ids.add(h, T0 + second * 1000, T0)
    at_once.purge(T0 + purge_at * 1000)  # several buckets sealed in one purge, each of several ids
    for second in range(purge_at + 1):
        stepwise.purge(T0 + second * 1000)
    assert at_once.state() == stepwise.state()
    assert at_once._counts == stepwise._counts and at_once._sealed_ids == stepwise._sealed_ids
    for h in hashes:
        assert at_once.contains(h, T0 + purge_at * 1000) == stepwise.contains(h, T0 + purge_at * 1000)


@given(steps=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 30), st.booleans(), st.booleans()), max_size=40),
       horizon=st.integers(1, 20_000))
def test_a_purge_keeps_exactly_the_buckets_remembered_by_its_watermark(steps, horizon):
    """Whether after a restore, a leap of event time or a step of a bucket or two (when a purge
    looks only at the buckets passed since the last one), the checkpoint holds each bucket that
    got an id and is remembered by the watermark, and no other."""
    ids, width = RecentIds(horizon), bucket_width(horizon)
    added: set[int] = set()
    watermark = T0
    for k, (step, back, purge, restore) in enumerate(steps):
        watermark += step * width // 4 if step < 36 else step * horizon  # now and then a leap
        ts = watermark - back * width // 2
        ids.add(id_hash(f"p{k}"), ts, watermark)
        if (ts // width + 1) * width > watermark - horizon:
            added.add(ts // width)
        if restore:
            ids = RecentIds.from_state(json.loads(json.dumps(ids.state())), horizon)
        if purge:
            ids.purge(watermark)
            remembered = {b for b in added if (b + 1) * width > watermark - horizon}
            assert set(map(int, ids.state()["buckets"])) == remembered


def test_an_older_checkpoint_of_id_strings_restores_as_hashes():
    ids = RecentIds.from_state({"p1": T0, "p2": T0 + 10}, 8000)
    assert ids.contains(id_hash("p1"), T0 + 10) and not ids.contains(id_hash("p3"), T0 + 10)


def _config(dedup: float | None = None, ttl: float = 60.0):
    model = {"id": "m", "label_ttl_seconds": ttl, "features": {"numeric": ["a"]},
             "drift": {"numeric": ["psi"], "prediction": [], "window": 50, "reference_size": 50}}
    if dedup is not None:
        model["dedup_seconds"] = dedup
    return parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [model]})


def _stream(first: int, count: int, step_ms: int = 100, unlabelled_every: int = 10) -> list:
    """Predictions every ``step_ms``, each label 2 s later, every ``unlabelled_every``-th never."""
    events = []
    for i in range(first, first + count):
        events.append((Prediction(prediction_id=f"m-{i:08d}", model_id="m", timestamp=T0 + i * step_ms,
                                  prediction=1, score=0.7, features={"a": float(i % 13)}), Source("p", 0, i)))
        k = i - 20
        if k >= 0 and k % unlabelled_every:
            events.append((Label(prediction_id=f"m-{k:08d}", model_id="m", timestamp=T0 + k * step_ms + 2000,
                                 label=i % 2), Source("l", 0, k)))
    return events


@pytest.mark.parametrize("ttl, dedup, unlabelled_every", [(60.0, None, 10), (86_400.0, 60.0, 1 << 30)])
def test_the_checkpoint_after_ten_horizons_is_no_larger_than_after_two(ttl, dedup, unlabelled_every):
    # 10 predictions a second of event time, a 60 s horizon: a short TTL with one prediction in
    # ten never labelled (they expire), or the default TTL with every prediction labelled
    monitor = Monitor(_config(dedup, ttl))
    sizes = {}
    per_horizon = 600
    for horizon in range(1, 11):
        for lo in range((horizon - 1) * per_horizon, horizon * per_horizon, 200):
            monitor.process(_stream(lo, 200, unlabelled_every=unlabelled_every))
        sizes[horizon] = len(msgspec.json.encode(monitor.state()))
    model = monitor.models["m"]
    if ttl == 60.0:
        assert model.counters.expired_predictions > 8 * 60  # one in ten expired, TTL after TTL
    # joined ids: at most one horizon and a bucket (9 / 8 of 600)
    assert len(model.join.joined_ids) <= 600 * (BUCKETS + 1) // BUCKETS
    assert len(model.join.joined_ids.state()["buckets"]) <= 60_000 // bucket_width(60_000) + 1
    assert model.counters.joined > 5000
    assert max(sizes[n] for n in range(3, 11)) <= sizes[2] * 1.05


def test_a_duplicate_label_within_the_horizon_is_a_duplicate_and_after_it_an_orphan():
    monitor = Monitor(_config(dedup=10))
    prediction = (Prediction(prediction_id="p1", model_id="m", timestamp=T0, prediction=1, score=0.7,
                             features={"a": 1.0}), Source("p", 0, 0))
    label = lambda t: (Label(prediction_id="p1", model_id="m", timestamp=T0 + t, label=1), Source("l", 0, t))  # noqa: E731
    monitor.process([prediction, label(1000), label(5000)])
    model = monitor.models["m"]
    assert model.counters.joined == 1 and model.counters.duplicate_labels == 1
    monitor.process([label(20_000)])  # the horizon (10 s, its bucket ends by 11.25 s) has passed
    assert model.counters.duplicate_labels == 1 and "p1" in model.join.early_labels


def test_dedup_seconds_must_be_positive():
    with pytest.raises(ConfigError, match=r"dedup_seconds"):
        _config(dedup=0)


def test_buckets_are_at_most_max_width_wide_and_a_commit_rewrites_about_one():
    """With a long horizon the buckets stay MAX_WIDTH_MS wide: a stream that goes on changes the
    newest bucket's text only, so a store that keeps buckets apart writes a few seconds of ids."""
    ids = RecentIds(600_000)
    assert ids.width == MAX_WIDTH_MS
    rng = np.random.default_rng(3)
    before = {}
    for second in range(120):  # 100 ids a second for two minutes
        t = T0 + second * 1000
        ids.add_many(rng.integers(0, 2**63, 100, dtype=np.uint64), np.full(100, t), np.full(100, t))
        ids.purge(t)
        state = ids.state()["buckets"]
        changed = [b for b, text in state.items() if before.get(b) != text]
        assert changed == [str(t // MAX_WIDTH_MS)]
        before = state
    assert len(before) == 120_000 // MAX_WIDTH_MS and len(ids) == 12_000


def test_a_checkpoint_of_wider_buckets_restores_each_id_into_the_bucket_that_holds_its_old_end():
    """A checkpoint written when buckets were horizon / 8 wide (no width in it) restores with
    today's narrower buckets: every id remembered at least as long as before, none longer than
    a bucket more."""
    horizon, old_width = 600_000, 75_000
    old = {"horizon_ms": horizon, "buckets": {}}
    base = T0 // old_width
    for k, bucket in enumerate((base, base + 1)):
        hashes = np.sort(id_hashes([f"b{k}-{i}" for i in range(5)]))
        old["buckets"][str(bucket)] = base64.b64encode(hashes.astype("<u8").tobytes()).decode()
    ids = RecentIds.from_state(old, horizon)
    for k, bucket in enumerate((base, base + 1)):
        old_end = (bucket + 1) * old_width
        h = id_hash(f"b{k}-0")
        assert ids.contains(h, old_end + horizon - 1)
        assert not ids.contains(h, old_end + horizon + MAX_WIDTH_MS)
    assert sorted(ids.state()["buckets"]) == [str(((base + 1) * old_width - 1) // MAX_WIDTH_MS),
                                              str(((base + 2) * old_width - 1) // MAX_WIDTH_MS)]


def test_a_long_stream_s_upkeep_copies_a_share_of_the_ids_at_a_time():
    """25,000 ids a 5-s bucket, a 600-s horizon (3M ids remembered), two and a half horizons.
    Once the horizon is full, each seal merges into an eighth of the index's shards and the
    recent array, and no lay-out (a copy of all) comes; the forgotten ids still stored and the
    ids waiting in the recent array stay within ROUND buckets' worth; answers stay exact."""
    ids = RecentIds(600_000)
    per_bucket, buckets, horizon_buckets = 25_000, 300, 600_000 // MAX_WIDTH_MS
    rng = np.random.default_rng(7)
    layouts, kept = 0, []
    for k in range(buckets):
        t = T0 + k * MAX_WIDTH_MS
        hashes = rng.integers(0, 2**64, per_bucket, dtype=np.uint64)  # uniform, as BLAKE2b's are
        if k % 25 == 0:
            kept.append((int(hashes[0]), t))
        ids.add_many(hashes, np.full(per_bucket, t), np.full(per_bucket, t))
        flat = ids._index.hashes
        ids.purge(t + MAX_WIDTH_MS)  # seals this bucket
        if k > horizon_buckets + SealedIndex.ROUND:
            layouts += ids._index.hashes is not flat
        index, remembered = ids._index, len(ids)
        assert remembered <= (horizon_buckets + 1) * per_bucket
        assert len(index) - remembered <= (SealedIndex.ROUND + 1) * per_bucket * 1.05
        assert len(index.recent[0]) <= (SealedIndex.ROUND + 1) * per_bucket * 1.05
        assert len(index.hashes) <= 1.3 * len(index) + (16 << index.bits)
    assert layouts == 0 and ids._index.bits == 4  # 3M ids: 16 shards
    watermark = T0 + buckets * MAX_WIDTH_MS
    for h, t in kept:
        assert ids.contains(h, watermark) == ((t // MAX_WIDTH_MS + 1) * MAX_WIDTH_MS > watermark - 600_000)
        assert ids.may_contain_any(np.array([h], dtype=np.uint64)) or not ids.contains(h, watermark)


def test_a_growing_stream_s_index_is_laid_out_a_share_of_its_shards_at_each_upkeep(monkeypatch):
    """A stream that grows for a whole horizon lays its index out again at every quarter more;
    each upkeep fills at most a round's share of the new shards (no upkeep copies every id,
    which stalls a busy monitor for up to a second), and every answer stays exact meanwhile."""
    monkeypatch.setattr(SealedIndex, "SHARD_IDS", 1 << 12)
    filled: list[int] = []
    fill = _Layout.fill

    def counted(layout, shard, hashes, buckets):
        filled.append(shard)
        fill(layout, shard, hashes, buckets)

    monkeypatch.setattr(_Layout, "fill", counted)
    ids = RecentIds(600_000)
    rng = np.random.default_rng(13)
    per_bucket, sample = 4_000, []
    steps_of_layouts, steps = [], 0
    for k in range(90):
        t = T0 + k * MAX_WIDTH_MS
        hashes = rng.integers(0, 2**64, per_bucket, dtype=np.uint64)
        sample += [int(h) for h in hashes[:2]]
        ids.add_many(hashes, np.full(per_bucket, t), np.full(per_bucket, t))
        filled.clear()
        laying_out = ids._index.next is not None
        ids.purge(t + MAX_WIDTH_MS)
        layout = ids._index.next
        if filled:
            shards = 1 << (layout.bits if layout is not None else ids._index.bits)
            assert len(filled) <= -(-shards // ids._index.rounds)
            steps += 1
            if layout is None:
                steps_of_layouts.append(steps)
                steps = 0
        elif laying_out:
            raise AssertionError("a lay-out in progress made no step")
        hashes_now = np.array(sample, dtype=np.uint64)
        assert all(ids.contains(h, t + MAX_WIDTH_MS) for h in sample)
        assert ids.may_contain_any(hashes_now[-1:]) and not ids.may_contain_any(np.array([1, 2, 3], dtype=np.uint64))
        assert len(ids._index) >= ids._sealed_ids
    # 360,000 ids at the end: from one shard to 128, a lay-out at each quarter more, the
    # big ones over a round of upkeeps
    assert len(steps_of_layouts) >= 6 and max(steps_of_layouts) == ids._index.rounds
    ids._index.compact(ids._first, everything=True)
    assert sum(ids._index.lengths) == len(ids) and not len(ids._index.recent[0])


def test_the_index_gives_its_slack_back_when_the_rate_falls():
    """A busy hour then a quiet one: once the busy hour's ids are forgotten the flat array is
    laid out again for what is left, not kept at its busiest size."""
    ids = RecentIds(60_000)
    rng = np.random.default_rng(5)
    for k in range(120):  # 5-s buckets: 10 minutes busy (20,000 ids a bucket), then quiet (200)
        t = T0 + k * MAX_WIDTH_MS
        n = 20_000 if k < 60 else 200
        ids.add_many(rng.integers(0, 2**64, n, dtype=np.uint64), np.full(n, t), np.full(n, t))
        ids.purge(t + MAX_WIDTH_MS)
        if k == 59:
            busiest = len(ids._index.hashes)
    assert busiest > 200_000 and len(ids._index.hashes) < busiest / 10 and len(ids) == 12 * 200


#: hashes at the shards' edges: 0, 2**64 - 1, and each shard's least and greatest of 2 to 16
#: shards (a shard's greatest is also the value of its padding)
EDGES = sorted({0, 2**64 - 1, *(s << (64 - b) for b in range(1, 5) for s in range(1 << b)),
                *(((s + 1) << (64 - b)) - 1 for b in range(1, 5) for s in range(1 << b))})


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.lists(st.sampled_from(EDGES) | st.integers(0, 2**64 - 1), max_size=6),
                                st.integers(-2, 1), st.booleans(), st.integers(0, 3)), max_size=40),
       shard_ids=st.sampled_from([1, 2, 5]))
def test_the_index_finds_every_entry_at_the_shards_edges_and_keeps_its_flat_array_sorted(steps, shard_ids):
    """Entries whose hash is a shard's least or greatest (the padding's value), or the last
    shard's 2**64 - 1, are found with their bucket through upkeeps and lay-outs; padding never
    answers for a bucket that is remembered."""
    default, SealedIndex.SHARD_IDS = SealedIndex.SHARD_IDS, shard_ids
    try:
        index, stored, bucket, first = SealedIndex(), [], 0, -10
        for hashes, offset, upkeep, forget in steps:
            if hashes:
                hashes = sorted(set(hashes))
                index.add([np.array(hashes, dtype=np.uint64)], [bucket + offset])
                stored += [(h, bucket + offset) for h in hashes]
            if upkeep:
                bucket += 1
                first = max(first, bucket - 1 - forget) if forget else first
                index.compact(first)
            assert (index.hashes[:-1] <= index.hashes[1:]).all() and (index.recent[0][:-1] <= index.recent[0][1:]).all()
            for h in {*EDGES, *(h for h, _ in stored)}:
                found = sorted(b for b in index.buckets_of(np.uint64(h)) if b >= first)
                assert found == sorted(b for g, b in stored if g == h and b >= first)
                assert index.may_contain_any(np.array([h], dtype=np.uint64)) or not found
        index.compact(first, everything=True)  # a whole round: every entry in its shard, none left waiting
        assert not len(index.recent[0]) and sum(index.lengths) == sum(b >= first for _, b in stored)
    finally:
        SealedIndex.SHARD_IDS = default


@pytest.mark.parametrize("horizon_ms", [8_000, 16_000, 60_000])
def test_a_short_horizon_stores_at_most_an_eighth_more_forgotten_and_waiting_ids(horizon_ms):
    """Buckets an eighth of a short horizon wide: the index's upkeep comes at every seal, so the
    ids stored beyond those remembered stay within about a bucket's, not a horizon's."""
    ids = RecentIds(horizon_ms)
    rng = np.random.default_rng(11)
    per_ms = 5  # 5,000 ids a second
    for k in range(400):
        t = T0 + k * 100
        ids.add_many(rng.integers(0, 2**64, 100 * per_ms, dtype=np.uint64), np.full(100 * per_ms, t),
                     np.full(100 * per_ms, t))
        ids.purge(t)
        if k > horizon_ms // 100 * 2:
            extra = len(ids._index) - ids._sealed_ids
            assert extra <= (ids.width + 100) * per_ms * 1.1


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 40), st.integers(-5, 5)), max_size=60), horizon=st.integers(1, 20_000),
       ahead=st.integers(0, 30_000))
def test_many_at_once_with_one_watermark_equals_one_by_one(steps, horizon, ahead):
    # one watermark for all (a Python int: the join's usual call), at or past the latest time, some ids forgotten by it
    one, many = RecentIds(horizon), RecentIds(horizon)
    ts = T0 + np.cumsum([step * 701 for _, step in steps], dtype=np.int64)
    watermark = int(ts.max(initial=T0)) + ahead
    hashes = id_hashes([f"p{pid}" for pid, _ in steps])
    for h, t in zip(hashes.tolist(), ts.tolist()):
        one.add(h, t, watermark)
    many.add_many(hashes, ts, watermark)
    assert one._open == many._open
    assert one.state() == many.state()


@pytest.mark.parametrize("per_bucket", [3, SEAL_IDS])
def test_a_slow_stream_s_passed_buckets_are_sealed_together(per_bucket, monkeypatch):
    """5-s buckets, 120 a horizon: a few ids a bucket wait in their sets until an eighth of a
    horizon's buckets (the index's rounds) have passed, then go into the index in one seal; a
    busy bucket is sealed as soon as it has passed. Every answer stays the same meanwhile."""
    ids = RecentIds(600_000)
    seals = []
    add = SealedIndex.add

    def counted(index, arrays, buckets):
        seals.append(len(buckets))
        add(index, arrays, buckets)

    monkeypatch.setattr(SealedIndex, "add", counted)
    rng = np.random.default_rng(3)
    added = []
    for k in range(20):
        t = T0 + k * MAX_WIDTH_MS
        hashes = rng.integers(0, 2**64, per_bucket, dtype=np.uint64)
        ids.add_many(hashes, np.full(per_bucket, t), t)
        added += [(int(h), t) for h in hashes[:3]]
        ids.purge(t + MAX_WIDTH_MS)
        for h, _ in added:
            assert ids.contains(h, t + MAX_WIDTH_MS) and ids.may_contain_any(np.array([h], dtype=np.uint64))
    assert seals == ([ids._index.rounds, ids._index.rounds] if per_bucket < SEAL_IDS else [1] * 20)
