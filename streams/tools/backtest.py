"""Replay history through the same Monitor the engines run, without Kafka.

``driftline backtest --config C --predictions P.jsonl --labels L.jsonl --out DIR`` (or
``--events E.jsonl``, predictions and labels in one file) reads one message per line, decodes
and validates each exactly as the engine does (bad lines are counted by reason, as the DLQ
would), orders everything by event time (a prediction before a label of the same millisecond;
ties keep file order) and feeds it to :class:`streams.core.monitor.Monitor` in chunks. Triggers do
not depend on the chunking (the Monitor evaluates rules at fixed joined-pair counts). Models are
independent: ``--workers N`` decodes and replays them in N processes, the outputs the same (see
:func:`replay_files`).

Each line's ``Source`` is (the config's topic name, partition 0, its line number in its file,
counting bad lines), i.e. the offsets the same lines would get produced in order to a
one-partition topic; trigger evidence (``window.offsets``) then names the same offsets as live.

Writes to ``DIR``:

* ``triggers.jsonl``: the trigger events, byte-for-byte what ``driftline run`` would publish;
* ``timeline.csv``: every statistic the Monitor observes, per model, after every ``--every``
  events (``event_time,event_time_ms,events,model,statistic,value,n``);
* ``summary.json``: counts (events, invalid by reason, joined, expired, triggers) and speed, and
  what went wrong: the unknown model ids and their events, per model the predictions left
  without a label and the labels without a prediction at the end, watched features never seen;
* ``rejects.jsonl``: one line per rejected input line: its file, line number (from 1), reason,
  detail and first ``REJECT_TEXT_BYTES`` bytes (empty when nothing was rejected);
* ``report.html``: per model, each statistic over event time with rule thresholds, trigger marks
  and (when the simulator's ``scenario.json`` is found) the injected drifts; PNGs embedded.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import itertools
import json
import math
import mmap
import multiprocessing
import multiprocessing.connection
import operator
import os
import signal
import stat
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import msgspec
import numpy as np

from retrain_trigger.events import TriggerEvent

from streams.core.codecs import InvalidEvent, Label, Prediction, encode_trigger, format_timestamp
from streams.core.config import Config
from streams.core.monitor import InputDecoder, ModelCounters, ModelRegistry, Monitor, Source
from streams.runtime.pipeline import Metrics, Pipeline

__all__ = ["Backtest", "BacktestResult", "Reject", "load_events", "replay", "replay_files", "run_backtest"]

#: How much of a rejected line ``rejects.jsonl`` keeps.
REJECT_TEXT_BYTES = 300
_BOM = b"\xef\xbb\xbf"
#: The path that means standard input.
STDIN = "-"

class _Role(msgspec.Struct):
    """Just enough of a line to tell a label from a prediction (top-level ``label`` field)."""

    label: Any = msgspec.UNSET


_role_decoder = msgspec.json.Decoder(_Role)


def _is_label(line: bytes) -> bool:
    """A line of a merged file is a label when it has a top-level ``label`` field. Lines that are
    not JSON objects go with the predictions (and are rejected there, with their reason)."""
    try:
        return _role_decoder.decode(line).label is not msgspec.UNSET
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


class BacktestError(ValueError):
    """A problem the user can fix (a missing file); the message names it."""


class _ModelId(msgspec.Struct):
    model_id: Any = None


_model_id_decoder = msgspec.json.Decoder(_ModelId)


@dataclass
class Reject:
    """One rejected input line, as ``rejects.jsonl`` holds it."""

    file: str
    line: int  # from 1
    reason: str
    detail: str
    text: str  # the line's first REJECT_TEXT_BYTES bytes
    bytes: int  # the line's length

    @classmethod
    def of(cls, file: str, index: int, error: InvalidEvent, line: bytes) -> "Reject":
        text = bytes(line[:REJECT_TEXT_BYTES]).decode("utf-8", errors="backslashreplace")
        return cls(file, index + 1, error.reason, error.detail, text, len(line))


@dataclass
class Loaded:
    events: list[tuple[Prediction | Label, Source]]
    invalid: Counter
    lines: int
    rejects: list[Reject] = field(default_factory=list)
    #: model id -> events rejected as unknown_model
    unknown_models: Counter = field(default_factory=Counter)
    #: loaded unordered (see :func:`_load`): ``events`` in file order, their order by time, and each one's time
    order: np.ndarray | None = None
    times: np.ndarray | None = None


def _display(path: str | Path) -> str:
    return "<stdin>" if str(path) == STDIN else str(path)


@contextlib.contextmanager
def _mapped(path: str | Path) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, mapped to memory: read where they lie, no 85 MB copy (50 ms for the
    benchmark's predictions, most of it in fresh pages). A pipe (``-p <(zcat …)``) and standard
    input (``-``) are read. A UTF-8 byte order mark is skipped (a copy, in that rare case)."""
    if str(path) == STDIN:
        data = sys.stdin.buffer.read()
        yield data[len(_BOM):] if data.startswith(_BOM) else data
        return
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
                data = file.read()  # neither a pipe nor a file of no bytes can be mapped
                yield data[len(_BOM):] if data.startswith(_BOM) else data
                return
            data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                yield data[len(_BOM):] if data[:len(_BOM)] == _BOM else data
            finally:
                try:
                    data.close()
                except BufferError:  # an array over it lives on (in an exception's traceback): so does the map
                    pass
    except FileNotFoundError:
        raise BacktestError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise BacktestError(f"{path}: is a directory, not a JSON-lines file") from None
    except PermissionError:
        raise BacktestError(f"{path}: permission denied") from None


