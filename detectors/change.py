"""Change detectors on a stream of model errors (0/1 misclassifications or absolute errors).

ADWIN, DDM, EDDM, HDDM_A, HDDM_W, Page-Hinkley and KSWIN, written here so that their whole
running state is a handful of plain numbers (``state()`` is JSON, no pickles) and so that a batch
costs one loop rather than a method call per value (``python -m benchmarks.detectors`` compares
them with river's), while taking the same decisions: each replays river 0.26's arithmetic in
the same order, and the tests check the detection indices against river on river's own
docstring streams and on random streams.

Semantics shared by all (river's): after a detection the detector starts afresh with the next
value; ``drift_detected`` / ``warning_detected`` describe the last value seen. ``update_many``
returns the Result after the batch, ``fired=True`` when a change was detected anywhere in the
batch, and ``last_detections`` lists the stream positions (0-based, counted since the detector
was created) of the detections in that batch.

Per-event work is a scalar recurrence that restarts at every detection, so it runs as one tight
Python loop over local variables per batch (no per-event method calls or objects); KSWIN, whose
per-event work is a two-sample KS test, is vectorized over the batch instead.
"""
from __future__ import annotations

import math
import operator
import random
import warnings
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from scipy import stats

from . import kinds
from .base import InvalidInput, Result, as_finite_array, constructor_arguments, from_json_floats, json_floats


class ChangeDetector:
    """Shared plumbing: batch bookkeeping, Result, state round trip.

    A subclass names its running state in ``_fields`` (plain numbers / lists), resets it in
    ``_reset``, and implements ``_scan(values) -> positions of detections within the batch``.
    ``update_many(values)`` returns the :class:`~detectors.base.Result` after the batch, with
    ``fired`` true when a change was detected anywhere in it; ``update(value)`` is the one-value
    case. Every detector has these attributes:

    Attributes
    ----------
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.
    warning_detected : bool
        The last value put the detector in its warning zone (not a detection).
    """

    kind: ClassVar[str]
    _fields: ClassVar[tuple[str, ...]]
    #: the error stream must lie in [0, 1] (bit streams / bounded errors)
    unit_interval: ClassVar[bool] = False

    def __init__(self) -> None:
        self.seen = 0
        self.n_detections = 0
        self.last_detections: list[int] = []
        self.drift_detected = False
        self.warning_detected = False
        self._reset()

    def update_many(self, values: Any) -> Result:
        values = as_finite_array(values)
        if self.unit_interval and values.size and (values.min() < 0 or values.max() > 1):
            raise InvalidInput(f"{self.kind} takes errors in [0, 1] (1 = misclassified)")
        hits = self._scan(values)
        self.last_detections = [self.seen + i for i in hits]
        self.seen += len(values)
        self.n_detections += len(hits)
        return self.result()

    def update(self, value: float) -> Result:
        return self.update_many([value])

    def result(self) -> Result:
        statistic, threshold, p_value = self._summary()
        return Result(statistic=float(statistic), threshold=threshold, p_value=p_value,
                      n=int(self._sample_count()), fired=bool(self.last_detections))

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in constructor_arguments(type(self))}

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "params": self.params(), "seen": self.seen,
            "n_detections": self.n_detections, "last_detections": list(self.last_detections),
            "drift_detected": self.drift_detected, "warning_detected": self.warning_detected,
            "vars": json_floats({name: getattr(self, name) for name in self._fields}),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]):
        detector = cls(**state["params"])
        for name in ("seen", "n_detections", "last_detections", "drift_detected", "warning_detected"):
            setattr(detector, name, state[name])
        for name, value in from_json_floats(state["vars"]).items():
            setattr(detector, name, value)
        return detector

    def _reset(self) -> None:
        raise NotImplementedError

    def _scan(self, values: np.ndarray) -> list[int]:
        raise NotImplementedError

    def _summary(self) -> tuple[float, float | None, float | None]:
        raise NotImplementedError

    def _sample_count(self) -> float:
        raise NotImplementedError


# -- ADWIN ------------------------------------------------------------------------------------

