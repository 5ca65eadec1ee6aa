"""Drive ``driftline run`` the way a user does: a config file, the CLI in a subprocess, real topics."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from retrain_trigger.events import load_trigger_schema
from streams.core.codecs import Label, Prediction, encode_label, encode_prediction
from streams.tools.kafka_local import _free_port

REPO = Path(__file__).resolve().parents[2]
TRIGGER_SCHEMA = jsonschema.Draft202012Validator(load_trigger_schema(), format_checker=jsonschema.FormatChecker())
#: The engines the end-to-end contract tests run against (``driftline run --engine …``).
ENGINES = ["confluent", "faust"]


@dataclass
class Deployment:
    """One config (unique topics and group) and the engines started with it."""

    bootstrap: str
    suffix: str
    tmp: Path
    models: str
    partitions: int = 3
    engine_extra: str = ""
    engine: str = "confluent"
    commit_every_ms: int = 300
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self):
        self.topics = {name: f"{name}-{self.suffix}" for name in
                       ("predictions", "labels", "retrain-triggers", "driftline-dlq", "driftline-state")}
        self.metrics_port = _free_port()
        self.config_path = self.tmp / "driftline.toml"
        self.config_path.write_text(f"""
[kafka]
"bootstrap.servers" = "{self.bootstrap}"
[topics]
predictions = "{self.topics['predictions']}"
labels = "{self.topics['labels']}"
triggers = "{self.topics['retrain-triggers']}"
dlq = "{self.topics['driftline-dlq']}"
state = "{self.topics['driftline-state']}"
partitions = {self.partitions}
[engine]
group_id = "group-{self.suffix}"
commit_every_ms = {self.commit_every_ms}
poll_timeout_ms = 100
{self.engine_extra}
[metrics]
address = "127.0.0.1:{self.metrics_port}"
# gauges set after every batch: the tests compare them as soon as the offsets are committed
# (the refresh interval itself is a unit test's)
refresh_ms = 0
{self.models}
""")

    def start(self, instance: str = "0", metrics_port: int | None = None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "streams.cli.main", "run", "--config", str(self.config_path), "--instance", instance,
                "--engine", self.engine]
        if metrics_port:
            argv += ["--metrics-address", f"127.0.0.1:{metrics_port}"]
        log = open(self.tmp / f"engine-{instance}-{len(self.processes)}.log", "wb")
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        self.wait_for_topics()
        return proc

    def wait_for_topics(self, timeout: float = 30) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if set(self.topics.values()) <= set(admin.list_topics(timeout=5).topics):
                return
            time.sleep(0.2)
        raise AssertionError(f"engine did not create its topics; see {self.tmp}")

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc.send_signal(sig)
        return proc.wait(timeout)

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("engine-*.log")))

    # -- traffic --------------------------------------------------------------------------
    def producer(self) -> Producer:
        # Idempotent, as PredictionLogger is: without it a batch retried on a just-created topic
        # (its leader not known yet) can land after later ones, and a run then sees another order.
        return Producer({"bootstrap.servers": self.bootstrap, "partitioner": "murmur2_random", "linger.ms": 5,
                         "enable.idempotence": True})

    def send(self, events: list, producer: Producer | None = None) -> None:
        """Produce events in order (Prediction, Label, or (topic, key, raw bytes))."""
        producer = producer or self.producer()
        for event in events:
            if isinstance(event, Prediction):
                producer.produce(self.topics["predictions"], encode_prediction(event), key=event.model_id)
            elif isinstance(event, Label):
                producer.produce(self.topics["labels"], encode_label(event), key=event.model_id)
            else:
                topic, key, raw = event
                producer.produce(self.topics[topic], raw, key=key)
            producer.poll(0)
        producer.flush(30)

    def read(self, topic: str, expected: int | None = None, timeout: float = 30, settle: float = 2.0,
             to_end: bool = False) -> list:
        """Messages of ``topic`` (read_committed). Waits for ``expected`` of them, then ``settle``
        seconds more to catch any extra; with ``expected=None`` reads for ``timeout`` seconds.
        ``to_end``: instead, reads until every partition's end (its last stable offset) has been
        reached, then ``settle`` seconds more, and fails if that takes longer than ``timeout``;
        for a topic whose producer has nothing left to send (its inputs all committed), where a
        fixed wait would only add time. ``topic``: one of the deployment's topics by its name in
        the config (``predictions``, ``retrain-triggers``, …), else a topic's full name."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                             "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                             "enable.auto.commit": False, "enable.partition.eof": to_end})
        name = self.topics.get(topic, topic)
        consumer.subscribe([name])
        partitions = len(consumer.list_topics(name, timeout=10).topics[name].partitions) if to_end else 0
        at_end: set[int] = set()
        messages = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for msg in consumer.consume(500, 0.2):
                    if not msg.error():
                        messages.append(msg)
                    elif msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                if expected is not None and len(messages) >= expected:
                    deadline = min(deadline, time.monotonic() + settle)
                    expected = None
                if to_end and partitions and len(at_end) == partitions:
                    deadline = min(deadline, time.monotonic() + settle)
                    to_end = False
        finally:
            consumer.close()
        assert not to_end, f"read {sorted(at_end)} of {name}'s {partitions} partitions to the end in {timeout} s"
        return messages

    def triggers(self, expected: int | None = None, timeout: float = 30, settle: float = 2.0,
                 to_end: bool = False) -> list[dict]:
        """The trigger events published so far; each one is checked against the shipped JSON Schema."""
        events = [json.loads(m.value()) for m in self.read("retrain-triggers", expected, timeout, settle, to_end)]
        for event in events:
            TRIGGER_SCHEMA.validate(event)
        return events

    def metrics(self, port: int | None = None) -> str:
        url = f"http://127.0.0.1:{port or self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def metric(self, name: str, port: int | None = None, **labels) -> float:
        """The value of one sample, or 0.0 when it is not exported yet."""
        for family in text_string_to_metric_families(self.metrics(port)):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == str(v) for k, v in labels.items()):
                    return sample.value
        return 0.0

    def wait_for_metric(self, name: str, value: float, timeout: float = 30, **labels) -> None:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                seen = self.metric(name, **labels)
            except OSError:
                seen = None
            if seen is not None and seen >= value:
                return
            time.sleep(0.2)
        raise AssertionError(f"{name}{labels} stayed at {seen}, expected >= {value}\n{self.logs()[-3000:]}")

    @property
    def group(self) -> str:
        """The engine's consumer group: Faust's is its app id, ``<engine.group_id>-faust``."""
        return f"group-{self.suffix}" + ("-faust" if self.engine == "faust" else "")

    def committed(self, topic: str, timeout: float = 30) -> int:
        """Sum of the group's committed offsets over the partitions of an input topic. Retries an
        error for ``timeout`` seconds (NOT_COORDINATOR while a fresh broker loads its offsets
        topic, and the like right after it starts)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        deadline = time.monotonic() + timeout
        try:
            parts = [TopicPartition(self.topics[topic], p) for p in range(self.partitions)]
            while True:
                try:
                    return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            consumer.close()

    def wait_until_committed(self, per_topic: int, timeout: float = 120) -> None:
        """Both inputs fully consumed and committed (labels alone may run ahead of predictions)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.committed("labels") >= per_topic and self.committed("predictions") >= per_topic:
                return
            time.sleep(0.5)
        raise AssertionError(f"not all {per_topic} events per topic were committed\n{self.logs()[-3000:]}")


