"""Count windows, block-count windows and event-time windows against simple per-event models."""
import collections
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.base import InvalidInput
from detectors.event_windows import HoppingWindow, TumblingWindow
from detectors.windows import BlockCounts, CountedCodes, CountWindow


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.lists(st.lists(st.floats(-1e6, 1e6), max_size=50), max_size=8))
def test_count_window_is_the_last_n_rows(size, batches):
    window, model, seen = CountWindow(size), collections.deque(maxlen=size), 0
    for batch in batches:
        window.push(batch)
        model.extend(batch)
        seen += len(batch)
        assert window.rows()[:, 0].tolist() == list(model)
        assert window.seen == seen
    restored = CountWindow.from_state(json.loads(json.dumps(window.state())))
    restored.push([1.0, 2.0])
    window.push([1.0, 2.0])
    assert restored.rows().tolist() == window.rows().tolist()


def test_count_window_allocates_as_it_fills():
    window = CountWindow(size=1_000_000, width=5)
    window.push(np.ones((10, 5)))
    assert window._buffer.nbytes < 10_000
    window.push(np.ones((3000, 5)))
    assert len(window) == 3010 and window._buffer.shape[0] < 8192


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.lists(st.lists(st.integers(0, 4), max_size=40), max_size=8))
def test_block_counts_with_one_event_per_block_is_exact(size, batches):
    window, model = BlockCounts(size=size, blocks=size, bins=5), collections.deque(maxlen=size)
    for batch in batches:
        window.push(batch)
        model.extend(batch)
        assert window.totals().tolist() == np.bincount(list(model), minlength=5).tolist()
    assert BlockCounts.from_state(json.loads(json.dumps(window.state()))).totals().tolist() == window.totals().tolist()


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.lists(st.lists(st.integers(0, 3), max_size=60), max_size=8))
def test_block_counts_keep_the_last_blocks_of_block_size_events(blocks, block_size, batches):
    """By hand: events fill a block of ``block_size`` and then open the next one; the oldest block
    leaves in one piece once there are more than ``blocks``. Any batching gives the same blocks."""
    window = BlockCounts(size=blocks * block_size, blocks=blocks, bins=4)
    model: list[list[int]] = [[]]
    for batch in batches:
        restored = BlockCounts.from_state(json.loads(json.dumps(window.state())))
        assert restored.state() == window.state()
        restored.push(batch)  # the same blocks open and leave after a restore
        window.push(batch)
        assert restored.state() == window.state()
        for code in batch:
            if len(model[-1]) == block_size:
                model = (model + [[]])[-blocks:]
            model[-1].append(code)
        held = [code for block in model for code in block]
        assert window.totals().tolist() == np.bincount(held, minlength=4).tolist()
        assert window.count == len(held)


def test_block_counts_merge_adds_newest_blocks_together():
    left, right = BlockCounts(6, 3, 2), BlockCounts(6, 3, 2)
    left.push([0, 0, 0, 0, 1])  # blocks [0 0] [0 0] [1]
    right.push([1, 1, 1])  # blocks [1 1] [1]
    merged = left.merge(right)
    assert merged.totals().tolist() == [4, 4] and merged.count == 8
    with pytest.raises(ValueError, match="same size"):
        left.merge(BlockCounts(6, 2, 2))


def window_model(events, size, step, grace):
    """Per-event reference: which values each window got, and how many (event, window) were late."""
    max_time, open_windows, closed, late = -math.inf, {}, [], 0
    for t, v in events:
        watermark = max_time - grace
        start = math.floor(t / step) * step
        while start + size > t:
            if start + size <= watermark:
                late += 1
            else:
                open_windows.setdefault(start, []).append(v)
            start -= step
        max_time = max(max_time, t)
        for s in sorted(open_windows):
            if s + size <= max_time - grace:
                closed.append((s, open_windows.pop(s)))
    return closed, late, open_windows


def run_windows(windows, events, cuts):
    closed = []
    times, values = np.array([e[0] for e in events], dtype=float), np.array([e[1] for e in events])
    for part in np.split(np.arange(len(events)), cuts):
        closed += windows.update_many(times[part], np.zeros(len(part)), values[part])
    return closed


