"""The prediction ids a model remembers for a bounded stretch of event time, to recognise duplicates.

Ids are kept as 64-bit hashes (BLAKE2b: the same in every process, so checkpoints restore
exactly) in event-time buckets ``horizon / BUCKETS`` wide. An id added at event time ``t`` is
remembered while ``watermark - horizon < end of t's bucket``: for at least ``horizon`` and at most
``horizon + horizon / BUCKETS`` of event time. Whether an id is remembered depends on event times
alone, not on when :meth:`RecentIds.purge` last ran, so the same events give the same answers
however they were cut into batches.

Memory: the buckets the watermark has passed are sealed into one sorted ``uint64`` array of
hashes with a ``uint8`` bucket tag each (9 bytes an id); the bucket the watermark is in is a Python
set until it is sealed. A checkpoint holds 8 bytes an id (base64 in JSON: about 11).

Two different ids share a hash with probability 2**-64 per pair: with ``n`` ids remembered, a new
id is taken for a duplicate with probability about ``n / 2**64`` (1e6 remembered: 5e-14).
"""
from __future__ import annotations

import base64
import hashlib
import math
from typing import Any, Iterable

import numpy as np

#: buckets per horizon: more make the memory follow the horizon closer, each costs a seal
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
        #: bucket -> hashes added to it since it was last sealed
        self._open: dict[int, set[int]] = {}
        #: sealed hashes, sorted, and each one's bucket as ``_base + tag``
        self._hashes = _EMPTY
        self._tags = np.empty(0, dtype=np.uint8)
        self._base = 0
        #: bucket -> its sealed hashes, sorted and unique, and their encoding (for :meth:`state`)
        self._sealed_state: dict[int, tuple[np.ndarray, str]] | None = None

    def __len__(self) -> int:
        return len(self._hashes) + sum(map(len, self._open.values()))

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
        sealed = self._hashes
        if not len(sealed):
            return False
        at = int(sealed.searchsorted(np.uint64(h)))
        while at < len(sealed) and int(sealed[at]) == h:
            if self._alive(self._base + int(self._tags[at]), watermark_ms):
                return True
            at += 1
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
        sealed = self._hashes
        if not len(sealed):
            return False
        at = np.minimum(sealed.searchsorted(hashes), len(sealed) - 1)
        return bool((sealed[at] == hashes).any())

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
        current = watermark_ms // self.width
        dead = [b for b in self._open if not self._alive(b, watermark_ms)]
        for bucket in dead:
            del self._open[bucket]
        sealing = [b for b in self._open if b < current]
        sealed_buckets = self._base + self._tags.astype(np.int64) if len(self._tags) else np.empty(0, np.int64)
        stale = len(sealed_buckets) and not self._alive(int(sealed_buckets.min()), watermark_ms)
        if not sealing and not stale:
            return
        keep = (sealed_buckets + 1) * self.width > watermark_ms - self.horizon_ms
        hashes = [self._hashes[keep]]
        buckets = [sealed_buckets[keep]]
        for bucket in sealing:
            added = np.fromiter(self._open.pop(bucket), dtype=np.uint64)
            hashes.append(added)
            buckets.append(np.full(len(added), bucket, dtype=np.int64))
        self._set_sealed(np.concatenate(hashes), np.concatenate(buckets))

    def _set_sealed(self, hashes: np.ndarray, buckets: np.ndarray) -> None:
        self._sealed_state = None
        order = np.lexsort((buckets, hashes))
        self._hashes = hashes[order]
        buckets = buckets[order]
        self._base = int(buckets.min()) if len(buckets) else 0
        span = buckets - self._base
        # purge() keeps at most BUCKETS + 1 buckets; a checkpoint taken between purges may hold more
        self._tags = span.astype(np.uint8 if not len(span) or int(span.max()) < 256 else np.int64)

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every stored hash by bucket, sorted: the same for the same ids, however sealed."""
        if self._sealed_state is None:  # the sealed buckets change only at a seal: encoded once
            self._sealed_state = {}
            if len(self._hashes):
                buckets = self._base + self._tags.astype(np.int64)
                order = np.argsort(buckets, kind="stable")  # by bucket, each one's hashes still sorted
                bounds = np.flatnonzero(np.diff(buckets[order])) + 1
                for part in np.split(order, bounds):
                    hashes = np.unique(self._hashes[part])
                    self._sealed_state[int(buckets[part[0]])] = (hashes, _encode(hashes))
        encoded = {}
        for bucket in sorted({*self._open, *self._sealed_state}):
            sealed, text = self._sealed_state.get(bucket, (_EMPTY, ""))
            added = self._open.get(bucket)
            if added:
                text = _encode(np.union1d(sealed, np.fromiter(added, dtype=np.uint64, count=len(added))))
            encoded[str(bucket)] = text
        return {"horizon_ms": self.horizon_ms, "buckets": encoded}

    @classmethod
    def from_state(cls, state: dict[str, Any], horizon_ms: int) -> "RecentIds":
        """The ids of ``state``; a checkpoint taken with another horizon keeps its buckets and
        forgets them by the new horizon (the bucket width must match, else it starts empty)."""
        ids = cls(horizon_ms)
        if "buckets" not in state:  # an older checkpoint's {prediction_id: label timestamp}
            if state:
                ids._set_sealed(id_hashes(state), np.asarray(list(state.values()), dtype=np.int64) // ids.width)
            return ids
        if cls(int(state["horizon_ms"])).width != ids.width:
            return ids
        hashes, buckets = [], []
        for bucket, data in state["buckets"].items():
            values = np.frombuffer(base64.b64decode(data), dtype="<u8").astype(np.uint64)
            hashes.append(values)
            buckets.append(np.full(len(values), int(bucket), dtype=np.int64))
        if hashes:
            ids._set_sealed(np.concatenate(hashes), np.concatenate(buckets))
        return ids


def _encode(hashes: np.ndarray) -> str:
    return base64.b64encode(hashes.astype("<u8").tobytes()).decode()
