"""Count windows: the last events a statistic is computed over, in bounded memory.

* :class:`CountWindow` keeps the last ``size`` rows of a fixed number of float columns in a
  ring buffer (memory at most ``size * width`` floats, whatever the stream length; allocated as
  the window fills, so a large ``size`` costs nothing until used).
* :class:`BlockCounts` is a count window over bin counts that keeps no events (drift sketches).

The metrics, drift detectors and the estimator keep their events in these; windows over event
time, which hold a whole detector per window, are in :mod:`detectors.event_windows`.
"""
from __future__ import annotations

import base64
import bisect
import itertools
import operator
from typing import Any, Iterable

import numpy as np

from .base import from_json_floats, json_floats


class CountWindow:
    """The last ``size`` rows of ``width`` float columns, oldest first.

    A ring buffer: :meth:`push` appends rows and the oldest fall out once ``size`` are held.
    The buffer grows by doubling up to ``size`` rows, so a window that never fills never
    allocates all of it.

    Parameters
    ----------
    size : int
        Rows kept, >= 1.
    width : int, default 1
        Float columns per row, >= 1 (a metric keeps one row per labelled pair).

    Attributes
    ----------
    seen : int
        Rows ever pushed, including those that have left the window.

    Examples
    --------
    >>> window = CountWindow(size=3)
    >>> window.push([1.0, 2.0, 3.0, 4.0])           # 1.0 falls out
    >>> window.rows()[:, 0].tolist()
    [2.0, 3.0, 4.0]
    >>> len(window), window.seen
    (3, 4)
    >>> CountWindow.from_state(window.state()).rows()[:, 0].tolist()
    [2.0, 3.0, 4.0]
    """

    def __init__(self, size: int, width: int = 1):
        if int(size) < 1:
            raise ValueError(f"window size must be >= 1, got {size!r}")
        if int(width) < 1:
            raise ValueError(f"window width must be >= 1, got {width!r}")
        self.size = int(size)
        self.width = int(width)
        self._buffer = np.zeros((min(self.size, 64), self.width))  # grows by doubling up to size
        self._next = 0  # slot the next row is written to
        self._count = 0  # rows held, <= size
        self.seen = 0  # rows ever pushed

    def push(self, rows: Any) -> None:
        """Append rows (shape ``(k,)`` when width is 1, else ``(k, width)``); the oldest fall out."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.width)
        self.seen += len(rows)
        rows = rows[-self.size:]  # older rows would be overwritten within this call anyway
        self._reserve(self._count + len(rows))
        # at most two slices of the ring: up to its end, then from its start
        first = min(len(rows), self.size - self._next)
        self._buffer[self._next:self._next + first] = rows[:first]
        self._buffer[: len(rows) - first] = rows[first:]
        self._next = (self._next + len(rows)) % self.size
        self._count = min(self.size, self._count + len(rows))

    def oldest(self, count: int) -> np.ndarray:
        """The oldest ``count`` rows held (all of them if fewer), oldest first: pushing ``k`` rows
        drops the oldest ``len(self) + k - size``."""
        count = max(0, min(int(count), self._count))
        start = (self._next - self._count) % self.size
        if start + count <= self.size:
            return self._buffer[start:start + count]
        return np.concatenate((self._buffer[start:], self._buffer[: start + count - self.size]))

    def _reserve(self, rows: int) -> None:
        # Growth happens before the ring first wraps, while rows sit at [0, count) in order.
        capacity = len(self._buffer)
        if capacity >= min(rows, self.size):
            return
        while capacity < min(rows, self.size):
            capacity = min(2 * capacity, self.size)
        grown = np.zeros((capacity, self.width))
        grown[: self._count] = self._buffer[: self._count]
        self._buffer = grown

    def rows(self) -> np.ndarray:
        """The rows in the window, oldest first (a copy when the ring has wrapped)."""
        return self.oldest(self._count)

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._next = self._count = 0

    def state(self) -> dict[str, Any]:
        """``size``, ``width``, ``seen``, ``count`` (rows held) and ``columns``: each column
        oldest first (see :func:`column_state`). Column by column, so that a state is a few lists
        of numbers, not one small list per row (each a container the garbage collector counts,
        and walks the whole heap for when they add up)."""
        rows = self.rows()
        return {"size": self.size, "width": self.width, "seen": self.seen, "count": len(rows),
                "columns": [column_state(rows[:, j]) for j in range(self.width)] if len(rows) else []}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CountWindow":
        """The window of a :meth:`state`, or of an older state that listed ``rows`` one by one."""
        window = cls(state["size"], state["width"])
        if "columns" in state:
            if state["count"]:
                window.push(np.column_stack([column_from_state(c, state["count"]) for c in state["columns"]]))
        elif state["rows"]:
            window.push(from_json_floats(state["rows"]))
        window.seen = int(state["seen"])
        return window


#: integer-valued floats up to this magnitude are written as JSON integers (exact in a float64)
_EXACT_INTEGERS = float(2 ** 53)


def column_state(column: np.ndarray) -> Any:
    """A float column as JSON, restored exactly by :func:`column_from_state`: the column's values
    (integers when every value is one, as labels and counts are: ``1`` not ``1.0``; non-finite
    values spelled ``"nan"``, ``"inf"``, ``"-inf"``); or ``{"steps": [first, second - first,
    ...]}`` for integers whose steps are an order of magnitude smaller than the values
    (timestamps, offsets); or the value alone when every row holds the same one (an unused
    column: every score of a metric fed none).

    >>> column_state(np.array([1.0, 0.0, 1.0])), column_state(np.array([0.5, np.inf]))
    ([1, 0, 1], [0.5, 'inf'])
    >>> column_state(np.array([1767225600000.0, 1767225600100.0, 1767225600050.0]))
    {'steps': [1767225600000, 100, -50]}
    >>> column_state(np.full(3, np.nan)), column_from_state("nan", 3).tolist()
    ('nan', [nan, nan, nan])
    """
    if not len(column):
        return []
    low, high = column.min(), column.max()  # nan when any value is: then neither test holds
    if low == high and (low != 0 or not np.signbit(column).any() or np.signbit(column).all()):
        return _json_float(float(low))  # (not 0.0 and -0.0 mixed)
    if not (np.isfinite(low) and np.isfinite(high)):
        if np.isnan(low) and np.isnan(column).all():
            return "nan"
        cells = column.astype(object)  # json_floats(column.tolist()) without its walk over every value
        cells[np.isnan(column)] = "nan"
        cells[column == np.inf] = "inf"
        cells[column == -np.inf] = "-inf"
        return cells.tolist()
    if -_EXACT_INTEGERS <= low and high <= _EXACT_INTEGERS:
        integers = column.astype(np.int64)
        # -0.0 is an integer value JSON's 0 would lose the sign of
        if (integers == column).all() and (low > 0 or high < 0 or not np.signbit(column[integers == 0]).any()):
            steps = np.diff(integers)
            # timestamps and offsets: each step a few digits, where each value has a dozen
            if 10 * max(steps.max(), -steps.min()) <= max(high, -low):
                return {"steps": [int(integers[0]), *steps.tolist()]}
            return integers.tolist()
    return column.tolist()


def column_from_state(column: Any, length: int | None = None) -> np.ndarray:
    """The float column of a :func:`column_state` (``length`` rows when it is a single value)."""
    if isinstance(column, dict):
        return np.cumsum(np.asarray(column["steps"], dtype=np.int64)).astype(np.float64)
    if isinstance(column, list):
        if all(map(_is_number, column)):
            return np.asarray(column, dtype=np.float64)
        return np.asarray(from_json_floats(column), dtype=np.float64)
    return np.full(length, from_json_floats(column), dtype=np.float64)


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _json_float(value: float) -> Any:
    """One value as :func:`column_state` writes it: an integer when it is one, else as :func:`json_floats`."""
    if np.isfinite(value) and value == int(value) and abs(value) <= _EXACT_INTEGERS \
            and not (value == 0 and np.signbit(value)):
        return int(value)
    return json_floats(value)


class BlockCounts:
    """Bin counts of roughly the last ``size`` events, as ``blocks`` blocks of ``size / blocks``.

    A count window over a histogram that does not keep the events: memory is
    ``blocks * bins`` integers whatever ``size``. The price is granularity: the oldest block
    leaves in one piece, so the window holds between ``size - size / blocks`` and ``size`` events
    (exactly the last ``size`` when ``blocks == size``; ``size`` is rounded up to a multiple of
    ``blocks``). Mergeable: two partial windows over the same bins add block by block, newest
    with newest.

    Parameters
    ----------
    size : int
        Events the window spans when full; rounded up to a multiple of ``blocks``.
    blocks : int
        Blocks the window is cut into, ``1 <= blocks <= size``: more blocks, finer sliding.
    bins : int
        Bin codes counted, ``0 .. bins - 1``.

    Attributes
    ----------
    block_size : int
        Events per block, ``ceil(size / blocks)``.
    count : int
        Events in the window now.

    Examples
    --------
    >>> window = BlockCounts(size=4, blocks=2, bins=3)
    >>> window.push([0, 1, 2, 2, 1])      # blocks [0, 1] [2, 2] [1]: the first leaves
    >>> window.totals().tolist(), window.count
    ([0, 1, 2], 3)
    """

    def __init__(self, size: int, blocks: int, bins: int):
        if int(blocks) < 1 or int(size) < int(blocks):
            raise ValueError(f"need 1 <= blocks <= size, got blocks={blocks!r}, size={size!r}")
        self.size, self.blocks, self.bins = int(size), int(blocks), int(bins)
        self.block_size = -(-self.size // self.blocks)  # ceiling: never fewer than `size` events
        self._counts = np.zeros((self.blocks, self.bins), dtype=np.int64)  # ring, row = block
        self._fill = np.zeros(self.blocks, dtype=np.int64)
        self._newest = 0
        #: the table this window's counts and fills live in, shared with windows kept in step
        self._shared: _SharedBlocks | None = None

    def push(self, codes: Any) -> None:
        """Count events by bin code (ints in ``[0, bins)``), oldest first."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, 1)
        self._newest = _count_blocks(self._counts, self._fill[:, None], self,
                                     CountedCodes(codes, _column_offsets(1, 0), self.bins))
        if self._shared is not None:
            self._shared.in_step = False  # fed alone: the table's windows may have left step

    def step(self) -> tuple:
        """The window's blocks and how they are filled, whatever its bins: windows with equal
        steps are in step."""
        return self.blocks, self.block_size, self._newest, self._fill.tobytes()

    @staticmethod
    def in_step(windows: list["BlockCounts"]) -> bool:
        """Whether the windows have one shape of blocks, filled alike (as windows fed the same
        number of events have), so that :meth:`push_columns` can count them together (their
        bins may differ: a feature's PSI and KS windows are counted as one table)."""
        lead = windows[0].step()
        return all(w.step() == lead for w in windows)

    @staticmethod
    def together(windows: list["BlockCounts"]) -> bool:
        """:meth:`in_step`, read off the windows' shared table when they have one (windows in
        step move into one here, as in :meth:`push_columns`): a few array operations, not a
        step per window."""
        return len(windows) < 2 or _SharedBlocks.of(windows) is not None

    @staticmethod
    def push_columns(windows: list["BlockCounts"], codes: "np.ndarray | CountedCodes") -> None:
        """``windows[j].push(codes[:, j])`` for every j (``codes`` an ``(events, len(windows))``
        array, or :meth:`CountedCodes.of` these windows and such an array, whose counts at the
        cuts already counted are reused).

        Windows in step move into one shared table the first time (:class:`_SharedBlocks`) and
        are then counted with a ``bincount`` per block the events reach and a few array
        operations for all; windows out of step are fed one by one.
        """
        table = _SharedBlocks.of(windows)
        if table is None:
            codes = codes.codes if isinstance(codes, CountedCodes) else codes
            for j, window in enumerate(windows):
                window.push(codes[:, j])
            return
        if not isinstance(codes, CountedCodes):
            codes = CountedCodes(codes, table.offsets, table.cells)
        newest = _count_blocks(table.counts, table.fill, windows[0], codes)
        for window in windows:
            window._newest = newest

    @staticmethod
    def totals_of(windows: list["BlockCounts"]) -> np.ndarray:
        """Each window's :meth:`totals`, one row per window (windows of one number of bins)."""
        table = windows[0]._shared
        if table is not None:
            cells = table.span(windows)
            if cells is not None:
                return table.counts[:, cells].sum(axis=0).reshape(len(windows), windows[0].bins)
        return np.stack([w._counts for w in windows]).sum(axis=1)

    @staticmethod
    def totals_after(windows: list["BlockCounts"], codes: np.ndarray,
                     positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`totals` and :attr:`count` of each window would be after
        ``windows[j].push(codes[:m, j])``, for each ``m`` in ``positions``, without pushing
        anything: arrays of shape ``(len(positions), len(windows), bins)`` and
        ``(len(positions), len(windows))``, for windows of one number of bins (see
        :meth:`cells_after`).

        >>> window = BlockCounts(size=4, blocks=2, bins=3)
        >>> totals, counts = BlockCounts.totals_after([window], np.array([[0], [1], [2], [2], [1]]), [2, 5])
        >>> totals[:, 0].tolist(), counts[:, 0].tolist()
        ([[1, 1, 0], [0, 1, 2]], [2, 3])
        """
        totals, sizes = BlockCounts.cells_after(windows, codes, positions)
        return totals.reshape(len(totals), len(windows), windows[0].bins), sizes

    @staticmethod
    def cells_after(windows: list["BlockCounts"], codes: "np.ndarray | CountedCodes",
                    positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`totals_after` of windows of any numbers of bins: each position's totals as
        one row of the windows' bins one window after another, shape ``(len(positions),
        sum of the bins)``. The windows must be :meth:`in_step` (blocks of one shape, filled
        alike), ``codes`` an ``(events, len(windows))`` array (or :meth:`CountedCodes.of` it,
        which keeps the counts made here for :meth:`push_columns`), each ``m <= events``.

        Event i of ``codes`` lands in block ``(f + i) // block_size`` counted from the newest
        block (``f`` its fill), so after ``m`` events the newest block is ``J = (f + m - 1) //
        block_size`` and the window holds the blocks since ``J - blocks + 1``: the older blocks
        kept from before (all but the ``min(J, blocks)`` oldest), and the events from the first
        one of that block to ``m`` (a difference of counts of the events before each cut, see
        :meth:`CountedCodes.before`). The few positions and cuts are
        walked in Python, the bins of all windows added a row at a time (an accumulation along
        the first axis of a small 2-d array costs numpy a loop per cell).
        """
        lead = windows[0]
        blocks, block_size = lead.blocks, lead.block_size
        table = lead._shared
        if table is not None and table.holds(windows):
            counts, fill = table.counts, table.fill  # ring order, block = row
        else:
            counts = np.concatenate([w._counts for w in windows], axis=1)
            fill = np.stack([w._fill for w in windows], axis=1)
        if not isinstance(codes, CountedCodes):
            codes = CountedCodes.of(windows, codes)
        oldest = lead._newest + 1  # ring slot of the oldest block, modulo blocks
        newest_fill = int(fill[lead._newest, 0])
        plan = []  # per position: its events, the first event still in the window, blocks dropped
        for m in map(int, positions):
            newest = (newest_fill + m - 1) // block_size if m > 0 else 0
            plan.append((m, max(0, (newest - blocks + 1) * block_size - newest_fill), min(newest, blocks)))
        # the totals and fill of the blocks from before that stay, by how many oldest blocks leave
        kept = [counts.sum(axis=0)]
        kept_fill = [int(fill[:, 0].sum())]
        for d in range(max((dropped for _, _, dropped in plan), default=0)):
            slot = (oldest + d) % blocks
            kept.append(kept[-1] - counts[slot])
            kept_fill.append(kept_fill[-1] - int(fill[slot, 0]))
        # counted in order, each cut from the one before (the events after the last never read)
        before = {cut: codes.before(cut) for cut in sorted({cut for m, first, _ in plan for cut in (m, first)})}
        totals = np.empty((len(plan), codes.cells), dtype=np.int64)
        sizes = np.empty((len(plan), len(windows)), dtype=np.int64)
        for k, (m, first, dropped) in enumerate(plan):
            window = kept[dropped]
            if m > first:
                window = window + before[m]
                if first:
                    window = window - before[first]
            totals[k] = window
            sizes[k] = kept_fill[dropped] + m - first
        return totals, sizes

    def totals(self) -> np.ndarray:
        """Counts per bin over the window."""
        return self._counts.sum(axis=0)

    @property
    def count(self) -> int:
        return int(self._fill.sum())

    def _ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Blocks oldest first."""
        order = (self._newest + 1 + np.arange(self.blocks)) % self.blocks
        return self._counts[order], self._fill[order]

    def merge(self, other: "BlockCounts") -> "BlockCounts":
        """A window holding both windows' events (blocks added newest with newest)."""
        if (self.size, self.blocks, self.bins) != (other.size, other.blocks, other.bins):
            raise ValueError("can only merge windows with the same size, blocks and bins")
        merged = BlockCounts(self.size, self.blocks, self.bins)
        (mine, my_fill), (theirs, their_fill) = self._ordered(), other._ordered()
        merged._counts, merged._fill = mine + theirs, my_fill + their_fill
        merged._newest = self.blocks - 1
        return merged

    def state(self) -> dict[str, Any]:
        """``counts`` is the blocks' counts oldest first, one block after another, as the base64
        of their bytes in the smallest of ``_COUNT_TYPES`` that holds them (``{"uint8": ...}``):
        a KS window's thousand small counts are a short string to write and to encode, not a
        thousand Python ints. :meth:`from_state` also reads them as a list, or a list per block."""
        counts, fill = self._ordered()
        fill = fill.tolist()
        # a block's counts add up to its fill: no count is larger (and none negative)
        return {"size": self.size, "blocks": self.blocks, "bins": self.bins, "counts": _packed(counts, max(fill)),
                "fill": fill}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "BlockCounts":
        window = cls(state["size"], state["blocks"], state["bins"])
        counts = state["counts"]
        if isinstance(counts, dict):
            (name, data), = counts.items()
            counts = np.frombuffer(base64.b64decode(data), dtype=_COUNT_TYPES[name])
        window._counts = np.array(counts, dtype=np.int64).reshape(window.blocks, window.bins)  # writable
        window._fill = np.asarray(state["fill"], dtype=np.int64)
        window._newest = window.blocks - 1
        return window


#: what packed counts are written as, little-endian whatever the machine
_COUNT_TYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"),
                "int64": np.dtype("<i8")}