events_strategy = st.lists(st.tuples(st.integers(0, 200), st.floats(-100, 100)), min_size=1, max_size=80)


@settings(max_examples=80, deadline=None)
@given(events_strategy, st.sampled_from([(10, 10), (10, 5), (12, 4), (7, 3)]), st.integers(0, 15), st.data())
def test_event_windows_match_the_per_event_model(events, shape, grace, data):
    size, step = shape
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    windows = HoppingWindow(size, step, grace, kind="mae", params={"window": 1000})
    closed = run_windows(windows, events, cuts)
    expected, late, still_open = window_model(events, size, step, grace)
    assert [(w.start, w.count) for w in closed] == [(s, len(v)) for s, v in expected]
    for window, (_, values) in zip(closed, expected):
        assert window.result.statistic == pytest.approx(np.mean(np.abs(values)))
        assert window.end == window.start + size
    assert windows.late == late
    assert sorted(windows.open) == sorted(still_open)


def test_tumbling_window_state_round_trip_mid_stream():
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 1000, 3000)) + rng.normal(0, 5, 3000)  # a little out of order
    y_true, y_pred = rng.integers(0, 2, 3000), rng.integers(0, 2, 3000)
    windows = TumblingWindow(size=50, grace=10, kind="f1_macro", params={"window": 10_000})
    windows.update_many(times[:1200], y_true[:1200], y_pred[:1200])
    restored = TumblingWindow.from_state(json.loads(json.dumps(windows.state())))
    for part in np.array_split(np.arange(1200, 3000), 4):
        mine = windows.update_many(times[part], y_true[part], y_pred[part])
        theirs = restored.update_many(times[part], y_true[part], y_pred[part])
        assert [(w.start, w.result, w.count) for w in mine] == [(w.start, w.result, w.count) for w in theirs]
    assert windows.late == restored.late > 0


def test_open_windows_stay_bounded_for_in_order_data():
    windows = HoppingWindow(size=100, step=10, grace=30, kind="mae", params={"window": 10})
    for start in range(0, 30_000, 1000):
        t = np.arange(start, start + 1000, dtype=float)
        windows.update_many(t, np.zeros(1000), np.ones(1000))
        assert len(windows.open) <= math.ceil((100 + 30) / 10) + 1


def test_bad_windows_and_timestamps_are_rejected():
    with pytest.raises(ValueError, match="step"):
        HoppingWindow(size=10, step=20, kind="mae")
    with pytest.raises(ValueError, match="unknown detector kind"):
        TumblingWindow(size=10, kind="nope")
    with pytest.raises(InvalidInput, match="timestamps"):
        TumblingWindow(size=10, kind="mae").update_many([float("nan")], [0.0], [0.0])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.lists(st.integers(0, 40), max_size=3), st.integers(0, 40),
       st.lists(st.integers(0, 40), max_size=6), st.integers(0, 2**32 - 1))
def test_block_counts_totals_after_equal_pushing_up_to_each_position(blocks, block_size, before, events, positions,
                                                                     seed):
    """``totals_after`` foresees, for each position, the totals and count that pushing the
    first ``position`` events would give, for windows in step, from any fill (empty, newest
    block full, wrapped), the window sliding past its older blocks within the events."""
    rng = np.random.default_rng(seed)
    windows = [BlockCounts(size=blocks * block_size, blocks=blocks, bins=3) for _ in range(2)]
    for size in before:
        codes = rng.integers(0, 3, (size, 2))
        BlockCounts.push_columns(windows, codes)
    codes = rng.integers(0, 3, (events, 2))
    positions = [min(p, events) for p in positions]
    states = [w.state() for w in windows]
    totals, counts = BlockCounts.totals_after(windows, codes, positions)
    assert [w.state() for w in windows] == states  # nothing pushed
    for k, position in enumerate(positions):
        for j in range(2):
            pushed = BlockCounts.from_state(states[j])
            pushed.push(codes[:position, j])
            assert totals[k, j].tolist() == pushed.totals().tolist()
            assert counts[k, j] == pushed.count


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.lists(st.integers(0, 40), max_size=3), st.integers(0, 40),
       st.lists(st.integers(0, 40), max_size=6), st.integers(1, 6), st.lists(st.integers(1, 5), min_size=1, max_size=3),
       st.integers(0, 2**32 - 1))
