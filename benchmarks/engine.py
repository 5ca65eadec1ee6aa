"""Engine throughput against the fastest plain consumer, trigger latency under load, peak memory.

    python benchmarks/engine.py                          # 1M events, 3 rounds, latency, memory
    python benchmarks/engine.py --events 100000 --repeats 1 --latency-samples 10 --no-memory   # quick
    python benchmarks/engine.py --compare-ref HEAD~1     # also the default engine at another commit

Broker: ``--bootstrap`` (default ``$KAFKA_BOOTSTRAP_SERVERS``, else 127.0.0.1:19092). Every topic
it makes starts with ``bench-engine-<pid>-`` and is deleted at the end (``--keep-topics`` keeps them).

Throughput. A backlog of ``--events`` input events (half predictions of 3 models with 20 numeric
features each, half their labels, 90% then 70% correct, keyed by model; ``--event-rate``
predictions a second of each model in event time, each label ``--label-delay-ms`` after its
prediction: by default 15,000 and 1 s, the density of the latency load below, so the engine
holds what it holds live: a second of predictions waiting for their labels, the ids of a busy
model's de-duplication horizon; ``--event-rate 10 --label-delay-ms 30000`` is the sparse stream
of earlier tables, 10 a second, 4.6 hours of event time) is produced once, then
consumed from the beginning by each run, interleaved per round with the order turned by one each
round (A B C, B C A, C A B …: a run's place in a round, e.g. right after another read the same
log, does not favour one of them), median of ``--repeats``. Each run is a subprocess with a fresh consumer group and fresh output topics:

* ``ceiling``   — what a user would write to read the topics as fast as Python can: a
                  confluent-kafka consumer (librdkafka's defaults), ``consume(5000)``,
                  ``orjson.loads`` of every message and a check of its id fields (:func:`ceiling_worker`);
* ``confluent`` — ``driftline run`` (the default engine, exactly-once) with the ``realistic`` config
                  of :mod:`benchmarks._configs`: per model PSI and KS on all 20 features, accuracy
                  over 1000 pairs, ADWIN on the error stream, an accuracy rule and a drift rule;
* ``confluent-commit-each-batch`` — the same with ``commit_every_ms = 1``: a transaction per
                  consumed batch, what every batch costs when each one produces a trigger;
* ``confluent-x2`` — two ``driftline run`` processes of one consumer group (``--instance 0/1``),
                  sharing the partitions, the realistic config (events/s of the pair);
* ``confluent-workers2``, ``confluent-workers3`` — ``driftline run --workers 2`` (3): the same
                  engines under one supervisor,
                  counted on its one merged ``/metrics``;
* ``decoder``   — the ceiling the benchmark used before: the consumer as the engine configures
                  it, decoding with the engine's own ``InputDecoder``, nothing more;
* ``confluent-psi`` — ``driftline run`` with the lighter ``psi`` config (PSI only, no drift rule);
* ``faust``     — ``driftline run --engine faust`` with the ``psi`` config;
* ``confluent@<ref>`` — with ``--compare-ref``: the realistic run from a git worktree of <ref>;
                  the latency is then measured for <ref> too, under the same load, the two trees in
                  turns (A B B A, half the samples a turn: a fresh broker's first run is its slowest).

Time: from subscribe (the ceiling's ``subscribe()``; the engines' first log line after it,
"consuming …" for the default engine, "assigned partitions" for Faust) to the moment
``driftline_predictions_total + driftline_labels_total`` on the engine's ``/metrics`` (polled every
0.1 s for the few families it reads, ``?name[]=``; the ceiling counts itself) reaches ``--measure-fraction`` (0.99) of the backlog, or
the events before its labels stamped after every prediction of their partition, if fewer (a
label delay's worth of each model's labels): the engine holds those ``engine.max_idle_ms`` (2 s)
for predictions that might still come, and a paused partition's next ones as long again, a
wait at the end of any finite backlog, not a rate (each run is still checked to process every
event). Peak RSS: the process's ``VmHWM`` then.

Latency under load. An engine with the realistic config plus a small model ``lat`` (window 20,
judged at every labelled prediction, rule accuracy < 0.5) on fresh topics, while a producer
process writes the realistic stream (3 models, 20 features, each label 1 s after its
prediction, keyed by model as the event contract asks: one model on each partition) at ``--latency-rate`` events/s,
by default half the ``confluent`` median of this run. ``lat`` gets 31 predictions and 30 labels
(20 right, 10 wrong: accuracy 0.5, no breach); then the 31st label, wrong, is produced at wall
time t0 and a read_committed consumer of the triggers topic notes when the trigger is visible:
latency = seen - t0, ``--latency-samples`` samples (100 by default, about 4 minutes; the first once the
engine keeps up with the load: its consumer lag at most a tenth of a second of it, and, in the first
latency run on the broker, after ``--latency-warmup`` seconds (180) of samples reported apart: a
fresh broker's JVM compiles the paths the load takes over its first minutes under it, and
commits and triggers take longer meanwhile, which no long-running broker shows), p50/p99 and
how many took over 100 and 200 ms (of 100 samples the p99 is the second slowest: one stall moves
it, the counts show how many there were); with the engine's CPU time per second of the samples
(cores) and its commits, so a latency bought with CPU shows, the size of its checkpoints at the
end (the load's ids fill the de-duplication horizon, 600 s, as a run of about 80 samples lasts),
and the machine's load average at the first sample and after the last (the broker, the load and
the engine make up to about 2 of it; more is other work competing for the cores).
``--latency-workers N`` puts ``driftline run --workers N`` under the load (its CPU is the
supervisor's and the engines' together).

Memory. ``--memory-models`` models × ``--memory-features`` features (PSI each, accuracy, ADWIN, a
rule), ``--memory-per-model`` predictions and labels each, consumed by ``driftline run``; peak RSS
(VmHWM), the last checkpoint size and pending predictions.

``--profile`` runs the realistic engine once more in this process over the whole backlog, under
cProfile (``--profile gc``: without it, timing the cyclic GC; ``py-spy record`` around that run
gives the profile without cProfile's per-call overhead).
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

from benchmarks._common import progress, ref_worktree, table  # noqa: E402
from benchmarks._configs import FEATURES, MODELS, models_toml  # noqa: E402
from benchmarks._kafka_load import (create_topics, delete_topics_with_prefix, labels_after_last_prediction,  # noqa: E402
                                    metric_sum, produce_backlog, scrape, vm_hwm_bytes)

MB = 1 << 20

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

#: run kind -> (engine, config kind, commit_every_ms or None for --commit-every-ms, instances)
ENGINE_RUNS = {
    "confluent": ("confluent", "realistic", None, 1),
    "confluent-commit-each-batch": ("confluent", "realistic", 1, 1),
    "confluent-x2": ("confluent", "realistic", None, 2),
    "confluent-workers2": ("confluent", "realistic", None, 1),
    "confluent-workers3": ("confluent", "realistic", None, 1),
    "confluent-psi": ("confluent", "psi", None, 1),
    "faust": ("faust", "psi", None, 1),
}
#: run kind -> ``driftline run --workers`` (one supervisor process; else one engine per instance)
WORKERS = {"confluent-workers2": 2, "confluent-workers3": 3}
DEFAULT_RUNS = "ceiling,confluent,confluent-commit-each-batch,decoder,confluent-psi,faust"

STATE_MAX_BYTES = 0  # > 0: state topics allow messages this large, and the engine may produce them
POLL_TIMEOUT_MS = 0  # > 0: the engines' engine.poll_timeout_ms (else its default)
BATCH_WAIT_MS = -1  # >= 0: the engines' engine.batch_wait_ms (else its default)


def _q(value) -> str:
    return json.dumps(value)


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
{f"poll_timeout_ms = {POLL_TIMEOUT_MS}" if POLL_TIMEOUT_MS else ""}
{f"batch_wait_ms = {BATCH_WAIT_MS}" if BATCH_WAIT_MS >= 0 else ""}

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

    def __init__(self, config: Path, engine: str, port: int, cwd: Path | None = None, instance: str = "0",
                 workers: int = 1):
        env = dict(os.environ)
        if cwd is not None:  # another checkout: its code first on the path
            env["PYTHONPATH"] = str(cwd)
        self.address = f"127.0.0.1:{port}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys; from streams.cli.main import main; "
                                      "sys.exit(main())", "run", "--config", str(config), "--engine", engine,
                                      "--instance", instance, *(["--workers", str(workers)] if workers > 1 else [])],
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

    #: the families :meth:`sample` reads
    PROGRESS = ("driftline_predictions_total", "driftline_labels_total", "driftline_checkpoint_bytes",
                "driftline_pending_predictions")

    def metrics(self, names: tuple[str, ...] = ()) -> str | None:
        try:
            return scrape(self.address, names)
        except OSError:
            return None

    @staticmethod
    def processed(text: str, model: str | None = None) -> float:
        labels = {"model": model} if model else {}
        return metric_sum(text, "driftline_predictions_total", **labels) + metric_sum(
            text, "driftline_labels_total", **labels)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"engine exited with {self.proc.returncode}:\n" + "\n".join(self.tail))

    def sample(self, model: str | None = None) -> float | None:
        """Events processed so far (None: /metrics not answering yet); notes checkpoint and pending."""
        self.check_alive()
        text = self.metrics(self.PROGRESS)
        if text is None:
            return None
        self.max_checkpoint = max(self.max_checkpoint, metric_sum(text, "driftline_checkpoint_bytes"))
        self.max_pending = max(self.max_pending, metric_sum(text, "driftline_pending_predictions"))
        return self.processed(text, model)

    def wait_processed(self, expected: int, timeout: float, label: str = "", model: str | None = None) -> float | None:
        """Wait until the engine has processed ``expected`` events; monotonic time then, or None."""
        return wait_all([self], expected, timeout, label, model)

    def rss(self) -> int:
        """Peak RSS of the process, plus its children's with ``--workers`` (each is an engine)."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                children = [int(pid) for pid in f.read().split()]
        except OSError:
            children = []
        return vm_hwm_bytes(self.proc.pid) + sum(vm_hwm_bytes(pid) for pid in children)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_all(procs: list[EngineProcess], expected: int, timeout: float, label: str = "",
             model: str | None = None) -> float | None:
    """Wait until the engines together have processed ``expected`` events; monotonic time then, or None."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        samples = [p.sample(model) for p in procs]
        now = time.monotonic()
        done = sum(s or 0 for s in samples)
        if done >= expected:
            return now
        if label and now - last_report > 5:
            last_report = now
            progress(f"    {label}: {done:,.0f}/{expected:,} events ({now - procs[0].started:.0f}s)")
        time.sleep(0.1)
    return None


def run_engine(kind: str, args, prefix: str, inputs: tuple[str, str], expected: int, round_no: int,
               tmp: Path, worktree: Path | None) -> dict:
    engine, config_kind, commit_every_ms, instances = ENGINE_RUNS[kind.split("@")[0]]
    name = f"{kind.replace('@', '-at-').replace('~', '-').replace('^', '-')}-r{round_no}"
    procs = []
    try:
        for instance in range(instances):
            port = free_port()
            cfg = write_config(tmp / f"{name}-{instance}.toml", args.bootstrap, prefix, name, inputs,
                               models_toml(MODELS, FEATURES, config_kind) + LATENCY_MODEL,
                               commit_every_ms or args.commit_every_ms, port, args.partitions)
            procs.append(EngineProcess(cfg, engine, port, cwd=worktree if "@" in kind else None,
                                       instance=str(instance), workers=WORKERS.get(kind, 1)))
        done = wait_all(procs, measured(args, expected), args.timeout, label=f"round {round_no} {kind}")
        if done is not None and wait_all(procs, expected, 30) is None:
            progress(f"    {kind}: not every event processed 30 s after {measured(args, expected):,} were")
        rss = max(p.rss() for p in procs)
        marks = [p.marks.get("consuming ") or p.marks.get("assigned partitions") or p.started for p in procs]
        texts = [p.metrics() or "" for p in procs]
    finally:
        codes = [p.stop() for p in procs]
    extra = {"warnings": sum(p.warning_count for p in procs),
             "last_warnings": [w for p in procs for w in p.warnings],
             "max_checkpoint_bytes": sum(p.max_checkpoint for p in procs),
             "max_pending": sum(p.max_pending for p in procs),
             "commit_seconds": sum(metric_sum(t, "driftline_transaction_commit_seconds_sum") for t in texts),
             "commits": sum(metric_sum(t, "driftline_transaction_commit_seconds_count") for t in texts)}
    if extra["warnings"]:
        progress(f"    {kind}: {extra['warnings']} warning lines, e.g. {extra['last_warnings'][-1]}")
    if done is None:
        processed = sum(EngineProcess.processed(t) for t in texts)
        return {"kind": kind, "seconds": None, "processed": processed, "rss": rss, "exit": codes,
                "note": f"not done after {args.timeout:.0f}s ({processed:,.0f}/{expected:,})", **extra}
    return {"kind": kind, "seconds": done - min(marks), "from_start": done - procs[0].started, "rss": rss,
            "exit": codes, "triggers": sum(metric_sum(t, "driftline_triggers_total") for t in texts), **extra}


# -- the ceilings -----------------------------------------------------------------------------
def ceiling_worker(bootstrap: str, group: str, topics: list[str], expected: int, measured: int) -> None:
    """The ceiling, in its own process: the plain consumer a user would write. Prints JSON."""
    import orjson

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    count = invalid = 0
    first = done_at = None
    started = time.perf_counter()
    consumer.subscribe(topics)
    # -- the loop a user writes: batch consume, parse, check the ids --
    while count + invalid < expected:
        for msg in consumer.consume(5000, 1.0):
            if first is None:
                first = time.perf_counter()
            if msg.error():
                continue
            event = orjson.loads(msg.value())
            if isinstance(event, dict) and event.get("prediction_id") and event.get("model_id"):
                count += 1
            else:
                invalid += 1
        if done_at is None and count + invalid >= measured:
            done_at = time.perf_counter()
    seconds = done_at - started
    consumer.close()
    print(json.dumps({"seconds": seconds, "first": first - started, "count": count, "invalid": invalid,
                      "rss": vm_hwm_bytes(os.getpid())}))


def decoder_worker(bootstrap: str, config_path: str, expected: int, measured: int) -> None:
    """The earlier ceiling: the engine's consumer settings and its InputDecoder, nothing else."""
    from streams.core.codecs import InvalidEvent
    from streams.core.config import load_config
    from streams.core.monitor import InputDecoder

    config = load_config(config_path)
    decode = InputDecoder(config)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": config.engine.group_id,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "partition.assignment.strategy": "range",
                         "enable.partition.eof": False})
    topics = [config.topics.predictions, config.topics.labels]
    count = invalid = 0
    done_at = None
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
        if done_at is None and count + invalid >= measured:
            done_at = time.perf_counter()
    seconds = done_at - started
    consumer.close()
    print(json.dumps({"seconds": seconds, "count": count, "invalid": invalid, "rss": vm_hwm_bytes(os.getpid())}))