class ADWIN(ChangeDetector):
    """ADaptive WINdowing (Bifet & Gavaldà 2007): drops the older part of an adaptive window
    when its mean differs from the newer part's by more than a Hoeffding/Bernstein bound.

    The window is an exponential histogram: row ``r`` holds up to ``max_buckets`` bucket
    summaries (sum, variance) of ``2**r`` values each, so memory is ``O(max_buckets * log2(width))``.
    Cut points are checked every ``clock`` values once the window is longer than ``grace_period``.
    Any real values; the statistic is the mean of the current window.

    Parameters
    ----------
    delta : float, default 0.002
        Confidence of the cut test, in (0, 1): a smaller delta needs a larger gap between the
        two parts' means, so fewer false detections and later true ones.
    clock : int, default 32
        Cut points are checked every ``clock`` values; 1 checks at every value (the earliest
        detection, and the most work).
    max_buckets : int, default 5
        Buckets of each size kept before the two oldest merge into one of twice the size: more
        buckets, finer cut points and more memory.
    min_window_length : int, default 5
        Neither part of a cut may hold fewer values.
    grace_period : int, default 10
        No cut is checked until the window holds more values than this.

    Attributes
    ----------
    width : int
        Values in the current window.
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.

    Examples
    --------
    River's example stream: 1000 bits, then 1000 values in 4..7. river 0.26's ``drift.ADWIN``
    detects the change at index 1023 too (the tests compare the two on random streams).

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> adwin = ADWIN()
    >>> adwin.update_many(stream).fired, adwin.last_detections
    (True, [1023])
    >>> adwin.width, round(adwin.result().statistic, 3)   # the window kept: values from 4..7
    (976, 5.467)
    >>> adwin.update(6.0).n                               # one more value
    977
    """

    kind = kinds.ADWIN
    _fields = ("_totals", "_variances", "_total", "_variance", "_width", "_tick")

    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10):
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if clock < 1 or max_buckets < 2:  # a bucket row of one can never merge a pair
            raise ValueError(f"clock must be >= 1 and max_buckets >= 2, got {clock!r} and {max_buckets!r}")
        self.delta, self.clock, self.max_buckets = float(delta), int(clock), int(max_buckets)
        self.min_window_length, self.grace_period = int(min_window_length), int(grace_period)
        super().__init__()

    def _reset(self) -> None:
        # _totals[r] / _variances[r]: bucket summaries of row r, oldest first
        self._totals: list[list[float]] = [[]]
        self._variances: list[list[float]] = [[]]
        self._total = self._variance = self._width = 0.0
        self._tick = 0
        self._screen: _CutScreen | None = None
        # what screens paid lately (see _new_screen); not state: results never depend on them
        self._screen_builds = self._screen_passes = self._screen_rest = 0

    #: values handled per vectorized step (bounds the temporary arrays)
    CHUNK = 16384
    #: below this many values the clock ticks are checked one by one (screened), not all at once
    SCALAR_BELOW = 320
    #: below this many values a Python loop computes the running sums, not numpy
    LOOP_BELOW = 200
    #: above this many merges in a row numpy merges them faster than a Python loop
    NUMPY_MERGES = 24
    #: row 0 may hold this many values before their merges, put off to a cut check or ``state()``
    #: (the same merges later: see ``_advance_one_by_one``), are done anyway
    UNMERGED_MAX = 4096

    def _scan(self, values: np.ndarray) -> list[int]:
        hits, start = [], 0
        while start < len(values):
            if self.drift_detected:
                self._reset()
                self.drift_detected = False
            chunk = values[start:start + self.CHUNK]
            if len(chunk) < self.LOOP_BELOW:
                hit = self._advance_one_by_one(chunk)
            elif len(chunk) < self.SCALAR_BELOW:
                hit = self._advance_screened(chunk)
            else:
                hit = self._advance(chunk)
            if hit is None:
                start += len(chunk)
            else:
                hits.append(start + hit)
                start += hit + 1
        return hits

    def state(self) -> dict[str, Any]:
        self._compress()  # the put-off merges: the state holds the merged layout
        return super().state()

    def _advance_one_by_one(self, new: np.ndarray) -> int | None:
        """Insert ``new`` value by value up to the first detection; its index in ``new``, or None.

        river's ``_insert_element`` on local variables, the same float operations in the same
        order. The buckets are compressed before each exact cut check (and when row 0 outgrows
        ``UNMERGED_MAX``, or for ``state()``) rather than after every value: the j-th merge of a
        row always takes its (2j)-th and (2j+1)-th buckets, so merging later merges the same pairs
        into the same sums and variances. A clock tick that the screen (:class:`_CutScreen`)
        proves cut-free skips both the compression and the check, which would find no cut and
        change nothing."""
        values = new.tolist()
        clock, grace = self.clock, self.grace_period
        width, total, variance, tick = self._width, self._total, self._variance, self._tick
        row0_t, row0_v = self._totals[0], self._variances[0]
        screen = self._screen
        start = 0
        while start < len(values):
            end = min(len(values), start + clock - tick % clock)  # up to the next clock tick
            run = values[start:end]
            if screen is None:
                for x in run:
                    if width > 0.0:
                        deviation = x - total / width
                        variance += width * deviation * deviation / (width + 1.0)
                    width += 1.0
                    total += x
            else:  # the same, and the prefix sums' drift from the screen's mean (two loops: the
                # tracking costs as much as the rest, and no screen is kept while screens do not pay)
                mean, low, high = screen.mean, screen.low, screen.high
                for x in run:
                    if width > 0.0:
                        deviation = x - total / width
                        variance += width * deviation * deviation / (width + 1.0)
                    width += 1.0
                    total += x
                    drift = total - mean * width
                    if drift > high:
                        high = drift
                    elif drift < low:
                        low = drift
                screen.low, screen.high = low, high
            row0_t.extend(run)
            row0_v.extend([0.0] * len(run))
            tick += len(run)
            start = end
            if tick % clock == 0 and width > grace:
                if screen is not None and screen.cut_free(width, total, variance, screen.low, screen.high):
                    self._screen_passes += 1
                    continue
                if self._exact_check(width, total, variance, tick):
                    return end - 1
                screen = self._screen
        self._width, self._total, self._variance, self._tick = width, total, variance, tick
        if len(row0_t) > self.UNMERGED_MAX:
            self._compress()
        return None

    def _advance_screened(self, new: np.ndarray) -> int | None:
        """:meth:`_advance_one_by_one` with the running width, sum and variance computed by numpy
        (sequential cumulative sums: the loop's float operations in its order), the values put in
        row 0 only before an exact check and at the end."""
        n = len(new)
        tick0, clock, grace = self._tick, self.clock, self.grace_period
        widths = self._width + np.arange(1, n + 1, dtype=np.float64)
        sums = np.cumsum(np.concatenate(([self._total], new)))
        with np.errstate(divide="ignore", invalid="ignore"):
            deviation = new - sums[:-1] / (widths - 1.0)
            increments = np.where(widths > 1.0, (widths - 1.0) * deviation * deviation / widths, 0.0)
        variances = np.cumsum(np.concatenate(([self._variance], increments)))[1:]
        sums = sums[1:]
        screen, inserted, base, high = self._screen, 0, 0, None
        for j in range(clock - 1 - tick0 % clock, n, clock):  # the values that make a clock tick
            width = float(widths[j])
            if width <= grace:
                continue
            total, variance = float(sums[j]), float(variances[j])
            if screen is not None:
                if high is None:  # the drift of the running sum since the screen's build
                    drift = sums[base:] - screen.mean * widths[base:]
                    high, low = np.maximum.accumulate(drift), np.minimum.accumulate(drift)
                if screen.cut_free(width, total, variance, min(screen.low, float(low[j - base])),
                                   max(screen.high, float(high[j - base]))):
                    self._screen_passes += 1
                    continue
            self._totals[0].extend(new[inserted:j + 1].tolist())
            self._variances[0].extend([0.0] * (j + 1 - inserted))
            inserted = j + 1
            if self._exact_check(width, total, variance, tick0 + j + 1):
                return j
            screen = self._screen
            base, high = j + 1, None
        if screen is not None and base < n:
            if high is None:
                drift = sums[base:] - screen.mean * widths[base:]
                screen.low, screen.high = min(screen.low, float(drift.min())), max(screen.high, float(drift.max()))
            else:
                screen.low, screen.high = min(screen.low, float(low[-1])), max(screen.high, float(high[-1]))
        self._totals[0].extend(new[inserted:].tolist())
        self._variances[0].extend([0.0] * (n - inserted))
        self._width, self._total, self._variance, self._tick = float(widths[-1]), float(sums[-1]), \
            float(variances[-1]), tick0 + n
        if len(self._totals[0]) > self.UNMERGED_MAX:
            self._compress()
        return None

    #: screens judged together: if they passed fewer than two ticks each, the next
    #: SCREEN_REST exact checks build none
    SCREEN_TRIAL = 16
    SCREEN_REST = 64

    def _exact_check(self, width: float, total: float, variance: float, tick: int) -> bool:
        """The exact cut check at a clock tick, the window ``(width, total, variance)`` after
        ``tick`` values (row 0 holding them): whether it detected a change; if not, the screen of
        the next ticks is made."""
        self._width, self._total, self._variance, self._tick = width, total, variance, tick
        self._compress()
        if self._shrink_window():  # else nothing changed
            self.drift_detected = True
            return True
        self._screen = self._new_screen()
        return False

    def _new_screen(self) -> _CutScreen | None:
        """The screen of the next ticks, after a full check found no cut; none for a while when
        the last screens passed few ticks: a build costs about what an exact check does, and on
        a stream whose cuts stay near significance (real values of a wide spread) most ticks fail
        the screen and need the exact check anyway."""
        if self._screen_rest:
            self._screen_rest -= 1
            return None
        if self._screen_builds >= self.SCREEN_TRIAL:
            paid = self._screen_passes >= 2 * self._screen_builds
            self._screen_builds = self._screen_passes = 0
            if not paid:
                self._screen_rest = self.SCREEN_REST
                return None
        self._screen_builds += 1
        return _CutScreen.build(self)

    def _compress(self) -> None:
        """Merge the oldest buckets of each row holding more than ``max_buckets``, pairwise, into
        buckets of the next row, from row 0 up, until no row holds more."""
        totals, variances, limit = self._totals, self._variances, self.max_buckets
        row = 0
        while row < len(totals) and len(totals[row]) > limit:
            merges = (len(totals[row]) - limit + 1) // 2
            size = float(1 << row)
            row_t, row_v = totals[row], variances[row]
            if row + 1 == len(totals):
                totals.append([])
                variances.append([])
            if merges == 1:  # the upper rows' usual merge, without building lists for it
                t0, t1 = row_t[0], row_t[1]
                gap = t0 / size - t1 / size
                totals[row + 1].append(t0 + t1)
                variances[row + 1].append(row_v[0] + row_v[1] + size * 0.5 * gap * gap)
                del row_t[:2], row_v[:2]
                row += 1
                continue
            if merges > self.NUMPY_MERGES:  # a long row (compressions put off over many values)
                pairs_t, pairs_v = np.array(row_t[:2 * merges]), np.array(row_v[:2 * merges])
                older, newer = pairs_t[0::2], pairs_t[1::2]
                gaps = older / size - newer / size
                totals[row + 1].extend((older + newer).tolist())
                variances[row + 1].extend((pairs_v[0::2] + pairs_v[1::2] + size * 0.5 * gaps * gaps).tolist())
                del row_t[:2 * merges], row_v[:2 * merges]
                row += 1
                continue
            older_t, newer_t = row_t[0:2 * merges:2], row_t[1:2 * merges:2]
            totals[row + 1].extend(map(operator.add, older_t, newer_t))  # t0 + t1
            variances[row + 1].extend([v0 + v1 + size * 0.5 * (gap := t0 / size - t1 / size) * gap for t0, t1, v0, v1
                                       in zip(older_t, newer_t, row_v[0:2 * merges:2], row_v[1:2 * merges:2])])
            del row_t[:2 * merges], row_v[:2 * merges]
            row += 1

    # Between detections the window only grows, and then the bucket layout depends on nothing but
    # the number of values since the last reset: row r of the histogram received k_r buckets
    # (k_0 = values seen, k_{r+1} = merges done by row r) and holds the newest of them. Every bucket
    # of row r is an aligned block of 2**r values, and its (sum, variance) is the pairwise merge of
    # the two halves, so whole batches can be inserted level by level with numpy, in the same float
    # operations as one-by-one insertion. The cut checks at every clock tick of the batch are then
    # evaluated at once; the first tick that cuts is replayed exactly with the scalar code.

    def _advance(self, new: np.ndarray) -> int | None:
        """Insert ``new`` up to the first detection; its index in ``new``, or None."""
        self._screen = None  # it follows the prefix sums of one-by-one insertion only
        self._compress()  # the levels start from the merged layout
        t0 = int(self._width)
        widths = t0 + np.arange(1, len(new) + 1, dtype=np.float64)
        totals = np.cumsum(np.concatenate(([self._total], new)))
        with np.errstate(divide="ignore", invalid="ignore"):
            deviation = new - totals[:-1] / (widths - 1.0)
            increments = np.where(widths > 1.0, (widths - 1.0) * deviation * deviation / widths, 0.0)
        variances = np.cumsum(np.concatenate(([self._variance], increments)))[1:]
        levels = self._levels(new, t0)
        ticks = self._tick + np.arange(1, len(new) + 1)
        due = np.flatnonzero((ticks % self.clock == 0) & (widths > self.grace_period))
        cuts = self._cutting_checks(due, widths, totals[1:], variances, levels)
        for index in cuts:
            self._materialize(levels, int(widths[index]), totals[index + 1], variances[index], int(ticks[index]))
            if self._shrink_window():  # the exact replay agrees with the screen (same float operations)
                self.drift_detected = True
                return int(index)
        self._materialize(levels, t0 + len(new), totals[-1], variances[-1], int(ticks[-1]))
        return None

    def _levels(self, new: np.ndarray, t0: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per row r: (sums, variances, first value index) of the blocks of 2**r values from the
        current row-r buckets to the end of ``new``, each block the merge of its two halves."""
        old_t, old_v = self._totals, self._variances
        level_t = np.concatenate((old_t[0], new))
        level_v = np.concatenate((old_v[0], np.zeros(len(new))))
        first = t0 - len(old_t[0])
        levels = [(level_t, level_v, first)]
        row = 1
        while len(level_t) > 1 or row < len(old_t):
            old_row_t = old_t[row] if row < len(old_t) else []
            old_row_v = old_v[row] if row < len(old_v) else []
            pairs, size = len(level_t) // 2, float(1 << (row - 1))
            if pairs > 16:
                level_t, level_v = np.asarray(level_t, dtype=np.float64), np.asarray(level_v, dtype=np.float64)
                left_t, right_t = level_t[0:2 * pairs:2], level_t[1:2 * pairs:2]
                gap = left_t / size - right_t / size
                merged_v = level_v[0:2 * pairs:2] + level_v[1:2 * pairs:2] + size * 0.5 * gap * gap
                level_t = np.concatenate((old_row_t, left_t + right_t))
                level_v = np.concatenate((old_row_v, merged_v))
            else:  # the few blocks of the upper rows: plain floats beat numpy's per-call cost
                lower_t, lower_v = np.asarray(level_t).tolist(), np.asarray(level_v).tolist()
                level_t, level_v = list(old_row_t), list(old_row_v)
                for q in range(0, 2 * pairs, 2):
                    gap = lower_t[q] / size - lower_t[q + 1] / size
                    level_t.append(lower_t[q] + lower_t[q + 1])
                    level_v.append(lower_v[q] + lower_v[q + 1] + size * 0.5 * gap * gap)
            first -= len(old_row_t) << row
            levels.append((level_t, level_v, first))
            row += 1
        return levels

    def _row_counts(self, widths: np.ndarray) -> np.ndarray:
        """Buckets per row (columns) after ``widths`` values (rows of the result).

        Row r received ``k_r`` buckets and merged ``k_{r+1} = max(0, (k_r - M + 1) // 2)`` pairs
        upwards (M = max_buckets), so ``k_r + M - 1`` halves at each row:
        ``k_r = max(0, ((k_0 + M - 1) >> r) - (M - 1))``, and row r holds ``k_r - 2 k_{r+1}``.
        """
        widths = np.asarray(widths, dtype=np.int64)
        shifted = widths + (self.max_buckets - 1)
        rows = max(1, int(shifted.max()).bit_length())
        received = np.maximum(0, (shifted[:, None] >> np.arange(rows + 1)) - (self.max_buckets - 1))
        counts = received[:, :-1] - 2 * received[:, 1:]
        used = np.flatnonzero(counts.any(axis=0))
        return counts[:, : (used[-1] + 1 if len(used) else 1)]

    def _bucket_sums(self, widths: np.ndarray, levels) -> tuple[np.ndarray, np.ndarray]:
        """Bucket sizes and sums per check (rows), oldest bucket first, 0 where a row has fewer."""
        counts = self._row_counts(widths)  # (checks, rows)
        rows = np.arange(counts.shape[1])
        # row r holds the values [start_r, start_r + counts_r * 2**r); row 0 ends at the width
        start = widths.astype(np.int64)[:, None] - np.cumsum(counts << rows, axis=1)
        firsts = np.array([levels[r][2] for r in rows])
        offsets = np.concatenate(([0], np.cumsum([len(levels[r][0]) for r in rows])))
        flat = np.concatenate([np.asarray(levels[r][0], dtype=np.float64) for r in rows])
        slot = np.arange(self.max_buckets)
        block = (start[:, :, None] + (slot[None, None, :] << rows[None, :, None]) - firsts[None, :, None]) \
            >> rows[None, :, None]
        present = slot[None, None, :] < counts[:, :, None]
        index = np.where(present, offsets[:-1][None, :, None] + block, 0)
        sums = np.where(present, flat[np.clip(index, 0, len(flat) - 1)], 0.0)
        sizes = np.where(present, (1 << rows)[None, :, None].astype(np.float64), 0.0)
        # oldest first: highest row first, and within a row in arrival order
        return sizes[:, ::-1, :].reshape(len(widths), -1), sums[:, ::-1, :].reshape(len(widths), -1)

    def _cutting_checks(self, due, widths, totals, variances, levels) -> np.ndarray:
        """Indices (into the batch) of the checks where some cut is significant, in order."""
        if not len(due):
            return due
        width, total, variance = widths[due], totals[due], variances[due]
        sizes, sums = self._bucket_sums(width, levels)
        n0 = np.cumsum(sizes, axis=1)
        n1 = width[:, None] - n0
        u0 = np.cumsum(sums, axis=1)
        u1 = np.cumsum(np.concatenate((total[:, None], -sums), axis=1), axis=1)[:, 1:]
        minimum = self.min_window_length
        # math.log, as the scalar replay uses (numpy's log may differ in the last bit); a window of
        # one value has no cut to check
        delta_prime = np.array([math.log(2.0 * math.log(w) / self.delta) if w > 1 else math.nan
                                for w in width.tolist()])[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = u0 / n0 - u1 / n1
            harmonic = 1.0 / (n0 - minimum + 1.0) + 1.0 / (n1 - minimum + 1.0)
            epsilon = (np.sqrt(2.0 * harmonic * (variance / width)[:, None] * delta_prime)
                       + 2.0 / 3.0 * delta_prime * harmonic)
            cut = (sizes > 0) & (n1 > 0) & (n1 >= minimum) & (n0 >= minimum) & (np.abs(gap) > epsilon)
        return due[cut.any(axis=1)]

    def _materialize(self, levels, width: int, total: float, variance: float, tick: int) -> None:
        """Set the histogram and window summary to what they are after ``width`` values."""
        counts = self._row_counts(np.array([width]))[0]
        end = width
        totals, variances = [], []
        for row, count in enumerate(counts.tolist()):
            level_t, level_v, first = levels[row]
            start = end - (count << row)
            block = (start - first) >> row
            totals.append(np.asarray(level_t[block:block + count], dtype=np.float64).tolist())
            variances.append(np.asarray(level_v[block:block + count], dtype=np.float64).tolist())
            end = start
        while len(totals) > 1 and not totals[-1]:
            totals.pop()
            variances.pop()
        self._totals, self._variances = totals, variances
        self._width, self._total, self._variance, self._tick = float(width), float(total), float(variance), tick

    def _shrink_window(self) -> bool:
        """Drop oldest buckets while some cut splits the window into different means."""
        changed = False
        while self._find_cut():
            changed = True
            self._drop_oldest_bucket()
        return changed

    def _find_cut(self) -> bool:
        """Whether some cut between buckets (oldest first) splits the window into parts whose
        means differ significantly: river's ``_detect_change`` test at each cut, its bound
        written out with the same float operations, without a call per cut."""
        totals, minimum = self._totals, self.min_window_length
        n0, n1, u0, u1 = 0.0, self._width, 0.0, self._total
        if n1 < 2.0:  # one value: no cut (and log(log(1)) is undefined)
            return False
        delta_prime = math.log(2.0 * math.log(n1) / self.delta)
        spread, bias = self._variance / n1, 2.0 / 3.0 * delta_prime
        lead = minimum - 1.0  # n - minimum + 1.0 == n - lead: exact on these whole numbers
        for row in range(len(totals) - 1, -1, -1):
            size = float(1 << row)
            for bucket_total in (totals[row] if row else totals[0][:-1]):  # the newest bucket is no cut
                n0 += size
                n1 -= size
                u0 += bucket_total
                u1 -= bucket_total
                if n1 >= minimum and n0 >= minimum:
                    harmonic = 1.0 / (n0 - lead) + 1.0 / (n1 - lead)
                    if abs(u0 / n0 - u1 / n1) > math.sqrt(2.0 * harmonic * spread * delta_prime) + bias * harmonic:
                        return True
        return False

    def _drop_oldest_bucket(self) -> None:
        row = len(self._totals) - 1
        size = float(1 << row)
        bucket_total, bucket_variance = self._totals[row].pop(0), self._variances[row].pop(0)
        self._width -= size
        self._total -= bucket_total
        gap = bucket_total / size - self._total / self._width
        self._variance -= bucket_variance + size * self._width * gap * gap / (size + self._width)
        if not self._totals[row]:
            self._totals.pop()
            self._variances.pop()

    @property
    def width(self) -> int:
        return int(self._width)

    def _summary(self):
        return (self._total / self._width if self._width else 0.0), None, None

    def _sample_count(self) -> float:
        return self._width


class _CutScreen:
    """A bound, kept between two of ADWIN's full cut checks, that proves a clock tick cut-free.

    River's test at a cut with ``n0`` older values summing to ``u0`` and ``n1`` newer ones
    summing to ``u1`` (``W = n0 + n1`` values summing to ``T``, mean ``m = T / W``, variance sum
    ``V``, ``s = V / W``) is ``|u0/n0 - u1/n1| > sqrt(2 h s d) + 2/3 d h`` with
    ``h = 1/(n0 - M + 1) + 1/(n1 - M + 1)`` (M = min_window_length >= 1, so ``h >= W / (n0 n1)``)
    and ``d = log(2 log(W) / delta)``. Since ``u0/n0 - u1/n1 = W (u0 - m n0) / (n0 n1)``, a cut
    can only be significant if ``|u0 - m n0| > sqrt(2 s d n0 n1 / W) + b`` with ``b = 2/3 d``.

    Between detections the window only grows: cut points are never added among the old values
    (merging two buckets removes the cut between them), and ``u0`` at an old cut point is the sum
    of the same values. So after a full check at ``(W0, m0, s0, d0)``, at a later tick
    ``(W, m, s, d)`` with ``W >= W0``, ``d >= d0``:

    * an old cut point (``n0 < W0``) with ``A = |u0 - m0 n0|``, ``Q = sqrt(2 d0 n0 (W0 - n0) / W0)``
      has ``|u0 - m n0| <= A + |m - m0| W0`` and a bound at least ``sqrt(s) Q + b0``, so none of
      them can cut while ``max(A - sqrt(s0) Q) + max(0, sqrt(s0) - sqrt(s)) max(Q) + |m - m0| W0
      <= b0``;
    * a new one (``n0 >= W0``) has ``u0 - m n0 = D(n0) - D(W) n0 / W`` where ``D(n)``, the sum
      of the first n values less ``m0 n``, stayed in [low, high] since the check (tracked value
      by value), and a bound at least ``sqrt(2 s d0 M (W - M) / W) + b0``.

    Both sides are compared with a margin well above the float rounding of the sums, so a tick
    passed here is one where the exact check finds no cut; any other tick runs the exact check
    (which rebuilds the screen when it finds no cut).
    """

    __slots__ = ("mean", "low", "high", "width", "worst", "sigma", "q_max", "bias", "log_term", "minimum")

    @classmethod
    def build(cls, adwin: ADWIN) -> _CutScreen | None:
        """The screen after a full check of ``adwin``'s window found no cut (None when its
        arguments do not hold: M < 1, a negative variance, a window of one value)."""
        width, total, variance, minimum = adwin._width, adwin._total, adwin._variance, adwin.min_window_length
        if minimum < 1 or width < 2.0 or not variance >= 0.0:
            return None
        screen = cls()
        mean = total / width
        log_term = math.log(2.0 * math.log(width) / adwin.delta)
        sigma = math.sqrt(variance / width)
        scale = 2.0 * log_term / width
        worst, q_max, n0, u0 = -math.inf, 0.0, 0.0, 0.0
        totals = adwin._totals
        for row in range(len(totals) - 1, -1, -1):
            size = float(1 << row)
            for bucket_total in (totals[row] if row else totals[0][:-1]):
                n0 += size
                u0 += bucket_total
                if n0 >= minimum:
                    q = math.sqrt(scale * n0 * (width - n0))
                    worst = max(worst, abs(u0 - mean * n0) - sigma * q)
                    q_max = max(q_max, q)
        screen.mean, screen.width, screen.worst, screen.sigma, screen.q_max = mean, width, worst, sigma, q_max
        screen.low = screen.high = total - mean * width
        screen.bias, screen.log_term, screen.minimum = 2.0 / 3.0 * log_term, log_term, float(minimum)
        return screen

    def cut_free(self, width: float, total: float, variance: float, low: float, high: float) -> bool:
        """Whether no cut of the window ``(width, total, variance)`` can be significant, the
        running sum's drift from ``mean * width`` since the build having stayed in [low, high]."""
        if not variance >= 0.0:
            return False
        shift = abs(total / width - self.mean)
        sigma = math.sqrt(variance / width)
        # rounding of sums of up to ``width`` values, each at most |T| + sqrt(W V) in size
        margin = 1e-14 * width * (abs(total) + math.sqrt(width * variance) + 1.0) + 1e-9 * self.bias
        limit = self.bias - margin
        if self.worst + max(0.0, self.sigma - sigma) * self.q_max + shift * self.width > limit:
            return False
        minimum = self.minimum
        newest = math.sqrt(2.0 * variance / width * self.log_term * minimum * (width - minimum) / width) \
            if width > 2.0 * minimum else 0.0
        # u0 - m n0 = d(n0) - d(W) n0 / W, with d(n) = (sum of the first n) - m0 n in [low, high]
        # for n0 >= W0
        end = total - self.mean * width
        scaled = end * (self.width / width)
        return max(high - min(end, scaled), max(end, scaled) - low) <= limit + newest


# -- DDM --------------------------------------------------------------------------------------

class DDM(ChangeDetector):
    """Drift Detection Method (Gama et al. 2004) on a 0/1 error stream.

    Tracks the error rate ``p`` and ``s = sqrt(p(1-p)/n)``; warns when ``p + s`` exceeds the best
    ``p_min + warning_threshold * s_min`` seen, and detects when it exceeds
    ``p_min + drift_threshold * s_min``. The statistic is ``p + s``, the threshold the drift level.

    Parameters
    ----------
    warm_start : int, default 30
        Values seen before the detector warns or detects (and before it records ``p_min``).
    warning_threshold : float, default 2.0
        Standard deviations above the best rate at which it warns (about 95 % confidence).
    drift_threshold : float, default 3.0
        Standard deviations above the best rate at which it detects (about 99 % confidence).

    Attributes
    ----------
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.
    warning_detected : bool
        The last value put the detector in its warning zone (not a detection).

    Examples
    --------
    Errors at rate 0.5, then 0.7. river 0.26's ``drift.binary.DDM`` detects at index 1334 too.

    >>> import random
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> ddm = DDM()
    >>> before = ddm.update_many(stream[:1334])
    >>> round(before.statistic, 4), round(before.threshold, 4), before.fired   # p + s still below
    (0.5788, 0.5791, False)
    >>> after = ddm.update(stream[1334])
    >>> round(after.statistic, 4), after.fired, ddm.last_detections          # now past it
    (0.5791, True, [1334])
    """

    kind = kinds.DDM
    unit_interval = True
    _fields = ("_n", "_mean", "_p_min", "_s_min", "_ps_min")

    def __init__(self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0):
        self.warm_start = int(warm_start)
        self.warning_threshold, self.drift_threshold = float(warning_threshold), float(drift_threshold)
        super().__init__()

    def _reset(self) -> None:
        self._n = self._mean = 0.0
        self._p_min = self._s_min = None
        self._ps_min = math.inf

    def _scan(self, values: np.ndarray) -> list[int]:
        hits = []
        n, mean, p_min, s_min, ps_min = self._n, self._mean, self._p_min, self._s_min, self._ps_min
        drift, warning = self.drift_detected, self.warning_detected
        warm, warn_k, drift_k = self.warm_start, self.warning_threshold, self.drift_threshold
        for i, x in enumerate(values.tolist()):
            if drift:
                n = mean = 0.0
                p_min = s_min = None
                ps_min = math.inf
                drift = warning = False
            n += 1.0
            mean += (1.0 / n) * (x - mean)
            s = math.sqrt(mean * (1 - mean) / n)
            if n > warm:
                if mean + s <= ps_min:
                    p_min, s_min = mean, s
                    ps_min = p_min + s_min
                warning = mean + s > p_min + warn_k * s_min
                if mean + s > p_min + drift_k * s_min:
                    drift, warning = True, False
                    hits.append(i)
        self._n, self._mean, self._p_min, self._s_min, self._ps_min = n, mean, p_min, s_min, ps_min
        self.drift_detected, self.warning_detected = drift, warning
        return hits

    def _summary(self):
        s = math.sqrt(self._mean * (1 - self._mean) / self._n) if self._n else 0.0
        threshold = None if self._p_min is None else self._p_min + self.drift_threshold * self._s_min
        return self._mean + s, threshold, None

    def _sample_count(self) -> float:
        return self._n


# -- EDDM -------------------------------------------------------------------------------------

class EDDM(ChangeDetector):
    """Early Drift Detection Method (Baena-García et al. 2006) on a 0/1 error stream.

    Tracks the mean ``p'`` and standard deviation ``s'`` of the distance between errors; the
    statistic is ``(p' + 2 s') / max(p' + 2 s')``, which detects below ``beta`` (the threshold)
    and warns below ``alpha``. Suited to gradual change, where errors come closer together
    before their rate moves much.

    Parameters
    ----------
    warm_start : int, default 30
        Values, and errors, seen before the detector warns or detects.
    alpha : float, default 0.95
        Warning level of the statistic, in (0, 1], at least ``beta``.
    beta : float, default 0.9
        Detection level of the statistic, in (0, 1]: a smaller beta detects later and less often.

    Attributes
    ----------
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.
    warning_detected : bool
        The last value put the detector in its warning zone (not a detection).

    Examples
    --------
    Errors at rate 0.5, then 0.7. river 0.26's ``drift.binary.EDDM`` detects at index 1278 too.

    >>> import random
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> eddm = EDDM(alpha=0.8, beta=0.75)
    >>> eddm.update_many(stream).fired, eddm.last_detections
    (True, [1278])
    >>> EDDM.from_state(eddm.state()).update(1) == eddm.update(1)     # state() is plain JSON
    True
    """

    kind = kinds.EDDM
    unit_interval = True
    _fields = ("_n", "_last_error", "_n_errors", "_d_n", "_d_mean", "_d_s", "_p2s_max", "_level")

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9):
        if alpha < beta:
            raise ValueError("alpha must be greater or equal to beta")
        self.warm_start, self.alpha, self.beta = int(warm_start), float(alpha), float(beta)
        super().__init__()

    def _reset(self) -> None:
        self._n = self._last_error = self._n_errors = 0
        # running mean / sum of squares (Welford) of the distances between errors
        self._d_n = self._d_mean = self._d_s = 0.0
        self._p2s_max = -1.0
        self._level = 1.0

    def _scan(self, values: np.ndarray) -> list[int]:
        hits = []
        n, last_error, n_errors = self._n, self._last_error, self._n_errors
        d_n, d_mean, d_s, p2s_max, level = self._d_n, self._d_mean, self._d_s, self._p2s_max, self._level
        drift, warning = self.drift_detected, self.warning_detected
        warm, alpha, beta = self.warm_start, self.alpha, self.beta
        for i, x in enumerate(values.tolist()):
            if drift:
                n = last_error = n_errors = 0
                d_n = d_mean = d_s = 0.0
                p2s_max, level = -1.0, 1.0
                drift = warning = False
            n += 1
            if x != 1:
                continue
            n_errors += 1
            distance = n - last_error
            old_mean = d_mean
            d_n += 1.0
            d_mean += (1.0 / d_n) * (distance - d_mean)
            d_s += (distance - old_mean) * (distance - d_mean)
            if n > warm:
                p2s = d_mean + 2 * ((d_s / (d_n - 1)) if d_n > 1 else 0.0) ** 0.5
                if p2s > p2s_max:
                    p2s_max = p2s
                elif n_errors > warm:
                    level = p2s / p2s_max
                    if level < beta:
                        drift = True
                        hits.append(i)
                    elif level < alpha:
                        warning = True
                    else:
                        warning = False
            last_error = n
        self._n, self._last_error, self._n_errors = n, last_error, n_errors
        self._d_n, self._d_mean, self._d_s, self._p2s_max, self._level = d_n, d_mean, d_s, p2s_max, level
        self.drift_detected, self.warning_detected = drift, warning
        return hits

    def _summary(self):
        return self._level, self.beta, None

    def _sample_count(self) -> float:
        return self._n


