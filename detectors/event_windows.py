"""Event-time windows: a detector or metric per window of event time, built by the registry.

:class:`TumblingWindow` and :class:`HoppingWindow` group events by event time. A window
``[start, end)`` closes once the watermark (largest event time seen minus ``grace``) reaches
``end``; an event for a window that has already closed is counted in ``late`` and dropped, never
merged into a closed window. Closed windows are handed back to the caller by ``update_many``.

Each window holds its own aggregate, named by kind and parameters as in the config, so this
module sits above :mod:`detectors.registry` (which builds and restores the aggregates), while the
count windows of :mod:`detectors.windows` sit below the detectors that keep them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kinds
from .base import Result, as_finite_array
from .registry import build, restore


def _group_rows(keys: np.ndarray, rows: np.ndarray):
    """``(key, rows with that key in arrival order)`` for each distinct key, smallest first."""
    order = rows[np.argsort(keys[rows], kind="stable")]
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    for group in np.split(order, bounds) if len(order) else ():
        yield float(keys[group[0]]), group


@dataclass(frozen=True)
class ClosedWindow:
    """A finished event-time window, as :meth:`HoppingWindow.update_many` hands it back.

    Attributes
    ----------
    start : float
        The window's first event time (included).
    end : float
        The window's end (excluded): ``start + size``.
    result : Result
        The aggregate's :class:`~detectors.base.Result` when the window closed.
    count : int
        The events that fell in the window on time.
    aggregate : Any
        The detector or metric itself, for more than its result (a metric's ``per_class()``).
    """

    start: float
    end: float
    result: Result
    count: int
    aggregate: Any


class HoppingWindow:
    """Event-time windows of length ``size`` starting every ``step`` (sliding when step < size).

    Each window ``[start, end)`` holds its own aggregate, any detector or metric the registry
    builds from ``kind`` and ``params``; ``update_many(timestamps, *columns)`` hands each window
    the rows whose timestamp falls in it (the columns are what the aggregate's ``update_many``
    takes: values, or ``y_true, y_pred[, scores]``). Closing rule (Quix Streams' model): the
    watermark is the largest event time seen minus ``grace``; a window closes as soon as the
    watermark reaches its end. An event whose window has already closed at the moment it arrives
    is late: it is counted in ``late`` (once per window it misses) and dropped, never merged into
    a closed window. Memory: the open windows' aggregates, at most
    ``ceil((size + grace) / step) + 1`` of them for in-order data.

    Parameters
    ----------
    size : float
        Length of each window, in the timestamps' unit (the Monitor uses epoch milliseconds).
    step : float
        Distance between the starts of consecutive windows, ``0 < step <= size``; windows start
        at the multiples of ``step``.
    grace : float, default 0
        How far behind the largest event time seen an event may arrive and still count.
    kind : str
        The aggregate's kind, as :func:`detectors.registry.build` takes it (keyword only).
    params : dict, optional
        The aggregate's parameters; ``None`` for its defaults.

    Attributes
    ----------
    open : dict[float, Any]
        Window start -> the aggregate of each window not closed yet.
    counts : dict[float, int]
        Window start -> events counted in each open window.
    late : int
        Events dropped because their window had closed, once per window missed.
    watermark : float
        The largest event time seen minus ``grace`` (``-inf`` before the first event).

    Examples
    --------
    Tumbling windows of 10 time units, 5 of grace, each computing accuracy. An event at 12 puts
    the watermark at 7, which closes nothing; one at 16 moves it to 11, past the end of
    ``[0, 10)``, whose two pairs had one hit: accuracy 0.5.

    >>> windows = TumblingWindow(size=10, grace=5, kind="accuracy", params={"window": 1000})
    >>> windows.update_many([1, 4, 12], [1, 0, 1], [1, 1, 1])   # timestamps, y_true, y_pred
    []
    >>> [(w.start, w.end, w.result.statistic, w.count) for w in windows.update_many([16], [0], [0])]
    [(0.0, 10.0, 0.5, 2)]
    >>> windows.update_many([3], [1], [1]), windows.late         # [0, 10) has closed: late
    ([], 1)

    Hopping: windows of 10 every 5, so each event lands in two of them. The event at 12 puts the
    watermark at 12, past the ends of ``[-5, 5)`` and ``[0, 10)``.

    >>> hopping = HoppingWindow(size=10, step=5, kind="mae", params={"window": 100})
    >>> closed = hopping.update_many([1, 6, 12], [0, 0, 0], [1.0, 2.0, 4.0])
    >>> [(w.start, w.result.statistic) for w in closed]        # MAE of |1| and of |1|, |2|
    [(-5.0, 1.0), (0.0, 1.5)]
    >>> sorted(hopping.open), hopping.counts
    ([5.0, 10.0], {5.0: 2, 10.0: 1})
    >>> HoppingWindow.from_state(hopping.state()).counts
    {5.0: 2, 10.0: 1}
    """

    kind = kinds.HOPPING

    def __init__(self, size: float, step: float, grace: float = 0, *, kind: str,
                 params: dict[str, Any] | None = None):
        if not size > 0 or not 0 < step <= size:
            raise ValueError(f"need size > 0 and 0 < step <= size, got size={size!r}, step={step!r}")
        if grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace!r}")
        self.size, self.step, self.grace = float(size), float(step), float(grace)
        self.aggregate_kind, self.aggregate_params = kind, dict(params or {})
        self._build()  # fail now, not at the first event, on a bad kind or parameter
        self.open: dict[float, Any] = {}  # window start -> aggregate
        self.counts: dict[float, int] = {}
        self.max_time = -np.inf
        self.late = 0

    def _build(self):
        return build(self.aggregate_kind, self.aggregate_params)

    @property
    def watermark(self) -> float:
        return self.max_time - self.grace

    def update_many(self, timestamps: Any, *columns: Any) -> list[ClosedWindow]:
        """Count each event in the windows it falls in; returns the windows that closed, oldest first."""
        times = as_finite_array(timestamps, "timestamps")
        columns = [None if c is None else np.asarray(c) for c in columns]
        # watermark as each event arrives: the largest time among the events before it
        before = np.maximum.accumulate(np.concatenate(([self.max_time], times)))[:-1] - self.grace
        newest_start = np.floor(times / self.step) * self.step
        for hop in range(int(np.ceil(self.size / self.step))):
            starts = newest_start - hop * self.step
            inside = starts + self.size > times
            on_time = inside & (starts + self.size > before)
            self.late += int((inside & ~on_time).sum())
            for start, rows in _group_rows(starts, np.flatnonzero(on_time)):
                self._aggregate(start).update_many(*(c if c is None else c[rows] for c in columns))
                self.counts[start] += len(rows)
        if len(times):
            self.max_time = max(self.max_time, float(times.max()))
        return self._close()

    def _aggregate(self, start: float):
        if start not in self.open:
            self.open[start] = self._build()
            self.counts[start] = 0
        return self.open[start]

    def _close(self) -> list[ClosedWindow]:
        closed = []
        for start in sorted(s for s in self.open if s + self.size <= self.watermark):
            aggregate = self.open.pop(start)
            closed.append(ClosedWindow(start, start + self.size, aggregate.result(), self.counts.pop(start), aggregate))
        return closed

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "size": self.size, "step": self.step, "grace": self.grace,
            "aggregate": {"kind": self.aggregate_kind, "params": self.aggregate_params},
            "max_time": None if np.isinf(self.max_time) else self.max_time, "late": self.late,
            "open": [[start, self.counts[start], agg.state()] for start, agg in sorted(self.open.items())],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]):
        aggregate = state["aggregate"]
        windows = cls._from_params(state, aggregate["kind"], aggregate["params"])
        windows.max_time = -np.inf if state["max_time"] is None else state["max_time"]
        windows.late = state["late"]
        for start, count, aggregate_state in state["open"]:
            windows.open[start] = restore(aggregate_state)
            windows.counts[start] = count
        return windows

    @classmethod
    def _from_params(cls, state, kind, params):
        return cls(state["size"], state["step"], state["grace"], kind=kind, params=params)


class TumblingWindow(HoppingWindow):
    """Back-to-back event-time windows of length ``size``: a :class:`HoppingWindow` with step = size.

    Parameters
    ----------
    size : float
        Length of each window, in the timestamps' unit; windows start at the multiples of ``size``.
    grace : float, default 0
        How far behind the largest event time seen an event may arrive and still count.
    kind : str
        The aggregate's kind, as :func:`detectors.registry.build` takes it (keyword only).
    params : dict, optional
        The aggregate's parameters; ``None`` for its defaults.

    Examples
    --------
    Bias per window of 10: the event at 25 closes ``[0, 10)`` and ``[10, 20)``.

    >>> windows = TumblingWindow(size=10, kind="bias")
    >>> closed = windows.update_many([2, 8, 14, 25], [1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 4.0, 1.0])
    >>> [(w.start, w.result.statistic, w.count) for w in closed]   # (1 - 1) / 2, then 3 / 1
    [(0.0, 0.0, 2), (10.0, 3.0, 1)]
    """

    kind = kinds.TUMBLING

    def __init__(self, size: float, grace: float = 0, *, kind: str, params: dict[str, Any] | None = None):
        super().__init__(size, size, grace, kind=kind, params=params)

    @classmethod
    def _from_params(cls, state, kind, params):
        return cls(state["size"], state["grace"], kind=kind, params=params)