def measured(args, expected: int) -> int:
    """The events after which a run's clock stops (see the module docstring)."""
    tail = labels_after_last_prediction(expected // 2 // len(MODELS), len(MODELS), args.event_rate, args.label_delay_ms)
    return min(int(expected * args.measure_fraction), expected - tail)


def run_worker(kind: str, args, prefix: str, inputs: tuple[str, str], expected: int, round_no: int, tmp: Path) -> dict:
    name = f"{kind}-r{round_no}"
    if kind == "ceiling":
        command = ["--ceiling-worker", f"{prefix}{name}", "--topics", ",".join(inputs)]
    else:
        cfg = write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                           models_toml(MODELS, FEATURES, "realistic") + LATENCY_MODEL, args.commit_every_ms,
                           free_port(), args.partitions)
        command = ["--decoder-worker", str(cfg)]
    out = subprocess.run([sys.executable, __file__, *command, "--events", str(expected), "--bootstrap", args.bootstrap,
                          "--measured", str(measured(args, expected))],
                         capture_output=True, text=True, timeout=args.timeout)
    if out.returncode:
        raise RuntimeError(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["invalid"]:
        raise RuntimeError(f"{kind}: {result['invalid']} messages failed the check")
    return {"kind": kind, "seconds": result["seconds"], "rss": result["rss"], "exit": 0}


# -- latency under load -------------------------------------------------------------------------
def load_worker(bootstrap: str, topics: list[str], rate: float, seconds: float) -> None:
    """Produce the realistic stream at ``rate`` events/s (half predictions, half their labels 1 s
    later; predictions alone in the first second) for ``seconds``, with wall-clock timestamps, each event keyed
    by its model, as the event contract asks (the three models land on one partition each)."""
    import numpy as np

    rng = np.random.default_rng(7)
    fragments = [msgspec.json.encode(dict(zip(FEATURES, row))) for row in rng.normal(size=(4096, len(FEATURES))).round(5).tolist()]
    # As cheap as a fire-and-forget producer gets (the load shares the engine's machine): no
    # delivery report per message (librdkafka hands each one to poll() otherwise, which cost
    # more than producing), batches as the model servers' PredictionLogger makes them.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random",
                         "queue.buffering.max.messages": 1_000_000, "delivery.report.only.error": True})
    waiting: deque[tuple[float, bytes, bytes]] = deque()  # (due, key, label message)
    # Predictions at rate / 2, each one's label 1 s after it: both streams steady, the labels
    # from the second second on. Each event is sent by its place in that schedule, so a producer
    # that fell behind catches up in the same mix rather than in a burst of one kind.
    interval = 2.0 / rate
    started = time.monotonic()
    sent = i = 0
    while True:
        now = time.monotonic()
        if now - started > seconds:
            break
        wall_ms = int(time.time() * 1000)
        while True:
            at = started + i * interval  # the next prediction's place in the schedule
            if waiting and waiting[0][0] <= min(at, now):
                _, key, message = waiting.popleft()
                producer.produce(topics[1], message.replace(b"@TS@", b"%d" % wall_ms), key=key)
            elif at <= now:
                key = MODELS[i % len(MODELS)].encode()  # the model id
                pid = b"%s-%d" % (key, i)
                prediction = i % 2
                producer.produce(topics[0], b'{"prediction_id":"%s","model_id":"%s","model_version":"v1",'
                                            b'"timestamp":%d,"features":%s,"prediction":%d,"score":0.5}'
                                 % (pid, key, wall_ms, fragments[i % len(fragments)], prediction), key=key)
                label = prediction if i % 10 else 1 - prediction  # 90% correct
                waiting.append((at + 1.0, key, b'{"prediction_id":"%s","model_id":"%s","label":%d,"timestamp":@TS@}'
                                % (pid, key, label)))
                i += 1
            else:
                break
            sent += 1
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)
    print(json.dumps({"sent": sent, "seconds": time.monotonic() - started}))


