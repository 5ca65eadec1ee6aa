"""Engine throughput, trigger latency and peak memory on a real Kafka broker, in one run.

    python benchmarks/engine.py                          # 1M-event backlog, 3 rounds, latency, memory
    python benchmarks/engine.py --events 50000 --repeats 1 --latency-samples 10 --no-memory   # quick
    python benchmarks/engine.py --compare-ref HEAD~1     # also the default engine at another commit

Broker: ``--bootstrap`` (default ``$KAFKA_BOOTSTRAP_SERVERS``, else 127.0.0.1:19092). Every topic
it makes starts with ``bench-engine-<pid>-`` and is deleted at the end (``--keep-topics`` keeps them).

Throughput. A backlog of ``--events`` input events (half predictions of one model with 20
numeric features, half their labels, 90% then 70% correct) is produced once, then consumed from
the beginning, interleaved per round (A B C A B C …), median of ``--repeats``:

* ``raw``       — the ceiling: one confluent-kafka consumer (read_committed, batch ``consume``
                  of 5000, like the engine) that decodes and validates every message with the
                  engine's own ``InputDecoder``, nothing more; a subprocess;
* ``confluent`` — ``driftline run --config …`` (the default engine), a subprocess, exactly as
                  users run it: 20 features with PSI each, accuracy over 1000 pairs, ADWIN on the
                  error stream, an accuracy-floor rule, transactions every ``--commit-every-ms``;
* ``faust``     — ``driftline run --engine faust --config …`` with the same config;
* ``confluent@<ref>`` — with ``--compare-ref``: the default engine from a git worktree of <ref>.

Each run uses a fresh consumer group and fresh output topics. Time: from subscribe (the raw
consumer's ``subscribe()``; the engines' first log line after it, "consuming …" for the default
engine, "assigned partitions" for Faust, which logs nothing earlier) to the moment
``driftline_predictions_total + driftline_labels_total`` on the engine's ``/metrics`` (counted after
the Monitor processed a batch) reaches the backlog, polled every 0.1 s. Peak RSS: the process's
``VmHWM`` then.

Latency. An engine with the same config, on fresh (empty) input topics, caught up. A second,
small model ``lat`` of the config (window 20, evaluated every labelled prediction, rule accuracy
< 0.5) gets 31 predictions and 30 labels (20 right, 10 wrong: accuracy 0.5, no breach); then
the 31st label, wrong, is produced at a known wall time t0 and a read_committed consumer of the
triggers topic waits for the trigger: latency = seen - t0. The engine commits a transaction
every ``--commit-every-ms``, which bounds it (uniform wait of up to one interval + processing +
commit). ``--latency-samples`` samples, p50/p99.

Memory. ``--memory-models`` models × ``--memory-features`` features (PSI each, accuracy, ADWIN, a
rule), ``--memory-per-model`` predictions and labels each, consumed by ``driftline run``; peak RSS
(VmHWM), the last checkpoint size and pending predictions.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import msgspec  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from benchmarks._common import progress, table  # noqa: E402
from benchmarks._kafka_load import (create_topics, delete_topics_with_prefix, metric_sum,  # noqa: E402
                                    produce_backlog, scrape, vm_hwm_bytes)

FEATURES = [f"f{i:02d}" for i in range(20)]
MB = 1 << 20


# -- configs ------------------------------------------------------------------------------
def _q(value) -> str:
    return json.dumps(value)


def model_toml(model_id: str, features: list[str]) -> str:
    return f"""
[[models]]
id = {_q(model_id)}
metrics = ["accuracy"]
evaluate_every = 50
[models.features]
numeric = {_q(features)}
[models.window]
kind = "count"
size = 1000
[models.drift]
numeric = ["psi"]
categorical = []
prediction = []
window = 1000
reference_size = 1000
[[models.detectors]]
kind = "adwin"
[[models.rules]]
name = "accuracy-floor"
min_samples = 500
conditions = [{{statistic = "accuracy", op = "<", threshold = 0.8}}]
"""


LATENCY_MODEL = """
[[models]]
id = "lat"
metrics = ["accuracy"]
evaluate_every = 1
[models.window]
kind = "count"
size = 20
[[models.rules]]
name = "lat-floor"
min_samples = 20
conditions = [{statistic = "accuracy", op = "<", threshold = 0.5}]
"""


STATE_MAX_BYTES = 0  # > 0: state topics allow messages this large, and the engine may produce them


def write_config(path: Path, bootstrap: str, prefix: str, name: str, inputs: tuple[str, str], models: str,
                 commit_every_ms: int, port: int, partitions: int) -> Path:
    kafka = ""
    if STATE_MAX_BYTES:
        create_topics(bootstrap, [f"{prefix}{name}-state"], partitions,
                      {"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_BYTES)})
        kafka = f'"message.max.bytes" = {STATE_MAX_BYTES}\n'
    path.write_text(f"""
