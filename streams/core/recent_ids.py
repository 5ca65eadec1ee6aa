"""The prediction ids a model remembers for a bounded stretch of event time, to recognise duplicates.

Ids are kept as 64-bit hashes (BLAKE2b: the same in every process, so checkpoints restore
exactly) in event-time buckets ``width`` wide: ``horizon / BUCKETS``, and at most
``MAX_WIDTH_MS``. An id added at event time ``t`` is remembered while
``watermark - horizon < end of t's bucket``: for at least ``horizon`` and at most
``horizon + width`` of event time. Whether an id is remembered depends on event times alone,
not on when :meth:`RecentIds.purge` last ran, so the same events give the same answers however
they were cut into batches.

A checkpoint holds each bucket's hashes, sorted (base64 in JSON: about 11 bytes an id), and a
store that keeps each bucket apart rewrites the ones that changed: mostly the newest, so the
width bounds what a commit rewrites (a few seconds of ids, not a share of the horizon).

Memory: the buckets the watermark has passed ("sealed") go into one :class:`SealedIndex` of
hashes with their buckets (16 bytes an id, and up to a quarter more of slack at a steady
rate; after the rate falls, up to four times until it is laid out again smaller; sealed ids
waiting for their shard's turn and forgotten ones not dropped yet, at most an eighth of a
horizon's each, a quarter while it is laid out again; two lookups for all of them, however many
buckets, three while it is laid out again) and keep their sorted hashes for the checkpoint
(8 bytes an id; once a checkpoint has encoded them, their text instead); a bucket
not sealed yet keeps a sorted ``uint64`` array, and what came since the last checkpoint or seal
waits in a Python set (about 110 bytes an id). A checkpoint folds the sets into the arrays.
A slow stream's passed buckets, a few ids each, wait unsealed until ``SEAL_IDS`` ids or an
eighth of a horizon's buckets have passed, and are sealed together: a seal costs a dozen numpy
calls however few ids it holds.

Two different ids share a hash with probability 2**-64 per pair: with ``n`` ids remembered, a new
id is taken for a duplicate with probability about ``n / 2**64`` (1e6 remembered: 5e-14).
"""
from __future__ import annotations

import base64
import hashlib
import math
from typing import Any, Iterable

import numpy as np

#: buckets per horizon at least: more make the memory follow the horizon closer
BUCKETS = 8
#: the widest bucket: what a commit rewrites of a busy model's ids is about one bucket's
MAX_WIDTH_MS = 5000
#: passed buckets holding fewer ids than this in all wait to be sealed with the next ones (at
#: most an eighth of a horizon's buckets)
SEAL_IDS = 1024

_EMPTY = np.empty(0, dtype=np.uint64)
_NO_BUCKETS = np.empty(0, dtype=np.int64)
#: the bucket of a :class:`SealedIndex`'s padding: never remembered
_PADDING = -(1 << 62)


def bucket_width(horizon_ms: int) -> int:
    """The width of the buckets of a horizon."""
    return max(1, min(math.ceil(horizon_ms / BUCKETS), MAX_WIDTH_MS))


#: an empty 8-byte BLAKE2b: a copy of it, fed an id, hashes the id as ``blake2b(id, digest_size=8)``
#: does, without parsing the constructor's keyword arguments for each id (most of its cost)
_BLAKE2B_8 = hashlib.blake2b(digest_size=8)


def id_hash(prediction_id: str) -> int:
    """The 64-bit hash an id is remembered by: ``blake2b(id, digest_size=8)``, little-endian."""
    h = _BLAKE2B_8.copy()
    h.update(prediction_id.encode())
    return int.from_bytes(h.digest(), "little")


def id_hashes(prediction_ids: Iterable[str]) -> np.ndarray:
    """:func:`id_hash` of each id, as ``uint64``."""
    copy = _BLAKE2B_8.copy
    data = b"".join([(h := copy()).update(pid.encode()) or h.digest() for pid in prediction_ids])
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