class TriggerReader:
    """A read_committed consumer of the triggers topic, noting when each trigger becomes visible."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  # the broker answers an empty fetch after 5 ms, not 500: a
                                  # trigger committed meanwhile is fetched within that
                                  "fetch.wait.max.ms": 5, "enable.partition.eof": False})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.seen: list[tuple[float, str, str]] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            # poll, not consume(n, timeout): that waits for n messages or the whole timeout, and
            # would add its wait to the latency measured
            msg = self.consumer.poll(0.05)
            if msg is not None and not msg.error():
                trigger = msgspec.json.decode(msg.value())
                self.seen.append((time.time(), trigger["model_id"], trigger["trigger_id"]))

    def lat_triggers(self) -> int:
        return sum(1 for _, model, _ in self.seen if model == "lat")

    def close(self) -> None:
        self.stopping = True
        self.thread.join()
        self.consumer.close()


def measure_latency(args, prefix: str, tmp: Path, rate: float, worktree: Path | None = None,
                    count: int | None = None, block: str = "") -> dict:
    """``count`` latency samples (``--latency-samples``) of this tree's engine or ``worktree``'s,
    on topics of their own (``block`` tells apart the runs of one tree)."""
    name = ("latency" if worktree is None else "latency-ref") + block
    count = count or args.latency_samples
    inputs = (f"{prefix}{name}-predictions", f"{prefix}{name}-labels")
    create_topics(args.bootstrap, list(inputs), args.partitions)
    create_topics(args.bootstrap, [f"{prefix}{name}-triggers"], 1)
    port = free_port()
    cfg = write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                       models_toml(MODELS, FEATURES, "realistic") + LATENCY_MODEL, args.commit_every_ms, port,
                       args.partitions)
    reader = TriggerReader(args.bootstrap, f"{prefix}{name}-triggers")
    proc = EngineProcess(cfg, "confluent", port, cwd=worktree, workers=args.latency_workers)
    producer = Producer({"bootstrap.servers": args.bootstrap, "partitioner": "murmur2_random", "linger.ms": 0})
    enc = msgspec.json.Encoder()
    samples: list[float] = []
    behind = None  # why the samples stopped early: the engine fell behind the load
    load = None
    try:
        deadline = time.monotonic() + 60
        while "assigned partitions" not in proc.marks or proc.metrics() is None:
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                raise RuntimeError("latency engine did not start:\n" + "\n".join(proc.tail))
            time.sleep(0.1)
        if rate > 0:
            load = subprocess.Popen([sys.executable, __file__, "--load-worker", str(rate), "--topics", ",".join(inputs),
                                     "--bootstrap", args.bootstrap, "--events", str(10 ** 9)],
                                    stdout=subprocess.PIPE, text=True)
        time.sleep(5.0)  # the load's labels start after 1 s; the engine settles into it
        settled_after = settle(proc, rate) if rate > 0 else 0.0
        settled_at = samples_from = time.monotonic()
        # A fresh broker's first minutes under a load are its slowest (its JVM compiles the paths
        # the load takes): the first run on this broker takes its samples of those apart
        # (``cold``), then its own.
        warm_until = time.monotonic() + (0.0 if args.broker_warm else args.latency_warmup)
        args.broker_warm = True
        cold: list[float] = []
        measuring, k = False, -1
        # the rates and CPU from the first sample on (from here if the loop stops before it)
        start = lambda: (proc.sample() or 0.0, time.monotonic(), cpu_seconds(proc.proc.pid), os.getloadavg()[0])  # noqa: E731
        load_start, load_start_t, cpu_start, loadavg_start = start()
        while len(samples) < count:
            k += 1
            if not measuring and time.monotonic() >= warm_until:
                measuring = True
                load_start, load_start_t, cpu_start, loadavg_start = start()
                samples_from = load_start_t
            now = int(time.time() * 1000)
            ids = [f"lat-{k}-{j}" for j in range(31)]
            base = proc.sample("lat") or 0.0
            for pid in ids:
                producer.produce(inputs[0], enc.encode({"prediction_id": pid, "model_id": "lat", "timestamp": now,
                                                        "prediction": 1}), key=b"lat")
            producer.flush(10)
            if proc.wait_processed(base + 31, 30, model="lat") is None:
                behind = f"sample {k}'s predictions not processed within 30 s"
                break
            for j, pid in enumerate(ids[:30]):  # 20 right (re-arm), 10 wrong: accuracy 0.5, no breach
                producer.produce(inputs[1], enc.encode({"prediction_id": pid, "model_id": "lat", "timestamp": now,
                                                        "label": 1 if j < 20 else 0}), key=b"lat")
            producer.flush(10)
            if proc.wait_processed(base + 61, 30, model="lat") is None:
                behind = f"sample {k}'s labels not processed within 30 s"
                break
            time.sleep(args.commit_every_ms / 1000 + 0.2)  # any trigger of the above is visible by now
            before = reader.lat_triggers()
            t0 = time.time()
            producer.produce(inputs[1], enc.encode({"prediction_id": ids[30], "model_id": "lat", "timestamp": now,
                                                    "label": 0}), key=b"lat")
            producer.flush(10)
            wait_until = time.monotonic() + 30
            while reader.lat_triggers() == before and time.monotonic() < wait_until:
                time.sleep(0.001)
            if reader.lat_triggers() == before:
                behind = f"no trigger within 30 s for sample {k}"
                break
            (samples if measuring else cold).append([seen for seen, model, _ in reader.seen if model == "lat"][before] - t0)
            if not measuring:
                if len(cold) % 10 == 0:
                    progress(f"    the broker warming up: {len(cold)} samples, p50 {statistics.median(cold) * 1000:.0f} ms")
                continue
            if os.environ.get("DRIFTLINE_LAT_TRACE"):
                open(os.environ["DRIFTLINE_LAT_TRACE"], "a").write(f"SAMPLE t0={t0:.4f} seen={t0 + samples[-1]:.4f} lat={samples[-1] * 1000:.1f}\n")
            if len(samples) % 10 == 0:
                progress(f"    latency sample {len(samples)}/{count}: p50 so far "
                         f"{statistics.median(samples) * 1000:.0f} ms")
        elapsed = time.monotonic() - load_start_t
        consumed = ((proc.sample() or 0.0) - load_start) / elapsed
        cpu = (cpu_seconds(proc.proc.pid) - cpu_start) / elapsed
        text = proc.metrics() or ""
        lag_ok = load is None or load.poll() is None
        loadavg_end = os.getloadavg()[0]
    finally:
        if load is not None and load.poll() is None:
            load.send_signal(signal.SIGTERM)
            load.wait(30)
        proc.stop()
        reader.close()
    if not samples:
        raise RuntimeError(f"no latency sample: the engine fell behind the load ({behind})")
    if behind:
        progress(f"    the engine fell behind the load ({behind}): {len(samples)} samples kept")
    in_order = [round(x * 1000, 1) for x in samples]  # ms, as measured: a long run shows any drift
    return {**_spread(in_order), "cold": _spread([round(x * 1000, 1) for x in cold]) if cold else None, "rate": rate, "consumed_rate": consumed, "load_running": lag_ok, "fell_behind": behind,
            "settled_after": settled_after,
            # seconds from the load's start to the first sample
            "samples_from": None if settled_after is None else settled_after + 5 + samples_from - settled_at,
            "loadavg": [round(loadavg_start, 2), round(loadavg_end, 2)],
            "pending": proc.max_pending, "engine_cpu": cpu,
            "commits": metric_sum(text, "driftline_transaction_commit_seconds_count"),
            "triggers": metric_sum(text, "driftline_triggers_total"),
            "checkpoint_mb": metric_sum(text, "driftline_checkpoint_bytes") / 1e6}


def _spread(in_order_ms: list[float]) -> dict:
    """The samples (ms, in the order taken), their count, p50, p99, min and max (s)."""
    ordered = sorted(in_order_ms)
    pct = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] / 1000  # noqa: E731
    return {"samples": len(ordered), "in_order_ms": in_order_ms, "p50": pct(0.5), "p99": pct(0.99),
            "max": ordered[-1] / 1000, "min": ordered[0] / 1000}


def latency_in_turns(args, prefix: str, tmp: Path, rate: float, worktree: Path) -> tuple[dict, dict]:
    """This tree's latency and ``worktree``'s, in turns, A B B A, half the samples a turn: the
    first run on a fresh broker is the slowest and the next ones quicker, so a ref measured
    after this tree only would be favoured. Each tree's two runs are reported as one."""
    first, second = args.latency_samples - args.latency_samples // 2, args.latency_samples // 2
    if not second:
        return measure_latency(args, prefix, tmp, rate), measure_latency(args, prefix, tmp, rate, worktree)
    runs = {}
    for turn, (tree, count) in enumerate([(None, first), (worktree, first), (worktree, second), (None, second)]):
        progress(f"  turn {turn + 1}/4: {'this tree' if tree is None else args.compare_ref}, {count} samples")
        runs.setdefault(tree, []).append(measure_latency(args, prefix, tmp, rate, tree, count=count, block=f"-{turn + 1}"))
    return _together(*runs[None]), _together(*runs[worktree])


