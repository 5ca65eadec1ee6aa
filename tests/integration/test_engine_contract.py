"""The engine contract on the real broker, for every engine: TTL expiry, registered models, a
trigger readable at once, event-time windows with grace, drift that triggers and a null stream
that does not."""
from __future__ import annotations

import time

import numpy as np
import pytest

from streams.core.codecs import Label, Prediction, encode_prediction

from .harness import ENGINES, Deployment, models_config, pair

pytestmark = pytest.mark.kafka
T0 = 1_700_000_000_000


@pytest.fixture(params=ENGINES)
def deploy(request, kafka_bootstrap, unique, tmp_path):
    made: list[Deployment] = []

    def make(models: str, engine_extra: str = "", **kwargs) -> Deployment:
        d = Deployment(kafka_bootstrap, f"{unique}{len(made)}", tmp_path, models, engine=request.param,
                       engine_extra=engine_extra, **kwargs)
        made.append(d)
        d.start()
        return d

    yield make
    for d in made:
        d.stop_all()


def prediction(i: int, t_s: float, model: str = "m", **features) -> Prediction:
    return Prediction(prediction_id=f"p{i}", model_id=model, timestamp=T0 + int(t_s * 1000), prediction=1,
                      features=features)


def label(i: int, t_s: float, correct: bool = True, model: str = "m") -> Label:
    return Label(prediction_id=f"p{i}", model_id=model, timestamp=T0 + int(t_s * 1000), label=1 if correct else 0)


def test_predictions_without_labels_expire_after_the_ttl(deploy):
    d = deploy('[[models]]\nid = "m"\nlabel_ttl_seconds = 60\n')
    # 10 predictions at t=0..9 s get no label; one at t=200 s moves the watermark past their TTL.
    d.send([prediction(i, i) for i in range(10)] + [prediction(99, 200)])
    d.wait_for_metric("driftline_events_expired_total", 10, model="m", kind="prediction")
    # A label for an expired prediction is late: counted, not joined.
    d.send([label(3, 201)])
    d.wait_for_metric("driftline_events_late_total", 1, model="m")
    assert d.metric("driftline_events_joined_total", model="m") == 0
    assert d.metric("driftline_pending_predictions", model="m") == 1


def test_unknown_models_are_registered_with_the_defaults_up_to_the_cap(deploy):
    d = deploy('[[models]]\nid = "m"\n', engine_extra='unknown_model = "register"\nmax_registered_models = 1')
    d.send([prediction(i, i, model="new") for i in range(5)] + [label(i, i + 1, model="new") for i in range(5)]
           + [prediction(9, 9, model="one-too-many")])
    d.wait_for_metric("driftline_events_joined_total", 5, model="new")
    dlq = d.read("driftline-dlq", expected=1)
    assert len(dlq) == 1 and dict(dlq[0].headers())["driftline.reason"] == b"unknown_model"
    assert b"the 1 allowed by engine.max_registered_models" in dict(dlq[0].headers())["driftline.detail"]


def test_a_model_whose_events_come_on_two_partitions_is_warned_about(deploy):
    # The contract keys events by model_id; a producer that keys them otherwise splits the
    # model's state over partitions, which the engine says once per partition.
    d = deploy('[[models]]\nid = "m"\n')
    producer = d.producer()
    for i, partition in enumerate([0, 0, 1, 1, 0]):
        producer.produce(d.topics["predictions"], encode_prediction(prediction(i, i)), key=f"k{i}",
                         partition=partition)
    producer.flush(30)
    d.wait_for_metric("driftline_predictions_total", 5, model="m")
    deadline = time.monotonic() + 10
    while "model 'm' has events on input partitions 0, 1:" not in d.logs() and time.monotonic() < deadline:
        time.sleep(0.2)
    logs = d.logs()
    assert logs.count("model 'm' has events on input partitions") == 1, logs[-3000:]
    assert "model 'm' has events on input partitions 0, 1: each keeps a state of its own" in logs


def test_a_trigger_is_readable_at_once_not_a_commit_interval_later(deploy):
    # The default engine publishes in transactions: a read_committed reader sees a trigger when
    # its transaction commits, and a batch that made one commits at once. (The Faust engine's
    # sends are not transactional; its commit interval holds back input offsets only.)
    interval_s = 120
    started = time.monotonic()
    d = deploy(models_config(["churn"]), commit_every_ms=interval_s * 1000)
    d.send([event for i in range(250) for event in pair(i, "churn", correct=False)])
    [trigger] = d.triggers(expected=1, timeout=60, settle=1)
    assert trigger["trigger_id"] == "churn:floor:000001"
    assert time.monotonic() - started < interval_s / 2, "read well before the first commit interval was up"


def test_event_time_windows_close_after_grace_and_late_labels_are_counted(deploy):
    d = deploy("""
[[models]]
id = "m"
window = { kind = "tumbling", size_seconds = 10, grace_seconds = 5 }
  [[models.rules]]
  name = "floor"
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.6
""")
    first_window = []
    for i, (t, ok) in enumerate([(1, True), (2, False), (3, True), (4, False)]):  # [0, 10 s): 0.5
        first_window += [prediction(i, t), label(i, t, ok)]
    d.send(first_window + [prediction(10, 14), label(10, 14)])  # watermark 14 - 5 = 9 s: still open
    assert d.triggers(timeout=4) == []
    d.send([prediction(11, 16), label(11, 16)])  # 16 - 5 = 11 s: [0, 10 s) closes
    [trigger] = d.triggers(expected=1, timeout=30)
    assert trigger["value"] == 0.5 and trigger["window"]["count"] == 4
    assert trigger["window"]["start"] == "2023-11-14T22:13:20.000Z"
    assert trigger["window"]["end"] == "2023-11-14T22:13:30.000Z"
    d.send([prediction(12, 5), label(12, 5)])  # its window has closed: late, not merged
    d.wait_for_metric("driftline_events_late_total", 1, model="m")
    assert len(d.triggers(timeout=3)) == 1


DRIFT_MODEL = """
[[models]]
id = "m"
evaluate_every = 100
features = { numeric = ["age", "income"] }
drift = { numeric = ["ks"], prediction = [], reference_size = 500, window = 500 }
  [[models.rules]]
  name = "drift"
  cooldown_seconds = 100000
    [[models.rules.conditions]]
    statistic = "feature.*.ks"
    fired = true
    at_least = 1
"""


def drift_stream(n: int, shift_at: int | None, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [prediction(i, i, age=float(rng.normal(50 if shift_at is not None and i >= shift_at else 40, 8)),
                       income=float(rng.normal(50, 10)))
            for i in range(n)]


def test_a_drifted_stream_triggers_and_a_null_stream_does_not(deploy):
    drifted = deploy(DRIFT_MODEL)
    null = deploy(DRIFT_MODEL)
    drifted.send(drift_stream(3000, shift_at=1500, seed=1))
    null.send(drift_stream(3000, shift_at=None, seed=2))
    [trigger] = drifted.triggers(expected=1, timeout=60)
    assert trigger["rule"] == "drift" and trigger["trigger_id"] == "m:drift:000001"
    assert trigger["triggered_at"] > "2023-11-14T22:38:20"  # after the shift at t = 1500 s
    null.wait_for_metric("driftline_predictions_total", 3000, model="m")
    assert null.triggers(timeout=3) == []
    assert null.metric("driftline_feature_drift_alarm", model="m", feature="age", detector="ks") == 0
    assert drifted.metric("driftline_feature_drift_alarm", model="m", feature="age", detector="ks") == 1
