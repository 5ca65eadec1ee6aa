"""`curl` on the metrics address: every family the README documents, with data, and no
undocumented ones."""
from __future__ import annotations

import re
import urllib.request

import numpy as np
from confluent_kafka import Consumer, TopicPartition
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.core.codecs import Label, Prediction

from .harness import REPO, Deployment

pytestmark = pytest.mark.kafka

MODEL = """
[[models]]
id = "churn"
evaluate_every = 50
window = { kind = "count", size = 300 }
features = { numeric = ["age", "income"], categorical = ["plan"] }
drift = { numeric = ["ks", "psi"], categorical = ["chi2"], prediction = ["psi", "ks"], reference_size = 300, window = 300 }
detectors = [{ kind = "adwin" }, { kind = "ddm" }]
estimation = { reference_size = 300 }
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 100
  cooldown_seconds = 100000
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
  [[models.rules]]
  name = "floor-after-10k"       # never judged: its breaches count as suppressed (min_samples)
  min_samples = 10000
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
  [[models.rules]]
  name = "age-drift"
    [[models.rules.conditions]]
    statistic = "feature.age.ks"
    fired = true
"""


def documented_families() -> set[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names = set()
    for cell in re.findall(r"^\| ([^|]+) \|", section, flags=re.M):
        names.update(re.findall(r"`(driftline_[a-z_]+)`", cell))
    return names


def events(n: int, shift_at: int) -> list:
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        drifted = i >= shift_at
        pid = f"p{i}"
        out.append(Prediction(prediction_id=pid, model_id="churn", timestamp=1_700_000_000_000 + i * 1000,
                              prediction=1, score=float(rng.uniform(0.5 if drifted else 0, 1)), model_version="v1",
                              features={"age": float(rng.normal(55 if drifted else 40, 8)),
                                        "income": float(rng.normal(50, 9)),
                                        "plan": str(rng.choice(["a", "b"] if drifted else ["a", "b", "c"]))}))
        out.append(Label(prediction_id=pid, model_id="churn", timestamp=1_700_000_000_000 + i * 1000 + 30_000,
                         label=int(rng.random() < (0.5 if drifted else 0.95))))
    return out


def test_every_documented_family_is_served(kafka_bootstrap, unique, tmp_path):
    d = Deployment(kafka_bootstrap, unique, tmp_path, MODEL)
    try:
        d.start()
        stream = events(1500, shift_at=800)
        stream.insert(10, ("predictions", "churn", b"{broken"))
        stream.insert(20, ("labels", "churn", b'{"prediction_id": "x", "model_id": "ghost", "label": 1, "timestamp": 0}'))
        stream.append(Prediction(prediction_id="p3", model_id="churn", timestamp=1_700_000_000_000, prediction=1))
        d.send(stream)
        assert len(d.triggers(expected=2, timeout=60)) >= 2
        d.wait_for_metric("driftline_events_joined_total", 1400, model="churn")
        d.wait_for_metric("driftline_checkpoint_bytes", 1, partition=_partition_of(d))
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        d.stop_all()
    served = {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}
    served_families = {re.sub(r"(_bucket|_count|_sum)$", "", name) for name in served
                       if not name.endswith("_created")}  # prometheus_client's creation timestamps
    documented = documented_families()
    assert len(documented) >= 25
    missing = {name for name in documented if name not in served_families}
    assert not missing, f"documented but not served (or without samples): {sorted(missing)}"
    undocumented = {name for name in served_families if name.startswith("driftline_")} - documented
    assert not undocumented, f"served but not documented: {sorted(undocumented)}"


def _partition_of(d: Deployment) -> str:
    """The input partition the model's events landed on (murmur2 of its key)."""
    consumer = Consumer({"bootstrap.servers": d.bootstrap, "group.id": "probe"})
    try:
        for p in range(d.partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(d.topics["predictions"], p), timeout=5)
            if high > 0:
                return str(p)
    finally:
        consumer.close()
    raise AssertionError("no partition holds the predictions")