def test_pushing_counted_codes_after_cells_after_equals_pushing_the_codes(blocks, block_size, before, events,
                                                                           positions, every, bins, seed):
    """A batch foreseen by ``cells_after`` and then pushed as the same :class:`CountedCodes`
    (its blocks' counts taken from the counts made at the positions where they can be) leaves
    the windows as pushing the array does, from any fill, with any positions: a few, or every
    ``every`` events (evaluation points, which often fall on each block's end)."""
    rng = np.random.default_rng(seed)

    def made():
        return [BlockCounts(size=blocks * block_size, blocks=blocks, bins=b) for b in bins]

    def drawn(size):
        return np.column_stack([rng.integers(0, b, size) for b in bins]).reshape(size, len(bins))

    counted, plain = made(), made()
    for size in before:
        codes = drawn(size)
        BlockCounts.push_columns(counted, codes)
        BlockCounts.push_columns(plain, codes)
    codes = drawn(events)
    batch = CountedCodes.of(counted, codes)
    positions = sorted({*range(0, events + 1, every), *(min(p, events) for p in positions)})
    BlockCounts.cells_after(counted, batch, positions)
    BlockCounts.push_columns(counted, batch)
    BlockCounts.push_columns(plain, codes)
    assert [w.state() for w in counted] == [w.state() for w in plain]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.lists(st.integers(0, 30), max_size=3), st.integers(0, 30),
       st.lists(st.integers(0, 30), max_size=5), st.lists(st.integers(1, 6), min_size=2, max_size=4),
       st.integers(0, 2**32 - 1))
def test_windows_of_different_bins_share_a_table_and_count_as_each_alone(blocks, block_size, before, events,
                                                                          positions, bins, seed):
    """Windows in step with different bins (a feature's PSI and KS) are counted as one table:
    ``push_columns`` leaves each as its own pushes would, ``cells_after`` foresees each one's
    totals, its bins one window after another, and a run of one number of bins reads its
    totals off the table."""
    rng = np.random.default_rng(seed)
    windows = [BlockCounts(size=blocks * block_size, blocks=blocks, bins=b) for b in bins]
    alone = [BlockCounts(size=blocks * block_size, blocks=blocks, bins=b) for b in bins]

    def drawn(size):
        return np.column_stack([rng.integers(0, b, size) for b in bins]).reshape(size, len(bins))

    for size in before:
        codes = drawn(size)
        BlockCounts.push_columns(windows, codes)
        for j, window in enumerate(alone):
            window.push(codes[:, j])
    assert [w.state() for w in windows] == [w.state() for w in alone]
    codes = drawn(events)
    positions = [min(p, events) for p in positions]
    totals, counts = BlockCounts.cells_after(windows, codes, positions)
    for k, position in enumerate(positions):
        pushed = [BlockCounts.from_state(w.state()) for w in alone]
        for j, window in enumerate(pushed):
            window.push(codes[:position, j])
        assert totals[k].tolist() == [c for w in pushed for c in w.totals().tolist()]
        assert counts[k].tolist() == [w.count for w in pushed]
    last = [j for j in range(len(bins)) if bins[j] == bins[-1]]
    if last == list(range(last[0], len(bins))):
        run = windows[last[0]:]
        assert BlockCounts.totals_of(run).tolist() == [w.totals().tolist() for w in run]



@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.lists(st.tuples(st.integers(0, 12), st.sampled_from([None, 0, 1])),
                                                      max_size=8), st.integers(0, 2**32 - 1))