class RecentIds:
    """Ids seen in the last ``horizon_ms`` of event time (see the module docstring).

    Parameters
    ----------
    horizon_ms
        How long, in event time, an id is remembered (at least).
    """

    def __init__(self, horizon_ms: int):
        self.horizon_ms = int(horizon_ms)
        self.width = bucket_width(self.horizon_ms)
        #: bucket -> hashes added to it since it was last folded
        self._open: dict[int, set[int]] = {}
        #: bucket -> its folded hashes, sorted and unique, for buckets not sealed
        self._sorted: dict[int, np.ndarray] = {}
        #: the hashes of the sealed buckets, with each one's bucket
        # each shard's turn once in an eighth of the horizon's seals (at most ROUND): what waits
        # for it, and what it keeps forgotten, is at most an eighth of the horizon's ids
        self._index = SealedIndex(max(1, min(SealedIndex.ROUND, math.ceil(self.horizon_ms / self.width) // BUCKETS)))
        #: sealed bucket -> its ids in the index (a forgotten bucket's may stay there a while)
        self._counts: dict[int, int] = {}
        self._sealed_ids = 0
        #: bucket -> its folded hashes for the checkpoint: their text, encoded by the first checkpoint
        #: after they changed, or until then (a sealed bucket's) their sorted array: most buckets
        #: are sealed and forgotten between two checkpoints, and the backtest takes none
        self._texts: dict[int, str | np.ndarray] = {}
        #: the oldest bucket remembered at the last purge
        self._first = -(1 << 62)

    def __len__(self) -> int:
        return self._sealed_ids + sum(map(len, self._sorted.values())) + sum(map(len, self._open.values()))

    def _alive(self, bucket: int, watermark_ms: int) -> bool:
        return (bucket + 1) * self.width > watermark_ms - self.horizon_ms

    def keeps(self, ts_ms: int, watermark_ms: int) -> bool:
        """Whether an id of event time ``ts_ms`` is remembered at ``watermark_ms`` (then at every
        earlier watermark too)."""
        return self._alive(ts_ms // self.width, watermark_ms)

    def _sealed(self, bucket: int) -> bool:
        return bucket in self._texts and bucket not in self._sorted

    # -- one id ----------------------------------------------------------------------------
    def add(self, h: int, ts_ms: int, watermark_ms: int) -> None:
        """Remember hash ``h`` as of event time ``ts_ms`` (an id already forgotten is not kept)."""
        bucket = ts_ms // self.width
        if self._alive(bucket, watermark_ms):
            hashes = self._open.get(bucket)
            if hashes is None:
                hashes = self._open[bucket] = set()
            hashes.add(h)

    def contains(self, h: int, watermark_ms: int) -> bool:
        """Whether hash ``h`` is remembered at ``watermark_ms``."""
        for bucket, hashes in self._open.items():
            if h in hashes and self._alive(bucket, watermark_ms):
                return True
        key = np.uint64(h)
        for bucket, hashes in self._sorted.items():
            if self._alive(bucket, watermark_ms):
                at = int(hashes.searchsorted(key))
                if at < len(hashes) and hashes[at] == key:
                    return True
        return any(self._alive(b, watermark_ms) for b in self._index.buckets_of(key))

    # -- many ------------------------------------------------------------------------------
    def may_contain_any(self, hashes: np.ndarray) -> bool:
        """Whether any of ``hashes`` is stored, remembered or not yet purged (never a false "no")."""
        if not len(hashes):
            return False
        # in order, successive binary searches share their first steps (in cache): a long
        # horizon's index is tens of MB, and a search of it mostly cache misses
        hashes = np.sort(hashes)
        if self._open:
            # a set: each bucket's test then walks the smaller of the two (a bucket holds a few
            # seconds of labels, usually fewer than the hashes asked about)
            values = set(hashes.tolist())
            if any(not s.isdisjoint(values) for s in self._open.values()):
                return True
        return self._index.may_contain_any(hashes) or any(_member(hashes, stored).any() for stored in self._sorted.values())

    def add_many(self, hashes: np.ndarray, ts_ms: np.ndarray, watermarks_ms: np.ndarray | int) -> None:
        """:meth:`add` of each hash, in order, with the watermark at each (or one for all)."""
        buckets = np.asarray(ts_ms, dtype=np.int64) // self.width
        # kept: those whose bucket is the oldest remembered at their watermark or later (`_alive`);
        # with one watermark for all (the usual call), the oldest bucket tells
        if isinstance(watermarks_ms, int):
            first = (watermarks_ms - self.horizon_ms) // self.width
            alive = None if not len(buckets) or int(buckets.min()) >= first else buckets >= first
        else:
            alive = buckets >= (np.asarray(watermarks_ms, dtype=np.int64) - self.horizon_ms) // self.width
            alive = None if alive.all() else alive
        if alive is not None:
            hashes, buckets = hashes[alive], buckets[alive]
        if not len(hashes):
            return
        # Each run of one bucket in a call (labels come about in time order: a few runs), not
        # each hash, goes into its bucket's set: a set's content does not depend on the order.
        starts = [0, *((buckets[1:] != buckets[:-1]).nonzero()[0] + 1).tolist()]
        ends = [*starts[1:], len(buckets)]
        values, open_ = hashes.tolist(), self._open
        for bucket, start, end in zip(buckets[starts].tolist(), starts, ends):
            hashes_of = open_.get(bucket)
            if hashes_of is None:
                hashes_of = open_[bucket] = set()
            hashes_of.update(values[start:end])

    # -- upkeep ----------------------------------------------------------------------------
    def purge(self, watermark_ms: int) -> None:
        """Drop the buckets no longer remembered; seal those the watermark has passed (a slow
        stream's once ``SEAL_IDS`` ids or an eighth of a horizon's buckets have)."""
        first = (watermark_ms - self.horizon_ms) // self.width  # the oldest bucket still remembered
        # Buckets are dropped as the oldest remembered one moves (once a width of event time),
        # not looked for at every purge: a long horizon has thousands of them. Since the last
        # purge, ids went only into buckets remembered then (``add`` keeps no forgotten one, and
        # the join's watermark only grows), so the dead ones are among those passed since:
        # usually one or two to look up.
        dead: list[int] = []
        if first > self._first:
            open_, sorted_, texts = self._open, self._sorted, self._texts
            if first - self._first <= len(open_) + len(sorted_) + len(texts):
                dead = [b for b in range(self._first, first) if b in open_ or b in sorted_ or b in texts]
            else:  # after a restore (no purge yet), or a leap of event time
                dead = [b for b in {*open_, *sorted_, *texts} if b < first]
        self._first = max(self._first, first)
        if dead:
            for bucket in dead:
                self._open.pop(bucket, None)
                self._sorted.pop(bucket, None)
                self._texts.pop(bucket, None)
                self._sealed_ids -= self._counts.pop(bucket, 0)
        current = watermark_ms // self.width
        passed = sorted({b for b in (*self._open, *self._sorted) if b < current})
        if len(passed) < self._index.rounds and sum(
                len(self._open.get(b, ())) + len(self._sorted.get(b, ())) for b in passed) < SEAL_IDS:
            passed = []  # a few ids: they wait to be sealed with the next buckets'
        self._fold_all([b for b in passed if b in self._open])
        sealing = [b for b in passed if b in self._sorted]
        if sealing:
            arrays = [self._sorted.pop(b) for b in sealing]
            for bucket, hashes in zip(sealing, arrays):  # a sealed bucket is known by its entry there
                self._texts.setdefault(bucket, hashes)
            self._insert(arrays, sealing)
        if sealing or dead:  # once a width of event time: the index's upkeep follows the buckets'
            self._index.compact(self._first)

    def _fold_all(self, buckets: list[int]) -> None:
        """:meth:`_fold` these buckets; what goes into the index goes in one insertion."""
        into_index: list[tuple[np.ndarray, int]] = []
        for bucket in buckets:
            self._fold(bucket, into_index)
        if into_index:
            self._insert([hashes for hashes, _ in into_index], [bucket for _, bucket in into_index])

    def _fold(self, bucket: int, into_index: list[tuple[np.ndarray, int]]) -> None:
        """Move the bucket's waiting hashes into its sorted array (or, sealed, its checkpoint
        entry, and add them to ``into_index``: for the index)."""
        added = self._open.pop(bucket)
        new = np.fromiter(added, dtype=np.uint64, count=len(added))
        new.sort()
        if self._sealed(bucket):
            old = _hashes(self._texts[bucket])
            new = new[~_member(new, old)]
            if len(new):
                into_index.append((new, bucket))
                self._texts[bucket] = _merge(old, new)
            return
        old = self._sorted.get(bucket)
        self._sorted[bucket] = new if old is None else _merge(old, new[~_member(new, old)])
        self._texts.pop(bucket, None)

    def _insert(self, arrays: list[np.ndarray], buckets: list[int]) -> None:
        """Put the sorted hashes of these buckets into the index."""
        for bucket, hashes in zip(buckets, arrays):
            self._counts[bucket] = self._counts.get(bucket, 0) + len(hashes)
            self._sealed_ids += len(hashes)
        self._index.add(arrays, buckets)

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every stored hash by bucket, sorted: the same for the same ids, however folded."""
        self._fold_all(list(self._open))
        texts = self._texts
        for bucket, hashes in self._sorted.items():  # a text kept is unchanged since it was made
            if bucket not in texts:
                texts[bucket] = hashes
        for bucket, entry in texts.items():
            if not isinstance(entry, str):
                texts[bucket] = _encode(entry)
        order = sorted(texts)
        encoded = dict(zip(map(str, order), map(texts.__getitem__, order)))
        return {"horizon_ms": self.horizon_ms, "width_ms": self.width, "buckets": encoded}

    @classmethod
    def from_state(cls, state: dict[str, Any], horizon_ms: int) -> "RecentIds":
        """The ids of ``state``; a checkpoint taken with another horizon or bucket width keeps
        its ids, each in the bucket that holds the end of the bucket it was in (so it is
        remembered at least as long as before), and forgets them by the new horizon."""
        ids = cls(horizon_ms)
        if "buckets" not in state:  # an older checkpoint's {prediction_id: label timestamp}
            buckets = np.asarray(list(state.values()), dtype=np.int64) // ids.width
            for bucket, h in zip(buckets.tolist(), id_hashes(state).tolist()):
                ids._open.setdefault(bucket, set()).add(h)
            ids._fold_all(list(ids._open))
            return ids
        # a checkpoint without its width was written when buckets were always horizon / BUCKETS wide
        width = int(state.get("width_ms") or max(1, math.ceil(int(state["horizon_ms"]) / BUCKETS)))
        if width != ids.width:
            for bucket, data in state["buckets"].items():
                end = (int(bucket) + 1) * width - 1
                ids._open.setdefault(end // ids.width, set()).update(_decode(data).tolist())
            ids._fold_all(list(ids._open))
            return ids
        restored = {int(bucket): data for bucket, data in state["buckets"].items() if data}
        # The newest bucket is the one that takes ids as the stream goes on: it stays unsealed
        # (a sorted array); the older ones go into the index (the next purge seals by the watermark).
        newest = max(restored, default=None)
        older = sorted(b for b in restored if b != newest)
        if older:
            ids._insert([_decode(restored[b]) for b in older], older)
            ids._index.compact(ids._first, everything=True)
        if newest is not None:
            ids._sorted[newest] = _decode(restored[newest])
        ids._texts.update(restored)
        return ids


class SealedIndex:
    """Hashes with their buckets, for lookups of many hashes at once, kept in hash order with a
    copy of a share of them at each upkeep, never all of them (for a long horizon, millions).

    New entries go into a ``recent`` sorted array; the rest live in one flat array of
    ``2**bits`` shards by the hashes' top bits, each shard ``cap`` slots long: its entries in
    order, then padding (the shard's greatest hash, in no bucket that is remembered), so that
    the flat array is sorted as a whole and a lookup is one binary search there and one in
    ``recent``. :meth:`compact` merges ``recent``'s entries of the next shards in turn into
    them and drops their forgotten entries, each shard once in ``rounds`` calls (a share of the
    shards a call, or a shard every few calls when there are fewer), so an entry waits at most
    ``rounds`` upkeeps in ``recent`` and a forgotten one stays at most as long.

    A shard that outgrows its slots, or a flat array four times the entries (a rate that fell),
    makes the flat array laid out again (shards of about ``SHARD_IDS``, ``cap`` a quarter above
    the largest), and that too a share at a time: each upkeep fills the next of the new array's
    shards (as many as a round of merges copies), in hash order, from the old array and
    ``recent``. Meanwhile a lookup searches three runs: the new array's shards filled, the old
    one's entries not moved yet, and ``recent``; an entry that came meanwhile waits in ``recent``
    for its shard's turn after the lay-out. A stream that grows lays its index out again at every
    quarter more: at once, that stalled the monitor for a copy of every id it remembers (0.6 s
    at ten million), as often as that.
    """

    SHARD_IDS = 1 << 18
    #: the most upkeeps to go round all shards
    ROUND = 8

    def __init__(self, rounds: int = ROUND) -> None:
        self.rounds = rounds
        self.bits = 0
        self.cap = 0
        self.lengths = [0]
        self.hashes: np.ndarray = _EMPTY
        self.buckets: np.ndarray = _NO_BUCKETS
        self.recent: tuple[np.ndarray, np.ndarray] = (_EMPTY, _NO_BUCKETS)
        self.turn = self.credit = 0
        #: the lay-out in progress, if any
        self.next: _Layout | None = None

    def __len__(self) -> int:
        """Entries stored, forgotten ones not dropped yet included."""
        layout = self.next
        if layout is None:
            return sum(self.lengths) + len(self.recent[0])
        return sum(layout.lengths) + layout.left + len(self.recent[0])

    def _runs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Sorted runs of hashes with their buckets that hold every entry between them: the flat
        array (during a lay-out, the new one's shards filled and the old one's rest) and ``recent``."""
        layout = self.next
        if layout is None:
            return [(self.hashes, self.buckets), self.recent]
        end = layout.filled * layout.cap
        return [(layout.hashes[:end], layout.buckets[:end]),
                (self.hashes[layout.moved:], self.buckets[layout.moved:]), self.recent]

    def add(self, arrays: list[np.ndarray], buckets: list[int]) -> None:
        """Add the sorted hashes of these buckets."""
        if len(arrays) == 1:  # one bucket sealed (the usual upkeep): in order already
            self.recent = _merged(self.recent, (arrays[0], np.full(len(arrays[0]), buckets[0], dtype=np.int64)))
            return
        hashes = np.concatenate(arrays)
        owners = np.repeat(np.asarray(buckets, dtype=np.int64), [len(a) for a in arrays])
        order = np.argsort(hashes, kind="stable")
        self.recent = _merged(self.recent, (hashes[order], owners[order]))

    def buckets_of(self, key: np.uint64) -> list[int]:
        """The buckets of the entries with this hash (padding's included: never remembered)."""
        out = []
        for hashes, buckets in self._runs():
            lo, hi = hashes.searchsorted(key), hashes.searchsorted(key, side="right")
            out.extend(buckets[lo:hi].tolist())
        return out

    def may_contain_any(self, values: np.ndarray) -> bool:
        """Whether any of ``values`` is stored (the padding may say yes: never a false no)."""
        return any(_member(values, stored).any() for stored, _ in self._runs() if len(stored))

    def compact(self, first: int, everything: bool = False) -> None:
        """Merge ``recent`` into the next shards in turn, or go on with a lay-out (all of them
        with ``everything``), dropping their entries of buckets before ``first``."""
        if self.next is not None:
            self._lay_out(first, everything)
            if self.next is not None or not everything:
                return
        shards = 1 << self.bits
        if len(self.hashes) > 4 * len(self) + 4096:  # far fewer ids than when laid out: less slack
            self._begin_lay_out(first, everything)
            return
        # each shard's turn comes once in `rounds` calls: with fewer shards than that, a call
        # passes without one (a small index is copied whole at its turn)
        self.credit = 0 if everything else self.credit + shards
        count = shards if everything else self.credit // self.rounds
        self.credit -= count * self.rounds
        taken: list[tuple[int, int]] = []  # the ranges of `recent` merged into their shards
        for _ in range(count):
            shard, self.turn = self.turn % shards, self.turn + 1
            span = self._compact_shard(shard, first)
            if span is None:
                self._take_recent(taken)  # merged already: not to be laid out twice
                self._begin_lay_out(first, everything)
                return
            taken.append(span)
        self._take_recent(taken)

    def _take_recent(self, taken: list[tuple[int, int]]) -> None:
        """Remove these (disjoint) ranges from ``recent``, in one copy however many."""
        spans = sorted((a, z) for a, z in taken if z > a)
        if not spans:
            return
        edges = [0, *(edge for span in spans for edge in span), len(self.recent[0])]
        kept = [(start, end) for start, end in zip(edges[0::2], edges[1::2]) if end > start]
        self.recent = tuple(np.concatenate([array[start:end] for start, end in kept]) if kept else array[:0]
                            for array in self.recent)

    def _compact_shard(self, shard: int, first: int) -> tuple[int, int] | None:
        """Merge ``recent``'s entries of this shard into it: their range in ``recent`` (for the
        caller to remove), or None if they do not fit."""
        low, high = _bounds(shard, self.bits)
        start, length = shard * self.cap, self.lengths[shard]
        kept_h, kept_b = _remembered(self.hashes[start:start + length], self.buckets[start:start + length], first)
        a, z, (new_h, new_b) = self._recent_between(low, high, first)
        if len(kept_h) + len(new_h) > self.cap:
            return None
        merged_h, merged_b = _merged((kept_h, kept_b), (new_h, new_b))
        n = len(merged_h)
        self.hashes[start:start + n], self.buckets[start:start + n] = merged_h, merged_b
        if n < length:
            self.hashes[start + n:start + length], self.buckets[start + n:start + length] = high, _PADDING
        self.lengths[shard] = n
        return a, z

    def _recent_between(self, low: int, high: int, first: int) -> tuple[int, int, tuple[np.ndarray, np.ndarray]]:
        """The range of ``recent``'s entries from hash ``low`` to ``high``, and those of them of
        buckets ``first`` or later (the forgotten ones are not kept for another round)."""
        recent_h, recent_b = self.recent
        a, z = int(recent_h.searchsorted(np.uint64(low))), int(recent_h.searchsorted(np.uint64(high), side="right"))
        return a, z, _remembered(recent_h[a:z], recent_b[a:z], first)

    def _begin_lay_out(self, first: int, everything: bool) -> None:
        """Begin a new flat array for every entry stored (shards of about SHARD_IDS, ``cap`` a
        quarter above the most any of them takes, counted from the old array and ``recent``) and
        fill its first share (see :meth:`_lay_out`)."""
        bits = max(0, math.ceil(math.log2(max(1, len(self)) / self.SHARD_IDS)))
        highs = np.array([_bounds(s, bits)[1] for s in range(1 << bits)], dtype=np.uint64)
        counts = np.diff(self.hashes.searchsorted(highs, side="right"), prepend=0)
        counts += np.diff(self.recent[0].searchsorted(highs, side="right"), prepend=0)
        # less the old array's padding: a shard's empty slots, valued its greatest hash
        old_highs = np.array([_bounds(s, self.bits)[1] for s in range(1 << self.bits)], dtype=np.uint64)
        padding = self.cap - np.asarray(self.lengths)
        np.subtract.at(counts, highs.searchsorted(old_highs), padding)
        self.next = _Layout(bits, int(counts.max()) * 5 // 4 + 16, left=sum(self.lengths))
        self._lay_out(first, everything)

    def _lay_out(self, first: int, everything: bool) -> None:
        """Fill the lay-out's next shards (a round's share, or all with ``everything``) with their
        entries of the old array and ``recent``, less those of buckets before ``first``; end it
        once all are."""
        layout = self.next
        shards = 1 << layout.bits
        count = shards if everything else -(-shards // self.rounds)
        taken: list[tuple[int, int]] = []
        for shard in range(layout.filled, min(shards, layout.filled + count)):
            low, high = _bounds(shard, layout.bits)
            end = layout.moved + int(self.hashes[layout.moved:].searchsorted(np.uint64(high), side="right"))
            old = self._entries(layout.moved, end)
            layout.left -= len(old[0])
            layout.moved = end
            old = _remembered(*old, first)
            a, z, new = self._recent_between(low, high, first)
            if len(old[0]) + len(new[0]) <= layout.cap:
                old = _merged(old, new)
                taken.append((a, z))
            # else more came meanwhile than the slack holds: it waits in `recent`, and the
            # shard's first turn lays out again
            layout.fill(shard, *old)
        self._take_recent(taken)
        if layout.filled == shards:
            self.bits, self.cap, self.lengths, self.hashes, self.buckets = (
                layout.bits, layout.cap, layout.lengths, layout.hashes, layout.buckets)
            self.next, self.turn, self.credit = None, 0, 0

    def _entries(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The entries of the flat array between these places, without its padding."""
        parts = []
        for shard in range(start // self.cap, -(-end // self.cap)) if self.cap else ():
            a, z = max(start, shard * self.cap), min(end, shard * self.cap + self.lengths[shard])
            if z > a:
                parts.append((self.hashes[a:z], self.buckets[a:z]))
        if not parts:
            return _EMPTY, _NO_BUCKETS
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([h for h, _ in parts]), np.concatenate([b for _, b in parts])


class _Layout:
    """A flat array being laid out: ``2**bits`` shards of ``cap`` slots, the first ``filled`` in
    place; the old array's entries before its place ``moved`` are in them, ``left`` entries
    after it are not."""

    def __init__(self, bits: int, cap: int, left: int):
        self.bits, self.cap, self.left = bits, cap, left
        shards = 1 << bits
        self.hashes = np.empty(shards * cap, dtype=np.uint64)  # filled a shard at a time
        self.buckets = np.empty(shards * cap, dtype=np.int64)
        self.lengths = [0] * shards
        self.filled = self.moved = 0

    def fill(self, shard: int, hashes: np.ndarray, buckets: np.ndarray) -> None:
        """Put the shard's entries in place, its padding after them."""
        start, n = shard * self.cap, len(hashes)
        self.hashes[start:start + n], self.buckets[start:start + n] = hashes, buckets
        self.hashes[start + n:start + self.cap] = _bounds(shard, self.bits)[1]
        self.buckets[start + n:start + self.cap] = _PADDING
        self.lengths[shard] = n
        self.filled = shard + 1


def _bounds(shard: int, bits: int) -> tuple[int, int]:
    """The least and greatest hash of a shard of ``2**bits``."""
    shift = 64 - bits
    return shard << shift if bits else 0, ((shard + 1) << shift) - 1


def _remembered(hashes: np.ndarray, buckets: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """The entries whose bucket is ``first`` or later (the arrays themselves when all are)."""
    if len(buckets) and int(buckets.min()) < first:
        keep = buckets >= first
        return hashes[keep], buckets[keep]
    return hashes, buckets


def _merged(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs of hashes with their buckets as one: ``b``'s entries placed before ``a``'s
    equal or greater ones, ``a``'s copied around them (one pass each, where ``np.insert`` takes
    several)."""
    if not len(b[0]):
        return a
    if not len(a[0]):
        return b
    total = len(a[0]) + len(b[0])
    at = a[0].searchsorted(b[0]) + np.arange(len(b[0]))
    rest = np.ones(total, dtype=bool)
    rest[at] = False
    hashes, owners = np.empty(total, dtype=np.uint64), np.empty(total, dtype=np.int64)
    hashes[at], owners[at] = b
    hashes[rest], owners[rest] = a
    return hashes, owners


def _member(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``sorted_values``."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(sorted_values.searchsorted(values), len(sorted_values) - 1)
    return sorted_values[at] == values


def _merge(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Two sorted runs of distinct hashes, merged (the stable sort is a merge sort: one pass)."""
    merged = np.concatenate((old, new))
    merged.sort(kind="stable")
    return merged


def _hashes(entry: str | np.ndarray) -> np.ndarray:
    """A checkpoint entry's sorted hashes (see ``RecentIds._texts``)."""
    return entry if isinstance(entry, np.ndarray) else _decode(entry)


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u8").astype(np.uint64)


def _encode(hashes: np.ndarray) -> str:
    return base64.b64encode(hashes.astype("<u8").tobytes()).decode()
