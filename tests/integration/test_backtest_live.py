"""Backtest = live: the triggers ``driftline backtest`` computes from files are the triggers
``driftline run`` publishes on Kafka for the same events and config, field for field.

Why the test controls the order. The Monitor is deterministic in the order it sees a model's
events: predictions and labels both advance its evaluation points (every ``evaluate_every``
predictions and every ``evaluate_every`` labelled predictions), a pair enters the accuracy
window when its second half arrives, and the watermark moves with whichever comes. The backtest
replays in event-time order. The live engine reads two topics, and Kafka orders nothing
*between* topics (or partitions), so events produced in one interleaving may be consumed in
another. Here:

* the topics have ONE partition, so each topic's order is its produce order, and the offsets
  the backtest gives each line (its line number, bad lines included) are its Kafka offsets;
* the events are produced in the backtest's order, in runs of one topic, and the test waits
  until the engine has consumed each run (``driftline_events_consumed_total``) before it
  produces the next. Each consume() batch then holds events of one run, so the engine's
  Monitor sees exactly the backtest's sequence. Labels land in batches every 250 s of event time
  (``--label-delay batch:250``, a periodic labelling job), which keeps the runs few (~20).

With free interleaving (several partitions, labels and predictions produced concurrently) the
live triggers are those of *a* valid order, and the backtest's are those of event-time order;
they agree when the rules do not depend on the interleaving within an evaluation stride.
"""
from __future__ import annotations

import json

import msgspec
import pytest

from streams.tools.backtest import load_events, run_backtest
from streams.core.config import load_config
from streams.client.producer import PredictionLogger
from streams.tools.simulate import FileSink, Simulation, generate, parse_model_spec

from .harness import Deployment

pytestmark = pytest.mark.kafka

MODELS = """
[[models]]
id = "loans"
window = { kind = "count", size = 300 }
evaluate_every = 20
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 200
  rearm = 0.9
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
[[models]]
id = "sensors"
window = { kind = "count", size = 400 }
evaluate_every = 7
features = { numeric = ["x0", "x1", "x2"], categorical = ["channel"] }
drift = { numeric = ["ks", "psi"], categorical = ["chi2"], window = 500, reference_size = 500 }
  [[models.rules]]
  name = "input-drift"
  min_samples = 300
    [[models.rules.conditions]]
    statistic = "feature.*"         # KS and PSI, each past its calibrated threshold
    fired = true
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 400
  cooldown_seconds = 600
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.9
  [[models.rules]]
  name = "accuracy-low"
  min_samples = 100
  consecutive = 3
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.85
"""


def test_backtest_triggers_equal_the_live_engines(kafka_bootstrap, unique, tmp_path):
    sim = Simulation(models=[parse_model_spec("id=loans,generator=agrawal,drift=abrupt,at=1200"),
                             parse_model_spec("id=sensors,generator=sea,drift=covariate,at=1000,shift=x0:-1|x1:-1")],
                     events=2500, seed=11, label_delay="batch:250", label_missing=0.03, malformed=0.01)
    records = list(generate(sim))
    sink = FileSink(tmp_path / "history")
    for record in records:
        sink.emit(record)
    sink.close()

    d = Deployment(kafka_bootstrap, unique, tmp_path, MODELS, partitions=1)
    config = load_config(d.config_path)
    expected = run_backtest(config, tmp_path / "backtest", predictions=tmp_path / "history" / "predictions.jsonl",
                            labels=tmp_path / "history" / "labels.jsonl", report=False, progress=False)
    assert {t.model_id for t in expected.triggers} == {"loans", "sensors"}  # the scenario does trigger
    assert any(t.rule == "input-drift" for t in expected.triggers)  # on feature drift too
    loaded = load_events(config, tmp_path / "history" / "predictions.jsonl", tmp_path / "history" / "labels.jsonl")
    lines = {role: (tmp_path / "history" / f"{role}.jsonl").read_bytes().splitlines() for role in ("predictions", "labels")}
    role_of = {d.topics["predictions"]: "predictions", d.topics["labels"]: "labels"}
    runs: list[tuple[str, int]] = []  # (role, produce lines up to this offset, inclusive)
    for _, source in loaded.events:
        role = role_of[source.topic]
        if runs and runs[-1][0] == role:
            runs[-1] = (role, source.offset)
        else:
            runs.append((role, source.offset))
    runs += [(role, len(lines[role]) - 1) for role in ("predictions", "labels")]  # trailing bad lines
    assert len(runs) < 60
    try:
        proc = d.start()
        logger = PredictionLogger(kafka_bootstrap, d.topics["predictions"], d.topics["labels"], prometheus=False)
        produced = {"predictions": 0, "labels": 0}
        for role, last in runs:
            for line in lines[role][produced[role]:last + 1]:
                logger.produce_raw(d.topics[role], b"k", line)
            produced[role] = max(produced[role], last + 1)
            assert logger.flush(30) == 0
            d.wait_for_metric("driftline_events_consumed_total", produced[role], timeout=60, topic=d.topics[role])
        logger.close(30)
        assert logger.dropped_total == 0
        live = d.triggers(expected=len(expected.triggers), timeout=60, settle=3)
        assert d.stop(proc) == 0
    finally:
        d.stop_all()
    backtest = [json.loads(msgspec.json.encode(t)) for t in expected.triggers]
    # Per model, in order (across models the order is the batch's, which Kafka does not fix).
    per_model = lambda triggers: {m: [t for t in triggers if t["model_id"] == m] for m in ("loans", "sensors")}
    assert {m: [t["trigger_id"] for t in ts] for m, ts in per_model(live).items()} == \
        {m: [t["trigger_id"] for t in ts] for m, ts in per_model(backtest).items()}
    assert per_model(live) == per_model(backtest)  # values, windows, offsets, evidence, event-time timestamps
    # The offsets in the evidence are real: the last one is a label of the window's model.
    assert all(t["window"]["offsets"] for t in live)