# -- HDDM_A -----------------------------------------------------------------------------------

class HDDM_A(ChangeDetector):
    """Drift detection with Hoeffding bounds on moving averages (Frías-Blanco et al. 2014).

    Compares the mean since the start with the mean up to the best cut point; detects an
    increase (and with ``two_sided_test`` a decrease) significant at ``drift_confidence``.
    Errors in [0, 1]; the statistic is the mean of the current segment.

    Parameters
    ----------
    drift_confidence : float, default 0.001
        Significance level of a detection: smaller, fewer false detections.
    warning_confidence : float, default 0.005
        Significance level of a warning, above ``drift_confidence``.
    two_sided_test : bool, default False
        Also detect a decrease of the mean (a model getting better); by default only increases.

    Attributes
    ----------
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.
    warning_detected : bool
        The last value put the detector in its warning zone (not a detection).

    Examples
    --------
    Errors at rate 0.5, then 0.7. river 0.26's ``drift.binary.HDDM_A`` detects at index 1206 too.

    >>> import random
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> hddm_a = HDDM_A()
    >>> hddm_a.update_many(stream).fired, hddm_a.last_detections
    (True, [1206])
    >>> hddm_a.result().n == len(stream) - 1207     # the segment since the detection
    True
    """

    kind = kinds.HDDM_A
    unit_interval = True
    # (n, mean) of: everything since the reset, and the prefixes ending at the two cut points
    _fields = ("_z", "_x_min", "_x_max")

    def __init__(self, drift_confidence: float = 0.001, warning_confidence: float = 0.005,
                 two_sided_test: bool = False):
        self.drift_confidence, self.warning_confidence = float(drift_confidence), float(warning_confidence)
        self.two_sided_test = bool(two_sided_test)
        super().__init__()

    def _reset(self) -> None:
        self._z = [0.0, 0.0]
        self._x_min = [0.0, 0.0]
        self._x_max = [0.0, 0.0]

    @staticmethod
    def _significant(n_total, n_cut, gap, confidence) -> bool:
        if n_cut == n_total:
            return False
        m = (n_total - n_cut) / n_cut * (1.0 / n_total)
        return gap >= math.sqrt(m / 2 * math.log(2.0 / confidence))

    def _scan(self, values: np.ndarray) -> list[int]:
        hits = []
        (zn, zm), (lo_n, lo_m), (hi_n, hi_m) = self._z, self._x_min, self._x_max
        drift, warning = self.drift_detected, self.warning_detected
        log_term = math.log(1.0 / self.drift_confidence)
        significant, dconf, wconf = self._significant, self.drift_confidence, self.warning_confidence
        two_sided = self.two_sided_test
        for i, x in enumerate(values.tolist()):
            if drift:
                zn = zm = lo_n = lo_m = hi_n = hi_m = 0.0
            zn += 1.0
            zm += (1.0 / zn) * (x - zm)
            if lo_n == 0:
                lo_n, lo_m = zn, zm
            if hi_n == 0:
                hi_n, hi_m = zn, zm
            eps_z = math.sqrt(1.0 / (2 * zn) * log_term)
            if lo_m + math.sqrt(1.0 / (2 * lo_n) * log_term) >= zm + eps_z:
                lo_n, lo_m = zn, zm
            if hi_m - math.sqrt(1.0 / (2 * hi_n) * log_term) <= zm - eps_z:
                hi_n, hi_m = zn, zm
            if significant(zn, lo_n, zm - lo_m, dconf):
                drift, warning = True, False
            elif significant(zn, lo_n, zm - lo_m, wconf):
                drift, warning = False, True
            else:
                drift = warning = False
            if two_sided:
                if significant(zn, hi_n, hi_m - zm, dconf):
                    drift = True
                elif significant(zn, hi_n, hi_m - zm, wconf):
                    warning = True
            if drift:
                hits.append(i)
        self._z, self._x_min, self._x_max = [zn, zm], [lo_n, lo_m], [hi_n, hi_m]
        self.drift_detected, self.warning_detected = drift, warning
        return hits

    def _summary(self):
        return self._z[1], None, None

    def _sample_count(self) -> float:
        return self._z[0]


