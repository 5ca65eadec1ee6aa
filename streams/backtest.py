"""Replay history through the same Monitor the engines run, without Kafka.

``driftline backtest --config C --predictions P.jsonl --labels L.jsonl --out DIR`` (or
``--events E.jsonl``, predictions and labels in one file) reads one message per line, decodes
and validates each exactly as the engine does (bad lines are counted by reason, as the DLQ
would), orders everything by event time (a prediction before a label of the same millisecond;
ties keep file order) and feeds it to :class:`streams.monitor.Monitor` in chunks. Triggers do
not depend on the chunking (the Monitor evaluates rules at fixed joined-pair counts).

Each line's ``Source`` is (the config's topic name, partition 0, its line number in its file,
counting bad lines), i.e. the offsets the same lines would get produced in order to a
one-partition topic; trigger evidence (``window.offsets``) then names the same offsets as live.

Writes to ``DIR``:

* ``triggers.jsonl``: the trigger events, byte-for-byte what ``driftline run`` would publish;
* ``timeline.csv``: every statistic the Monitor observes, per model, after every ``--every``
  events (``event_time,event_time_ms,events,model,statistic,value,n``);
* ``summary.json``: counts (events, invalid by reason, joined, expired, triggers) and speed;
* ``report.html``: per model, each statistic over event time with rule thresholds, trigger marks
  and (when the simulator's ``scenario.json`` is found) the injected drifts; PNGs embedded.
"""
from __future__ import annotations

import contextlib
import csv
import gc
import itertools
import json
import math
import mmap
import operator
import os
import stat
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import msgspec
import numpy as np

from retrain_trigger.events import TriggerEvent

from .codecs import InvalidEvent, Label, Prediction, encode_trigger, format_timestamp
from .config import Config
from .monitor import InputDecoder, Monitor, Source

__all__ = ["Backtest", "BacktestResult", "load_events", "run_backtest"]

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


@dataclass
class Loaded:
    events: list[tuple[Prediction | Label, Source]]
    invalid: Counter
    lines: int