[kafka]
"bootstrap.servers" = {_q(bootstrap)}
{kafka}
[topics]
predictions = {_q(inputs[0])}
labels = {_q(inputs[1])}
triggers = {_q(f"{prefix}{name}-triggers")}
dlq = {_q(f"{prefix}{name}-dlq")}
state = {_q(f"{prefix}{name}-state")}
partitions = {partitions}

[engine]
group_id = {_q(f"{prefix}{name}")}
commit_every_ms = {commit_every_ms}

[metrics]
address = "127.0.0.1:{port}"
{models}""")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the engines as users run them ----------------------------------------------------------
class EngineProcess:
    """``driftline run`` in a subprocess; its stderr is read by a thread that notes marker lines."""

    MARKERS = ("consuming ", "assigned partitions")

    def __init__(self, config: Path, engine: str, port: int, cwd: Path | None = None):
        env = dict(os.environ)
        if cwd is not None:  # another checkout: its code first on the path
            env["PYTHONPATH"] = str(cwd)
        self.address = f"127.0.0.1:{port}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys; from streams.cli.main import main; "
                                      "sys.exit(main())", "run", "--config", str(config), "--engine", engine],
                                     cwd=str(cwd or ROOT), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.marks: dict[str, float] = {}
        self.tail: deque[str] = deque(maxlen=40)
        self.warnings: deque[str] = deque(maxlen=5)  # WARNING/ERROR lines: a run that had any is suspect
        self.warning_count = 0
        self.max_checkpoint = 0.0
        self.max_pending = 0.0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            now = time.monotonic()
            self.tail.append(line.rstrip())
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line:
                self.warning_count += 1
                self.warnings.append(line.rstrip())
            for marker in self.MARKERS:
                if marker in line and marker not in self.marks:
                    self.marks[marker] = now

    def metrics(self) -> str | None:
        try:
            return scrape(self.address)
        except OSError:
            return None

    def processed(self, text: str, model: str | None = None) -> float:
        labels = {"model": model} if model else {}
        return metric_sum(text, "driftline_predictions_total", **labels) + metric_sum(
            text, "driftline_labels_total", **labels)

    def wait_processed(self, expected: int, timeout: float, label: str = "", model: str | None = None) -> float | None:
        """Wait until the engine has processed ``expected`` events; monotonic time then, or None."""
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n" + "\n".join(self.tail))
            text = self.metrics()
            now = time.monotonic()
            if text is not None:
                done = self.processed(text, model)
                self.max_checkpoint = max(self.max_checkpoint, metric_sum(text, "driftline_checkpoint_bytes"))
                self.max_pending = max(self.max_pending, metric_sum(text, "driftline_pending_predictions"))
                if done >= expected:
                    return now
                if label and now - last_report > 5:
                    last_report = now
                    progress(f"    {label}: {done:,.0f}/{expected:,} events ({now - self.started:.0f}s)")
            time.sleep(0.1)
        return None

    def rss(self) -> int:
        return vm_hwm_bytes(self.proc.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def run_engine(kind: str, args, prefix: str, inputs: tuple[str, str], expected: int, round_no: int,
               tmp: Path, worktree: Path | None) -> dict:
    engine = "faust" if kind == "faust" else "confluent"
    name = f"{kind.replace('@', '-at-').replace('~', '-').replace('^', '-')}-r{round_no}"
    port = free_port()
    cfg = write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                       model_toml("m", FEATURES) + LATENCY_MODEL, args.commit_every_ms, port, args.partitions)
    proc = EngineProcess(cfg, engine, port, cwd=worktree if "@" in kind else None)
    try:
        done = proc.wait_processed(expected, args.timeout, label=f"round {round_no} {kind}")
        rss = proc.rss()
        start_mark = proc.marks.get("consuming ") or proc.marks.get("assigned partitions")
        text = proc.metrics() or ""
    finally:
        code = proc.stop()
    extra = {"warnings": proc.warning_count, "last_warnings": list(proc.warnings),
             "max_checkpoint_bytes": proc.max_checkpoint, "max_pending": proc.max_pending}
    if proc.warning_count:
        progress(f"    {kind}: {proc.warning_count} warning lines, e.g. {proc.warnings[-1]}")
    if done is None:
        processed = proc.processed(text) if text else 0
        return {"kind": kind, "seconds": None, "processed": processed, "rss": rss, "exit": code,
                "note": f"not done after {args.timeout:.0f}s ({processed:,.0f}/{expected:,})", **extra}
    return {"kind": kind, "seconds": done - (start_mark or proc.started), "from_start": done - proc.started,
            "rss": rss, "exit": code, "triggers": metric_sum(text, "driftline_triggers_total"), **extra}


def raw_worker(bootstrap: str, config_path: str, expected: int) -> None:
    """The ceiling, in its own process: consume + the engine's InputDecoder, nothing else. Prints JSON."""
    from streams.core.config import load_config
    from streams.core.codecs import InvalidEvent
    from streams.core.monitor import InputDecoder

    config = load_config(config_path)
    decode = InputDecoder(config)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": config.engine.group_id,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "partition.assignment.strategy": "range",
                         "enable.partition.eof": False})
    topics = [config.topics.predictions, config.topics.labels]
    count = invalid = 0
    started = time.perf_counter()
    consumer.subscribe(topics)
    while count + invalid < expected:
        for msg in consumer.consume(config.engine.batch_size, config.engine.poll_timeout_ms / 1000):
            if msg.error():
                continue
            try:
                decode(msg.topic(), msg.value() or b"")
                count += 1
            except InvalidEvent:
                invalid += 1
    seconds = time.perf_counter() - started
    consumer.close()
    print(json.dumps({"seconds": seconds, "count": count, "invalid": invalid, "rss": vm_hwm_bytes(os.getpid())}))


