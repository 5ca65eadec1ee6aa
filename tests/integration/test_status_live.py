"""``driftline status`` against a real running engine (the CLI engine on the real broker): the
models, drift alarms and rule states it prints are those the engine's stream implies."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import Deployment
from .test_metrics_endpoint import MODEL, events

pytestmark = pytest.mark.kafka

DRIFTLINE = str(Path(sys.executable).parent / "driftline")


def test_status_of_a_running_engine(kafka_bootstrap, unique, tmp_path):
    d = Deployment(kafka_bootstrap, unique, tmp_path, MODEL)
    try:
        d.start()
        d.send(events(1500, shift_at=800))  # age shifts and accuracy falls to a half at 800
        assert len(d.triggers(expected=2, timeout=60)) >= 2
        d.wait_for_metric("driftline_events_joined_total", 1500, model="churn")
        as_json = subprocess.run([DRIFTLINE, "status", "--config", str(d.config_path), "--json"],
                                 capture_output=True, text=True, timeout=60)
        table = subprocess.run([DRIFTLINE, "status", "--config", str(d.config_path)],
                               capture_output=True, text=True, timeout=60)
    finally:
        d.stop_all()
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["engine"]["up"] is True
    (churn,) = status["models"]
    assert churn["model"] == "churn" and churn["joined"] == 1500 and churn["window_samples"] == 300
    assert churn["performance"]["accuracy"] < 0.8 and churn["triggers"] >= 2
    assert ("age", "ks") in {(r["feature"], r["detector"]) for r in status["drift"] if r["alarm"]}
    rules = {r["rule"]: r for r in status["rules"]}
    assert rules["accuracy-floor"]["state"] == "breach" and rules["accuracy-floor"]["triggers"] == 1
    assert rules["floor-after-10k"]["suppressed"].get("min_samples", 0) > 0
    assert rules["age-drift"]["op"] == "fired" and rules["age-drift"]["state"] == "breach"  # age drifted
    assert table.returncode == 0 and "churn" in table.stdout and "accuracy-floor" in table.stdout
    assert "breach" in table.stdout and table.stderr == ""
