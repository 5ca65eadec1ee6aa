"""One model's join of predictions and labels by ``prediction_id``, with no I/O.

A prediction waits for its label (and a label that comes first for its prediction) for at most
the model's ``label_ttl_seconds`` of event time. The clock is the model's watermark, the
largest event timestamp it has seen; a prediction older than ``watermark - ttl`` expires
(counted), and so does an early label nobody claims. A label for a prediction that expired is
late: counted with its lag, never joined.

Duplicates: the ids of joined predictions are remembered for the model's de-duplication horizon
(``dedup_seconds``, at most the TTL) as 64-bit hashes in event-time buckets
(:class:`~streams.core.recent_ids.RecentIds`), so memory and checkpoints follow the horizon and
the rate, never the length of the stream; expired ids are kept as long, to tell a late label
from an orphan one.

Event by event (:meth:`Join.prediction`, :meth:`Join.label`) or a whole batch of a model's
events at once when every event takes the plain path (:meth:`Join.can_join_plain`,
:meth:`Join.join_plain`): both leave the same state.
"""
from __future__ import annotations

import collections
import itertools
import operator
from typing import Any, Protocol, Sequence

import numpy as np

from streams.core.codecs import LABEL_TYPES, Label, Prediction
from streams.core.recent_ids import RecentIds, id_hash, id_hashes


class Counts(Protocol):
    """What the join counts (the model's ``ModelCounters`` has these)."""

    duplicate_labels: int
    expired_predictions: int
    expired_labels: int
    late_labels: int
    #: label lag (label time - prediction time, seconds), of late labels too
    label_lags: list[float]


#: the fields of a batch's predictions and labels the bulk path reads
PREDICTION_FIELDS = ("prediction_id", "timestamp", "prediction", "score", "features", "segment", "model_version")
LABEL_FIELDS = ("prediction_id", "timestamp", "label")


def _fields(events: list, names: tuple[str, ...]) -> dict[str, tuple]:
    """Each named field's values over ``events``, as tuples: a C pass over the events a field
    (a transpose of whole events, ``zip(*map(astuple, events))``, costs more for the labels and
    as much for the predictions)."""
    return {name: tuple(map(operator.attrgetter(name), events)) for name in names}


class Batch:
    """One model's events of a batch as columns: its predictions and labels apart, with each
    one's place in the batch. ``events`` are ``(event, source)`` pairs."""

    def __init__(self, events: list[tuple[Prediction | Label, Any]]):
        self.events = list(map(operator.itemgetter(0), events))
        sources = list(map(operator.itemgetter(1), events))
        types = list(map(type, self.events))
        labelled = np.fromiter(map(LABEL_TYPES.__contains__, types), dtype=bool, count=len(events))
        is_label, is_prediction = labelled.tolist(), (~labelled).tolist()
        self.predictions = list(itertools.compress(self.events, is_prediction))
        self.labels = list(itertools.compress(self.events, is_label))
        self.prediction_sources = list(itertools.compress(sources, is_prediction))
        self.label_sources = list(itertools.compress(sources, is_label))
        # nonzero()[0] is flatnonzero without its Python wrappers (a 1-d array's)
        self.positions = (~labelled).nonzero()[0]
        self.label_positions = labelled.nonzero()[0]
        #: field -> the predictions' (the labels') values
        self.prediction_fields = _fields(self.predictions, PREDICTION_FIELDS)
        self.label_fields = _fields(self.labels, LABEL_FIELDS)
        #: the predictions' and the labels' timestamps as arrays, made once for every pass that needs them
        self.prediction_times = np.array(self.prediction_fields["timestamp"], dtype=np.int64)
        self.label_times = np.array(self.label_fields["timestamp"], dtype=np.int64)
        #: set by :meth:`Join.can_join_plain`: each label's prediction's index among the
        #: predictions (-1: not in the batch), and the predictions' id hashes if it took them
        self.found: np.ndarray | None = None
        self.prediction_hashes: np.ndarray | None = None

    @staticmethod
    def column(events: list, field: str) -> list:
        return list(map(operator.attrgetter(field), events))

    def timestamps(self) -> np.ndarray:
        """Every event's timestamp in batch order, from the predictions' and the labels'."""
        ts = np.empty(len(self.events), dtype=np.int64)
        ts[self.positions] = self.prediction_times
        ts[self.label_positions] = self.label_times
        return ts


