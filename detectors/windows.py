"""Windows: which events a statistic is computed over.

* :class:`CountWindow` keeps the last ``size`` rows of a fixed number of float columns in a
  ring buffer (memory ``size * width`` floats, whatever the stream length).
* :class:`TumblingWindow` and :class:`HoppingWindow` group events by event time. A window
  ``[start, end)`` closes once the watermark (largest event time seen minus ``grace``) reaches
  ``end``; an event for a window that has already closed is counted in ``late`` and dropped, never
  merged into a closed window. Closed windows are handed back to the caller by ``update_many``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .base import Result, as_finite_array


class CountWindow:
    """The last ``size`` rows of ``width`` float columns, oldest first.

    >>> window = CountWindow(size=3)
    >>> window.push([1.0, 2.0, 3.0, 4.0])
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
        self._buffer = np.zeros((self.size, self.width))
        self._next = 0  # slot the next row is written to
        self._count = 0  # rows held, <= size
        self.seen = 0  # rows ever pushed

    def push(self, rows: Any) -> None:
        """Append rows (shape ``(k,)`` when width is 1, else ``(k, width)``); the oldest fall out."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.width)
        self.seen += len(rows)
        rows = rows[-self.size:]  # older rows would be overwritten within this call anyway
        slots = (self._next + np.arange(len(rows))) % self.size
        self._buffer[slots] = rows
        self._next = (self._next + len(rows)) % self.size
        self._count = min(self.size, self._count + len(rows))

    def rows(self) -> np.ndarray:
        """The rows in the window, oldest first (a copy when the ring has wrapped)."""
        if self._count < self.size:
            return self._buffer[: self._count]
        return np.concatenate((self._buffer[self._next:], self._buffer[: self._next]))

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._next = self._count = 0

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "width": self.width, "seen": self.seen, "rows": self.rows().tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CountWindow":
        window = cls(state["size"], state["width"])
        if state["rows"]:
            window.push(state["rows"])
        window.seen = int(state["seen"])
        return window
