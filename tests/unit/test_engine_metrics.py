"""The default engine's metrics across an assignment (``Engine._forget``): a revoked partition's
models, checkpoint size and consumer lag leave the exporter's gauges, the other partitions' stay."""
from __future__ import annotations

from confluent_kafka import TopicPartition
from prometheus_client import generate_latest

from streams.core.codecs import Label, Prediction
from streams.core.config import parse_config
from streams.core.monitor import Monitor, Source
from streams.runtime.engine import Engine
from streams.runtime.exporter import Exporter
from streams.runtime.pipeline import Pipeline


class _Inputs:
    def forget(self, partitions):
        self.forgotten = partitions


def test_a_revoked_partitions_models_leave_the_gauges():
    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:1"}, "metrics": {"refresh_ms": 0}, "models": [
        {"id": m, "evaluate_every": 5} for m in "ab"]})
    history = {}
    for partition, model in enumerate("ab"):
        monitor = Monitor(config)
        monitor.process([(Prediction(f"p{i}", model, 1_000 + i, 1, {}), Source("predictions", partition, i))
                         for i in range(20)] + [(Label(f"p{i}", model, 1, 2_000 + i), Source("labels", partition, i))
                                                for i in range(10)])
        history[partition] = monitor.state()
    engine = Engine.__new__(Engine)  # the assignment's bookkeeping only: no Kafka clients
    engine.exporter = Exporter(config)
    engine.pipeline = Pipeline(config, outputs=None, metrics=engine.exporter)
    engine.monitors = {p: engine.pipeline.monitor(state) for p, state in history.items()}  # as _on_assign restores
    engine.events_since_commit, engine.committed_at, engine.produced, engine.inputs = {}, {}, set(), _Inputs()

    for partition in history:
        engine.exporter.set_checkpoint_bytes(partition, 100 + partition)
        engine.exporter.set_consumer_lag(config.topics.labels, partition, 7)

    def windows(prefix: str = "driftline_window_samples") -> list[str]:
        return [line for line in generate_latest(engine.exporter.registry).decode().splitlines()
                if line.startswith(prefix)]

    assert windows() == ['driftline_window_samples{model="a"} 10.0', 'driftline_window_samples{model="b"} 10.0']
    engine._forget([TopicPartition(config.topics.predictions, 0), TopicPartition(config.topics.labels, 0)])
    assert windows() == ['driftline_window_samples{model="b"} 10.0']
    assert windows("driftline_checkpoint_bytes{") == ['driftline_checkpoint_bytes{partition="1"} 101.0']
    assert windows("driftline_consumer_lag_messages{") == [
        'driftline_consumer_lag_messages{partition="1",topic="labels"} 7.0']
    assert list(engine.monitors) == [1]