def run_raw(args, prefix: str, inputs: tuple[str, str], expected: int, round_no: int, tmp: Path) -> dict:
    name = f"raw-r{round_no}"
    cfg = write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                       model_toml("m", FEATURES) + LATENCY_MODEL, args.commit_every_ms, free_port(), args.partitions)
    out = subprocess.run([sys.executable, __file__, "--raw-worker", str(cfg), "--events", str(expected),
                          "--bootstrap", args.bootstrap], capture_output=True, text=True, timeout=args.timeout)
    if out.returncode:
        raise RuntimeError(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"kind": "raw", "seconds": result["seconds"], "rss": result["rss"], "exit": 0}


# -- latency --------------------------------------------------------------------------------
class TriggerReader:
    """A read_committed consumer of the triggers topic, noting when each trigger becomes visible."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 10, "enable.partition.eof": False})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.seen: list[tuple[float, str]] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            for msg in self.consumer.consume(100, 0.05):
                if not msg.error():
                    self.seen.append((time.time(), msgspec.json.decode(msg.value())["trigger_id"]))

    def close(self) -> None:
        self.stopping = True
        self.thread.join()
        self.consumer.close()


def measure_latency(args, prefix: str, tmp: Path) -> dict:
    name = "latency"
    inputs = (f"{prefix}{name}-predictions", f"{prefix}{name}-labels")
    create_topics(args.bootstrap, list(inputs), args.partitions)
    create_topics(args.bootstrap, [f"{prefix}{name}-triggers"], 1)
    port = free_port()
    cfg = write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                       model_toml("m", FEATURES) + LATENCY_MODEL, args.commit_every_ms, port, args.partitions)
    reader = TriggerReader(args.bootstrap, f"{prefix}{name}-triggers")
    proc = EngineProcess(cfg, "confluent", port)
    producer = Producer({"bootstrap.servers": args.bootstrap, "partitioner": "murmur2_random", "linger.ms": 0})
    enc = msgspec.json.Encoder()
    samples: list[float] = []
    processed = 0
    try:
        deadline = time.monotonic() + 60
        while "assigned partitions" not in proc.marks or proc.metrics() is None:
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                raise RuntimeError("latency engine did not start:\n" + "\n".join(proc.tail))
            time.sleep(0.1)
        time.sleep(1.0)
        for k in range(args.latency_samples):
            now = int(time.time() * 1000)
            ids = [f"lat-{k}-{j}" for j in range(31)]
            for pid in ids:
                producer.produce(inputs[0], enc.encode({"prediction_id": pid, "model_id": "lat", "timestamp": now,
                                                        "prediction": 1}), key=b"lat")
            producer.flush(10)
            processed += 31
            if proc.wait_processed(processed, 30, model="lat") is None:
                raise RuntimeError("latency engine did not process the predictions")
            for j, pid in enumerate(ids[:30]):  # 20 right (re-arm), 10 wrong: accuracy 0.5, no breach
                producer.produce(inputs[1], enc.encode({"prediction_id": pid, "model_id": "lat", "timestamp": now,
                                                        "label": 1 if j < 20 else 0}), key=b"lat")
            producer.flush(10)
            processed += 30
            if proc.wait_processed(processed, 30, model="lat") is None:
                raise RuntimeError("latency engine did not process the labels")
            before = len(reader.seen)
            t0 = time.time()
            producer.produce(inputs[1], enc.encode({"prediction_id": ids[30], "model_id": "lat", "timestamp": now,
                                                    "label": 0}), key=b"lat")
            producer.flush(10)
            processed += 1
            wait_until = time.monotonic() + 30
            while len(reader.seen) == before and time.monotonic() < wait_until:
                time.sleep(0.001)
            if len(reader.seen) == before:
                raise RuntimeError(f"no trigger within 30 s for latency sample {k}")
            samples.append(reader.seen[before][0] - t0)
            if (k + 1) % 10 == 0:
                progress(f"    latency sample {k + 1}/{args.latency_samples}: p50 so far "
                         f"{statistics.median(samples) * 1000:.0f} ms")
    finally:
        proc.stop()
        reader.close()
    samples.sort()
    pct = lambda q: samples[min(len(samples) - 1, int(round(q * (len(samples) - 1))))]  # noqa: E731
    return {"samples": len(samples), "p50": pct(0.5), "p99": pct(0.99), "max": samples[-1], "min": samples[0]}


# -- memory ---------------------------------------------------------------------------------
def measure_memory(args, prefix: str, tmp: Path) -> dict:
    name = "memory"
    inputs = (f"{prefix}{name}-predictions", f"{prefix}{name}-labels")
    create_topics(args.bootstrap, list(inputs), args.partitions)
    features = [f"x{i:02d}" for i in range(args.memory_features)]
    models = [f"m{i:03d}" for i in range(args.memory_models)]
    progress(f"memory: producing {args.memory_models} models × {args.memory_per_model:,} predictions "
             f"with {args.memory_features} features, and their labels …")
    expected = produce_backlog(args.bootstrap, inputs[0], inputs[1], models, features, args.memory_per_model, seed=2)
    port = free_port()
    cfg = write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                       "".join(model_toml(m, features) for m in models), args.commit_every_ms, port, args.partitions)
    proc = EngineProcess(cfg, "confluent", port)
    try:
        done = proc.wait_processed(expected, args.timeout, label="memory")
        time.sleep(args.commit_every_ms / 1000 + 1)  # let a checkpoint of the full state commit
        rss = proc.rss()
        text = proc.metrics() or ""
    finally:
        proc.stop()
    return {"events": expected, "done": done is not None, "seconds": done - proc.started if done else None,
            "rss": rss, "checkpoint_bytes": metric_sum(text, "driftline_checkpoint_bytes"),
            "pending": metric_sum(text, "driftline_pending_predictions")}


# -- profile --------------------------------------------------------------------------------
def profile_in_process(args, prefix: str, inputs: tuple[str, str], expected: int, tmp: Path) -> str:
    """cProfile of the default engine in this process until it processed the backlog."""
    from streams.core.config import load_config
    from streams.runtime.engine import Engine

    name = "profile"
    cfg = load_config(write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                                   model_toml("m", FEATURES) + LATENCY_MODEL, args.commit_every_ms, free_port(),
                                   args.partitions))
    engine = Engine(cfg)
    registry = engine.exporter.registry

    def processed() -> float:
        # summed over every label set (version, segment, …), like EngineProcess.processed
        return sum(sample.value for family in registry.collect() for sample in family.samples
                   if sample.name in ("driftline_predictions_total", "driftline_labels_total"))

    def watch() -> None:
        while True:
            done = processed()
            if done >= expected:
                engine.stopping = True
                return
            time.sleep(0.1)

    gc_time = {"seconds": 0.0, "collections": 0, "start": 0.0}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_time["start"] = time.perf_counter()
        else:
            gc_time["seconds"] += time.perf_counter() - gc_time["start"]
            gc_time["collections"] += 1

    threading.Thread(target=watch, daemon=True).start()
    profiler = cProfile.Profile() if args.profile == "cprofile" else None
    started = time.perf_counter()
    gc.callbacks.append(on_gc)
    if profiler:
        profiler.enable()
    engine.run()
    if profiler:
        profiler.disable()
    gc.callbacks.remove(on_gc)
    seconds = time.perf_counter() - started
    head = (f"in-process engine{' under cProfile' if profiler else ''}: {expected:,} events in {seconds:.1f}s "
            f"({expected / seconds:,.0f} events/s); cyclic GC {gc_time['seconds']:.2f}s in "
            f"{gc_time['collections']} collections\n")
    if not profiler:
        return head
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    return head + out.getvalue()


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"))
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog: input events (half labels)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="raw,confluent,faust", help="comma-separated: raw, confluent, faust")
    parser.add_argument("--compare-ref", help="also run the default engine from a worktree of this git ref")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--state-max-bytes", type=int, default=0,
                        help="create the state topics with max.message.bytes this large and set the engine's "
                             "message.max.bytes to it (default 0: Kafka's 1 MB, as a user's setup has it)")
    parser.add_argument("--compression", default="none",
                        help="of the backlog: none (default), lz4, zstd, … (the Faust engine's aiokafka needs the "
                             "lz4 package for lz4)")
    parser.add_argument("--commit-every-ms", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--memory-models", type=int, default=100)
    parser.add_argument("--memory-features", type=int, default=50)
    parser.add_argument("--memory-per-model", type=int, default=2000)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--profile", nargs="?", const="cprofile", choices=["cprofile", "gc"],
                        help="run the default engine in-process once more: under cProfile, or timing the cyclic GC")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--raw-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_worker:
        raw_worker(args.bootstrap, args.raw_worker, args.events)
        return 0

    global STATE_MAX_BYTES
    STATE_MAX_BYTES = args.state_max_bytes
    prefix = f"bench-engine-{os.getpid()}-"
    kinds = [k.strip() for k in args.engines.split(",") if k.strip()]
    worktree = None
    results: dict[str, list[dict]] = {}
    latency = memory = None
    profile_text = ""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            if args.compare_ref:
                worktree = tmp / "worktree"
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree),
                                args.compare_ref], check=True, capture_output=True)
                kinds.insert(kinds.index("confluent") + 1 if "confluent" in kinds else len(kinds),
                             f"confluent@{args.compare_ref}")
            inputs = (f"{prefix}predictions", f"{prefix}labels")
            create_topics(args.bootstrap, list(inputs), args.partitions)
            progress(f"producing a backlog of {args.events:,} events ({args.events // 2:,} predictions with "
                     f"{len(FEATURES)} features + their labels) to {args.bootstrap} …")
            expected = produce_backlog(args.bootstrap, inputs[0], inputs[1], ["m"], FEATURES, args.events // 2,
                                       compression=args.compression)
            results = {k: [] for k in kinds}
            for r in range(1, args.repeats + 1):
                for kind in kinds:
                    if kind == "raw":
                        res = run_raw(args, prefix, inputs, expected, r, tmp)
                    else:
                        res = run_engine(kind, args, prefix, inputs, expected, r, tmp, worktree)
                    results[kind].append(res)
                    rate = f"{expected / res['seconds']:,.0f} events/s" if res.get("seconds") else res.get("note")
                    progress(f"  round {r}/{args.repeats} {kind}: {rate}, peak RSS {res['rss'] / MB:.0f} MB")
            if args.profile:
                profile_text = profile_in_process(args, prefix, inputs, expected, tmp)
            if not args.no_latency:
                progress(f"latency: {args.latency_samples} samples, commit_every_ms={args.commit_every_ms} …")
                latency = measure_latency(args, prefix, tmp)
            if not args.no_memory:
                memory = measure_memory(args, prefix, tmp)
        finally:
            if worktree is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                               capture_output=True)
            if not args.keep_topics:
                deleted = delete_topics_with_prefix(args.bootstrap, prefix)
                progress(f"deleted {len(deleted)} topics starting with {prefix}")

    print(f"engine: backlog {expected:,} events (one model, {len(FEATURES)} numeric features, PSI each, accuracy, "
          f"ADWIN, a rule), {args.partitions} partitions, commit_every_ms={args.commit_every_ms}; "
          f"median of {args.repeats}, interleaved; python {platform.python_version()}, {os.cpu_count()} cpus")
    rows = []
    ceiling = None
    if results.get("raw") and all(r.get("seconds") for r in results["raw"]):
        ceiling = expected / statistics.median(r["seconds"] for r in results["raw"])
    for kind in kinds:
        runs = results.get(kind, [])
        finished = [r for r in runs if r.get("seconds")]
        if len(finished) < len(runs) or not runs:
            rows.append([kind, "not measured: " + "; ".join(r.get("note", "") for r in runs if not r.get("seconds")),
                         "", "", f"{max(r['rss'] for r in runs) / MB:.0f}" if runs else "", "", "", "", ""])
            continue
        rate = expected / statistics.median(r["seconds"] for r in finished)
        rates = sorted(expected / r["seconds"] for r in finished)
        engine_run = "from_start" in finished[0]
        rows.append([kind, f"{rate:,.0f}", f"{rates[0]:,.0f}–{rates[-1]:,.0f}",
                     f"{rate / ceiling:.2f}" if ceiling else "—",
                     f"{statistics.median(r['rss'] for r in finished) / MB:.0f}",
                     f"{statistics.median(r['from_start'] for r in finished):.1f}" if engine_run else "—",
                     f"{max(r['max_checkpoint_bytes'] for r in finished) / MB:.1f}" if engine_run else "—",
                     f"{max(r['max_pending'] for r in finished):,.0f}" if engine_run else "—",
                     str(sum(r["warnings"] for r in finished)) if engine_run else "—"])
    print(table(["run", "events/s (median)", "range", "× raw", "peak RSS MB", "s from process start",
                 "max checkpoint MB", "max pending", "warning lines"], rows))
    med = {k: statistics.median(expected / r["seconds"] for r in v) for k, v in results.items()
           if v and all(r.get("seconds") for r in v)}
    if "confluent" in med and "faust" in med:
        print(f"confluent / faust: {med['confluent'] / med['faust']:.1f}×")
    if args.compare_ref and "confluent" in med and f"confluent@{args.compare_ref}" in med:
        print(f"confluent (this tree) / confluent@{args.compare_ref}: "
              f"{med['confluent'] / med[f'confluent@{args.compare_ref}']:.2f}×")
    if latency:
        print(f"\ntrigger latency (label produced → trigger visible to read_committed), {latency['samples']} samples, "
              f"commit_every_ms={args.commit_every_ms}: p50 {latency['p50'] * 1000:.0f} ms, "
              f"p99 {latency['p99'] * 1000:.0f} ms (min {latency['min'] * 1000:.0f}, max {latency['max'] * 1000:.0f})")
    if memory:
        print(f"\nmemory: {args.memory_models} models × {args.memory_features} features (PSI each), "
              f"{memory['events']:,} events: peak RSS {memory['rss'] / MB:.0f} MB, "
              f"last checkpoints {memory['checkpoint_bytes'] / MB:.1f} MB, pending predictions {memory['pending']:,.0f}"
              + ("" if memory["done"] else " (NOT all events processed before the timeout)"))
    if profile_text:
        print("\n" + profile_text)
    if args.json:
        Path(args.json).write_text(json.dumps({"events": expected, "runs": results, "latency": latency,
                                               "memory": memory}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
