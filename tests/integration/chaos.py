"""The chaos and backlog cases, shared by tests/integration/test_chaos.py (short, in CI) and
benchmarks/chaos.py (long): a history of several models with early labels and malformed
messages, produced at a fixed rate or as a backlog, its backtest, and what the engine published.
"""
from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec

from streams.tools.backtest import run_backtest
from streams.core.codecs import Label, Prediction, encode_label, encode_prediction
from streams.core.config import load_config

from .harness import Deployment

T0 = 1_760_000_000_000


def models_config(names: list[str]) -> str:
    """Accuracy rules judged at every few pairs: their triggers (values, windows, times) depend
    on the exact order predictions and labels reach the Monitor."""
    return "".join(f"""
[[models]]
id = "{name}"
label_ttl_seconds = 7200
window = {{ kind = "count", size = 150 }}
evaluate_every = 3
  [[models.rules]]
  name = "floor"
  min_samples = 100
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
    rearm = 0.88
  [[models.rules]]
  name = "low-streak"
  min_samples = 50
  consecutive = 4
  cooldown_seconds = 900
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.85
""" for name in names)


def _malformed(rng: random.Random, model: str, i: int) -> tuple[str, bytes]:
    kind = rng.randrange(5)
    if kind == 0:
        return "predictions", b'{"prediction_id": "bad-%d", "model_id": "%s", "timest' % (i, model.encode())
    if kind == 1:
        return "predictions", b'{"prediction_id": "bad-%d", "model_id": "%s", "timestamp": 1}' % (i, model.encode())
    if kind == 2:
        return "predictions", b'{"prediction_id": "bad-%d", "model_id": "nobody", "timestamp": 1, "prediction": 1}' % i
    if kind == 3:
        return "labels", b'{"prediction_id": "bad-%d", "model_id": "%s", "label": NaN, "timestamp": 1}' % (i, model.encode())
    return "labels", b"not json at all %d" % i


@dataclass
class History:
    """Messages ``(topic role, key, value)`` in the order they happen (event time; a prediction
    before a label of the same millisecond), and the malformed values among them."""

    messages: list[tuple[str, bytes, bytes]]
    malformed: list[bytes]
    models: list[str]

    def per_topic(self) -> dict[str, list[tuple[bytes, bytes]]]:
        topics: dict[str, list[tuple[bytes, bytes]]] = {"predictions": [], "labels": []}
        for role, key, value in self.messages:
            topics[role].append((key, value))
        return topics

    def backlog_order(self) -> list[tuple[str, bytes, bytes]]:
        """All predictions, then all labels: each topic in the same order, one far ahead."""
        return [m for m in self.messages if m[0] == "predictions"] + [m for m in self.messages if m[0] == "labels"]


