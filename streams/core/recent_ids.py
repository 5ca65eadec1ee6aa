"""The prediction ids a model remembers for a bounded stretch of event time, to recognise duplicates.

Ids are kept as 64-bit hashes (BLAKE2b: the same in every process, so checkpoints restore
exactly) in event-time buckets ``horizon / BUCKETS`` wide. An id added at event time ``t`` is
remembered while ``watermark - horizon < end of t's bucket``: for at least ``horizon`` and at most
``horizon + horizon / BUCKETS`` of event time. Whether an id is remembered depends on event times
alone, not on when :meth:`RecentIds.purge` last ran, so the same events give the same answers
however they were cut into batches.

Memory: each bucket's ids are one sorted ``uint64`` array (8 bytes an id), except those added
since the last checkpoint or fold, which wait in a Python set (about 110 bytes an id). A checkpoint
folds them into their bucket's array, so its cost is sorting what came since the last one plus
copying the buckets that changed; re-sorting a whole bucket at every checkpoint would cost more
the longer a bucket stays open. A checkpoint holds 8 bytes an id (base64 in JSON: about 11).

Two different ids share a hash with probability 2**-64 per pair: with ``n`` ids remembered, a new
id is taken for a duplicate with probability about ``n / 2**64`` (1e6 remembered: 5e-14).
"""
from __future__ import annotations

import base64
import hashlib
import math
from typing import Any, Iterable

import numpy as np

#: buckets per horizon: more make the memory follow the horizon closer, each costs a fold
BUCKETS = 8

_EMPTY = np.empty(0, dtype=np.uint64)


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
        self.width = max(1, math.ceil(self.horizon_ms / BUCKETS))
        #: bucket -> hashes added to it since it was last folded into :attr:`_sorted`
        self._open: dict[int, set[int]] = {}
        #: bucket -> its folded hashes, sorted and unique
        self._sorted: dict[int, np.ndarray] = {}
        #: bucket -> the checkpoint text of its folded hashes (encoded when it changed)
        self._texts: dict[int, str] = {}

    def __len__(self) -> int:
        return sum(map(len, self._sorted.values())) + sum(map(len, self._open.values()))

    def _alive(self, bucket: int, watermark_ms: int) -> bool:
        return (bucket + 1) * self.width > watermark_ms - self.horizon_ms

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
        return False

    # -- many ------------------------------------------------------------------------------
    def may_contain_any(self, hashes: np.ndarray) -> bool:
        """Whether any of ``hashes`` is stored, remembered or not yet purged (never a false "no")."""
        if not len(hashes):
            return False
        if self._open:
            values = hashes.tolist()
            if any(not s.isdisjoint(values) for s in self._open.values()):
                return True
        for stored in self._sorted.values():
            at = np.minimum(stored.searchsorted(hashes), len(stored) - 1)
            if (stored[at] == hashes).any():
                return True
        return False

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
        """Drop the buckets no longer remembered; fold those the watermark has passed."""
        for bucket in [b for b in (*self._open, *self._sorted) if not self._alive(b, watermark_ms)]:
            self._open.pop(bucket, None)
            self._sorted.pop(bucket, None)
            self._texts.pop(bucket, None)
        current = watermark_ms // self.width
        for bucket in [b for b in self._open if b < current]:
            self._fold(bucket)

    def _fold(self, bucket: int) -> None:
        """Move the bucket's waiting hashes into its sorted array."""
        added = self._open.pop(bucket)
        new = np.fromiter(added, dtype=np.uint64, count=len(added))
        old = self._sorted.get(bucket)
        if old is not None:
            # two sorted runs: the stable sort (a merge sort) merges them in one pass
            new = np.concatenate((old, new))
        new.sort(kind="stable" if old is not None else "quicksort")
        if old is not None and len(new) > 1:
            new = new[np.concatenate(([True], new[1:] != new[:-1]))]
        self._sorted[bucket] = new
        self._texts.pop(bucket, None)

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every stored hash by bucket, sorted: the same for the same ids, however folded."""
        for bucket in list(self._open):
            self._fold(bucket)
        encoded = {}
        for bucket in sorted(self._sorted):
            text = self._texts.get(bucket)
            if text is None:
                text = self._texts[bucket] = _encode(self._sorted[bucket])
            encoded[str(bucket)] = text
        return {"horizon_ms": self.horizon_ms, "buckets": encoded}

    @classmethod
    def from_state(cls, state: dict[str, Any], horizon_ms: int) -> "RecentIds":
        """The ids of ``state``; a checkpoint taken with another horizon keeps its buckets and
        forgets them by the new horizon (the bucket width must match, else it starts empty)."""
        ids = cls(horizon_ms)
        if "buckets" not in state:  # an older checkpoint's {prediction_id: label timestamp}
            buckets = np.asarray(list(state.values()), dtype=np.int64) // ids.width
            for bucket, h in zip(buckets.tolist(), id_hashes(state).tolist()):
                ids._open.setdefault(bucket, set()).add(h)
            for bucket in list(ids._open):
                ids._fold(bucket)
            return ids
        if cls(int(state["horizon_ms"])).width != ids.width:
            return ids
        for bucket, data in state["buckets"].items():
            values = np.frombuffer(base64.b64decode(data), dtype="<u8").astype(np.uint64)
            if len(values):
                ids._sorted[int(bucket)] = values
                ids._texts[int(bucket)] = data
        return ids


def _encode(hashes: np.ndarray) -> str:
    return base64.b64encode(hashes.astype("<u8").tobytes()).decode()
