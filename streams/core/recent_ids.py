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

Memory: the buckets the watermark has passed ("sealed") are merged into one sorted index of
hashes with their buckets (16 bytes an id; one lookup for all of them, however many buckets)
and their checkpoint texts; a bucket not sealed yet keeps a sorted ``uint64`` array, and what
came since the last checkpoint or seal waits in a Python set (about 110 bytes an id). A
checkpoint folds the sets into the arrays; sealing a bucket inserts it into the index once.

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

_EMPTY = np.empty(0, dtype=np.uint64)
_NO_BUCKETS = np.empty(0, dtype=np.int64)


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
        #: the hashes of the sealed buckets, sorted, and each one's bucket
        self._index: np.ndarray = _EMPTY
        self._index_buckets: np.ndarray = _NO_BUCKETS
        #: bucket -> the checkpoint text of its folded hashes (encoded when it changed)
        self._texts: dict[int, str] = {}
        #: the oldest bucket remembered at the last purge
        self._first = -(1 << 62)

    def __len__(self) -> int:
        return len(self._index) + sum(map(len, self._sorted.values())) + sum(map(len, self._open.values()))

    def _alive(self, bucket: int, watermark_ms: int) -> bool:
        return (bucket + 1) * self.width > watermark_ms - self.horizon_ms

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
        lo, hi = self._index.searchsorted(key), self._index.searchsorted(key, side="right")
        return any(self._alive(b, watermark_ms) for b in self._index_buckets[lo:hi].tolist())

    # -- many ------------------------------------------------------------------------------
    def may_contain_any(self, hashes: np.ndarray) -> bool:
        """Whether any of ``hashes`` is stored, remembered or not yet purged (never a false "no")."""
        if not len(hashes):
            return False
        if self._open:
            values = hashes.tolist()
            if any(not s.isdisjoint(values) for s in self._open.values()):
                return True
        return any(_member(hashes, stored).any() for stored in (self._index, *self._sorted.values()))

    def add_many(self, hashes: np.ndarray, ts_ms: np.ndarray, watermarks_ms: np.ndarray) -> None:
        """:meth:`add` of each hash, in order, with the watermark at each."""
        buckets = np.asarray(ts_ms, dtype=np.int64) // self.width
        alive = (buckets + 1) * self.width > np.asarray(watermarks_ms, dtype=np.int64) - self.horizon_ms
        if not alive.all():
            hashes, buckets = hashes[alive], buckets[alive]
        if not len(hashes):
            return
        first = int(buckets[0])
        if (buckets == first).all():
            self._open.setdefault(first, set()).update(hashes.tolist())
            return
        for bucket, h in zip(buckets.tolist(), hashes.tolist()):
            self._open.setdefault(bucket, set()).add(h)

    # -- upkeep ----------------------------------------------------------------------------
    def purge(self, watermark_ms: int) -> None:
        """Drop the buckets no longer remembered; seal those the watermark has passed."""
        first = (watermark_ms - self.horizon_ms) // self.width  # the oldest bucket still remembered
        # Buckets are dropped as the oldest remembered one moves (once a width of event time),
        # not looked for at every purge: a long horizon has thousands of them.
        dead = [b for b in (*self._open, *self._sorted, *self._texts) if b < first] if first > self._first else []
        self._first = max(self._first, first)
        if dead:
            for bucket in dead:
                self._open.pop(bucket, None)
                self._sorted.pop(bucket, None)
                self._texts.pop(bucket, None)
            if len(self._index) and int(self._index_buckets.min()) < first:
                keep = self._index_buckets >= first
                self._index, self._index_buckets = self._index[keep], self._index_buckets[keep]
        current = watermark_ms // self.width
        passed = sorted({b for b in (*self._open, *self._sorted) if b < current})
        self._fold_all([b for b in passed if b in self._open])
        sealing = [b for b in passed if b in self._sorted]
        if sealing:
            arrays = [self._sorted.pop(b) for b in sealing]
            for bucket, hashes in zip(sealing, arrays):  # a sealed bucket is known by its text
                self._keep_text(bucket, hashes)
            self._insert(arrays, sealing)

    def _fold_all(self, buckets: list[int]) -> None:
        """:meth:`_fold` these buckets; what goes into the index goes in one insertion."""
        into_index: list[tuple[np.ndarray, int]] = []
        for bucket in buckets:
            self._fold(bucket, into_index)
        if into_index:
            self._insert([hashes for hashes, _ in into_index], [bucket for _, bucket in into_index])

    def _fold(self, bucket: int, into_index: list[tuple[np.ndarray, int]]) -> None:
        """Move the bucket's waiting hashes into its sorted array (or, sealed, its text, and add
        them to ``into_index``: for the index)."""
        added = self._open.pop(bucket)
        new = np.fromiter(added, dtype=np.uint64, count=len(added))
        new.sort()
        if self._sealed(bucket):
            old = _decode(self._texts[bucket])
            new = new[~_member(new, old)]
            if len(new):
                into_index.append((new, bucket))
                self._texts[bucket] = _encode(_merge(old, new))
            return
        old = self._sorted.get(bucket)
        self._sorted[bucket] = new if old is None else _merge(old, new[~_member(new, old)])
        self._texts.pop(bucket, None)

    def _keep_text(self, bucket: int, hashes: np.ndarray) -> None:
        """Encode the bucket's checkpoint text unless it is kept already (unchanged since)."""
        if bucket not in self._texts:
            self._texts[bucket] = _encode(hashes)

    def _insert(self, arrays: list[np.ndarray], buckets: list[int]) -> None:
        """Put the sorted hashes of these buckets into the index."""
        hashes = np.concatenate(arrays)
        owners = np.repeat(np.asarray(buckets, dtype=np.int64), [len(a) for a in arrays])
        order = np.argsort(hashes, kind="stable")
        hashes, owners = hashes[order], owners[order]
        at = self._index.searchsorted(hashes)
        self._index = np.insert(self._index, at, hashes)
        self._index_buckets = np.insert(self._index_buckets, at, owners)

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every stored hash by bucket, sorted: the same for the same ids, however folded."""
        self._fold_all(list(self._open))
        for bucket, hashes in self._sorted.items():
            self._keep_text(bucket, hashes)
        texts = self._texts
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
        if newest is not None:
            ids._sorted[newest] = _decode(restored[newest])
        ids._texts.update(restored)
        return ids


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


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u8").astype(np.uint64)


def _encode(hashes: np.ndarray) -> str:
    return base64.b64encode(hashes.astype("<u8").tobytes()).decode()