def _together(a: dict, b: dict) -> dict:
    """Two latency runs of one tree as one: their samples in the order taken, rates and CPU
    weighted by samples, counts summed, the rest of the pair's first and last."""
    w = a["samples"] / (a["samples"] + b["samples"])
    mean = lambda key: w * a[key] + (1 - w) * b[key]  # noqa: E731
    return {**_spread(a["in_order_ms"] + b["in_order_ms"]), "cold": a["cold"] or b["cold"], "rate": a["rate"],
            "consumed_rate": mean("consumed_rate"), "load_running": a["load_running"] and b["load_running"],
            "fell_behind": a["fell_behind"] or b["fell_behind"],
            "samples_from": a["samples_from"] if b["samples_from"] is not None else None,
            "settled_after": None if None in (a["settled_after"], b["settled_after"])
            else max(a["settled_after"], b["settled_after"]),
            "loadavg": [a["loadavg"][0], b["loadavg"][1]], "pending": max(a["pending"], b["pending"]),
            "engine_cpu": mean("engine_cpu"), "commits": a["commits"] + b["commits"],
            "triggers": a["triggers"] + b["triggers"], "checkpoint_mb": max(a["checkpoint_mb"], b["checkpoint_mb"])}


def settle(proc: EngineProcess, rate: float, timeout: float = 60.0) -> float | None:
    """Wait until the engine keeps up with the load: its consumer lag (exported at each commit)
    at most a tenth of a second of the load in two scrapes a second apart. A fresh engine builds
    its drift references and fills its windows in its first seconds and falls behind meanwhile;
    samples taken then measure that backlog, not the latency at this rate. Returns the seconds
    waited, or None if the lag never fell that low within ``timeout`` (the samples are taken
    anyway, and the report says so)."""
    started, calm = time.monotonic(), 0
    while time.monotonic() - started < timeout:
        text = proc.metrics(("driftline_consumer_lag_messages",))
        exported = text is not None and "driftline_consumer_lag_messages{" in text  # after a commit
        calm = calm + 1 if exported and metric_sum(text, "driftline_consumer_lag_messages") <= rate / 10 else 0
        if calm >= 2:
            return time.monotonic() - started
        time.sleep(1.0)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and the children it runs (a ``--workers``
    supervisor's engines) (Linux). A process or thread that ends while it is read (librdkafka's
    threads come and go) counts what could be read of it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # ended
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = []
    for task in tasks:
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended: it runs no child
            continue
    return own + sum(cpu_seconds(child) for child in children)


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
                       models_toml(models, features, "psi"), args.commit_every_ms, port, args.partitions)
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
    """The realistic engine in this process until it processed the backlog: under cProfile, or
    timing the cyclic GC only."""
    from streams.core.config import load_config
    from streams.runtime.engine import Engine

    name = "profile"
    cfg = load_config(write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs,
                                   models_toml(MODELS, FEATURES, "realistic") + LATENCY_MODEL, args.commit_every_ms,
                                   free_port(), args.partitions))
    gc.set_threshold(50_000)  # as `driftline run` sets it
    engine = Engine(cfg)
    registry = engine.exporter.registry

    def processed() -> float:
        return sum(sample.value for family in registry.collect() for sample in family.samples
                   if sample.name in ("driftline_predictions_total", "driftline_labels_total"))

    def watch() -> None:
        while True:
            if processed() >= expected:
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
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    return head + out.getvalue()


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"))
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog: input events (half labels)")
    parser.add_argument("--event-rate", type=float, default=15_000.0,
                        help="backlog: predictions a second of each model, in event time (default 15,000)")
    parser.add_argument("--label-delay-ms", type=int, default=1000,
                        help="backlog: each label's event time after its prediction's (default 1000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default=DEFAULT_RUNS,
                        help=f"comma-separated runs: ceiling, decoder, {', '.join(ENGINE_RUNS)}")
    parser.add_argument("--compare-ref", help="also run the realistic engine from a worktree of this git ref")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--state-max-bytes", type=int, default=0,
                        help="create the state topics with max.message.bytes this large and set the engine's "
                             "message.max.bytes to it (default 0: Kafka's 1 MB, as a user's setup has it)")
    parser.add_argument("--compression", default="none",
                        help="of the backlog: none (default), lz4, zstd, … (the Faust engine's aiokafka needs the "
                             "lz4 package for lz4)")
    parser.add_argument("--commit-every-ms", type=int, default=1000)
    parser.add_argument("--batch-wait-ms", type=int, default=-1,
                        help="the engines' engine.batch_wait_ms (default: the engine's own)")
    parser.add_argument("--poll-timeout-ms", type=int, default=0,
                        help="the engines' engine.poll_timeout_ms (default: the engine's own, 200)")
    parser.add_argument("--measure-fraction", type=float, default=0.99,
                        help="the clock stops when this fraction of the backlog is processed (see the docstring)")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--latency-rate", type=float,
                        help="events/s of the load during the latency samples (default: half the confluent median "
                             "of this run; 0: idle topics)")
    parser.add_argument("--latency-warmup", type=float, default=180.0,
                        help="seconds of the first latency run's samples taken apart, on a broker still warming up "
                             "(see the docstring; 0: none)")
    parser.add_argument("--latency-workers", type=int, default=1,
                        help="the engine under that load: driftline run --workers N (default 1: one engine)")
    parser.add_argument("--memory-models", type=int, default=100)
    parser.add_argument("--memory-features", type=int, default=50)
    parser.add_argument("--memory-per-model", type=int, default=2000)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--profile", nargs="?", const="cprofile", choices=["cprofile", "gc"],
                        help="run the realistic engine in-process once more: under cProfile, or timing the cyclic GC")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--ceiling-worker", help=argparse.SUPPRESS)
    parser.add_argument("--decoder-worker", help=argparse.SUPPRESS)
    parser.add_argument("--load-worker", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--topics", help=argparse.SUPPRESS)
    parser.add_argument("--measured", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.broker_warm = False  # set by the first latency run (see --latency-warmup)
    if args.ceiling_worker:
        ceiling_worker(args.bootstrap, args.ceiling_worker, args.topics.split(","), args.events, args.measured)
        return 0
    if args.decoder_worker:
        decoder_worker(args.bootstrap, args.decoder_worker, args.events, args.measured)
        return 0
    if args.load_worker is not None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        load_worker(args.bootstrap, args.topics.split(","), args.load_worker, float(args.events))
        return 0

    global STATE_MAX_BYTES, POLL_TIMEOUT_MS, BATCH_WAIT_MS
    STATE_MAX_BYTES, POLL_TIMEOUT_MS, BATCH_WAIT_MS = args.state_max_bytes, args.poll_timeout_ms, args.batch_wait_ms
    prefix = f"bench-engine-{os.getpid()}-"
    kinds = [k.strip() for k in args.engines.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in ("ceiling", "decoder", *ENGINE_RUNS)]
    if unknown:
        parser.error(f"unknown runs: {', '.join(unknown)}")
    results: dict[str, list[dict]] = {}
    latency = latency_ref = memory = None
    profile_text = ""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name, ref_worktree(args.compare_ref, Path(tmp_name)) as worktree:
        tmp = Path(tmp_name)
        try:
            if worktree is not None:
                kinds.insert(kinds.index("confluent") + 1 if "confluent" in kinds else len(kinds),
                             f"confluent@{args.compare_ref}")
            inputs = (f"{prefix}predictions", f"{prefix}labels")
            create_topics(args.bootstrap, list(inputs), args.partitions)
            per_model = args.events // 2 // len(MODELS)
            progress(f"producing a backlog of {per_model * len(MODELS) * 2:,} events ({len(MODELS)} models × "
                     f"{per_model:,} predictions with {len(FEATURES)} features + their labels) to {args.bootstrap} …")
            expected = produce_backlog(args.bootstrap, inputs[0], inputs[1], MODELS, FEATURES, per_model,
                                       compression=args.compression, event_rate=args.event_rate,
                                       label_delay_ms=args.label_delay_ms)
            results = {k: [] for k in kinds}
            for r in range(1, args.repeats + 1):
                turn = (r - 1) % max(1, len(kinds))  # no runs at all: only the latency
                for kind in kinds[turn:] + kinds[:turn]:
                    if kind in ("ceiling", "decoder"):
                        res = run_worker(kind, args, prefix, inputs, expected, r, tmp)
                    else:
                        res = run_engine(kind, args, prefix, inputs, expected, r, tmp, worktree)
                    results[kind].append(res)
                    rate = f"{expected / res['seconds']:,.0f} events/s" if res.get("seconds") else res.get("note")
                    progress(f"  round {r}/{args.repeats} {kind}: {rate}, peak RSS {res['rss'] / MB:.0f} MB")
            if args.profile:
                profile_text = profile_in_process(args, prefix, inputs, expected, tmp)
            if not args.no_latency:
                rate = args.latency_rate
                if rate is None:
                    finished = [r["seconds"] for r in results.get("confluent", []) if r.get("seconds")]
                    rate = expected / statistics.median(finished) / 2 if finished else 30_000.0
                progress(f"latency: {args.latency_samples} samples under a load of {rate:,.0f} events/s, "
                         f"commit_every_ms={args.commit_every_ms} …")
                if worktree is None:
                    latency = measure_latency(args, prefix, tmp, rate)
                else:  # the same load, in turns
                    latency, latency_ref = latency_in_turns(args, prefix, tmp, rate, worktree)
            if not args.no_memory:
                memory = measure_memory(args, prefix, tmp)
        finally:
            if not args.keep_topics:
                deleted = delete_topics_with_prefix(args.bootstrap, prefix)
                progress(f"deleted {len(deleted)} topics starting with {prefix}")

    print(f"engine: backlog {expected:,} events ({len(MODELS)} models, {len(FEATURES)} numeric features each, "
          f"keyed by model, {args.event_rate:,.0f} predictions/s a model in event time, labels "
          f"{args.label_delay_ms:,} ms later), {args.partitions} partitions, commit_every_ms={args.commit_every_ms}; median of "
          f"{args.repeats}, interleaved (the order turned each round); python {platform.python_version()}, {os.cpu_count()} cpus; load average "
          f"before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    rows = []
    ceiling = None
    if results.get("ceiling") and all(r.get("seconds") for r in results["ceiling"]):
        ceiling = expected / statistics.median(r["seconds"] for r in results["ceiling"])
    for kind in kinds:
        runs = results.get(kind, [])
        finished = [r for r in runs if r.get("seconds")]
        if len(finished) < len(runs) or not runs:
            rows.append([kind, "not measured: " + "; ".join(r.get("note", "") for r in runs if not r.get("seconds")),
                         "", "", f"{max(r['rss'] for r in runs) / MB:.0f}" if runs else "", "", "", "", "", ""])
            continue
        rate = expected / statistics.median(r["seconds"] for r in finished)
        rates = sorted(expected / r["seconds"] for r in finished)
        engine_run = "from_start" in finished[0]
        commit_ms = (1000 * sum(r["commit_seconds"] for r in finished) / max(1, sum(r["commits"] for r in finished))
                     if engine_run else None)
        rows.append([kind, f"{rate:,.0f}", f"{rates[0]:,.0f}–{rates[-1]:,.0f}",
                     f"{rate / ceiling:.2f}" if ceiling else "—",
                     f"{statistics.median(r['rss'] for r in finished) / MB:.0f}",
                     f"{statistics.median(r['from_start'] for r in finished):.1f}" if engine_run else "—",
                     f"{statistics.median(r['commits'] for r in finished):,.0f} × {commit_ms:.1f}" if engine_run else "—",
                     f"{max(r['max_checkpoint_bytes'] for r in finished) / MB:.1f}" if engine_run else "—",
                     f"{max(r['max_pending'] for r in finished):,.0f}" if engine_run else "—",
                     str(sum(r["warnings"] for r in finished)) if engine_run else "—"])
    print(table(["run", "events/s (median)", "range", "× ceiling", "peak RSS MB", "s from process start",
                 "commits × ms", "max checkpoint MB", "max pending", "warning lines"], rows))
    med = {k: statistics.median(expected / r["seconds"] for r in v) for k, v in results.items()
           if v and all(r.get("seconds") for r in v)}
    if args.compare_ref and "confluent" in med and f"confluent@{args.compare_ref}" in med:
        print(f"confluent (this tree) / confluent@{args.compare_ref}: "
              f"{med['confluent'] / med[f'confluent@{args.compare_ref}']:.2f}×")
    for label, lat in (("", latency), (f" of {args.compare_ref}", latency_ref)):
        if not lat:
            continue
        print(f"\ntrigger latency{label} (label produced → trigger visible to read_committed), {lat['samples']} samples, "
              f"commit_every_ms={args.commit_every_ms}, under a load of {lat['rate']:,.0f} events/s (consumed "
              f"{lat['consumed_rate']:,.0f}/s meanwhile): p50 {lat['p50'] * 1000:.0f} ms, "
              f"p99 {lat['p99'] * 1000:.0f} ms (min {lat['min'] * 1000:.0f}, max {lat['max'] * 1000:.0f}; "
              f"{sum(x > 100 for x in lat['in_order_ms'])} over 100 ms, {sum(x > 200 for x in lat['in_order_ms'])} "
              f"over 200 ms); engine{f' (--workers {args.latency_workers})' if args.latency_workers > 1 else ''} "
              f"CPU {lat['engine_cpu']:.2f} cores, {lat['commits']:,.0f} commits and "
              f"{lat['triggers']:,.0f} triggers in its whole run, checkpoints {lat['checkpoint_mb']:.1f} MB at the end; "
              f"load average {lat['loadavg'][0]:.2f} at the first sample, {lat['loadavg'][1]:.2f} after the last "
              f"({os.cpu_count()} cores); "
              + (f"samples from {lat['samples_from']:.0f} s after the load began, once the engine kept up with it"
                 if lat["samples_from"] is not None else
                 "samples taken though the engine's lag stayed over a tenth of a second of the load for 60 s")
              + (f"; STOPPED EARLY: the engine fell behind the load ({lat['fell_behind']})" if lat["fell_behind"] else ""))
        if lat["cold"]:
            cold = lat["cold"]
            print(f"  apart, before them: {cold['samples']} samples in the broker's first {args.latency_warmup:.0f} s under "
                  f"the load: p50 {cold['p50'] * 1000:.0f} ms, p99 {cold['p99'] * 1000:.0f} ms (max {cold['max'] * 1000:.0f}; "
                  f"{sum(x > 100 for x in cold['in_order_ms'])} over 100 ms)")
    if memory:
        print(f"\nmemory: {args.memory_models} models × {args.memory_features} features (PSI each), "
              f"{memory['events']:,} events: peak RSS {memory['rss'] / MB:.0f} MB, "
              f"last checkpoints {memory['checkpoint_bytes'] / MB:.1f} MB, pending predictions {memory['pending']:,.0f}"
              + ("" if memory["done"] else " (NOT all events processed before the timeout)"))
    if profile_text:
        print("\n" + profile_text)
    if args.json:
        Path(args.json).write_text(json.dumps({"events": expected, "runs": results, "latency": latency,
                                               "latency_ref": latency_ref,
                                               "memory": memory}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
