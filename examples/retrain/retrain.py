"""Retrain a small river model from the data of the window that fired a trigger.

Run by the listener, which passes the trigger JSON on stdin::

    driftline triggers listen --bootstrap-servers 127.0.0.1:19092 \\
        --exec "python examples/retrain/retrain.py --model-dir models/"

1. Read the trigger; print its evidence.
2. Read the window back from Kafka by ``window.offsets`` (``<topic>:<partition>``: [first,
   last]): for a performance rule, labels, then the predictions they label from the same
   partition of the predictions topic (co-partitioned), looking back ``--lookback-seconds`` of
   broker time; for a drift rule, predictions, then the labels that have arrived for them.
3. Join them by ``prediction_id`` and train a Hoeffding tree on the features, measuring
   progressive (test-then-train) accuracy or MAE.
4. Save the model as ``<model-dir>/<model_id>/<new version>.pkl`` and print one JSON line with
   the new ``model_version``; with ``--emit-topic``, also produce that line to Kafka.

A trigger is retrained at most once: the new version is derived from the ``trigger_id``, and
when its model file exists the script prints the saved result instead of training again (so a
listener that dies mid-action and reruns it does no double work).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from river import metrics, tree

from retrain_trigger.events import TriggerEvent, decode_trigger
from retrain_trigger.listener import format_trigger
from streams.core.codecs import decode_label, decode_prediction


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
                        help="Kafka brokers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:19092)")
    parser.add_argument("--predictions-topic", default="predictions", help="predictions topic (default: predictions)")
    parser.add_argument("--labels-topic", default="labels", help="labels topic (default: labels)")
    parser.add_argument("--lookback-seconds", type=float, default=86400.0,
                        help="how far before the window's first label to look for its predictions (default: 86400)")
    parser.add_argument("--model-dir", default="models", help="where models are saved (default: models)")
    parser.add_argument("--emit-topic", help="also produce the new model version (JSON) to this topic")
    return parser.parse_args(argv)


def read_range(consumer: Consumer, partition: TopicPartition, last: int) -> list:
    """Messages of one partition from ``partition.offset`` to ``last`` inclusive (read_committed)."""
    consumer.assign([partition])
    messages = []
    while True:
        message = consumer.poll(5)
        if message is None:
            break  # nothing more within 5 s: the range ended in aborted or compacted records
        if message.error():
            continue
        if message.offset() > last:
            break
        messages.append(message)
        if message.offset() == last:
            break
    return messages


def read_window(trigger: TriggerEvent, args: argparse.Namespace) -> list[tuple[dict, object]]:
    """(features, label) pairs of the window's labelled predictions.

    A performance rule's window is labels (``labels:<p>``): their predictions are looked up
    before them. A drift rule's window is predictions (``predictions:<p>``): their labels are
    looked up after them (the ones that arrived by now; unlabelled predictions are left out).
    """
    consumer = Consumer({"bootstrap.servers": args.bootstrap_servers, "group.id": "driftline-retrain-example",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    pairs = []
    try:
        for key, (first, last) in trigger.window.offsets.items():
            topic, _, partition = key.rpartition(":")
            if topic not in (args.labels_topic, args.predictions_topic):
                continue
            is_labels = topic == args.labels_topic
            decode = decode_label if is_labels else decode_prediction
            window, oldest_ms = {}, None
            for message in read_range(consumer, TopicPartition(topic, int(partition), first), last):
                event = decode(message.value())
                if event.model_id == trigger.model_id:
                    window[event.prediction_id] = event
                    broker_ms = message.timestamp()[1]
                    oldest_ms = broker_ms if oldest_ms is None else min(oldest_ms, broker_ms)
            if not window:
                continue
            if is_labels:  # their predictions came before them
                since_ms = int(oldest_ms - args.lookback_seconds * 1000)
                found = scan(consumer, args.predictions_topic, int(partition), since_ms, set(window), decode_prediction)
                pairs.extend((dict(p.features), window[pid].label) for pid, p in found.items())
            else:  # their labels came after them
                found = scan(consumer, args.labels_topic, int(partition), oldest_ms, set(window), decode_label)
                pairs.extend((dict(window[pid].features), label.label) for pid, label in found.items())
    finally:
        consumer.close()
    return pairs


def scan(consumer: Consumer, topic: str, partition: int, since_ms: int, wanted: set, decode) -> dict:
    """The events of ``wanted`` prediction ids in one partition (co-partitioned with the window's),
    read from broker time ``since_ms`` to the end, by id."""
    (start,) = consumer.offsets_for_times([TopicPartition(topic, partition, since_ms)], timeout=10)
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    found: dict = {}
    if start.offset < 0 or high == 0:
        return found
    for message in read_range(consumer, TopicPartition(topic, partition, start.offset), high - 1):
        event = decode(message.value())
        if event.prediction_id in wanted:
            wanted.discard(event.prediction_id)
            found[event.prediction_id] = event
            if not wanted:
                break
    return found


def train(pairs: list[tuple[dict, object]]) -> tuple[object, str, float]:
    """A Hoeffding tree trained test-then-train; returns (model, metric name, metric value)."""
    regression = all(isinstance(y, float) for _, y in pairs)
    model = tree.HoeffdingTreeRegressor() if regression else tree.HoeffdingTreeClassifier(grace_period=50)
    metric = metrics.MAE() if regression else metrics.Accuracy()
    for features, label in pairs:
        guess = model.predict_one(features)
        if guess is not None:
            metric.update(label, guess)
        model.learn_one(features, label)
    return model, ("mae" if regression else "accuracy"), metric.get()


def new_version(trigger: TriggerEvent) -> str:
    """Deterministic per trigger, so a rerun finds the model it already saved."""
    day = trigger.triggered_at[:10]
    return f"{day}-retrain-{hashlib.sha256(trigger.trigger_id.encode()).hexdigest()[:8]}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trigger = decode_trigger(sys.stdin.buffer.read())
    print(f"retraining for: {format_trigger(trigger)}", file=sys.stderr)
    version = new_version(trigger)
    model_path = Path(args.model_dir) / trigger.model_id / f"{version}.pkl"
    result_path = model_path.with_suffix(".json")
    if result_path.exists():
        print(f"{trigger.trigger_id} was already retrained as {version}", file=sys.stderr)
        result = json.loads(result_path.read_text())
    else:
        pairs = read_window(trigger, args)
        if not pairs:
            print(f"no labelled predictions found for the window {trigger.window.offsets}", file=sys.stderr)
            return 1
        model, metric_name, metric_value = train(pairs)
        result = {"model_id": trigger.model_id, "model_version": version, "previous_version": trigger.model_version,
                  "trigger_id": trigger.trigger_id, "trained_on": len(pairs),
                  "progressive_" + metric_name: round(metric_value, 4), "path": str(model_path)}
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model_path.write_bytes(pickle.dumps(model))
        result_path.write_text(json.dumps(result))  # written last: marks the retrain complete
    line = json.dumps(result)
    print(line)
    if args.emit_topic:
        producer = Producer({"bootstrap.servers": args.bootstrap_servers, "enable.idempotence": True})
        producer.produce(args.emit_topic, key=trigger.model_id.encode(), value=line.encode())
        if producer.flush(30):
            print(f"could not emit the new version to {args.emit_topic}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
