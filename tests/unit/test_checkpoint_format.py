"""Checkpoints written by earlier versions restore into the same Monitor.

``data/checkpoint_rows.json`` is ``json.dumps(Monitor.state())`` after ``_events()[:SPLIT]``,
written by the version whose count windows listed their rows one by one and whose block counts
kept a list per block: ``PYTHONPATH=<a checkout of such a version> python
tests/unit/test_checkpoint_format.py`` writes it again with that checkout's code."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from streams.core.codecs import Label, Prediction
from streams.core.config import parse_config
from streams.core.monitor import Monitor, Source

CHECKPOINT = Path(__file__).parent / "data" / "checkpoint_rows.json"
T0 = 1_700_000_000_000
SPLIT = 1200  # events before the checkpoint
CONFIG = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [
    {"id": "m", "label_ttl_seconds": 30, "window": {"size": 120}, "evaluate_every": 20,
     "metrics": ["accuracy", "brier"], "features": {"numeric": ["age", "income"], "categorical": ["plan"]},
     "drift": {"numeric": ["ks", "psi", "wasserstein"], "categorical": ["chi2", "psi"], "prediction": ["psi"],
               "reference_size": 100, "window": 100, "params": {"ks": {"exact": True}}},
     "detectors": [{"kind": "adwin"}, {"kind": "page_hinkley"}],
     "estimation": {"reference_size": 100},
     "rules": [{"name": "floor", "min_samples": 50, "conditions": [{"statistic": "accuracy", "op": "<",
                                                                   "threshold": 0.8}]},
               {"name": "drift", "conditions": [{"statistic": "feature.*", "fired": True}]}]},
    {"id": "t", "window": {"kind": "tumbling", "size_seconds": 20, "grace_seconds": 5},
     "features": {"numeric": ["age"]}, "drift": {"numeric": ["psi"], "reference_size": 50, "window": 50}},
]})


def _events() -> list[tuple[Prediction | Label, Source]]:
    """Two models' predictions and labels, some labels late, some never, some before their
    prediction, a shift half way, a prediction without a score now and then."""
    rng = np.random.default_rng(11)
    events, offsets = [], {"predictions": 0, "labels": 0}
    for i in range(1000):
        shifted = i >= 500
        for model in ("m", "t"):
            score = None if rng.random() < 0.05 else float(rng.uniform(0.3 if shifted else 0.0, 1.0))
            pid = f"{model}{i}"
            features = {"age": float(rng.normal(50 if shifted else 40, 8)), "income": float(rng.normal(50, 10)),
                        "plan": str(rng.choice(["free", "pro", "team"]))}
            prediction = Prediction(prediction_id=pid, model_id=model, timestamp=T0 + i * 500, prediction=1,
                                    score=score, features=features, model_version="v1")
            if rng.random() < 0.1:
                continue  # never predicted: its label stays early
            label = Label(prediction_id=pid, model_id=model, label=int(rng.random() < (0.6 if shifted else 0.9)),
                          timestamp=T0 + i * 500 + int(rng.integers(-200, 40_000)))
            pair = [prediction, label] if rng.random() < 0.9 else [label, prediction]
            for event in pair if rng.random() < 0.9 else pair[:1]:
                topic = "labels" if isinstance(event, Label) else "predictions"
                events.append((event, Source(topic, 0, offsets[topic])))
                offsets[topic] += 1
    return events


def _plain(triggers) -> list:
    return [json.loads(json.dumps(t, default=lambda s: {f: getattr(s, f) for f in s.__struct_fields__}))
            for t in triggers]


def _fed(monitor: Monitor, events) -> list:
    triggers = []
    for start in range(0, len(events), 97):
        triggers += monitor.process(events[start:start + 97])
    return triggers


def test_a_checkpoint_of_rows_restores_the_same_monitor():
    events = _events()
    unbroken = Monitor(CONFIG)
    _fed(unbroken, events[:SPLIT])
    restored = Monitor(CONFIG)
    restored.restore(json.loads(CHECKPOINT.read_text()))
    assert _ids_apart(restored.state()) == _ids_apart(unbroken.state())
    assert _plain(_fed(restored, events[SPLIT:])) == _plain(_fed(unbroken, events[SPLIT:]))
    assert _ids_apart(restored.state()) == _ids_apart(unbroken.state())


def _ids_apart(state: dict) -> tuple[str, dict]:
    """A Monitor's state as JSON, each model's remembered ids taken out as the set of their
    hashes: the fixture's buckets were wider than today's, and a restore puts each id into the
    narrower bucket that holds the end of its old one (test_recent_ids checks how long it is
    remembered), so the buckets differ while the ids do not."""
    ids = {}
    for model_id, model in state.items():
        joined = model["joined_ids"]
        ids[model_id] = sorted(h for text in joined["buckets"].values()
                               for h in np.frombuffer(base64.b64decode(text), dtype="<u8").tolist())
        model["joined_ids"] = {"horizon_ms": joined["horizon_ms"]}
    return json.dumps(state), ids


if __name__ == "__main__":
    monitor = Monitor(CONFIG)
    _fed(monitor, _events()[:SPLIT])
    CHECKPOINT.write_text(json.dumps(monitor.state(), separators=(",", ":")) + "\n")