def _not_json_lines(data: bytes | mmap.mmap, option: str = "-p") -> str | None:
    """Why a file none of whose lines is an event is not JSON Lines, when it can be told (called
    only for such a file, given as ``option``)."""
    if data[:2] == b"\x1f\x8b":
        return f"is gzip-compressed; decompress it first, e.g. {option} <(zcat FILE)"
    text = bytes(data).strip()
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    if isinstance(value, list):
        return (f"is one JSON array (of {len(value)} items), not JSON Lines (one event per line); "
                "convert it with: jq -c '.[]' FILE")
    if b"\n" in text:
        return "is one JSON value over several lines, not JSON Lines (one event per line); convert it with: jq -c . FILE"
    return None


def _lines(data: bytes, max_bytes: int) -> tuple[list[bytes], bool]:
    """The file's lines, and whether every one is ASCII and at most ``max_bytes`` long (checked
    over the whole file at once; see ``lines_checked`` in :func:`streams.core.codecs.decode_many`)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    # CRLF files: strip the CR once here, not per line in the decode loop. (The one-byte search
    # first: it is a memchr, much cheaper than the two-byte search over a file without CRs.)
    if b"\r" in data and b"\r\n" in data:
        lines = [line.rstrip(b"\r") for line in lines]
    return lines, data.isascii() and _no_line_longer(data, max_bytes)


def _no_line_longer(data: bytes, limit: int) -> bool:
    """No line of ``data`` is longer than ``limit`` bytes, or a line may be (False). A line
    longer than ``limit`` holds a whole aligned block of ``(limit + 1) // 2`` bytes without a
    newline; so if every such block has one, no line is: a few finds per megabyte."""
    block = max(1, (limit + 1) // 2)
    return all(data.find(b"\n", start, start + block) >= 0 for start in range(0, len(data) - block + 1, block))


def load_events(config: Config, predictions: str | Path | None = None, labels: str | Path | None = None,
                events: str | Path | None = None) -> Loaded:
    """Decode the files and order the valid events by event time (predictions first on ties).

    Each rejected line is kept as a :class:`Reject`. A file of which no line is an event and
    which is something else (a JSON array, gzip) raises :class:`BacktestError` saying so."""
    with _opened(config, predictions, labels, events) as inputs:
        return _load(config, inputs)


@dataclass
class _Input:
    """One input file's bytes, mapped or read (see :func:`_mapped`)."""

    path: str | Path
    topic: str | None  # None: predictions and labels in one file
    data: bytes | mmap.mmap


@contextlib.contextmanager
def _opened(config: Config, predictions=None, labels=None, events=None) -> Iterator[list[_Input]]:
    """The inputs, in the order they are decoded, each open (mapped) until the block ends. All
    are opened before any is decoded: a parallel replay opens them (and reads standard input)
    once, and its workers decode what they inherit."""
    topics = config.topics
    with contextlib.ExitStack() as stack:
        yield [_Input(path, topic, stack.enter_context(_mapped(path)))
               for path, topic in ((predictions, topics.predictions), (labels, topics.labels), (events, None))
               if path is not None]


def _load(config: Config, inputs: list[_Input], ordered: bool = True) -> Loaded:
    """:func:`load_events` of opened inputs; ``ordered=False`` leaves the events in file order and
    gives their order by time instead (``order``, ``times``: for a worker, which puts only its
    models' events in order)."""
    topics = config.topics
    decoded: list[tuple[Prediction | Label, Source]] = []
    invalid: Counter = Counter()
    rejects: list[Reject] = []
    unknown: Counter = Counter()
    n_lines = 0

    decode = InputDecoder(config)
    runs: list[tuple[int, bool]] = []  # (events, whether labels) per file decoded, in order: the sort's role key
    times: list[np.ndarray] = []  # their event times, per file

    def decode_whole(path: str | Path, topic: str, data: bytes | mmap.mmap) -> int:
        """Decode one file of one topic; returns its number of lines."""
        parsed = decode.buffer(topic, data)
        if parsed is None:
            lines, checked = _lines(data[:], decode.max_bytes)
            parsed = decode.many(topic, lines, checked)
        else:
            lines = None
        valid = add(parsed, topic, path, lines if lines is not None else data)
        if parsed and not valid:
            refuse_other_formats(path, data, topic)
        return len(parsed)

    def refuse_other_formats(path: str | Path, data: bytes | mmap.mmap, topic: str | None) -> None:
        option = {config.topics.predictions: "-p", config.topics.labels: "-l"}.get(topic, "-e")
        problem = _not_json_lines(data, option)
        if problem is not None:
            raise BacktestError(f"{_display(path)}: {problem.replace('FILE', _display(path))}")

    def add(events: list[Prediction | Label | InvalidEvent], topic: str, path: str | Path,
            lines: list[bytes] | bytes | mmap.mmap, numbers: list[int] | None = None) -> int:
        """Keep the valid events, count and record the rejections; returns the valid ones' count.
        ``lines``: the lines decoded, or the file's bytes (split only when a line was rejected);
        ``numbers``: the lines' indexes in their file, when not 0, 1, 2, …"""
        offsets = range(len(events))
        if InvalidEvent in set(map(type, events)):
            valid = list(map(operator.is_not, map(type, events), itertools.repeat(InvalidEvent)))
            if not isinstance(lines, list):
                lines, _ = _lines(lines[:], decode.max_bytes)
            record_rejects(events, valid, topic, path, lines, numbers)
            events, offsets = list(itertools.compress(events, valid)), itertools.compress(offsets, valid)
        decoded.extend(zip(events, map(Source, itertools.repeat(topic), itertools.repeat(0), offsets)))
        times.append(np.fromiter(map(operator.attrgetter("timestamp"), events), dtype=np.int64, count=len(events)))
        runs.append((len(events), topic == topics.labels))
        return len(events)

    def record_rejects(events, valid, topic, path, lines, numbers) -> None:
        name = _display(path)
        for i in itertools.compress(range(len(events)), map(operator.not_, valid)):
            error = events[i]
            invalid[topic, error.reason] += 1
            rejects.append(Reject.of(name, i if numbers is None else numbers[i], error, lines[i]))
            if error.reason == "unknown_model":
                unknown[_model_id_decoder.decode(lines[i]).model_id] += 1

    for source in inputs:
        if source.topic is not None:
            n_lines += decode_whole(source.path, source.topic, source.data)
            continue
        first_reject, data = len(rejects), source.data
        lines, checked = _lines(data[:], decode.max_bytes)
        n_lines += len(lines)
        is_label = [_is_label(line) for line in lines]
        valid = 0
        for role, topic in ((False, topics.predictions), (True, topics.labels)):
            numbers = [i for i, lab in enumerate(is_label) if lab == role]
            chosen = [lines[i] for i in numbers]
            valid += add(decode.many(topic, chosen, checked), topic, source.path, chosen, numbers)
        if lines and not valid:
            refuse_other_formats(source.path, data, None)
        rejects[first_reject:] = sorted(rejects[first_reject:], key=operator.attrgetter("line"))
    if not decoded:
        empty = np.empty(0, dtype=np.int64)
        return Loaded([], invalid, n_lines, rejects, unknown, *(() if ordered else (empty, empty)))
    ts = np.concatenate(times)
    role = np.repeat([is_label for _, is_label in runs], [n for n, _ in runs]).astype(np.int8)
    order = np.lexsort((role, ts))  # by time, then prediction first; lexsort is stable: then file order
    if not ordered:
        return Loaded(decoded, invalid, n_lines, rejects, unknown, order, ts)
    return Loaded(list(map(decoded.__getitem__, order.tolist())), invalid, n_lines, rejects, unknown)