def _packed(counts: np.ndarray, largest: int) -> dict[str, str]:
    """``{type name: base64 of the counts' bytes}`` in the smallest type that holds counts from
    0 to ``largest``."""
    name = "uint8" if largest <= 0xFF else "uint16" if largest <= 0xFFFF else \
        "uint32" if largest <= 0xFFFFFFFF else "int64"
    return {name: base64.b64encode(counts.astype(_COUNT_TYPES[name]).tobytes()).decode()}


def _count_blocks(counts: np.ndarray, fill: np.ndarray, lead: BlockCounts, codes: "CountedCodes") -> int:
    """Add column j of ``codes`` to column j's bins in ``counts`` (blocks x cells, column j's
    bins where ``codes`` offsets them) and ``fill`` (blocks x columns), the columns' blocks in
    step with ``lead``'s; returns the newest block.

    Block j after the newest one (0 = the newest itself) takes the events whose position,
    counted from the newest block's first event, falls in ``[j * block_size, (j + 1) *
    block_size)``; a full newest block stays newest until the next event arrives. Only the last
    ``blocks`` blocks survive the call; each block they reuse starts empty."""
    events = len(codes)
    if not events:
        return lead._newest
    newest, block_size, blocks = lead._newest, lead.block_size, lead.blocks
    start = int(fill[newest, 0])
    last = (start + events - 1) // block_size
    first = max(0, last - blocks + 1)
    reached = range(first, last + 1)
    if len(reached) <= 4 or codes.counted(max(0, j * block_size - start) for j in reached):
        # The usual call: a segment of a few dozen events, which fills the newest block and at
        # most a few after it, or a foreseen batch whose blocks end where it was counted
        # already; one count of each block's events (CountedCodes.between), the same counts
        # as the general case below.
        for j in reached:
            low, high = max(0, j * block_size - start), min(events, (j + 1) * block_size - start)
            slot = (newest + j) % blocks
            if j:  # (empty only when a restored block holds more than block_size events)
                counts[slot] = codes.between(low, high) if high > low else 0
                fill[slot] = max(0, high - low)
            elif high > low:
                counts[slot] += codes.between(low, high)
                fill[slot] += high - low
        return (newest + last) % blocks
    # Many blocks reached: one bincount of all of them, each event offset by its block.
    step = (start + np.arange(events)) // block_size
    values = codes.codes
    if first:
        keep = step >= first
        values, step = values[keep], step[keep] - first
    slots = (newest + np.arange(first, last + 1)) % blocks
    reused = slots[1:] if first == 0 else slots
    pieces = last + 1 - first
    index = step[:, None] * codes.cells + codes.offsets + values
    counts[reused] = 0
    fill[reused] = 0
    counts[slots] += np.bincount(index.ravel(), minlength=pieces * codes.cells).reshape(pieces, codes.cells)
    fill[slots] += np.bincount(step, minlength=pieces)[:, None]
    return int(slots[-1])


