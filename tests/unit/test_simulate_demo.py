"""The demo's pieces that do not need a broker: the feature-drift probe and the trigger text."""
from __future__ import annotations

import tomllib

from streams.tools import demo
from streams.core.codecs import Prediction
from streams.core.config import parse_config
from streams.core.monitor import Monitor, Source


def test_the_demo_config_watches_the_sensors_inputs_with_ks():
    base = demo.BASE.format(bootstrap="127.0.0.1:1", run="x", metrics_port=1)
    monitor = Monitor(parse_config(tomllib.loads(base + demo.SENSORS_DRIFT.format())))
    monitor.process([(Prediction(prediction_id=f"p{i}", model_id="sensors", timestamp=i * 1000, prediction=1,
                                 features={"x0": float(i % 10), "x1": 1.0, "x2": 1.0}), Source("p", 0, i))
                     for i in range(50)])
    observed = monitor.models["sensors"].observations()
    assert {"feature.x0.ks", "feature.x1.ks", "feature.x2.ks"} <= set(observed)


def test_a_trigger_reads_as_a_few_lines_with_its_evidence():
    trigger = {
        "trigger_id": "sensors:input-drift:000001", "model_id": "sensors", "model_version": "v1",
        "rule": "input-drift", "metric": "feature.*.ks", "value": 1.0, "threshold": 1.0, "severity": "warning",
        "window": {"start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:10:00.000Z", "count": 1000,
                   "offsets": {"labels:1": [10, 1009]}},
        "triggered_at": "2026-01-01T00:10:00.000Z",
        "evidence": {"conditions": [{"statistic": "feature.*.ks", "verdict": "breach", "fired": True,
                                     "matched": ["feature.x0.ks"]}],
                     "top_features": [{"feature": "x0", "kind": "ks", "value": 0.0912, "p_value": 0.00047,
                                       "n": 1000, "fired": True}],
                     "p_value": 0.00047, "detector": "ks", "baseline": None, "statistic": "feature.*.ks"},
    }
    text = demo.format_trigger(trigger)
    assert text.splitlines()[0] == "TRIGGER sensors:input-drift:000001  (warning)"
    assert "feature.*.ks fired (feature.x0.ks)" in text
    assert "offsets labels:1 [10..1009]" in text
    assert "window: 1000 labelled predictions," in text
    assert "window: 1000 predictions," in demo.format_trigger(
        dict(trigger, evidence=dict(trigger["evidence"], source="drift")))
    assert "drifted feature x0: ks = 0.0912, p = 0.00047, n = 1000 (alarm)" in text
    assert "baseline" not in text and "evidence.statistic" not in text  # empty or already shown
    accuracy = dict(trigger, metric="accuracy", value=0.76, threshold=0.8,
                    evidence={"conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8,
                                              "value": 0.76, "n": 500}], "baseline": 0.93})
    text = demo.format_trigger(accuracy)
    assert "accuracy = 0.76 < 0.8 (n=500)" in text and "evidence.baseline: 0.93" in text