@dataclass
class BacktestResult:
    triggers: list[TriggerEvent] = field(default_factory=list)
    timeline: list[tuple] = field(default_factory=list)
    totals: dict[str, Counter] = field(default_factory=dict)
    invalid: Counter = field(default_factory=Counter)
    events: int = 0
    lines: int = 0
    load_seconds: float = 0.0
    replay_seconds: float = 0.0
    rejects: list[Reject] = field(default_factory=list)
    #: model id -> events rejected because the config does not have it
    unknown_models: Counter = field(default_factory=Counter)
    #: per model: what was left unjoined at the end, watched features never seen (see :func:`diagnose`)
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: a parallel replay's workers' CPU seconds, each (what a machine with a core free for each takes)
    worker_cpu_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        per_model = {m: dict(c) for m, c in self.totals.items()}
        for m in per_model:
            per_model[m]["triggers"] = sum(1 for t in self.triggers if t.model_id == m)
        for m, found in self.diagnostics.items():
            per_model.setdefault(m, {}).update(found)
        total = self.load_seconds + self.replay_seconds
        return {
            "lines": self.lines, "events": self.events,
            "invalid": {f"{topic}:{reason}": n for (topic, reason), n in sorted(self.invalid.items())},
            "unknown_models": dict(self.unknown_models.most_common()),
            "triggers": len(self.triggers), "models": per_model,
            "seconds": {"load": round(self.load_seconds, 3), "replay": round(self.replay_seconds, 3)},
            "lines_per_second": round(self.lines / total) if total > 0 else None,
        }

    def problems(self) -> list[str]:
        """One line for each thing that went wrong with the input, for the user (empty if none)."""
        out = []
        rejected = sum(self.invalid.values())
        if rejected:
            reasons = ", ".join(f"{reason} {n}" for reason, n in _by_reason(self.invalid).most_common())
            line = f"{rejected} of {self.lines} lines rejected ({reasons})"
            if self.unknown_models:
                shown = self.unknown_models.most_common(5)
                more = len(self.unknown_models) - len(shown)
                line += ("; model ids not in the config: " + ", ".join(f"{m!r} {n}" for m, n in shown)
                         + (f" and {more} more" if more else ""))
            out.append(line)
        for model, found in self.diagnostics.items():
            parts = []
            if found.get("no_events"):
                parts.append("no event at all")
            if found.get("labels_without_prediction"):
                parts.append(f"{found['labels_without_prediction']} labels without a prediction")
            labels, joined = (self.totals.get(model, {}).get(k, 0) for k in ("labels", "joined"))
            if found.get("predictions_without_label") and labels and (found.get("labels_without_prediction")
                                                                      or not joined):
                parts.append(f"{found['predictions_without_label']} predictions without a label")
            if found.get("features_never_seen"):
                parts.append("watched features never seen: " + ", ".join(found["features_never_seen"]))
            if parts:
                out.append(f"model {model!r}: " + "; ".join(parts))
        return out

    def invalid_share(self) -> float:
        return sum(self.invalid.values()) / self.lines if self.lines else 0.0


def _by_reason(invalid: Counter) -> Counter:
    out: Counter = Counter()
    for (_, reason), n in invalid.items():
        out[reason] += n
    return out


_COUNTER_FIELDS = ("predictions", "labels", "joined", "expired_predictions", "expired_labels",
                   "duplicate_predictions", "duplicate_labels", "late_labels")


#: About how many events a replay hands the Monitor at once: the timeline's samples inside
#: are read at marks (see :meth:`Monitor.process`), as if the chunks of ``every`` had been
#: handed over one by one; a flush's fixed cost is then paid once for them all.
FLUSH_EVENTS = 5000


@dataclass
class _Flush:
    """What a replay keeps of the chunks it hands the Monitor at once, until the last one's
    sample (:meth:`Backtest.observe`): each chunk's sample (its last event time, the events so
    far), the models that come in it first, and what the marks read."""

    samples: list[tuple[int, int]]
    chunks: list[list]
    #: the models the Monitor had before; those new in these chunks -> the chunk they first come in
    known: set[str] = field(default_factory=set)
    first: dict[str, int] = field(default_factory=dict)
    #: per mark: model -> its timeline rows there, and its counters taken there
    rows: list[dict[str, list[tuple]]] = field(default_factory=list)
    counters: list[dict[str, ModelCounters]] = field(default_factory=list)
    #: id of each trigger made before the last chunk -> its chunk; trigger id -> its snapshots
    chunk_of: dict[int, int] = field(default_factory=dict)
    snapshots: dict[str, list] = field(default_factory=dict)
    #: where this flush's triggers begin in the result's
    triggers_from: int = 0