class CountedCodes:
    """A batch's bin codes for some windows counted as one table (window j's bins from
    ``offsets[0, j]`` on, ``cells`` in all), with the counts of the events before each cut
    counted so far: what :meth:`BlockCounts.cells_after` counts at a batch's positions,
    :meth:`BlockCounts.push_columns` reuses for the blocks the batch fills when they end at
    those positions (a batch's evaluation points fall on block ends), so each event is counted
    once.

    Parameters
    ----------
    codes : numpy.ndarray
        ``(events, windows)`` bin codes, column j's in ``[0, bins of window j)``.
    offsets : numpy.ndarray
        Where each window's bins start among the cells, as a row.
    cells : int
        The windows' bins in all.
    """

    def __init__(self, codes: np.ndarray, offsets: np.ndarray, cells: int):
        self.codes, self.offsets, self.cells = codes, offsets, cells
        #: cut -> counts per cell of the events before it (None: no event), and the cuts in order
        self._before: dict[int, np.ndarray | None] = {0: None}
        self._cuts = [0]
        self._index: np.ndarray | None = None

    @staticmethod
    def of(windows: list[BlockCounts], codes: np.ndarray) -> "CountedCodes":
        """``codes`` for these windows, laid out as their shared table lays them (read off the
        table when it holds them)."""
        table = windows[0]._shared
        if table is not None and table.holds(windows):
            return CountedCodes(codes, table.offsets, table.cells)
        return CountedCodes(codes, _cell_offsets(windows), sum(w.bins for w in windows))

    def __len__(self) -> int:
        return len(self.codes)

    def _cells(self, low: int, high: int) -> np.ndarray:
        """The counts per cell of events ``low`` to ``high``."""
        if self._index is None:
            self._index = np.asarray(self.codes, dtype=np.int64) + self.offsets  # each event's cell
        return np.bincount(self._index[low:high].ravel(), minlength=self.cells)

    def before(self, cut: int) -> np.ndarray | None:
        """The counts per cell of the first ``cut`` events (None when ``cut`` is 0), counted from
        the nearest cut below already counted: a ``bincount`` of the events between (fewer
        operations than one of all the pieces at once, each offset by its piece)."""
        known, cuts = self._before, self._cuts
        if cut in known:
            return known[cut]
        if cut > cuts[-1]:  # the usual order: each cut after those counted
            below = cuts[-1]
            cuts.append(cut)
        else:
            below = cuts[bisect.bisect(cuts, cut) - 1]
            bisect.insort(cuts, cut)
        counted = self._cells(below, cut)
        if below:
            counted += known[below]
        known[cut] = counted
        return counted

    def counted(self, cuts: Iterable[int]) -> bool:
        """Whether the counts before each of these cuts are counted already (read up to the
        first that is not)."""
        return all(map(self._before.__contains__, cuts))

    def between(self, low: int, high: int) -> np.ndarray:
        """The counts per cell of events ``low`` to ``high`` (``low < high``): a difference of
        counts before two cuts when both are counted already, else a ``bincount`` of those
        events alone."""
        known = self._before
        if high in known and low in known:
            return known[high] if known[low] is None else known[high] - known[low]
        if self._index is None:  # a batch pushed, not foreseen: its events are read once
            return np.bincount((np.asarray(self.codes[low:high], dtype=np.int64) + self.offsets).ravel(),
                               minlength=self.cells)
        return self._cells(low, high)