class Join:
    """The join state of one model.

    Parameters
    ----------
    ttl_ms
        How long (event time) a prediction waits for its label, and a label for its prediction.
    dedup_ms
        How long (event time) joined and expired ids are remembered (at most ``ttl_ms``).
    counts
        Where expiries, duplicate labels and late labels are counted (the model's counters).
    """

    def __init__(self, ttl_ms: int, dedup_ms: int, counts: Counts):
        self.ttl_ms = ttl_ms
        self.dedup_ms = dedup_ms
        self.counts = counts
        self.watermark_ms = 0
        # prediction_id -> (timestamp ms, prediction, score); insertion order ~ event time
        self.pending: dict[str, tuple[int, Any, Any]] = {}
        # prediction_id -> (timestamp ms, label, source offset) for labels that came first
        self.early_labels: dict[str, tuple[int, Any, int]] = {}
        # hashes of joined prediction ids by label time, kept one de-duplication horizon
        self.joined_ids = RecentIds(dedup_ms)
        # prediction_id -> (watermark when it expired, prediction timestamp), kept one horizon
        self.expired_ids: dict[str, tuple[int, int]] = {}
        # prediction_id -> id_hash of predictions that waited in a plain batch, so that their
        # labels, in a later batch, need not hash the id again (pruned to the pending ids)
        self._hashes: dict[str, int] = {}

    def advance(self, timestamp_ms: int) -> None:
        """An event at ``timestamp_ms`` was seen: the watermark is the largest event time."""
        if timestamp_ms > self.watermark_ms:
            self.watermark_ms = timestamp_ms

    # -- event by event ---------------------------------------------------------------------
    def duplicate_prediction(self, pid: str) -> bool:
        """Whether a prediction of this id is waiting or was joined within the horizon. One that
        waited past the TTL has expired, purged or not: it is counted so now (see :meth:`purge`)."""
        waiting = self.pending.get(pid)
        if waiting is not None:
            if waiting[0] >= self.watermark_ms - self.ttl_ms:
                return True
            del self.pending[pid]  # as a purge now would
            self.counts.expired_predictions += 1
            self.expired_ids[pid] = (self.watermark_ms, waiting[0])
        return bool(self.joined_ids and self.joined_ids.contains(id_hash(pid), self.watermark_ms))

    def prediction(self, pid: str, timestamp_ms: int, prediction: Any, score: Any) -> tuple[int, Any, int] | None:
        """A new prediction: the early label ``(timestamp ms, label, offset)`` it joins now, or
        None and it waits (an early label that waited past the TTL is counted expired)."""
        early = self._early_label(pid, take=True)
        if early is None:
            self.pending[pid] = (timestamp_ms, prediction, score)
            return None
        self.joined_ids.add(id_hash(pid), early[0], self.watermark_ms)
        return early

    def label(self, pid: str, timestamp_ms: int, label: Any, offset: int) -> tuple[int, Any, Any] | None:
        """A label: the waiting prediction ``(timestamp ms, prediction, score)`` it joins now, or
        None: a duplicate, an early label (it waits), a late one, each counted as such."""
        h = id_hash(pid)
        if self._early_label(pid, take=False) is not None or self.joined_ids.contains(h, self.watermark_ms):
            self.counts.duplicate_labels += 1
            return None
        waiting = self.pending.pop(pid, None)
        if waiting is None:
            expired = self.expired_ids.pop(pid, None)
            if expired is not None:
                self._late(expired[1], timestamp_ms)
            else:
                self.early_labels[pid] = (timestamp_ms, label, offset)
            return None
        if waiting[0] < self.watermark_ms - self.ttl_ms:
            # It expired by event time; the periodic purge simply had not run yet.
            self.counts.expired_predictions += 1
            self._late(waiting[0], timestamp_ms)
            return None
        self.joined_ids.add(h, timestamp_ms, self.watermark_ms)
        return waiting

    def _early_label(self, pid: str, take: bool) -> tuple[int, Any, int] | None:
        """The early label waiting for ``pid`` (taken out with ``take``), or None. One that waited
        past the TTL by event time has expired, whether a purge dropped it yet or not: it is
        dropped and counted so now, as the purge would."""
        early = self.early_labels.pop(pid, None) if take else self.early_labels.get(pid)
        if early is not None and early[0] < self.watermark_ms - self.ttl_ms:
            self.early_labels.pop(pid, None)
            self.counts.expired_labels += 1
            return None
        return early

    def _late(self, pred_ts: int, label_ts: int) -> None:
        """A label for a prediction that already expired: counted with its lag, never joined."""
        self.counts.late_labels += 1
        self.counts.label_lags.append(max(0, label_ts - pred_ts) / 1000.0)

    # -- a batch at once --------------------------------------------------------------------
    def can_join_plain(self, batch: Batch, pids: Sequence[str], label_pids: Sequence[str]) -> bool:
        """Whether no event of the batch is a duplicate or meets an early label, and each label
        whose prediction is in the batch comes after it (what :meth:`join_plain` checks first)."""
        pending, joined_ids, early = self.pending, self.joined_ids, self.early_labels
        index = dict(zip(pids, range(len(pids))))
        # No label is checked against joined_ids: each must find its prediction pending or in the
        # batch (join_plain), and an id is never both pending and joined, nor a batch's prediction joined.
        if len(index) < len(pids) or len(set(label_pids)) < len(label_pids) \
                or not pending.keys().isdisjoint(pids) \
                or (early and not (early.keys().isdisjoint(pids) and early.keys().isdisjoint(label_pids))):
            return False  # a duplicate, or an early label in play
        if joined_ids:
            batch.prediction_hashes = id_hashes(pids)
            if joined_ids.may_contain_any(batch.prediction_hashes):
                return False  # a prediction joined before
        # Each label's prediction, from the batch (it must come first) or else pending.
        found = batch.found = np.fromiter(map(index.get, label_pids, itertools.repeat(-1)), dtype=np.int64,
                                          count=len(label_pids))
        in_batch = found >= 0
        return bool((batch.positions[found[in_batch]] < batch.label_positions[in_batch]).all())

    def join_plain(self, batch: Batch, pids: Sequence[str], label_pids: Sequence[str], prediction_ts: Sequence[int],
                   scores: Sequence) -> tuple[list[tuple[int, Any, Any]], np.ndarray, np.ndarray] | None:
        """Join a batch that :meth:`can_join_plain`: each prediction waits (with its timestamp,
        prediction and score), each label finds its prediction waiting within the TTL, as event
        by event would. Returns each label's prediction ``(timestamp ms, prediction, score)``,
        those predictions' timestamps and the labels' timestamps; None, having changed nothing,
        if a label finds none (early, late or orphan) or finds one expired by event time."""
        pending = self.pending
        # the batch's predictions wait, as one by one, till their labels
        pending.update(zip(pids, zip(prediction_ts, batch.prediction_fields["prediction"], scores)))
        waiting = list(map(pending.get, label_pids))
        if None in waiting:
            self._drop_pending(pids)  # the batch's, the last ones in
            return None
        joined_ts = np.fromiter(map(operator.itemgetter(0), waiting), dtype=np.int64, count=len(label_pids))
        label_ts = batch.label_times
        last = int(max(self.watermark_ms, max(prediction_ts, default=self.watermark_ms),
                       max(batch.label_fields["timestamp"], default=self.watermark_ms)))
        # Each label's own watermark (at most the batch's last) matters only if the last one
        # would decide otherwise: a prediction past the TTL by it, or a label too old to be
        # remembered by it. The usual batch has neither, and needs no array of watermarks.
        at_labels: np.ndarray | int = last
        if len(label_ts) and (int(joined_ts.min()) < last - self.ttl_ms
                              or not self.joined_ids.keeps(int(label_ts.min()), last)):
            at_labels = running_max(batch.timestamps(), self.watermark_ms)[batch.label_positions]
            if (joined_ts < at_labels - self.ttl_ms).any():
                self._drop_pending(pids)
                return None
        self.watermark_ms = last
        if label_pids:
            self._drop_pending(label_pids)
            self.joined_ids.add_many(self._label_hashes(batch, label_pids), label_ts, at_labels)
        if batch.prediction_hashes is not None:
            self._hashes.update(zip(pids, batch.prediction_hashes.tolist()))
            # the batch's predictions joined already: not waiting
            collections.deque(map(self._hashes.pop, label_pids, itertools.repeat(None)), maxlen=0)
        return waiting, joined_ts, label_ts

    def _label_hashes(self, batch: Batch, label_pids: Sequence[str]) -> np.ndarray:
        """:func:`id_hashes` of the labels' ids: those whose prediction is in the batch (the usual
        label, when labels come soon) taken from the predictions' hashes, if it has them, and
        those whose prediction waited from an earlier plain batch from ``_hashes``."""
        found, hashes = batch.found, batch.prediction_hashes
        if found is None or hashes is None:
            return id_hashes(label_pids)
        in_batch = found >= 0
        if in_batch.all():
            return hashes[found]
        out = np.empty(len(label_pids), dtype=np.uint64)
        out[in_batch] = hashes[found[in_batch]]
        outside = ~in_batch
        outside_pids = list(itertools.compress(label_pids, outside.tolist()))
        known = list(map(self._hashes.pop, outside_pids, itertools.repeat(None)))
        if None in known:
            missing = [pid for pid, h in zip(outside_pids, known) if h is None]
            computed = iter(id_hashes(missing).tolist())
            known = [next(computed) if h is None else h for h in known]
        out[outside] = known
        return out

    def _drop_pending(self, pids: Sequence[str]) -> None:
        """Take these ids out of ``pending`` (the others keep their order)."""
        collections.deque(map(self.pending.__delitem__, pids), maxlen=0)

    # -- time passing -----------------------------------------------------------------------
    def purge(self) -> None:
        """Expire what waited past the TTL by the watermark (counted), and forget the joined and
        expired ids older than the de-duplication horizon."""
        self.expire()
        self.joined_ids.purge(self.watermark_ms)
        if len(self._hashes) > 2 * len(self.pending) + 1024:  # ids gone from pending another way
            self._hashes = {pid: h for pid, h in self._hashes.items() if pid in self.pending}

    def expire(self, watermark_ms: int | None = None, pids: Sequence[str] | None = None) -> None:
        """The counted part of :meth:`purge` (the rest is upkeep: the joined ids are remembered
        by event time, whenever their memory is purged).

        ``watermark_ms`` and ``pids``: the expiry at a mark inside a plain batch applied whole
        (see :meth:`mark_expiries`), at the watermark there, of the pending ids it found."""
        watermark = self.watermark_ms if watermark_ms is None else watermark_ms
        horizon = watermark - self.ttl_ms
        if pids is None:
            expired = _drop_older(self.pending, horizon)
        else:
            expired = list(zip(pids, map(self.pending.pop, pids)))
        self.counts.expired_predictions += len(expired)
        # Remember expired predictions for one de-duplication horizon after they expired (by
        # the watermark), to tell a late label from an orphan one.
        self.expired_ids.update((pid, (watermark, value[0])) for pid, value in expired)
        self.counts.expired_labels += len(_drop_older(self.early_labels, horizon))
        _drop_older(self.expired_ids, watermark - self.dedup_ms)

    def mark_expiries(self, batch: Batch, pids: Sequence[str], label_pids: Sequence[str],
                      ends: Sequence[int], watermarks: Sequence[int]) -> list[list[str]] | None:
        """The pending ids :meth:`expire` drops at each mark of a batch that
        :meth:`can_join_plain`, were the batch read in up to each mark and expired there
        (``ends``: the events before each mark; ``watermarks``: the watermark there), for
        :meth:`join_plain` of the whole batch followed by ``expire`` at each mark with them.
        None when a prediction a mark expires is joined after it (not plain: its label is late).

        Called before ``join_plain``: ``pending`` is then in the order expiry walks it (its
        predictions, then the batch's). Each mark drops the oldest entries in that order that
        are in by then (pending, or the batch's predictions before the mark) and not joined
        before the mark, while they are past the TTL: a prediction joined after the mark is
        within the TTL there (``join_plain`` finds it so), so it stops the drop as it would."""
        label_at = dict(zip(label_pids, batch.label_positions.tolist()))
        never = len(batch.events)  # after every mark
        entries = itertools.chain(((pid, -1, value[0]) for pid, value in self.pending.items()),
                                  zip(pids, batch.positions.tolist(), batch.prediction_fields["timestamp"]))
        entry = next(entries, None)
        out = []
        for end, watermark in zip(ends, watermarks):
            horizon, expired = watermark - self.ttl_ms, []
            while entry is not None:
                pid, at, ts = entry
                if at >= end:
                    break  # a prediction after the mark, as are the rest
                joined = label_at.get(pid, never)
                if joined >= end:  # waiting at the mark
                    if ts >= horizon:
                        break
                    if joined < never:
                        return None
                    expired.append(pid)
                entry = next(entries, None)
            out.append(expired)
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark_ms,
            "pending": self.pending,
            "early_labels": self.early_labels,
            "joined_ids": self.joined_ids.state(),
            "expired_ids": self.expired_ids,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.watermark_ms = state["watermark_ms"]
        self.pending = {k: tuple(v) for k, v in state["pending"].items()}
        self.early_labels = {k: tuple(v) for k, v in state["early_labels"].items()}
        self.joined_ids = RecentIds.from_state(state["joined_ids"], self.dedup_ms)
        self.expired_ids = {k: tuple(v) for k, v in state["expired_ids"].items()}


def running_max(values: Any, start: int) -> np.ndarray:
    """``[max(start, *values[:i + 1]) for i in range(len(values))]`` (int64)."""
    return np.maximum.accumulate(np.maximum(np.asarray(values, dtype=np.int64), start))


def _drop_older(entries: dict[str, Any], horizon: int) -> list[tuple[str, Any]]:
    """Drop and return the entries whose timestamp (the value, or its first item) is older than
    ``horizon``, from the front of an insertion-ordered dict."""
    dropped = []
    while entries:
        first = next(iter(entries))
        value = entries[first]
        if (value[0] if isinstance(value, tuple) else value) >= horizon:
            break
        dropped.append((first, entries.pop(first)))
    return dropped
