"""What a PredictionLogger call costs the serving path, next to a raw confluent-kafka produce().

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 python benchmarks/producer.py            # 100k calls/round, 5 rounds
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 python benchmarks/producer.py --calls 20000

One prediction with 20 numeric features (about 600 bytes of JSON). Per round, each candidate
makes ``--calls`` calls and the time per call is taken; the queue is then flushed untimed.
Candidates, interleaved A B C D A B C D …, median of ``--rounds``:

* ``raw produce``       — baseline: ``confluent_kafka.Producer.produce(topic, bytes, key)`` of the
  pre-encoded event (same partitioner, linger and compression as the logger, no callbacks);
* ``logger.produce_raw``— the same bytes through PredictionLogger (its checks, counters, the
  delivery callback served by its poll thread);
* ``logger.log_prediction`` — the real call: build the event, generate the id, msgspec-encode,
  produce;
* ``log_prediction, broker down, buffer full`` — the drop path: nothing listens, the bounded
  buffer is full, each call is counted as dropped and returns at once.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import confluent_kafka  # noqa: E402
import msgspec  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from benchmarks._common import progress, table  # noqa: E402
from streams.client.producer import PredictionLogger  # noqa: E402

FEATURES = {f"f{i:02d}": round(0.1 * i + 0.123456, 6) for i in range(20)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("producer bench: set KAFKA_BOOTSTRAP_SERVERS (make bench starts a broker)", file=sys.stderr)
        return 2
    topic = f"bench-producer-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        future.result(30)
    event = {"prediction_id": "0" * 32, "model_id": "churn", "model_version": "v1", "timestamp": 1_767_225_600_000,
             "features": FEATURES, "prediction": 1, "score": 0.83}
    value = msgspec.json.encode(event)
    common = {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20,
              "compression.type": "lz4", "queue.buffering.max.messages": 2 * args.calls}
    raw = Producer(common)
    logger = PredictionLogger(bootstrap, topic, topic, max_buffered=2 * args.calls, registry=CollectorRegistry())
    down = PredictionLogger({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 600_000}, topic, topic,
                            max_buffered=1000, registry=CollectorRegistry())
    for _ in range(1000):
        down.log_prediction("churn", FEATURES, 1, score=0.83, model_version="v1")
    n = args.calls

    def raw_produce():
        produce = raw.produce
        for _ in range(n):
            produce(topic, value, "churn")

    def logger_raw():
        produce = logger.produce_raw
        for _ in range(n):
            produce(topic, "churn", value)

    def logger_log():
        log = logger.log_prediction
        for _ in range(n):
            log("churn", FEATURES, 1, score=0.83, model_version="v1")

    def dropping():
        log = down.log_prediction
        for _ in range(n):
            log("churn", FEATURES, 1, score=0.83, model_version="v1")

    candidates = {"raw produce (baseline)": (raw_produce, raw), "logger.produce_raw": (logger_raw, logger),
                  "logger.log_prediction": (logger_log, logger),
                  "log_prediction, broker down, buffer full": (dropping, None)}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(args.rounds):
        for name, (run, flusher) in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / n * 1e6)
            if flusher is not None:
                flusher.flush(60)
        progress(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f}µs" for k, v in times.items()))
    assert logger.dropped_total == 0, dict(logger.dropped)
    assert down.dropped["buffer_full"] >= n * args.rounds
    logger.close()
    down.close(0.1)
    base = statistics.median(times["raw produce (baseline)"])
    rows = [[name, f"{statistics.median(v):.2f}", f"{min(v):.2f}–{max(v):.2f}", f"{statistics.median(v) / base:.2f}×"]
            for name, v in times.items()]
    print(f"producer: µs per call, {n:,} calls per round, median of {args.rounds} interleaved rounds; "
          f"confluent-kafka {confluent_kafka.version()[0]}, librdkafka {confluent_kafka.libversion()[0]}, "
          f"python {platform.python_version()}, {os.cpu_count()} cpus, event {len(value)} bytes")
    print(table(["call", "µs/call (median)", "range", "vs raw produce"], rows))
    admin.delete_topics([topic])
    return 0


if __name__ == "__main__":
    sys.exit(main())