class Backtest(Metrics):
    """Feed ordered events through the pipeline to a Monitor in chunks of ``every``, collecting
    the triggers, folding the counters into totals and recording the timeline.

    Chunks are handed over ``FLUSH_EVENTS // every`` at a time, each chunk's end a mark where
    the timeline and the observer sample the Monitor as if the chunk had been handed over alone
    (the outputs are the same)."""

    def __init__(self, config: Config, every: int | None = 1000, timeline: bool = True, observer=None):
        self.config = config
        #: called after each chunk as ``observer(monitor, at_ms, events, triggers)``, before the
        #: Monitor's counters are drained (the report's recorder); at a mark inside a flush, its
        #: ``sample`` of each model and ``snapshots_of`` each trigger (see
        #: :class:`streams.tools.report.ReportRecorder`)
        self.observer = observer
        self.pipeline = Pipeline(config, outputs=self, metrics=self, log_triggers=False)
        self.monitor = self.pipeline.monitor()
        self.every = every
        self.record_timeline = timeline
        self.result = BacktestResult()
        #: each trigger's chunk (counted from the replay's first), for a parallel replay's merge
        self.chunk_of: list[int] = []
        self._chunks = 0  # chunks replayed
        self._flush: _Flush | None = None

    def run(self, events: list[tuple[Prediction | Label, Source]], progress=None) -> BacktestResult:
        every = auto_every(len(events)) if self.every is None else max(1, self.every)
        self.every = every
        return self.run_chunks(((events[start:start + every], None, None) for start in range(0, len(events), every)),
                               progress)

    def run_chunks(self, chunks: Iterable[tuple[list[tuple[Prediction | Label, Source]], int | None, int | None]],
                   progress=None) -> BacktestResult:
        """Replay ``(events, end_ms, events_so_far)`` chunks: a worker of a parallel replay gets its
        models' share of each chunk of the whole replay (maybe none) with the whole chunk's last
        event time and event count, so that it samples where one process would. ``None``: the
        chunk's own."""
        result = self.result
        started = time.perf_counter()
        chunks = iter(chunks)
        at_once = max(1, FLUSH_EVENTS // max(1, self.every or 1))
        while group := list(itertools.islice(chunks, at_once)):
            samples = []
            for chunk, end_ms, so_far in group:
                events = result.events + len(chunk) if so_far is None else so_far
                samples.append((chunk[-1][0].timestamp if end_ms is None else end_ms, events))
                result.events = events
            chunks_in = [chunk for chunk, _, _ in group]
            events = chunks_in[0] if len(chunks_in) == 1 else list(itertools.chain.from_iterable(chunks_in))
            marks = list(itertools.accumulate(map(len, chunks_in[:-1])))
            self._flush = _Flush(samples, chunks_in, set(self.monitor.models), rows=[{} for _ in marks],
                                 counters=[{} for _ in marks], triggers_from=len(result.triggers))
            self.pipeline.process(self.monitor, events, marks, self._mark if marks else None)
            self._chunks += len(group)
            if progress is not None:
                progress.update(result.events)
        result.replay_seconds += time.perf_counter() - started
        return result

    def _mark(self, model, k: int, counters, triggers: list[TriggerEvent]) -> None:
        """A model's sample at the end of the flush's k-th chunk, its statistics read there."""
        flush, model_id = self._flush, model.model.id
        if model_id not in flush.known and model_id not in flush.first:
            flush.first[model_id] = next(c for c, chunk in enumerate(flush.chunks)
                                         if any(event.model_id == model_id for event, _ in chunk))
        if flush.first.get(model_id, 0) > k:
            return  # not come yet: one process has not seen it at this sample
        at_ms, events = flush.samples[k]
        flush.counters[k][model_id] = counters
        for trigger in triggers:
            flush.chunk_of[id(trigger)] = k
        if self.observer is not None:
            self.observer.sample(model_id, model.stats, counters, at_ms, events)
            for trigger in triggers:
                flush.snapshots[trigger.trigger_id] = self.observer.snapshots_of(trigger, model.stats, at_ms, events)
        if self.record_timeline:
            flush.rows[k][model_id] = self._rows(model_id, model.stats, at_ms, events)

    @staticmethod
    def _rows(model_id: str, stats, at_ms: int, events: int) -> list[tuple]:
        return [(at_ms, events, model_id, name, float(value), n) for name, (value, n) in stats.values().items()
                if value is not None and not (isinstance(value, float) and not math.isfinite(value))]

    # -- the pipeline's outputs and metrics ------------------------------------------------
    def dead_letter(self, message, source: Source, error: InvalidEvent) -> None:
        """Not used: a replay hands over valid events only (bad lines are counted and kept as
        the files are read, see :func:`load_events`)."""

    def trigger(self, trigger: TriggerEvent) -> None:
        self.result.triggers.append(trigger)

    def observe(self, monitor: Monitor) -> None:
        """After each flush: the marks' samples put in order, then the last chunk's: the observer,
        the Monitor's per-model counters folded into totals (as the exporter does) and every
        model's statistics sampled."""
        flush, result = self._flush, self.result
        for model_id in monitor.models:  # in the order the models came
            result.totals.setdefault(model_id, Counter())
        last = self._order_triggers(flush)
        for k, (at_ms, events) in enumerate(flush.samples[:-1]):
            self._mark_untouched(flush, monitor, k, at_ms, events)
            for model_id, counters in flush.counters[k].items():
                self._fold(model_id, counters)
        at_ms, events = flush.samples[-1]
        if self.observer is not None:
            self.observer(monitor, at_ms, events, result.triggers[last:])
        for model_id, c, _ in monitor.drain_counters():
            self._fold(model_id, c)
        if self.record_timeline:
            for model_id, m in monitor.models.items():
                result.timeline.extend(self._rows(model_id, m.stats, at_ms, events))
        self._flush = None

    def _fold(self, model_id: str, counters) -> None:
        totals = self.result.totals[model_id]
        for name in _COUNTER_FIELDS:
            totals[name] += getattr(counters, name, 0)

    def _order_triggers(self, flush: _Flush) -> int:
        """The flush's triggers in the order one chunk at a time makes them (chunk by chunk, the
        models in the order they come in the chunk); where the last chunk's begin."""
        triggers = self.result.triggers
        made = triggers[flush.triggers_from:]
        last = len(flush.chunks) - 1
        chunk = [flush.chunk_of.get(id(trigger), last) for trigger in made]
        if len({trigger.model_id for trigger in made}) > 1:  # the flush made them model by model
            order = [{model_id: rank for rank, model_id in enumerate(dict.fromkeys(e.model_id for e, _ in events))}
                     for events in flush.chunks]
            keyed = sorted(range(len(made)), key=lambda i: (chunk[i], order[chunk[i]][made[i].model_id], i))
            made, chunk = [made[i] for i in keyed], [chunk[i] for i in keyed]
            triggers[flush.triggers_from:] = made
        if self.observer is not None:
            for trigger, c in zip(made, chunk):
                if c != last:
                    self.observer.snapshots.extend(flush.snapshots.get(trigger.trigger_id, ()))
        self.chunk_of.extend(self._chunks + c for c in chunk)
        return flush.triggers_from + sum(1 for c in chunk if c != last)

    def _mark_untouched(self, flush: _Flush, monitor: Monitor, k: int, at_ms: int, events: int) -> None:
        """The k-th mark's samples of the models the flush did not touch (their state as before
        it, nothing counted), and the timeline's rows there in the order the models came."""
        rows = flush.rows[k]
        for model_id, m in monitor.models.items():
            if flush.first.get(model_id, 0) > k:
                continue
            if model_id not in flush.counters[k]:
                if self.observer is not None:
                    self.observer.sample(model_id, m.stats, ModelCounters(), at_ms, events)
                if self.record_timeline:
                    rows[model_id] = self._rows(model_id, m.stats, at_ms, events)
            if self.record_timeline:
                self.result.timeline.extend(rows[model_id])


def default_workers(models: int) -> int:
    """One worker per core this process may run on, no more than the models."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, models))


def _worker_count(workers: int | None, models: int) -> int:
    """The processes that replay ``models`` models with ``workers`` asked for (None: as many as
    :func:`default_workers`). Forked workers are safe on Linux only (macOS frameworks are not
    fork-safe; Windows has no fork): elsewhere, one."""
    if not sys.platform.startswith("linux"):
        return 1
    return default_workers(models) if workers is None else max(1, min(workers, models))


def _model_ids(events: list[tuple[Prediction | Label, Source]]) -> list[str]:
    return list(_each_model_id(events))


def _each_model_id(events: list[tuple[Prediction | Label, Source]]) -> Iterator[str]:
    """Each event's model id, in order, without a list of them."""
    return map(operator.attrgetter("model_id"), map(operator.itemgetter(0), events))


def replay(config: Config, events: list[tuple[Prediction | Label, Source]], every: int | None = None,
           workers: int | None = 1, recorder=None, progress=None) -> BacktestResult:
    """Replay ordered events (see :class:`Backtest`): the triggers, totals, timeline and
    diagnostics; ``recorder`` (a :class:`streams.tools.report.ReportRecorder`, or None) records
    what the report draws; ``progress`` (or None) makes the progress bar of so many events,
    ``progress(events)``, once the workers are started (a bar's thread is not forked with them).

    Models are independent (each has its own join, statistics and rules), so with ``workers`` > 1
    (None: :func:`default_workers`) the models are shared out among that many forked processes,
    each replaying its models' events cut at the same chunk ends as one process, and their
    results are merged in the order one process gives: the outputs are byte-identical. One
    worker, one model, or not on Linux: the replay runs here. (From files,
    :func:`replay_files` decodes them in the workers.)"""
    every = auto_every(len(events)) if every is None else max(1, every)
    ids = _model_ids(events)
    workers = _worker_count(workers, len(set(ids)))
    if workers <= 1:
        backtest = Backtest(config, every=every, observer=recorder)
        result = backtest.run(events, progress=progress(len(events)) if progress is not None else None)
        result.diagnostics = diagnose(config, backtest.monitor, result.totals)
        return result
    # Forked workers inherit the events: nothing to copy or pickle.
    parallel = _ParallelReplay(config, every, workers, recorder, events=events, plan=_Plan.of(ids, every, workers))
    del ids  # let go before the fork: after it, a reference dropped writes to a page the workers share
    return parallel.run(progress)


def replay_files(config: Config, predictions: str | Path | None = None, labels: str | Path | None = None,
                 events: str | Path | None = None, every: int | None = None, workers: int | None = 1,
                 recorder=None, progress=None) -> BacktestResult:
    """:func:`load_events` and :func:`replay` (see there for ``every``, ``workers``, ``recorder``
    and ``progress``): the result, with what the load found (lines, invalid lines, rejects,
    unknown models) and its seconds.

    With workers, the files are opened here and each worker decodes them itself, keeping its
    models' events. Handing decoded events to forked workers would cost more: each event a
    worker reads is a reference counted, i.e. a write to a page the processes share, which the
    kernel then copies; and the events of all models lie on every page. A file's errors are
    found by every worker alike and raised once, as :func:`load_events` raises them.

    Only the config's models can be shared out before the files are read: with
    ``unknown_model = "register"`` the models are known once decoded, so the files are decoded
    here and :func:`replay` forks for the models found (else each of up to a core's worth of
    workers would decode every line for a model that may never come)."""
    started = time.perf_counter()
    in_workers = config.engine.unknown_model != "register"
    if in_workers:  # no more than the config's models: the data is not read yet
        workers = _worker_count(workers, len({model.id for model in config.models}))
    with _opened(config, predictions, labels, events) as inputs:
        if in_workers and workers > 1:
            parallel = _ParallelReplay(config, every, workers, recorder, inputs=inputs)
            opened = time.perf_counter() - started
            result = parallel.run(progress)
            loaded, load_seconds = parallel.loaded, opened + parallel.load_seconds
        else:
            result, loaded = None, _load(config, inputs)
            load_seconds = time.perf_counter() - started
    if result is None:
        result = replay(config, loaded.events, every=every, workers=workers, recorder=recorder, progress=progress)
    result.invalid, result.lines, result.load_seconds = loaded.invalid, loaded.lines, load_seconds
    result.rejects, result.unknown_models = loaded.rejects, loaded.unknown_models
    return result


@dataclass
class _Plan:
    """Who replays what in a parallel replay, and what the merge needs, from the ordered events'
    model ids (each worker that decodes the files makes the same)."""

    every: int
    events: int
    #: each model's worker: the most events first, each to the worker with the fewest so far (ties: the lower one)
    worker_of: dict[str, int]
    #: each chunk's models in the order they first come in it (None: not made, in a worker: only the merge needs it)
    chunk_order: list[list[str]] | None
    #: the worker with the fewest events (ties: the last), which sends the parent what the load found
    reporter: int
    #: each event's worker (the workers' only: not sent)
    owner: np.ndarray | None = None

    @classmethod
    def of(cls, ids: list[str], every: int | None, workers: int) -> "_Plan":
        return cls.of_codes(*_numbered(ids, len(ids)), every, workers)

    @classmethod
    def of_codes(cls, codes: np.ndarray, names: list[str], every: int | None, workers: int,
                 chunk_order: bool = True) -> "_Plan":
        """:meth:`of` the ids ``names[codes]`` (without ``chunk_order``, if so asked)."""
        every = auto_every(len(codes)) if every is None else max(1, every)
        counts = np.bincount(codes, minlength=len(names)).tolist()
        share = [0] * workers
        worker_of: dict[str, int] = {}
        for code in sorted(range(len(names)), key=lambda code: (-counts[code], names[code])):
            w = share.index(min(share))
            worker_of[names[code]] = w
            share[w] += counts[code]
        owner = np.array([worker_of[name] for name in names], dtype=np.int64)[codes]
        reporter = min(range(workers), key=lambda w: (share[w], -w))
        return cls(every, len(codes), worker_of, _chunk_order(codes, every, names) if chunk_order else None,
                   reporter, owner)


def _numbered(ids: Iterable[str], count: int) -> tuple[np.ndarray, list[str]]:
    """Each of the ``count`` ids' code, and the names coded: numbered as they first come, in one pass."""
    number = defaultdict(itertools.count().__next__)
    codes = np.fromiter(map(number.__getitem__, ids), dtype=np.int64, count=count)
    return codes, list(number)


class _ParallelReplay:
    """:func:`replay` over forked workers. Each worker either inherits the ordered events and
    their plan (``events``, ``plan``), or decodes the opened files itself (``inputs``, see
    :func:`replay_files`) and makes the plan; it replays its models' events and sends back what
    they did, chunk by chunk, which is merged here."""

    def __init__(self, config: Config, every: int | None, workers: int, recorder, events=None,
                 plan: _Plan | None = None, inputs: list[_Input] | None = None):
        self.config, self.every, self.workers, self.recorder = config, every, workers, recorder
        self.events, self.plan, self.inputs = events, plan, inputs
        #: decoding workers: what the load found (its events left out), and the seconds until it was here
        self.loaded: Loaded | None = None
        self.load_seconds = 0.0

    def run(self, progress=None) -> BacktestResult:
        started = time.perf_counter()
        context = multiprocessing.get_context("fork")
        done = context.Array("q", self.workers, lock=False)  # events each worker has replayed
        processes, pipes = [], []
        try:
            for w in range(self.workers):
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=self._work, args=(w, send, done),
                                          name=f"backtest-worker-{w}", daemon=True)
                process.start()
                send.close()
                processes.append(process)
                pipes.append(receive)
            parts = self._gather(pipes, processes, done, progress, started)
        except BaseException:  # an error, Ctrl-C: the others' work is of no use
            for process in processes:
                process.terminate()
            raise
        finally:
            for process in processes:
                process.join()
        result = self._merge(parts)
        result.replay_seconds = time.perf_counter() - started - self.load_seconds
        return result

    def _work(self, worker: int, send, done) -> None:
        """In a worker: replay this worker's models over the chunks of the whole replay."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the workers
        try:
            cpu = time.process_time()
            events, plan = self.events, self.plan
            if events is None:
                loaded = _load(self.config, self.inputs, ordered=False)
                # Only this worker's events are put in order. The other models' events are kept,
                # unused: freeing them would cost more than the memory.
                events, order, times = loaded.events, loaded.order, loaded.times
                loaded.events, loaded.order, loaded.times = [], None, None
                codes, names = _numbered(_each_model_id(events), len(events))
                codes = codes[order]
                plan = _Plan.of_codes(codes, names, self.every, self.workers, chunk_order=False)
                if worker == plan.reporter:
                    merge = _chunk_order(codes, plan.every, names)
                    send.send(("loaded", dataclasses.replace(plan, owner=None, chunk_order=merge), loaded))
            every, n = plan.every, plan.events
            recorder = type(self.recorder)(self.config) if self.recorder is not None else None
            backtest = Backtest(self.config, every=every, observer=recorder)
            mine = np.flatnonzero(plan.owner == worker)
            cuts = np.searchsorted(mine, np.arange(0, n + every, every)).tolist()
            ends = list(range(every, n, every)) + [n] if n else []  # each chunk's end
            if self.events is None:  # the events in file order: the own ones picked in time order
                own = list(map(events.__getitem__, order[mine].tolist()))
                end_ms = times[order[np.asarray(ends, dtype=np.int64) - 1]].tolist()
            else:
                own = list(map(events.__getitem__, mine.tolist()))
                end_ms = [events[end - 1][0].timestamp for end in ends]

            def chunks():
                for c, end in enumerate(ends):
                    yield own[cuts[c]:cuts[c + 1]], end_ms[c], end

            class Done:
                """After each flush (``n``: the events of the whole replay so far): this worker's
                events replayed, for the bar."""

                @staticmethod
                def update(n: int) -> None:
                    done[worker] = cuts[(n - 1) // every + 1]

            result = backtest.run_chunks(chunks(), progress=Done)
            result.diagnostics = diagnose(self.config, backtest.monitor, result.totals)
            if recorder is not None:
                recorder.finish()
                recorder.monitor = None
            result.worker_cpu_seconds = [time.process_time() - cpu]
            send.send(("done", result, backtest.chunk_of, recorder))  # each trigger's chunk, for the merge
            send.close()
            # The parent waits for this process to end before it merges: end it here, without
            # freeing the events and the Monitor object by object on the way out (what a
            # forked worker would do when this frame's locals go).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        except Exception as exc:  # noqa: BLE001 -- whatever it is, the parent raises it
            if not isinstance(exc, BacktestError):  # a file's problem is said as one process says it
                exc.add_note(f"in backtest worker {worker}:\n{traceback.format_exc()}")
            with contextlib.suppress(Exception):  # a parent gone; or not picklable: said as text
                try:
                    send.send(("error", exc, None, None))
                except Exception:  # noqa: BLE001
                    send.send(("error", RuntimeError(f"backtest worker {worker}: {exc!r}"), None, None))
        finally:
            send.close()

    def _gather(self, pipes, processes, done, progress, started: float) -> list[tuple]:
        parts: dict[int, tuple] = {}
        waiting = dict(enumerate(pipes))
        bar = None
        while waiting:
            if bar is None and progress is not None and self.plan is not None:
                bar = progress(self.plan.events)
            for conn in multiprocessing.connection.wait(list(waiting.values()), timeout=0.2):
                w = next(w for w, c in waiting.items() if c is conn)
                try:
                    kind, *part = conn.recv()
                except EOFError:
                    processes[w].join()
                    raise RuntimeError(f"backtest worker {w} ended without a result "
                                       f"(exit code {processes[w].exitcode})") from None
                if kind == "error":
                    raise part[0]
                if kind == "loaded":
                    (self.plan, self.loaded), self.load_seconds = part, time.perf_counter() - started
                    continue
                parts[w] = tuple(part)
                del waiting[w]
            if bar is not None:
                bar.update(sum(done))
        return [parts[w] for w in range(len(pipes))]

    def _merge(self, parts: list[tuple]) -> BacktestResult:
        """The workers' results in the order of one process: per chunk, the triggers model by model
        in the order the models come in the chunk; the timeline model by model in the order the
        models first came."""
        plan = self.plan
        of, chunk_order = plan.worker_of, plan.chunk_order
        chunk_events = [min(end, plan.events) for end in range(plan.every, plan.events + plan.every, plan.every)]
        results = [result for result, _, _ in parts]
        seen_order = list(dict.fromkeys(itertools.chain.from_iterable(chunk_order)))
        merged = BacktestResult(events=plan.events,
                                worker_cpu_seconds=[s for result in results for s in result.worker_cpu_seconds])
        triggers: dict[tuple[int, str], list[TriggerEvent]] = {}
        for result, chunk_of, _ in parts:
            for trigger, c in zip(result.triggers, chunk_of):
                triggers.setdefault((c, trigger.model_id), []).append(trigger)
        rows: dict[tuple[int, str], list[tuple]] = {}
        for result in results:
            for key, group in itertools.groupby(result.timeline, key=operator.itemgetter(1, 2)):
                rows[key] = list(group)
        seen: list[str] = []
        for c, (order, n_events) in enumerate(zip(chunk_order, chunk_events)):
            for model in order:
                merged.triggers.extend(triggers.get((c, model), ()))
                if model not in seen:
                    seen.append(model)
            for model in seen:
                merged.timeline.extend(rows.get((n_events, model), ()))
        merged.totals = {model: results[of[model]].totals[model] for model in seen_order}
        # As one Monitor's registry lists them: the configured models, then those it registered
        # (engine.unknown_model = "register") as their first events came.
        configured = [model.id for model in ModelRegistry(self.config)]
        merged.diagnostics = {model: results[of[model]].diagnostics[model] if model in of else {"no_events": True}
                              for model in [*configured, *(m for m in seen_order if m not in configured)]}
        if self.recorder is not None:
            self._merge_recorders([recorder for _, _, recorder in parts], merged.triggers, seen_order)
        return merged

    def _merge_recorders(self, recorders: list, triggers: list[TriggerEvent], seen_order: list[str]) -> None:
        """The report's recordings, as one recorder would have them (each is per model, or per trigger)."""
        into, of = self.recorder, self.plan.worker_of
        into.traffic = {m: recorders[of[m]].traffic[m] for m in seen_order if m in recorders[of[m]].traffic}
        into.test_sizes = {key: value for recorder in recorders for key, value in recorder.test_sizes.items()}
        snapshots: dict[str, list] = {}
        for recorder in recorders:
            for snapshot in recorder.snapshots:
                snapshots.setdefault(snapshot.trigger_id, []).append(snapshot)
        into.snapshots = [s for t in dict.fromkeys(t.trigger_id for t in triggers) for s in snapshots.get(t, ())]
        into.drift = {m: recorders[of[m]].drift[m] for m in seen_order if m in recorders[of[m]].drift}
        into.alpha = {m: recorders[of[m]].alpha[m] for m in seen_order if m in recorders[of[m]].alpha}
        into.monitor = None  # finish() has been done by each worker


