"""The default engine's consumed batch into its input pairs (``Engine._buffer``): decoded a run of
one partition's messages at a time, with what the consumer hands over besides events (error
messages, tombstones) treated as before: errors to broker health, a null value rejected as
``invalid_json`` and kept, with its message, in its partition's order."""
from __future__ import annotations

from confluent_kafka import KafkaError, Message

from streams.core.config import parse_config
from streams.runtime.align import LABELS, PREDICTIONS
from streams.runtime.engine import Engine
from streams.runtime.inputs import AlignedInputs
from streams.runtime.pipeline import Metrics, Pipeline

T0 = 1_700_000_000_000
CONFIG = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [{"id": "m"}]})
P, L = CONFIG.topics.predictions, CONFIG.topics.labels


def _prediction(i: int) -> bytes:
    return b'{"prediction_id": "p%d", "model_id": "m", "timestamp": %d, "prediction": 1}' % (i, T0 + i)


class _Health:
    def __init__(self):
        self.errors = []

    def on_message_error(self, msg):
        self.errors.append(msg.offset())


def test_a_batch_is_buffered_run_by_run_with_errors_to_health_and_tombstones_rejected():
    engine = Engine.__new__(Engine)  # the decode and buffer path only: no Kafka clients
    engine.health, engine.pipeline = _Health(), Pipeline(CONFIG, outputs=None, metrics=Metrics(), log_triggers=False)
    engine.inputs = AlignedInputs(CONFIG, consumer=None)
    label = b'{"prediction_id": "p0", "model_id": "m", "timestamp": %d, "label": 1}' % (T0 + 5)
    messages = [Message(topic=P, partition=0, offset=10, value=_prediction(0)),
                Message(topic=P, partition=1, offset=3, value=_prediction(1)),
                Message(topic=P, partition=0, offset=11, value=None),  # a tombstone
                Message(topic=P, partition=0, offset=12, error=KafkaError(KafkaError._PARTITION_EOF)),
                Message(topic=L, partition=0, offset=7, value=label),
                Message(topic=P, partition=0, offset=13, value=_prediction(2))]
    engine._buffer(messages)
    assert engine.health.errors == [12]
    pairs = engine.inputs.aligner.pairs
    assert pairs[0].offsets[PREDICTIONS] == [10, 11, 13] and pairs[0].offsets[LABELS] == [7]
    assert pairs[1].offsets[PREDICTIONS] == [3]
    items = pairs[0].items[PREDICTIONS]
    assert [len(item) for item in items] == [2, 3, 2]  # a rejection keeps its message for the dead letters
    assert items[1][0].reason == "invalid_json" and items[1][2] is messages[2]
    assert [item[1].offset for item in items] == [10, 11, 13]
    assert [item[0].prediction_id for item in (items[0], items[2])] == ["p0", "p2"]