# -- HDDM_W -----------------------------------------------------------------------------------

class HDDM_W(ChangeDetector):
    """HDDM with McDiarmid bounds on exponentially weighted moving averages (Frías-Blanco et al.).

    Like :class:`HDDM_A`, but each mean is an exponentially weighted moving average, which
    forgets old values and so follows a gradual change sooner. Each tracked sample is
    ``[ewma, initialised (0/1), independent bound condition]``. Errors in [0, 1]; the statistic
    is the EWMA of the whole segment.

    Parameters
    ----------
    drift_confidence : float, default 0.001
        Significance level of a detection: smaller, fewer false detections.
    warning_confidence : float, default 0.005
        Significance level of a warning, above ``drift_confidence``.
    lambda_val : float, default 0.05
        Weight of the newest value in each average, in (0, 1): larger, shorter memory.
    two_sided_test : bool, default False
        Also detect a decrease of the mean (a model getting better); by default only increases.

    Attributes
    ----------
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.
    warning_detected : bool
        The last value put the detector in its warning zone (not a detection).

    Examples
    --------
    Errors at rate 0.5, then 0.7. river 0.26's ``drift.binary.HDDM_W`` detects at index 1077 too.

    >>> import random
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> hddm_w = HDDM_W()
    >>> hddm_w.update_many(stream).fired, hddm_w.last_detections
    (True, [1077])
    """

    kind = kinds.HDDM_W
    unit_interval = True
    _fields = ("_n", "_total", "_s1_incr", "_s2_incr", "_s1_decr", "_s2_decr", "_incr_cut", "_decr_cut")

    def __init__(self, drift_confidence: float = 0.001, warning_confidence: float = 0.005,
                 lambda_val: float = 0.05, two_sided_test: bool = False):
        self.drift_confidence, self.warning_confidence = float(drift_confidence), float(warning_confidence)
        self.lambda_val, self.two_sided_test = float(lambda_val), bool(two_sided_test)
        super().__init__()

    def _reset(self) -> None:
        self._n = 0
        self._total, self._s1_incr, self._s2_incr, self._s1_decr, self._s2_decr = (
            [0.0, 0, 1.0] for _ in range(5))
        self._incr_cut, self._decr_cut = math.inf, -math.inf

    def _scan(self, values: np.ndarray) -> list[int]:
        hits = []
        lam = self.lambda_val
        keep, lam_sq, keep_sq = 1 - lam, lam * lam, (1 - lam) ** 2
        log_drift, log_warn = math.log(1 / self.drift_confidence), math.log(1 / self.warning_confidence)
        two_sided = self.two_sided_test
        drift, warning = self.drift_detected, self.warning_detected
        t_m, t_i, t_b = self._total
        a_m, a_i, a_b = self._s1_incr
        b_m, b_i, b_b = self._s2_incr
        c_m, c_i, c_b = self._s1_decr
        d_m, d_i, d_b = self._s2_decr
        incr_cut, decr_cut, n = self._incr_cut, self._decr_cut, self._n
        sqrt = math.sqrt
        for i, x in enumerate(values.tolist()):
            if drift:
                n = 0
                t_m = a_m = b_m = c_m = d_m = 0.0
                t_i = a_i = b_i = c_i = d_i = 0
                t_b = a_b = b_b = c_b = d_b = 1.0
                incr_cut, decr_cut = math.inf, -math.inf
                drift = warning = False
            n += 1
            t_m, t_i, t_b = (lam * x + keep * t_m if t_i else x), 1, lam_sq + keep_sq * t_b
            eps = sqrt(t_b * log_drift / 2)
            if t_m + eps < incr_cut:
                incr_cut = t_m + eps
                a_m, a_i, a_b = t_m, t_i, t_b
                b_m, b_i, b_b = 0.0, 0, 1.0
            else:
                b_m, b_i, b_b = (lam * x + keep * b_m if b_i else x), 1, lam_sq + keep_sq * b_b
            if a_i and b_i and b_m - a_m > sqrt((a_b + b_b) * log_drift / 2):
                drift, warning = True, False
            elif a_i and b_i and b_m - a_m > sqrt((a_b + b_b) * log_warn / 2):
                drift, warning = False, True
            else:
                drift = warning = False
            eps = sqrt(t_b * log_drift / 2)
            if t_m - eps > decr_cut:
                decr_cut = t_m - eps
                c_m, c_i, c_b = t_m, t_i, t_b
                d_m, d_i, d_b = 0.0, 0, 1.0
            else:
                d_m, d_i, d_b = (lam * x + keep * d_m if d_i else x), 1, lam_sq + keep_sq * d_b
            if two_sided and c_i and d_i:
                if c_m - d_m > sqrt((d_b + c_b) * log_drift / 2):
                    drift = True
                elif c_m - d_m > sqrt((d_b + c_b) * log_warn / 2):
                    warning = True
            if drift:
                hits.append(i)
        self._total, self._s1_incr, self._s2_incr = [t_m, t_i, t_b], [a_m, a_i, a_b], [b_m, b_i, b_b]
        self._s1_decr, self._s2_decr = [c_m, c_i, c_b], [d_m, d_i, d_b]
        self._incr_cut, self._decr_cut, self._n = incr_cut, decr_cut, n
        self.drift_detected, self.warning_detected = drift, warning
        return hits

    def _summary(self):
        return self._total[0], None, None

    def _sample_count(self) -> float:
        return self._n


