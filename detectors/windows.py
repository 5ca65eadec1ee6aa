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


class BlockCounts:
    """Bin counts of roughly the last ``size`` events, as ``blocks`` blocks of ``size / blocks``.

    A count window over a histogram that does not keep the events: memory is
    ``blocks * bins`` integers whatever ``size``. The price is granularity: the oldest block
    leaves in one piece, so the window holds between ``size - size / blocks`` and ``size`` events
    (exactly the last ``size`` when ``blocks == size``; ``size`` is rounded up to a multiple of
    ``blocks``). Mergeable: two partial windows over the
    same bins add block by block, newest with newest.

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

    def push(self, codes: Any) -> None:
        """Count events by bin code (ints in ``[0, bins)``), oldest first."""
        codes = np.asarray(codes, dtype=np.int64)
        start = 0
        while start < len(codes):
            if self._fill[self._newest] == self.block_size:
                self._newest = (self._newest + 1) % self.blocks
                self._counts[self._newest] = 0
                self._fill[self._newest] = 0
            room = self.block_size - int(self._fill[self._newest])
            piece = codes[start:start + room]
            self._counts[self._newest] += np.bincount(piece, minlength=self.bins)
            self._fill[self._newest] += len(piece)
            start += len(piece)

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
        counts, fill = self._ordered()
        return {"size": self.size, "blocks": self.blocks, "bins": self.bins,
                "counts": counts.tolist(), "fill": fill.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "BlockCounts":
        window = cls(state["size"], state["blocks"], state["bins"])
        window._counts = np.asarray(state["counts"], dtype=np.int64).reshape(window.blocks, window.bins)
        window._fill = np.asarray(state["fill"], dtype=np.int64)
        window._newest = window.blocks - 1
        return window
