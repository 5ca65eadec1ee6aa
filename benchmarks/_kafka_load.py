"""Helpers for the Kafka benchmarks: synthetic backlogs, topics, /metrics and RSS of a process."""
from __future__ import annotations

import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable

import msgspec
import numpy as np
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks._common import progress

START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topics(bootstrap: str, names: list[str], partitions: int, config: dict[str, str] | None = None) -> None:
    client = admin(bootstrap)  # keep the handle alive until the futures resolve
    futures = client.create_topics([NewTopic(n, partitions, 1, config=config or {}) for n in names])
    for f in futures.values():
        f.result(30)


def delete_topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    client = admin(bootstrap)
    names = [t for t in client.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for name, f in client.delete_topics(names, operation_timeout=30).items():
            try:
                f.result(60)
            except Exception as exc:  # noqa: BLE001 - report and go on deleting the rest
                progress(f"could not delete topic {name}: {exc}")
    return names


def producer(bootstrap: str, compression: str = "none") -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20,
                     "compression.type": compression, "queue.buffering.max.messages": 500_000,
                     "queue.buffering.max.kbytes": 1 << 20, "batch.size": 1 << 20})


def _produce(p: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            p.produce(topic, value, key=key)
            return
        except BufferError:
            p.poll(0.05)


def produce_backlog(bootstrap: str, predictions_topic: str, labels_topic: str, models: list[str],
                    features: list[str], per_model: int, seed: int = 1, label_every: int = 1,
                    compression: str = "none", event_rate: float = 10.0, label_delay_ms: int = 30_000) -> int:
    """``per_model`` predictions for each model (its features N(0,1), the first three shifted by
    +1 in the second half), then a label for every ``label_every``-th one (90% correct, then 70%),
    each keyed by its model. Both topics are in event-time order, the models' events interleaved
    one by one, as a live stream leaves them: ``event_rate`` predictions a second of each model
    (prediction ``i`` at ``i / event_rate`` s), each one's label ``label_delay_ms`` later. The
    density decides how much the engine holds: the predictions waiting for their labels, and
    the ids it remembers for its de-duplication horizon. Returns the events produced."""
    rng = np.random.default_rng(seed)
    enc = msgspec.json.Encoder()
    p = producer(bootstrap, compression)
    keys = [model.encode() for model in models]
    total = per_model * len(models)
    produced = 0
    started = time.monotonic()
    at = lambda i: START_MS + int(i * 1000 / event_rate)  # noqa: E731 - prediction i's event time (ms)
    chunk = 10_000
    for lo in range(0, per_model, chunk):
        hi = min(per_model, lo + chunk)
        values = rng.normal(size=(len(models), hi - lo, len(features))).round(5)
        values[:, :, :3] += (np.arange(lo, hi) >= per_model // 2)[None, :, None]
        preds = rng.integers(0, 2, (len(models), hi - lo))
        for j, i in enumerate(range(lo, hi)):
            for m, (model, key) in enumerate(zip(models, keys)):
                _produce(p, predictions_topic, enc.encode({
                    "prediction_id": f"{model}-{i:08d}", "model_id": model, "model_version": "v1",
                    "timestamp": at(i), "features": dict(zip(features, values[m, j].tolist())),
                    "prediction": int(preds[m, j]), "score": 0.5}), key)
        produced += (hi - lo) * len(models)
        p.poll(0)
        progress(f"  produced {produced:,}/{total:,} predictions ({time.monotonic() - started:.0f}s)")
    correct = rng.random((len(models), per_model)) < np.where(np.arange(per_model) < per_model // 2, 0.9, 0.7)
    labelled = 0
    for i in range(0, per_model, label_every):
        for m, (model, key) in enumerate(zip(models, keys)):
            label = 1 if correct[m, i] else 0  # predictions are random; correctness is what matters
            _produce(p, labels_topic, enc.encode({"prediction_id": f"{model}-{i:08d}", "model_id": model,
                                                  "label": label, "timestamp": at(i) + label_delay_ms}), key)
            labelled += 1
        if i % chunk == 0:
            p.poll(0)
    progress(f"  produced {labelled:,} labels; flushing …")
    p.flush(120)
    return produced + labelled


def scrape(address: str, names: Iterable[str] = ()) -> str:
    """The engine's /metrics; with ``names``, only those families (``?name[]=``): a poll for
    progress every 0.1 s that rendered every family would take CPU from the engine it measures,
    as no Prometheus scraping every 15 s does."""
    query = urllib.parse.urlencode([("name[]", name) for name in names])
    with urllib.request.urlopen(f"http://{address}/metrics" + (f"?{query}" if query else ""), timeout=5) as r:
        return r.read().decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name)] not in " {":
            continue
        m = re.match(r"[^{ ]+(?:\{(.*)\})? (\S+)", line)
        if not m:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size of a running process (VmHWM), bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def labels_after_last_prediction(per_model: int, models: int, event_rate: float, label_delay_ms: int,
                                 label_every: int = 1) -> int:
    """About how many labels of a :func:`produce_backlog` are stamped after its last prediction:
    the engine releases them only once their pair of partitions has waited ``engine.max_idle_ms``
    for a prediction that never comes (the backlog ends; a live stream goes on), so a run's
    clock stops before them. Those of the last prediction's millisecond count too (a prediction
    goes first when both have one time), and one more of each model for the rounding."""
    return models * math.ceil(min(per_model, (label_delay_ms + 1) * event_rate / 1000 + 1) / label_every)
