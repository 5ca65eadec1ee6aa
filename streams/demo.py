"""``make demo``: the walking skeleton end to end on a real broker.

A river Hoeffding tree learns Agrawal's loan-approval concept; then the concept changes (Agrawal's
function 0 → 2) and the model keeps predicting with what it learnt. The demo starts
``driftline run``, produces the tree's real predictions and the delayed true labels to Kafka,
waits for the retrain trigger the accuracy drop causes, prints it, and shuts everything down.
Needs ``KAFKA_BOOTSTRAP_SERVERS`` (``make demo`` starts the local broker and sets it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from .codecs import Label, Prediction, encode_label, encode_prediction, format_timestamp

EVENTS = 6000
DRIFT_AT = 3000
LABEL_DELAY = 50  # a label follows its prediction after this many predictions
MODEL_ID = "loan-approval"

CONFIG = """
[kafka]
"bootstrap.servers" = "{bootstrap}"

[topics]
predictions = "demo-{run}-predictions"
labels = "demo-{run}-labels"
triggers = "demo-{run}-retrain-triggers"
dlq = "demo-{run}-dlq"
state = "demo-{run}-state"
partitions = 3

[engine]
group_id = "demo-{run}"
commit_every_ms = 500

[metrics]
address = "127.0.0.1:{metrics_port}"

[[models]]
id = "{model}"
window = {{ kind = "count", size = 500 }}
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 300
  cooldown_seconds = 3600
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.80
"""


def model_stream(events: int, drift_at: int, seed: int = 7):
    """Yield (features, prediction, label): a tree trained before the drift, scoring after it too."""
    from river import tree
    from river.datasets import synth

    model = tree.HoeffdingTreeClassifier(grace_period=100)
    for x, y in synth.Agrawal(classification_function=0, seed=seed).take(3000):
        model.learn_one(x, y)
    before = synth.Agrawal(classification_function=0, seed=seed + 1)
    after = synth.Agrawal(classification_function=2, seed=seed + 2)
    for x, y in before.take(drift_at):
        yield x, model.predict_one(x), y
    for x, y in after.take(events - drift_at):
        yield x, model.predict_one(x), y


def produce_stream(producer: Producer, topics: dict, start_ms: int) -> None:
    pending: list[Label] = []
    for i, (x, prediction, label) in enumerate(model_stream(EVENTS, DRIFT_AT)):
        ts = start_ms + i * 1000
        pid = f"p{i:06d}"
        features = {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in x.items()}
        event = Prediction(prediction_id=pid, model_id=MODEL_ID, timestamp=ts, prediction=int(prediction),
                           features=features, model_version="v1")
        producer.produce(topics["predictions"], encode_prediction(event), key=MODEL_ID)
        pending.append(Label(prediction_id=pid, model_id=MODEL_ID, label=int(label), timestamp=ts + LABEL_DELAY * 1000))
        if len(pending) > LABEL_DELAY:
            producer.produce(topics["labels"], encode_label(pending.pop(0)), key=MODEL_ID)
        producer.poll(0)
        if i % 1000 == 999:
            print(f"  produced {i + 1}/{EVENTS} predictions" + ("  (concept drift injected)" if i + 1 == DRIFT_AT else ""))
    for label in pending:
        producer.produce(topics["labels"], encode_label(label), key=MODEL_ID)
    producer.flush(30)


def wait_for_trigger(bootstrap: str, topic: str, timeout: float) -> dict | None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-reader-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                return json.loads(msg.value())
    finally:
        consumer.close()
    return None


def main() -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("demo: set KAFKA_BOOTSTRAP_SERVERS (make demo does)", file=sys.stderr)
        return 2
    from .kafka_local import _free_port

    run = uuid.uuid4().hex[:8]
    metrics_port = _free_port()
    config_text = CONFIG.format(bootstrap=bootstrap, run=run, metrics_port=metrics_port, model=MODEL_ID)
    config_path = Path(tempfile.mkdtemp(prefix="driftline-demo-")) / "driftline.toml"
    config_path.write_text(config_text)
    topics = {"predictions": f"demo-{run}-predictions", "labels": f"demo-{run}-labels"}
    print(f"demo: config {config_path}; starting driftline run")
    engine = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--config", str(config_path)])
    try:
        time.sleep(3)  # let the engine create the topics with their partition count
        print(f"demo: producing {EVENTS} predictions of a Hoeffding tree; concept drift at event {DRIFT_AT}")
        produce_stream(Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                                 "linger.ms": 10}), topics, start_ms=int(time.time() * 1000) - EVENTS * 1000)
        print("demo: waiting for the retrain trigger …")
        trigger = wait_for_trigger(bootstrap, f"demo-{run}-retrain-triggers", timeout=60)
        if trigger is None:
            print("demo: no trigger arrived within 60 s", file=sys.stderr)
            return 1
        print("demo: retrain trigger received:")
        print(json.dumps(trigger, indent=2))
        print(f"demo: metrics were at http://127.0.0.1:{metrics_port}/metrics")
        return 0
    finally:
        engine.send_signal(signal.SIGTERM)
        code = engine.wait(30)
        print(f"demo: driftline run stopped (exit {code})")


if __name__ == "__main__":
    sys.exit(main())
