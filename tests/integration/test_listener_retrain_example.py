"""examples/retrain: the listener runs the retrain script, which reads the window back from Kafka."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from retrain_trigger import listener
from retrain_trigger.events import encode_trigger

from .test_listener import RunningListener, committed_offset, make_trigger, produce, read_all, wait_for

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "retrain" / "retrain.py"


def test_listener_runs_the_retrain_example_once_per_trigger(kafka_bootstrap, unique, tmp_path):
    names = {k: f"{k}-{unique}" for k in ("triggers", "failed", "predictions", "labels", "versions")}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names.values()]).values():
        future.result(30)
    predictions, labels = [], []
    for i in range(300):
        age, plan = 20 + i % 50, ("pro", "free")[i % 2]
        predictions.append(json.dumps({"prediction_id": f"p{i}", "model_id": "churn", "timestamp": 1_795_000_000_000 + i,
                                       "features": {"age": age, "plan": plan}, "prediction": 0}).encode())
        labels.append(json.dumps({"prediction_id": f"p{i}", "model_id": "churn", "timestamp": 1_795_000_100_000 + i,
                                  "label": int(age > 40)}).encode())
    produce(kafka_bootstrap, names["predictions"], predictions)
    produce(kafka_bootstrap, names["labels"], labels)

    trigger = make_trigger(1)
    trigger.window.offsets = {f"{names['labels']}:0": [100, 299]}
    produce(kafka_bootstrap, names["triggers"], [encode_trigger(trigger)])
    script = [sys.executable, str(SCRIPT), "--bootstrap-servers", kafka_bootstrap,
              "--predictions-topic", names["predictions"], "--labels-topic", names["labels"],
              "--model-dir", str(tmp_path / "models"), "--emit-topic", names["versions"]]
    command = f"PYTHONPATH={shlex.quote(str(REPO))} {shlex.join(script)}"
    with RunningListener(kafka_bootstrap, listener.ExecAction(command), names, f"l-{unique}", tmp_path) as running:
        wait_for(lambda: committed_offset(kafka_bootstrap, f"l-{unique}", names["triggers"]) == 1, what="the commit")
    assert running.counts["succeeded"] == 1
    (emitted,) = [json.loads(v) for v in read_all(kafka_bootstrap, names["versions"], expected=1)]
    assert emitted["trained_on"] == 200
    assert emitted["previous_version"] == "2024-06-01" and emitted["model_version"].startswith("2026-11-23-retrain-")
    assert emitted["progressive_accuracy"] > 0.5
    assert Path(emitted["path"]).exists()

    # Run again for the same trigger (a listener that died mid-action): no second training.
    rerun = subprocess.run(script, input=encode_trigger(trigger), capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert b"already retrained" in rerun.stderr
    assert json.loads(rerun.stdout) == emitted


def test_a_drift_trigger_retrains_on_its_predictions_and_the_labels_that_arrived(kafka_bootstrap, unique, tmp_path):
    # A drift rule's window is predictions (offsets on the predictions topic); their labels come later.
    names = {k: f"{k}-{unique}" for k in ("predictions", "labels")}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names.values()]).values():
        future.result(30)
    predictions = [json.dumps({"prediction_id": f"p{i}", "model_id": "churn", "timestamp": 1_795_000_000_000 + i,
                               "features": {"age": 20 + i % 50}, "prediction": 0}).encode() for i in range(300)]
    labels = [json.dumps({"prediction_id": f"p{i}", "model_id": "churn", "timestamp": 1_795_000_100_000 + i,
                          "label": int(20 + i % 50 > 40)}).encode() for i in range(0, 300, 2)]  # half never labelled
    produce(kafka_bootstrap, names["predictions"], predictions)
    produce(kafka_bootstrap, names["labels"], labels)
    trigger = make_trigger(2)
    trigger.window.offsets = {f"{names['predictions']}:0": [100, 299]}
    done = subprocess.run([sys.executable, str(SCRIPT), "--bootstrap-servers", kafka_bootstrap,
                           "--predictions-topic", names["predictions"], "--labels-topic", names["labels"],
                           "--model-dir", str(tmp_path / "models")],
                          input=encode_trigger(trigger), capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trained_on"] == 100  # the 200 window predictions, of which 100 are labelled