def history(models: list[str], n: int, seed: int, spacing_ms: int = 1000, early: float = 0.05,
            malformed: float = 0.01) -> History:
    """``n`` predictions per model, ``spacing_ms`` apart; bad phases of 50 % accuracy between
    good ones of 95 %; labels 1-60 s after their prediction, ``early`` of them stamped 1-5 s
    before it (the label source's clock ahead); ``malformed`` extra bad messages."""
    rng = random.Random(seed)
    events: list[tuple[int, int, str, bytes, bytes]] = []  # (ts, role, ...) to sort by
    bad: list[bytes] = []
    for i in range(n):
        for m, model in enumerate(models):
            ts = T0 + i * spacing_ms + m * 7
            phase_bad = (i // 300 + m) % 3 == 1
            correct = rng.random() < (0.5 if phase_bad else 0.95)
            pid = f"{model}-{i:06d}"
            prediction = Prediction(prediction_id=pid, model_id=model, timestamp=ts, prediction=1,
                                    features={"x": float(i % 5)}, model_version="v1")
            delay = -rng.randint(1000, 5000) if rng.random() < early else rng.randint(1000, 60000)
            label = Label(prediction_id=pid, model_id=model, label=1 if correct else 0, timestamp=ts + delay)
            events.append((ts, 0, "predictions", model.encode(), encode_prediction(prediction)))
            events.append((label.timestamp, 1, "labels", model.encode(), encode_label(label)))
            if rng.random() < malformed:
                topic, value = _malformed(rng, model, len(bad))
                events.append((ts, 0 if topic == "predictions" else 1, topic, model.encode(), value))
                bad.append(value)
    events.sort(key=lambda e: (e[0], e[1]))  # stable: the order things happen
    return History([(role, key, value) for _, _, role, key, value in events], bad, models)


def write_files(h: History, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for role, messages in h.per_topic().items():
        path = directory / f"{role}.jsonl"
        path.write_bytes(b"".join(value + b"\n" for _, value in messages))
        paths.append(path)
    return paths[0], paths[1]


def per_model(triggers: list[dict]) -> dict[str, list[dict]]:
    """Each model's triggers in order (across models, the order is the batches')."""
    out: dict[str, list[dict]] = {}
    for t in triggers:
        out.setdefault(t["model_id"], []).append(t)
    return out


def backtest(d: Deployment, h: History, directory: Path) -> dict[str, list[dict]]:
    predictions, labels = write_files(h, directory / "history")
    result = run_backtest(load_config(d.config_path), directory / "backtest", predictions=predictions,
                          labels=labels, report=False, progress=False)
    return per_model([json.loads(msgspec.json.encode(t)) for t in result.triggers])


class FixedRateProducer(threading.Thread):
    """Produces messages in order at ``rate`` messages per second (chunks every 50 ms)."""

    def __init__(self, d: Deployment, messages: list[tuple[str, bytes, bytes]], rate: float):
        super().__init__(daemon=True)
        self.d, self.messages, self.rate = d, messages, rate
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = self.d.producer()
            chunk = max(1, int(self.rate / 20))
            started = time.monotonic()
            for start in range(0, len(self.messages), chunk):
                for role, key, value in self.messages[start:start + chunk]:
                    producer.produce(self.d.topics[role], value, key=key)
                producer.poll(0)
                pause = started + (start + chunk) / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            assert producer.flush(60) == 0
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc


def produce_all(d: Deployment, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = d.producer()
    for role, key, value in messages:
        producer.produce(d.topics[role], value, key=key)
        producer.poll(0)
    assert producer.flush(60) == 0


def wait_until_consumed(d: Deployment, h: History, timeout: float = 180) -> None:
    """Every input message handed on and its offset committed (the tail waits max_idle_ms)."""
    counts = {role: len(messages) for role, messages in h.per_topic().items()}
    deadline = time.monotonic() + timeout
    seen = {}
    while time.monotonic() < deadline:
        seen = {role: d.committed(role) for role in counts}
        if seen == counts:
            return
        time.sleep(0.5)
    raise AssertionError(f"committed {seen}, expected {counts}\n{d.logs()[-3000:]}")


@dataclass
class Outcome:
    live: dict[str, list[dict]]
    duplicates: list[str]
    dead_letters: Counter
    malformed: Counter = field(default_factory=Counter)


def outcome(d: Deployment, h: History, expected_triggers: int) -> Outcome:
    triggers = d.triggers(expected=expected_triggers, timeout=60, settle=3)
    ids = Counter(t["trigger_id"] for t in triggers)
    dlq = Counter(m.value() for m in d.read("driftline-dlq", expected=len(h.malformed), timeout=60, settle=3))
    return Outcome(per_model(triggers), sorted(i for i, n in ids.items() if n > 1), dlq, Counter(h.malformed))


_FIRST = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO driftline\.engine: first events handed to the Monitor")


def first_batch_at(log: Path) -> float | None:
    """The wall-clock time (epoch seconds) of the engine's first batch handed to the Monitor."""
    for line in log.read_text(errors="replace").splitlines():
        match = _FIRST.match(line)
        if match:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


_STARTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO driftline: metrics on")


def started_at(log: Path) -> float | None:
    """The wall-clock time the engine process had imported its modules (its first log line)."""
    for line in log.read_text(errors="replace").splitlines():
        match = _STARTED.match(line)
        if match:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def kill_and_restart(d: Deployment, proc: subprocess.Popen) -> tuple[subprocess.Popen, float, Path]:
    """SIGKILL the engine and start it again at once (same instance); returns the new process,
    the kill's wall-clock time and the new process's log."""
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    new = d.start()
    return new, killed_at, d.tmp / f"engine-0-{len(d.processes) - 1}.log"
