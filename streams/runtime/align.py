"""Event-time alignment of a co-partitioned pair of input partitions, with no I/O.

The engine reads partition *p* of the predictions topic and partition *p* of the labels topic
as fast as Kafka hands them over, and after downtime one of them can be hours of event time
ahead of the other. :class:`Aligner` buffers what was read and releases it to the Monitor in
the order a merge of the two partitions by event time gives (a prediction before a label of
the same millisecond; each partition's own order kept), which is the order ``driftline
backtest`` replays when each partition is in event-time order. As Kafka Streams does
(timestamp-synchronized processing, ``max.task.idle.ms``), a merge step needs the next event
of both partitions; when one partition has nothing buffered the pair waits:

* while that partition has records on the broker not read yet (its lag is above 0, or not
  known yet), until they are read, and at most ``fetch_wait_s``;
* when it is caught up, at most ``max_idle_s`` for new records; then the other partition's
  buffered events are released without it.

Rejected messages (for the dead-letter topic) keep their place in their partition's order and
are released with it, so the offsets an engine commits (:meth:`Aligner.first_offsets`) never
pass a message that was not handed on.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

#: roles: the predictions partition and the labels partition of a pair
PREDICTIONS, LABELS = 0, 1
#: merge key of a rejected message: below every event, so it never holds its partition back
_REJECTED = -(1 << 62)


def merge_key(timestamp_ms: int, role: int) -> int:
    """The key the merge orders by: event time, then predictions before labels (odd keys are
    labels, so keys of the two partitions never tie)."""
    return 2 * timestamp_ms + role


def rejected_key(role: int) -> int:
    return _REJECTED + role


class _Pair:
    """What one partition pair has read and not released: items and merge keys per role."""

    __slots__ = ("items", "keys", "offsets", "blocked_since")

    def __init__(self) -> None:
        self.items: tuple[list, list] = ([], [])
        self.keys: tuple[list[int], list[int]] = ([], [])
        self.offsets: tuple[list[int], list[int]] = ([], [])
        #: when (monotonic seconds) the pair last found one side empty and the other not
        self.blocked_since: float | None = None

    def take(self, role: int, count: int) -> list:
        items = self.items[role][:count]
        for column in (self.items[role], self.keys[role], self.offsets[role]):
            del column[:count]
        return items


class Aligner:
    """Buffers the input partitions of each pair and releases their items in merge order.

    Parameters
    ----------
    max_idle_s
        How long a pair waits for a caught-up partition that has nothing buffered before it
        releases the other partition's events without it.
    fetch_wait_s
        How long it waits for a partition whose records are on the broker but not read yet
        (a lag above 0, or unknown). A fetch answers well within it; the bound keeps a lag
        that never closes (an input producer's transaction left open) from stopping the pair.
    """

    def __init__(self, max_idle_s: float, fetch_wait_s: float = 30.0):
        self.max_idle_s = max_idle_s
        self.fetch_wait_s = fetch_wait_s
        self.pairs: dict[int, _Pair] = {}

    def add(self, partition: int, role: int, key: int, offset: int, item: Any) -> None:
        """Buffer one item read at ``offset`` of the ``role`` partition of pair ``partition``."""
        self.extend(partition, role, [key], [offset], [item])

    def extend(self, partition: int, role: int, keys: list[int], offsets: list[int], items: list) -> None:
        """:meth:`add` of a run of items read in order from one partition."""
        pair = self.pairs.get(partition)
        if pair is None:
            pair = self.pairs[partition] = _Pair()
        pair.items[role].extend(items)
        pair.keys[role].extend(keys)
        pair.offsets[role].extend(offsets)

    def release(self, partition: int, lag: Callable[[int], int | None], now: float) -> list:
        """The items of pair ``partition`` that can go to the Monitor now, in merge order.

        ``lag(role)`` is how many records of that partition are on the broker and not read
        yet (None when not known); it is asked only when that partition has nothing buffered.
        """
        pair = self.pairs.get(partition)
        if pair is None:
            return []
        keys = pair.keys
        if keys[PREDICTIONS] and keys[LABELS]:
            pair.blocked_since = None
            return self._merge(pair)
        waiting = LABELS if keys[PREDICTIONS] else PREDICTIONS if keys[LABELS] else None
        if waiting is None:
            pair.blocked_since = None
            return []
        if pair.blocked_since is None:
            pair.blocked_since = now
        behind = lag(waiting)
        limit = self.max_idle_s if behind == 0 else self.fetch_wait_s
        if now - pair.blocked_since < limit:
            return []
        pair.blocked_since = None
        ahead = 1 - waiting
        return pair.take(ahead, len(keys[ahead]))

    @staticmethod
    def _merge(pair: _Pair) -> list:
        """Merge the two buffers by comparing heads until one runs out. A head-by-head merge
        of two sequences equals a stable sort of both by each one's running maximum key, so
        it is done here in a few array operations rather than one comparison per event."""
        a = np.maximum.accumulate(np.asarray(pair.keys[PREDICTIONS], dtype=np.int64))
        b = np.maximum.accumulate(np.asarray(pair.keys[LABELS], dtype=np.int64))
        if a[-1] < b[-1]:  # the predictions run out first
            na, nb = len(a), int(np.searchsorted(b, a[-1], side="left"))
        else:
            na, nb = int(np.searchsorted(a, b[-1], side="left")), len(b)
        if not nb:
            return pair.take(PREDICTIONS, na)
        if not na:
            return pair.take(LABELS, nb)
        order = np.argsort(np.concatenate((a[:na], b[:nb])), kind="stable").tolist()
        items = pair.take(PREDICTIONS, na) + pair.take(LABELS, nb)
        return list(map(items.__getitem__, order))

    def buffered(self, partition: int, role: int) -> int:
        pair = self.pairs.get(partition)
        return len(pair.keys[role]) if pair is not None else 0

    def first_offset(self, partition: int, role: int) -> int | None:
        """The offset of the first item of that partition not released yet (None: none buffered)."""
        pair = self.pairs.get(partition)
        if pair is None or not pair.offsets[role]:
            return None
        return pair.offsets[role][0]

    def drop(self, partition: int) -> None:
        """Forget what pair ``partition`` buffered (revoked, or rewound: it is read again)."""
        self.pairs.pop(partition, None)

    def clear(self) -> None:
        self.pairs.clear()

    def partitions(self) -> list[int]:
        return list(self.pairs)


def merge_order(predictions: list[tuple[int, Any]], labels: list[tuple[int, Any]]) -> list[Any]:
    """The merge of two whole partitions, ``(timestamp_ms, item)`` each in partition order: the
    order an :class:`Aligner` releases them in when nothing times out (for tests and docs)."""
    out: list[Any] = []
    i = j = 0
    while i < len(predictions) and j < len(labels):
        if merge_key(predictions[i][0], PREDICTIONS) < merge_key(labels[j][0], LABELS):
            out.append(predictions[i][1])
            i += 1
        else:
            out.append(labels[j][1])
            j += 1
    out.extend(item for _, item in itertools.chain(predictions[i:], labels[j:]))
    return out