# -- Page-Hinkley -----------------------------------------------------------------------------

class PageHinkley(ChangeDetector):
    """Page-Hinkley test (CUSUM of deviations from the running mean, with forgetting ``alpha``).

    Each value's deviation from the running mean, less ``delta``, is summed (the older sum
    weighted by ``alpha``); a change is detected when the sum has risen more than ``threshold``
    above its lowest point (or, for a decrease, fallen as far below its highest). Any real
    values; the statistic is the larger of the upward and downward test values, compared with
    ``threshold`` once ``min_instances`` values were seen.

    Parameters
    ----------
    min_instances : int, default 30
        Values seen before the detector may detect.
    delta : float, default 0.005
        Deviation tolerated per value: the sums grow only with deviations beyond it.
    threshold : float, default 50.0
        The test value (lambda) at which a change is detected.
    alpha : float, default 0.9999
        Forgetting factor of the sums, in (0, 1]; 1 never forgets.
    mode : str, default "both"
        "up" detects increases of the mean, "down" decreases, "both" either.

    Attributes
    ----------
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.

    Examples
    --------
    By hand: four zeros, then 10. The mean becomes 2, the deviation 8, so the upward sum rises
    from 0 to 8, past a threshold of 5.

    >>> ph = PageHinkley(min_instances=1, delta=0.0, threshold=5.0, alpha=1.0)
    >>> ph.update_many([0, 0, 0, 0, 10])
    Result(statistic=8.0, threshold=5.0, p_value=None, n=5, fired=True)
    >>> ph.last_detections, ph.update(10).n          # it starts afresh after a detection
    ([4], 1)

    River's example stream: river 0.26's ``drift.PageHinkley`` detects at index 1006 too.

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> ph = PageHinkley()
    >>> ph.update_many(stream).fired, ph.last_detections
    (True, [1006])
    """

    kind = kinds.PAGE_HINKLEY
    _fields = ("_n", "_mean", "_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease")
    _MODES = ("up", "down", "both")

    def __init__(self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0,
                 alpha: float = 1 - 0.0001, mode: str = "both"):
        if mode not in self._MODES:
            raise ValueError(f"mode must be one of {', '.join(self._MODES)}, got {mode!r}")
        self.min_instances, self.delta, self.threshold = int(min_instances), float(delta), float(threshold)
        self.alpha, self.mode = float(alpha), mode
        super().__init__()

    def _reset(self) -> None:
        self._n = self._mean = self._sum_increase = self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0

    def _scan(self, values: np.ndarray) -> list[int]:
        hits = []
        n, mean = self._n, self._mean
        s_inc, s_dec, min_inc, max_dec = self._sum_increase, self._sum_decrease, self._min_increase, self._max_decrease
        drift = self.drift_detected
        alpha, delta, threshold, warm = self.alpha, self.delta, self.threshold, self.min_instances
        up, down = self.mode in ("up", "both"), self.mode in ("down", "both")
        for i, x in enumerate(values.tolist()):
            if drift:
                n = mean = s_inc = s_dec = 0.0
                min_inc, max_dec = math.inf, -1.0
                drift = False
            n += 1.0
            mean += (1.0 / n) * (x - mean)
            deviation = x - mean
            s_inc = alpha * s_inc + deviation - delta
            s_dec = alpha * s_dec + deviation + delta
            if s_inc < min_inc:
                min_inc = s_inc
            if s_dec > max_dec:
                max_dec = s_dec
            if n >= warm and ((up and s_inc - min_inc > threshold) or (down and max_dec - s_dec > threshold)):
                drift = True
                hits.append(i)
        self._n, self._mean = n, mean
        self._sum_increase, self._sum_decrease, self._min_increase, self._max_decrease = s_inc, s_dec, min_inc, max_dec
        self.drift_detected = drift
        return hits

    def _summary(self):
        if not self._n:
            return 0.0, self.threshold, None
        increase = self._sum_increase - self._min_increase if self.mode != "down" else -math.inf
        decrease = self._max_decrease - self._sum_decrease if self.mode != "up" else -math.inf
        return max(increase, decrease), self.threshold, None

    def _sample_count(self) -> float:
        return self._n