def _column_offsets(columns: int, bins: int) -> np.ndarray:
    """``[0, bins, 2 * bins, …]`` as a row: column j's codes counted at ``j * bins + code``."""
    offsets = _OFFSETS.get((columns, bins))
    if offsets is None:
        offsets = _OFFSETS[columns, bins] = np.arange(columns, dtype=np.int64)[None, :] * bins
    return offsets


def _cell_offsets(windows: list[BlockCounts]) -> np.ndarray:
    """Where each window's bins start when the windows' bins are laid one window after another,
    as a row (:func:`_column_offsets` when they have one number of bins)."""
    bins = {w.bins for w in windows}
    if len(bins) == 1:
        return _column_offsets(len(windows), bins.pop())
    return np.array(list(itertools.accumulate((w.bins for w in windows[:-1]), initial=0)), dtype=np.int64)[None, :]


_OFFSETS: dict[tuple[int, int], np.ndarray] = {}
_SHARED, _NEWEST = operator.attrgetter("_shared"), operator.attrgetter("_newest")


class _SharedBlocks:
    """The counts and fills of several :class:`BlockCounts` in one array each, so that windows
    kept in step are counted with one operation for all: a block's counts are one row of
    ``cells``, each window's bins one after another (window j's from ``offsets[0, j]`` on;
    windows of different bins, such as a feature's PSI and KS windows, share a table), and
    window j's fill is column j of ``fill``. Each window holds views into the table, so it
    still reads, pushes and saves its state on its own."""

    def __init__(self, windows: list[BlockCounts]):
        self.windows = list(windows)
        self.offsets = _cell_offsets(windows)
        self.counts = np.concatenate([w._counts for w in windows], axis=1)
        self.cells = self.counts.shape[1]
        self.fill = np.stack([w._fill for w in windows], axis=1)
        #: each window's place, by identity (see span)
        self._places = {id(w): j for j, w in enumerate(windows)}
        #: the windows are known to be in step: made so, and kept so by :meth:`BlockCounts.push_columns`;
        #: cleared when one is fed alone (:meth:`BlockCounts.push`), then checked again by :meth:`of`
        self.in_step = True
        for j, (window, start) in enumerate(zip(windows, self.offsets[0].tolist())):
            window._counts, window._fill = self.counts[:, start:start + window.bins], self.fill[:, j]
            window._shared = self

    def span(self, windows: list[BlockCounts]) -> slice | None:
        """The cells of these windows when they are held here one after another, in this
        order, with one number of bins (a kind of detector among a table's windows); else None."""
        first = self._places.get(id(windows[0]))
        if first is None or first + len(windows) > len(self.windows):
            return None
        held = self.windows[first:first + len(windows)]
        if not (all(map(operator.is_, held, windows)) and all(map(operator.is_, map(_SHARED, windows),
                                                                   itertools.repeat(self)))):
            return None
        bins = windows[0].bins
        if any(w.bins != bins for w in windows):
            return None
        start = int(self.offsets[0, first])
        return slice(start, start + len(windows) * bins)

    def holds(self, windows: list[BlockCounts]) -> bool:
        """The table holds exactly these windows, in this order."""
        return (len(windows) == len(self.windows) and all(map(operator.is_, self.windows, windows))
                and all(map(operator.is_, map(_SHARED, windows), itertools.repeat(self))))

    @staticmethod
    def of(windows: list[BlockCounts]) -> "_SharedBlocks | None":
        """The table of these windows when they are in step (made now if needed); else None."""
        if len(windows) < 2:
            return None
        lead = windows[0]
        table = lead._shared
        if table is not None and table.holds(windows):
            if not table.in_step:
                table.in_step = (all(map(operator.eq, map(_NEWEST, windows), itertools.repeat(lead._newest)))
                                 and bool((table.fill == table.fill[:, :1]).all()))
            return table if table.in_step else None
        return _SharedBlocks(windows) if BlockCounts.in_step(windows) else None