def test_windows_of_a_table_fed_alone_leave_step_and_come_back(blocks, block_size, pushes, seed):
    """A window of a shared table fed on its own takes it out of step (the table's windows are
    then fed one by one) until the others catch up: every window ends as its own pushes leave it."""
    rng = np.random.default_rng(seed)
    bins = [3, 5]
    windows = [BlockCounts(size=blocks * block_size, blocks=blocks, bins=b) for b in bins]
    BlockCounts.push_columns(windows, np.column_stack([rng.integers(0, b, 2) for b in bins]).reshape(2, 2))
    alone = [BlockCounts.from_state(w.state()) for w in windows]  # the same counts, each window its own
    for size, one in pushes:
        codes = np.column_stack([rng.integers(0, b, size) for b in bins]).reshape(size, 2)
        if one is None:
            BlockCounts.push_columns(windows, codes)
            for j, window in enumerate(alone):
                window.push(codes[:, j])
        else:
            windows[one].push(codes[:, one])
            alone[one].push(codes[:, one])
        assert BlockCounts.together(windows) == BlockCounts.in_step(alone)
        assert [w.state() for w in windows] == [w.state() for w in alone]


_cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2 ** 60, 2 ** 60).map(float),
                   st.integers(2 ** 53 - 50, 2 ** 53).map(float), st.integers(-(2 ** 53), -(2 ** 53) + 50).map(float),
                   st.sampled_from([0.0, -0.0, 1.0, 2.0 ** 53, 2.0 ** 53 + 2, -(2.0 ** 63), 1e300]))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.data())
def test_count_window_state_restores_every_float_bit_for_bit(size, width, data):
    """Columns as integers, as steps between integers, as one repeated value, with non-finite values spelled out: the
    restored window holds the same float64 bits (-0.0, inf, integers past 2**53 included; a
    nan stays a nan, as JSON has one)."""
    window = CountWindow(size, width)
    for _ in range(data.draw(st.integers(0, 3))):
        rows = data.draw(st.lists(st.lists(_cells, min_size=width, max_size=width), max_size=size + 2))
        if rows:
            window.push(rows)
    restored = CountWindow.from_state(json.loads(json.dumps(window.state())))
    assert restored.rows().shape == window.rows().shape and restored.seen == window.seen
    got, expected = restored.rows(), window.rows()
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    numbers = ~np.isnan(expected)
    assert got[numbers].tobytes() == expected[numbers].tobytes()


def test_count_window_restores_a_state_that_lists_rows():
    """The state of a window before columns: one list per row, non-finite values spelled out."""
    state = {"size": 4, "width": 2, "seen": 7, "rows": [[1.0, "nan"], [0.0, 0.25], [-0.0, "inf"], [1.0, "-inf"]]}
    window = CountWindow.from_state(state)
    assert window.seen == 7 and len(window) == 4
    assert np.array_equal(window.rows(), [[1.0, np.nan], [0.0, 0.25], [-0.0, np.inf], [1.0, -np.inf]], equal_nan=True)
    assert np.signbit(window.rows()[2, 0])
    again = CountWindow.from_state(window.state())
    assert again.rows().tobytes() == window.rows().tobytes()


@pytest.mark.parametrize("scale", [1, 300, 70_000, 5_000_000_000])
def test_block_counts_restore_a_state_with_a_list_per_block(scale):
    """The states of block counts before they were packed: a list of counts per block, or one list."""
    window = BlockCounts(size=6, blocks=3, bins=2)
    for codes in ([0, 1], [1, 1, 0], [0], [1, 1]):
        window.push(np.array(codes))
    window._counts *= scale  # counts of every packed size (each block's adding up to its fill)
    window._fill *= scale
    state = window.state()
    assert set(state["counts"]) == {{1: "uint8", 300: "uint16", 70_000: "uint32"}.get(scale, "int64")}
    by_block = window._ordered()[0].tolist()
    nested, flat = {**state, "counts": by_block}, {**state, "counts": sum(by_block, [])}
    for restored in (BlockCounts.from_state(nested), BlockCounts.from_state(flat),
                     BlockCounts.from_state(json.loads(json.dumps(state)))):
        assert restored.state() == state and restored.totals().tolist() == window.totals().tolist()
        restored.push(np.array([0, 0, 0])), window.push(np.array([0, 0, 0]))
        assert restored.state() == window.state()
        window = BlockCounts.from_state(state)