# -- KSWIN ------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _ks_p_values(sample_size: int) -> np.ndarray:
    """scipy's two-sample KS p-value for equal sizes, by number of ECDF steps ``k`` (D = k / n).

    With equal sample sizes the statistic can only take the values ``k / n``, so the p-value
    of every possible outcome is computed once, by scipy itself, on samples shifted by ``k``.
    """
    base = np.arange(sample_size, dtype=np.float64)
    with warnings.catch_warnings():  # scipy falls back from exact to asymptotic for some k, as river sees too
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([stats.ks_2samp(base, base + k, method="auto").pvalue for k in range(sample_size + 1)])


def ks_statistics_equal_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise two-sample KS statistic of equal-size samples ``a[i]`` vs ``b[i]``.

    Returns ``(D, k)``: D computed with scipy.stats.ks_2samp's own float operations (difference of
    the two ECDFs at every observed value), and the integer number of steps ``k = D * n``.
    """
    n = a.shape[1]
    combined = np.concatenate((a, b), axis=1)
    order = np.argsort(combined, axis=1, kind="stable")
    ordered = np.take_along_axis(combined, order, axis=1)
    from_a = order < n
    count_a = np.cumsum(from_a, axis=1)
    count_b = np.arange(1, 2 * n + 1) - count_a
    gaps = count_a / n - count_b / n
    # the ECDFs are compared after the last of a run of equal values only
    last_of_run = np.ones_like(from_a)
    last_of_run[:, :-1] = ordered[:, 1:] != ordered[:, :-1]
    gaps = np.where(last_of_run, gaps, 0.0)
    statistic = np.maximum(gaps.max(axis=1), np.clip(-gaps.min(axis=1), 0, 1))
    steps = np.abs(np.where(last_of_run, count_a - count_b, 0)).max(axis=1)
    return statistic, steps


class KSWIN(ChangeDetector):
    """Kolmogorov-Smirnov windowing (Raab et al. 2020), the same decisions as river's KSWIN.

    Keeps the last ``window_size`` values; at each value compares the newest ``stat_size`` with
    ``stat_size`` values drawn at random from the older part and detects when the KS p-value is
    at most ``alpha`` and the statistic above 0.1. The random draws use Python's
    ``random.Random(seed)`` exactly as river does (re-seeded after each detection), so with the
    same seed the same samples are compared. Instead of a scipy call per value, the KS
    statistics of a whole batch are computed at once and the p-value is looked up (with equal
    sample sizes there are only ``stat_size + 1`` possible outcomes). Any real values; the
    result carries the last test's statistic and p-value, with ``alpha`` as its threshold.

    Parameters
    ----------
    alpha : float, default 0.005
        Significance level of the KS test, in [0, 1]; it is tested at every value, so keep it
        small.
    window_size : int, default 100
        Values kept, at least ``2 * stat_size``.
    stat_size : int, default 30
        Size of the recent sample and of the sample drawn from the older values.
    seed : int, default 0
        Seed of the draws; fixed by default so that replays are deterministic.

    Attributes
    ----------
    drift_detected : bool
        A change was detected at the last value (the detector starts afresh with the next one).
    last_detections : list[int]
        Stream positions (0-based, since the detector was made) of the detections in the last
        ``update_many`` batch.
    n_detections : int
        Changes detected since the detector was made.
    seen : int
        Values seen since the detector was made.

    Examples
    --------
    River's example stream: river 0.26's ``drift.KSWIN(alpha=0.0001, seed=42)`` detects at
    index 1016 too.

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> kswin = KSWIN(alpha=0.0001, seed=42)
    >>> kswin.update_many(stream).fired, kswin.last_detections
    (True, [1016])
    >>> result = kswin.result()                      # the last test: recent values vs. older ones
    >>> result.threshold, result.n, result.p_value > result.threshold
    (0.0001, 100, True)
    """

    kind = kinds.KSWIN
    _fields = ("_window", "_n", "_rng_state", "_statistic", "_p_value")
    #: values tested per vectorized step (bounds the temporary arrays)
    CHUNK = 256

    def __init__(self, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30, seed: int = 0):
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if stat_size < 1 or window_size < 2 * stat_size:
            raise ValueError("need 1 <= stat_size and 2 * stat_size <= window_size")
        self.alpha, self.window_size, self.stat_size, self.seed = float(alpha), int(window_size), int(stat_size), seed
        super().__init__()

    def _reset(self) -> None:
        self._window: list[float] = []
        self._n = 0
        self._rng = random.Random(self.seed)
        self._statistic, self._p_value = 0.0, 1.0

    # the RNG state is part of the state: a JSON list rather than Python's tuple
    @property
    def _rng_state(self) -> list:
        version, internal, gauss = self._rng.getstate()
        return [version, list(internal), gauss]

    @_rng_state.setter
    def _rng_state(self, value: list) -> None:
        self._rng = random.Random()
        self._rng.setstate((value[0], tuple(value[1]), value[2]))

    def _scan(self, values: np.ndarray) -> list[int]:
        hits, start = [], 0
        while start < len(values):
            if self.drift_detected:
                self._reset()
                self.drift_detected = False
            hit = self._scan_segment(values, start)
            if hit is None:
                break
            hits.append(hit)
            start = hit + 1
        return hits

    def _scan_segment(self, values: np.ndarray, start: int) -> int | None:
        """Process values[start:] until the first detection; return its index (or None)."""
        w, s = self.window_size, self.stat_size
        older = range(w - s)
        for chunk_start in range(start, len(values), self.CHUNK):
            chunk = values[chunk_start:chunk_start + self.CHUNK]
            history = np.concatenate((np.asarray(self._window, dtype=np.float64), chunk))
            first_full = max(0, w - 1 - len(self._window))  # first chunk position with a full window
            tested = np.arange(first_full, len(chunk))
            if len(tested):
                ends = len(self._window) + tested + 1  # one past the newest value, in history
                draws = np.array([self._rng.sample(older, s) for _ in tested], dtype=np.int64).reshape(-1, s)
                reference = history[(ends - w)[:, None] + draws]
                recent = history[(ends - s)[:, None] + np.arange(s)]
                statistic, steps = ks_statistics_equal_size(reference, recent)
                p_values = _ks_p_values(s)[steps]
                fired = np.flatnonzero((p_values <= self.alpha) & (statistic > 0.1))
                last = fired[0] if len(fired) else len(tested) - 1
                self._statistic, self._p_value = float(statistic[last]), float(p_values[last])
                if len(fired):
                    self._n += int(tested[last]) + 1
                    self._window = history[ends[last] - w:ends[last]].tolist()
                    self.drift_detected = True
                    return chunk_start + int(tested[last])
            self._n += len(chunk)
            self._window = history[-w:].tolist()
        return None

    def _summary(self):
        return self._statistic, self.alpha, self._p_value

    def _sample_count(self) -> float:
        return len(self._window)


CHANGE_DETECTORS = (ADWIN, DDM, EDDM, HDDM_A, HDDM_W, PageHinkley, KSWIN)
