"""PredictionLogger on a real broker: contract-valid events, keyed by model, co-partitioned."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from streams.core.codecs import decode_label, decode_prediction
from streams.client.producer import PredictionLogger

pytestmark = pytest.mark.kafka


def _read(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(500, 0.5) if not m.error()]
    finally:
        consumer.close()
    return messages


def test_events_arrive_valid_keyed_and_co_partitioned(kafka_bootstrap, unique):
    topics = {"predictions": f"p-{unique}", "labels": f"l-{unique}"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, 3, 1) for t in topics.values()]).values():
        future.result(30)
    registry = CollectorRegistry()
    models = [f"model-{i}" for i in range(6)]
    with PredictionLogger(kafka_bootstrap, topics["predictions"], topics["labels"], registry=registry) as logger:
        for i in range(300):
            model = models[i % len(models)]
            pid = logger.log_prediction(model, {"age": i, "plan": "pro", "ok": True}, i % 2, score=0.25,
                                        model_version="v3", segment={"region": "eu"})
            assert logger.log_label(pid, model, i % 2)
    assert logger.delivered == logger.sent == 600 and logger.dropped_total == 0
    assert registry.get_sample_value("driftline_producer_dropped_total", {"reason": "buffer_full"}) is None

    partition_of: dict[str, dict[str, int]] = {"predictions": {}, "labels": {}}
    for role, decode in (("predictions", decode_prediction), ("labels", decode_label)):
        messages = _read(kafka_bootstrap, topics[role], 300)
        assert len(messages) == 300
        for msg in messages:
            event = decode(msg.value())  # contract-valid, or this raises
            assert msg.key() == event.model_id.encode()
            assert partition_of[role].setdefault(event.model_id, msg.partition()) == msg.partition()
    # A model's predictions and labels are on the same partition number (murmur2_random on both).
    assert partition_of["predictions"] == partition_of["labels"]
    assert len(set(partition_of["predictions"].values())) > 1  # and keys do spread over partitions


def test_simulate_to_kafka_creates_topics_from_a_config_and_refuses_missing_ones(kafka_bootstrap, unique, tmp_path,
                                                                                   capsys):
    from streams.cli.main import main as cli_main

    assert cli_main(["simulate", "--bootstrap-servers", kafka_bootstrap, "--predictions-topic", f"nope-{unique}",
                     "--labels-topic", f"nope-l-{unique}", "--events", "10", "--no-progress"]) == 2
    assert f"nope-{unique}" in capsys.readouterr().err
    config = tmp_path / "c.toml"
    config.write_text(f"""
[kafka]
"bootstrap.servers" = "{kafka_bootstrap}"
[topics]
predictions = "sp-{unique}"
labels = "sl-{unique}"
triggers = "st-{unique}"
dlq = "sd-{unique}"
state = "ss-{unique}"
[[models]]
id = "a"
""")
    assert cli_main(["simulate", "--config", str(config), "--events", "300", "--no-progress",
                     "--label-delay", "const:0", "--model", "id=a,generator=sea,drift=none,train=100"]) == 0
    assert "simulated 300 predictions, 300 labels" in capsys.readouterr().out
    assert len(_read(kafka_bootstrap, f"sp-{unique}", 300)) == 300


def test_a_process_that_exits_without_close_still_delivers(kafka_bootstrap, unique):
    import subprocess
    import sys

    topic = f"exit-{unique}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)
    script = (f"from streams.client.producer import PredictionLogger\n"
              f"logger = PredictionLogger({kafka_bootstrap!r}, {topic!r}, {topic!r}, linger_ms=3000)\n"
              f"for i in range(50): logger.log_prediction('m', {{'x': i}}, 1)\n")  # no close(), linger 3 s
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert len(_read(kafka_bootstrap, topic, 50)) == 50