def _chunk_order(codes: np.ndarray, every: int, names: list[str]) -> list[list[str]]:
    """Each chunk's models in the order they first come in it, chunk after chunk of ``every``
    events (``codes``: each event's model, as its index in ``names``)."""
    chunks = -(-len(codes) // every)
    keys, first = np.unique(np.arange(len(codes)) // every * len(names) + codes, return_index=True)
    keys = keys[np.argsort(first, kind="stable")]  # each (chunk, model) by its first event: chunk by chunk
    chunk, model = np.divmod(keys, len(names))
    bounds = np.searchsorted(chunk, np.arange(chunks + 1)).tolist()
    listed = list(map(names.__getitem__, model.tolist()))
    return [listed[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def diagnose(config: Config, monitor: Monitor, totals: dict[str, Counter]) -> dict[str, dict[str, Any]]:
    """Per configured model, what the end of a replay left: predictions without a label and
    labels without a prediction (expired on the way, or still waiting), and the watched features
    of which no value was seen; a model of which no event was seen says so."""
    out: dict[str, dict[str, Any]] = {}
    for model in monitor.registry:
        m = monitor.models.get(model.id)
        if m is None:
            out[model.id] = {"no_events": True}
            continue
        counts = totals.get(model.id, Counter())
        m.stats.catch_up()
        out[model.id] = {
            "predictions_without_label": counts["expired_predictions"] + len(m.join.pending),
            "labels_without_prediction": counts["expired_labels"] + len(m.join.early_labels),
            "features_never_seen": _never_seen(model, m.stats.feature_drift),
        }
    return out


def _never_seen(model, detectors: dict[tuple[str, str], Any]) -> list[str]:
    """The watched features none of whose detectors got a value: no reference sample begun,
    none taken (or, with a reference file, nothing in the current window)."""
    seen: set[str] = set()
    from_file = model.drift is not None and model.drift.reference_file is not None
    for (feature, _), detector in detectors.items():
        if detector._pending or (detector.profile is not None and (not from_file or detector.count)):
            seen.add(feature)
    return sorted({feature for feature, _ in detectors} - seen)


def auto_every(n_events: int) -> int:
    """Timeline resolution: about 400 samples per replay, every 200 to 5000 events."""
    return max(200, min(5000, n_events // 400))


#: What a backtest writes to its output directory, in the order it writes them.
OUTPUTS = ("triggers.jsonl", "timeline.csv", "rejects.jsonl", "summary.json", "report.html")


def run_backtest(config: Config, out: str | Path, predictions=None, labels=None, events=None,
                 every: int | None = None, report: bool = True, progress: bool = True,
                 scenario: str | Path | None = None, written: list[Path] | None = None,
                 workers: int | None = None) -> BacktestResult:
    """Load and replay (in ``workers`` processes, see :func:`replay_files`) and write the outputs
    (see the module docstring). The output directory is made only when the replay is done, and
    each file is written under a temporary name and renamed: ``written`` (if given) gets each
    one's path when it is complete, so an interrupted run can say what it left (and leaves no
    half file)."""
    from streams.tools.report import ReportRecorder, write_report
    from streams.tools.simulate import Progress

    out = Path(out)
    written = [] if written is None else written
    # Millions of small, long-lived objects: the cyclic GC would rescan them again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if progress:
            print("backtest: reading, validating and sorting …", file=sys.stderr, flush=True)
        bars: list[Progress] = []

        def bar(events: int) -> Progress:
            bars.append(Progress(events, "backtest", enabled=progress))
            return bars[-1]

        recorder = ReportRecorder(config) if report else None
        result = replay_files(config, predictions, labels, events, every=every, workers=workers, recorder=recorder,
                              progress=bar)
    finally:
        if gc_was_enabled:
            gc.enable()
    for started_bar in bars:
        started_bar.close(result.events)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(result, out, written)
    if report:
        if scenario is None:
            for candidate in (predictions, events, labels):
                if candidate is not None and str(candidate) != STDIN \
                        and (Path(candidate).parent / "scenario.json").exists():
                    scenario = Path(candidate).parent / "scenario.json"
                    break
        _complete(out / "report.html", written, lambda path: write_report(config, result, path, scenario=scenario,
                                                                           recorder=recorder))
    return result


def _complete(path: Path, written: list[Path], write) -> None:
    """``write(temporary path)``, then the file takes its name: it is there whole or not at all."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    written.append(path)


def write_outputs(result: BacktestResult, out: Path, written: list[Path] | None = None) -> None:
    written = [] if written is None else written

    def triggers(path: Path) -> None:
        with open(path, "wb") as f:
            for trigger in result.triggers:
                f.write(encode_trigger(trigger) + b"\n")

    def timeline(path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["event_time", "event_time_ms", "events", "model", "statistic", "value", "n"])
            times: dict[int, str] = {}  # a sample's rows share its time: formatted once
            writer.writerows([times.get(at_ms) or times.setdefault(at_ms, format_timestamp(at_ms)), at_ms, n_events,
                              model, name, repr(value), n]
                             for at_ms, n_events, model, name, value, n in result.timeline)

    def rejects(path: Path) -> None:
        encoder = msgspec.json.Encoder()
        with open(path, "wb") as f:
            for reject in result.rejects:
                f.write(encoder.encode(reject) + b"\n")

    def summary(path: Path) -> None:
        path.write_text(json.dumps(result.summary(), indent=2) + "\n")

    for name, write in zip(OUTPUTS, (triggers, timeline, rejects, summary)):
        _complete(out / name, written, write)
