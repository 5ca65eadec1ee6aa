"""Estimated performance in the Monitor: a rule on ``estimated.accuracy`` fires before any label of
the window arrives, batching and checkpoints do not change it, and the config checks it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streams.core.codecs import Label, Prediction
from streams.core.config import ConfigError, parse_config
from streams.core.monitor import Monitor, Source

T0 = 1_700_000_000_000


def _config(**estimation):
    return parse_config({
        "kafka": {"bootstrap.servers": "unused:9092"},
        "metrics": {"refresh_ms": 0},  # an exporter's gauges after every observe
        "models": [{
            "id": "m", "window": {"size": 100}, "evaluate_every": 10, "label_ttl_seconds": 86400,
            "estimation": {"reference_size": 200, **estimation},
            "rules": [
                {"name": "estimated-floor", "min_samples": 100,
                 "conditions": [{"statistic": "estimated.accuracy", "op": "<", "threshold": 0.8}]},
                {"name": "realized-floor", "min_samples": 100,
                 "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8}]},
            ],
        }],
    })


CONFIG = _config()


def _events(labelled: int = 300, unlabelled: int = 300) -> list:
    """A calibrated model (each label is drawn with the score's probability): sure of itself for
    ``labelled`` predictions, whose labels follow each one; then its inputs move where it is
    unsure (scores near 0.5, expected accuracy about 0.57) and no label arrives."""
    rng = np.random.default_rng(7)
    sure = rng.choice([0.03, 0.1, 0.2, 0.8, 0.9, 0.97], labelled)
    unsure = rng.choice([0.35, 0.45, 0.55, 0.65], unlabelled)
    events = []
    for i, score in enumerate(np.concatenate((sure, unsure)).tolist()):
        ts = T0 + i * 1000
        events.append(Prediction(prediction_id=f"p{i}", model_id="m", timestamp=ts, prediction=int(score >= 0.5),
                                 score=score, model_version="v1"))
        if i < labelled:
            events.append(Label(prediction_id=f"p{i}", model_id="m", label=int(rng.uniform() < score),
                                timestamp=ts + 500))
    return events


def feed(monitor: Monitor, events, offset: int = 0):
    return monitor.process((e, Source("labels" if isinstance(e, Label) else "predictions", 0, offset + k))
                           for k, e in enumerate(events))


def as_json(triggers) -> list:
    return [json.loads(json.dumps(t, default=lambda s: {f: getattr(s, f) for f in s.__struct_fields__}))
            for t in triggers]


@pytest.mark.parametrize("batch", [1, 7, 10_000])
def test_estimated_accuracy_rule_fires_before_any_label_of_the_window(batch):
    events, monitor, triggers = _events(), Monitor(CONFIG), []
    for start in range(0, len(events), batch):
        triggers += feed(monitor, events[start:start + batch], offset=start)
        stats = monitor.models["m"].stats
        if monitor.models["m"].predictions_total == 300:  # the labelled phase: estimate and truth agree
            assert stats.estimated()["accuracy"].value > 0.85
            assert abs(stats.estimated()["accuracy"].value - stats.performance()["accuracy"].statistic) < 0.05
    assert [t.rule for t in triggers] == ["estimated-floor"]
    trigger = triggers[0]
    assert trigger.metric == "estimated.accuracy" and trigger.value < 0.8
    assert trigger.evidence["source"] == "estimated"
    assert list(trigger.window.offsets) == ["predictions:0"]  # judged on the predictions' clock
    # no label of the unsure phase ever arrived; the realized accuracy still says all is well
    assert monitor.models["m"].joined_total == 300
    assert monitor.models["m"].stats.performance()["accuracy"].statistic > 0.85
    # it fired within the first 100 unsure predictions (a window of them is 100)
    assert trigger.triggered_at <= _iso(T0 + 400 * 1000)
    estimate = monitor.models["m"].stats.estimated()["accuracy"]
    assert 0.45 < estimate.lower < estimate.value < estimate.upper < 0.75


def _iso(ms: int) -> str:
    from retrain_trigger.policy import iso_from_ms
    return iso_from_ms(ms)


def test_a_realized_trigger_says_so():
    rng = np.random.default_rng(1)
    events = []
    for i in range(300):
        events += [Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i, prediction=1, score=0.9),
                   Label(prediction_id=f"p{i}", model_id="m", label=int(i < 150 or rng.uniform() < 0.3),
                         timestamp=T0 + i)]
    triggers = feed(Monitor(CONFIG), events)
    assert [t.evidence["source"] for t in triggers if t.rule == "realized-floor"] == ["realized"]


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 899), max_size=10, unique=True), refit_every=st.sampled_from([0, 37]))
def test_any_batching_and_any_checkpoint_same_triggers_and_estimate(cuts, refit_every):
    config = _config(refit_every=refit_every)
    events = _events()
    whole_monitor = Monitor(config)
    whole = as_json(feed(whole_monitor, events))
    monitor, got, start = Monitor(config), [], 0
    for cut in sorted(cuts) + [len(events)]:
        got += feed(monitor, events[start:cut], offset=start)
        restored = Monitor(config)  # a checkpoint after every batch
        restored.restore(json.loads(json.dumps(monitor.state())))
        monitor, start = restored, cut
    assert as_json(got) == whole
    assert monitor.models["m"].stats.estimated() == whole_monitor.models["m"].stats.estimated()


def test_the_estimate_is_in_the_observations_and_the_timeline_values():
    monitor = Monitor(CONFIG)
    feed(monitor, _events())
    stats = monitor.models["m"].stats
    assert stats.observations()["estimated.accuracy"].value == stats.estimated()["accuracy"].value
    assert stats.values()["estimated.f1"] == (stats.estimated()["f1"].value, 100)
    assert "estimated.recall" in stats.statistic_names()


def test_multiclass_estimation_from_probabilities():
    config = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [{
        "id": "m", "task": "multiclass", "classes": ["a", "b"], "window": {"size": 50},
        "estimation": {"reference_size": 20}}]})
    events = []
    for i in range(60):
        events += [Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i, prediction="a",
                              probabilities={"a": 0.8, "b": 0.2}),
                   Label(prediction_id=f"p{i}", model_id="m", label="a" if i % 5 else "b", timestamp=T0 + i)]
    monitor = Monitor(config)
    feed(monitor, events)
    assert monitor.models["m"].stats.estimated()["accuracy"].value == pytest.approx(0.8)


@pytest.mark.parametrize("model, message", [
    ({"task": "regression", "estimation": {}}, "models[0].estimation: estimates classification metrics"),
    ({"task": "multiclass", "estimation": {}}, "models[0].classes: estimation of a multiclass model needs classes"),
    ({"estimation": {"reference_size": 1}}, "models[0].estimation.reference_size: must be >= 2"),
    ({"rules": [{"name": "r", "conditions": [{"statistic": "estimated.accuracy", "op": "<", "threshold": 0.8}]}]},
     "'estimated.accuracy' is not computed for this model"),
    ({"estimation": {}, "rules": [{"name": "r", "conditions": [
        {"statistic": "estimated.auc", "op": "<", "threshold": 0.8}]}]}, "unknown statistic 'estimated.auc'"),
])
def test_config_mistakes_are_one_line(model, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [{"id": "m", **model}]})


def test_the_exporter_publishes_the_estimate_and_its_band_next_to_the_realized_metric():
    from streams.runtime.exporter import Exporter

    monitor = Monitor(CONFIG)
    exporter = Exporter(CONFIG)
    feed(monitor, _events()[:40])  # before the calibration is fitted: no estimate series
    exporter.observe(monitor)
    names = {s.name for family in exporter.registry.collect() for s in family.samples}
    assert "driftline_performance_estimated" not in names
    feed(monitor, _events()[40:], offset=40)
    exporter.observe(monitor)
    got = {(s.name, s.labels.get("metric")): s.value for family in exporter.registry.collect()
           for s in family.samples if s.labels.get("model") == "m" and s.labels.get("version") == "v1"}
    estimate = monitor.models["m"].stats.estimated()
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert got["driftline_performance_estimated", metric] == estimate[metric].value
        assert got["driftline_performance_estimated_lower", metric] == estimate[metric].lower
        assert got["driftline_performance_estimated_upper", metric] == estimate[metric].upper
    assert ("driftline_performance", "estimated.accuracy") not in got
    assert got["driftline_performance", "accuracy"] > got["driftline_performance_estimated", "accuracy"]