def models_config(names: list[str]) -> str:
    """Models with an accuracy floor judged at every pair (rearm 0.9): the restart tests' config."""
    return "".join(f"""
[[models]]
id = "{name}"
window = {{ kind = "count", size = 200 }}
evaluate_every = 1
  [[models.rules]]
  name = "floor"
  min_samples = 200
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
    rearm = 0.9
""" for name in names)


def pair(i: int, model: str, correct: bool, start_ms: int = 1_700_000_000_000, label_delay_ms: int = 1000,
         version: str = "v1") -> tuple[Prediction, Label]:
    """The i-th prediction of ``model`` and its label, right or wrong."""
    ts = start_ms + i * 1000
    pid = f"{model}-{i:07d}"
    prediction = Prediction(prediction_id=pid, model_id=model, timestamp=ts, prediction=1,
                            features={"x": float(i % 7)}, model_version=version)
    label = Label(prediction_id=pid, model_id=model, label=1 if correct else 0, timestamp=ts + label_delay_ms)
    return prediction, label


def skip_faust_fetcher_loss(d: Deployment) -> None:
    """XFAIL (not pass) when the worker logged that some input offsets never reached it.

    Faust's fetcher can resume after a rebalance or a restart from messages fetched before it
    sought back to the committed offset, and skip events (faust-streaming#216; seen here about
    one run in five, one to sixty offsets). The engine seeks the partition back to them and
    logs "skipped by Faust's fetcher"; only if they still do not come within a minute does it
    give them up with "never reached the worker", and then this XFAILs. Every other difference
    still fails the test."""
    lost = [line for line in d.logs().splitlines() if "never reached the worker" in line and "WARNING" in line]
    if lost:
        pytest.xfail("input offsets never reached the Faust worker (faust-streaming#216): " + lost[0])