@contextlib.contextmanager
def _mapped(path: str | Path) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, mapped to memory: read where they lie, no 85 MB copy (50 ms for the
    benchmark's predictions, most of it in fresh pages). A pipe (``-p <(zcat …)``) is read."""
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
                yield file.read()  # neither a pipe nor a file of no bytes can be mapped
                return
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield data
    except FileNotFoundError:
        raise BacktestError(f"{path}: file not found") from None


def _lines(data: bytes, max_bytes: int) -> tuple[list[bytes], bool]:
    """The file's lines, and whether every one is ASCII and at most ``max_bytes`` long (checked
    over the whole file at once; see ``lines_checked`` in :func:`streams.codecs.decode_many`)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    # CRLF files: strip the CR once here, not per line in the decode loop. (A one-byte search
    # first: it is memchr, 20x faster than the two-byte one over a file without CRs.)
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
    """Decode the files and order the valid events by event time (predictions first on ties)."""
    topics = config.topics
    decoded: list[tuple[Prediction | Label, Source]] = []
    invalid: Counter = Counter()
    n_lines = 0

    decode = InputDecoder(config)
    runs: list[tuple[int, bool]] = []  # (events, whether labels) per file decoded, in order: the sort's role key
    times: list[np.ndarray] = []  # their event times, per file

    def decode_file(lines: list[bytes], topic: str, lines_checked: bool = False) -> None:
        add(decode.many(topic, lines, lines_checked), topic)

    def decode_whole(path: str | Path, topic: str) -> int:
        """Decode one file of one topic; returns its number of lines."""
        with _mapped(path) as data:
            parsed = decode.buffer(topic, data)
            if parsed is None:
                lines, checked = _lines(data[:], decode.max_bytes)
        if parsed is not None:
            add(parsed, topic)
            return len(parsed)
        decode_file(lines, topic, checked)
        return len(lines)

    def add(events: list[Prediction | Label | InvalidEvent], topic: str) -> None:
        offsets = range(len(events))
        if InvalidEvent in set(map(type, events)):
            valid = list(map(operator.is_not, map(type, events), itertools.repeat(InvalidEvent)))
            invalid.update((topic, event.reason) for event in itertools.compress(events, map(operator.not_, valid)))
            events, offsets = list(itertools.compress(events, valid)), itertools.compress(offsets, valid)
        decoded.extend(zip(events, map(Source, itertools.repeat(topic), itertools.repeat(0), offsets)))
        times.append(np.fromiter(map(operator.attrgetter("timestamp"), events), dtype=np.int64, count=len(events)))
        runs.append((len(events), topic == topics.labels))

    if predictions is not None:
        n_lines += decode_whole(predictions, topics.predictions)
    if labels is not None:
        n_lines += decode_whole(labels, topics.labels)
    if events is not None:
        with _mapped(events) as data:
            lines, checked = _lines(data[:], decode.max_bytes)
        n_lines += len(lines)
        is_label = [_is_label(line) for line in lines]
        for role, topic in ((False, topics.predictions), (True, topics.labels)):
            chosen = [line for line, lab in zip(lines, is_label) if lab == role]
            decode_file(chosen, topic, checked)
    if not decoded:
        return Loaded([], invalid, n_lines)
    ts = np.concatenate(times)
    role = np.repeat([is_label for _, is_label in runs], [n for n, _ in runs]).astype(np.int8)
    order = np.lexsort((role, ts))  # by time, then prediction first; lexsort is stable: then file order
    return Loaded(list(map(decoded.__getitem__, order.tolist())), invalid, n_lines)


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

    def summary(self) -> dict[str, Any]:
        per_model = {m: dict(c) for m, c in self.totals.items()}
        for m in per_model:
            per_model[m]["triggers"] = sum(1 for t in self.triggers if t.model_id == m)
        total = self.load_seconds + self.replay_seconds
        return {
            "lines": self.lines, "events": self.events,
            "invalid": {f"{topic}:{reason}": n for (topic, reason), n in sorted(self.invalid.items())},
            "triggers": len(self.triggers), "models": per_model,
            "seconds": {"load": round(self.load_seconds, 3), "replay": round(self.replay_seconds, 3)},
            "lines_per_second": round(self.lines / total) if total > 0 else None,
        }


_COUNTER_FIELDS = ("predictions", "labels", "joined", "expired_predictions", "expired_labels",
                   "duplicate_predictions", "duplicate_labels", "late_labels")


class Backtest:
    """Feed ordered events to a Monitor in chunks of ``every``, recording the timeline."""

    def __init__(self, config: Config, every: int | None = 1000, timeline: bool = True, observer=None):
        self.config = config
        #: called after each chunk as ``observer(monitor, at_ms, events, triggers)``, before the
        #: Monitor's counters are drained (the report's recorder)
        self.observer = observer
        self.monitor = Monitor(config)
        self.every = every
        self.record_timeline = timeline
        self.result = BacktestResult()

    def run(self, events: list[tuple[Prediction | Label, Source]], progress=None) -> BacktestResult:
        result = self.result
        started = time.perf_counter()
        process = self.monitor.process
        every = auto_every(len(events)) if self.every is None else max(1, self.every)
        for start in range(0, len(events), every):
            chunk = events[start:start + every]
            triggers = process(chunk)
            result.triggers.extend(triggers)
            result.events += len(chunk)
            if self.observer is not None:
                self.observer(self.monitor, chunk[-1][0].timestamp, result.events, triggers)
            self._drain(chunk[-1][0].timestamp)
            if progress is not None:
                progress.update(result.events)
        result.replay_seconds += time.perf_counter() - started
        return result

    def _drain(self, at_ms: int) -> None:
        """Fold the Monitor's per-model counters into totals (as the exporter does) and sample stats."""
        for model_id, m in self.monitor.models.items():
            totals = self.result.totals.setdefault(model_id, Counter())
            c = m.counters
            for name in _COUNTER_FIELDS:
                totals[name] += getattr(c, name, 0)
            m.counters = type(c)()
            if self.record_timeline:
                for name, (value, n) in m.stats.values().items():
                    if value is None or (isinstance(value, float) and not math.isfinite(value)):
                        continue
                    self.result.timeline.append((at_ms, self.result.events, model_id, name, float(value), n))


def auto_every(n_events: int) -> int:
    """Timeline resolution: about 400 samples per replay, every 200 to 5000 events."""
    return max(200, min(5000, n_events // 400))


def run_backtest(config: Config, out: str | Path, predictions=None, labels=None, events=None,
                 every: int | None = None,
                 report: bool = True, progress: bool = True, scenario: str | Path | None = None) -> BacktestResult:
    from .report import ReportRecorder, write_report
    from .simulate import Progress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Millions of small, long-lived objects: the cyclic GC would rescan them again and again.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if progress:
            print("backtest: reading, validating and sorting …", file=sys.stderr, flush=True)
        loaded = load_events(config, predictions, labels, events)
        load_seconds = time.perf_counter() - started
        bar = Progress(len(loaded.events), "backtest", enabled=progress)
        recorder = ReportRecorder(config) if report else None
        backtest = Backtest(config, every=every, observer=recorder)
        result = backtest.run(loaded.events, progress=bar)
    finally:
        if gc_was_enabled:
            gc.enable()
    bar.close(result.events)
    result.invalid = loaded.invalid
    result.lines = loaded.lines
    result.load_seconds = load_seconds
    write_outputs(result, out)
    if report:
        if scenario is None:
            for candidate in (predictions, events, labels):
                if candidate is not None and (Path(candidate).parent / "scenario.json").exists():
                    scenario = Path(candidate).parent / "scenario.json"
                    break
        write_report(config, result, out / "report.html", scenario=scenario, recorder=recorder)
    return result


def write_outputs(result: BacktestResult, out: Path) -> None:
    with open(out / "triggers.jsonl", "wb") as f:
        for trigger in result.triggers:
            f.write(encode_trigger(trigger) + b"\n")
    with open(out / "timeline.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["event_time", "event_time_ms", "events", "model", "statistic", "value", "n"])
        for at_ms, n_events, model, name, value, n in result.timeline:
            writer.writerow([format_timestamp(at_ms), at_ms, n_events, model, name, repr(value), n])
    (out / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
