"""The Monitor's bulk path (a batch's columns in a few passes) leaves exactly the state, counters,
segments and triggers that event-by-event processing leaves, for any events and any batching."""
from __future__ import annotations

import dataclasses
import json
from unittest import mock

from hypothesis import given, settings, strategies as st

from streams.core import monitor as monitor_module
from streams.core.codecs import Label, Prediction
from streams.core.config import parse_config
from streams.core.monitor import Monitor, Source

T0 = 1_700_000_000_000


def _model(model_id: str, task: str = "binary") -> dict:
    model = {
        "id": model_id, "task": task, "label_ttl_seconds": 20, "window": {"size": 12}, "evaluate_every": 3,
        "features": {"numeric": ["x"], "categorical": ["plan"]},
        "drift": {"numeric": ["psi", "ks"], "categorical": ["chi2"], "prediction": ["psi"],
                  "window": 20, "reference_size": 20},
        "detectors": [{"kind": "ddm", "warm_start": 5}],
        "rules": [{"name": "floor", "min_samples": 4,
                   "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.6}]},
                  {"name": "x-drift", "min_samples": 4,
                   "conditions": [{"statistic": "feature.x.psi", "op": ">", "threshold": 0.1}]}],
    }
    if task == "multiclass":
        model["classes"] = [0, 1, 2]
        model["drift"]["prediction"] = ["chi2"]
    return model


CONFIG = parse_config({"kafka": {"bootstrap.servers": "unused:9092"},
                       "models": [_model("a"), _model("b", "multiclass")]})


def _event(kind: str, model: str, pid: int, t: int, value: int, x: float, version: str | None, segment: bool):
    ts = T0 + t * 1000
    if kind == "label":
        return Label(prediction_id=f"p{pid}", model_id=model, label=value, timestamp=ts)
    probabilities = {"0": 0.2, "1": 0.5, "2": 0.3} if model == "b" else None
    return Prediction(prediction_id=f"p{pid}", model_id=model, timestamp=ts, prediction=value,
                      score=min(1.0, abs(x) / 4) if model == "a" else None, probabilities=probabilities,
                      features={"x": x, "plan": "pro" if value else "free"}, model_version=version,
                      segment={"region": "eu"} if segment else None)


events_strategy = st.lists(
    st.tuples(st.sampled_from(["prediction", "prediction", "label"]), st.sampled_from(["a", "a", "a", "b"]),
              st.integers(0, 60), st.integers(-2, 12), st.integers(0, 2), st.floats(-3, 3),
              st.sampled_from(["v1", "v1", "v1", "v1", None, "v2"]), st.booleans()),
    max_size=160)


def _stream(raw) -> list:
    """Mostly a plain stream (each prediction soon labelled, time going forward) with the raw draws
    mixed in: duplicates, early and orphan labels, versions, time going back, TTL expiries."""
    events, clock = [], 0
    for n, (kind, model, pid, step, value, x, version, segment) in enumerate(raw):
        clock = max(0, clock + step)
        if n % 3:  # a plain prediction and its label
            fresh = 1000 + n
            events.append(_event("prediction", model, fresh, clock, value, x, "v1", False))
            events.append(_event("label", model, fresh, clock + 1, (value + n) % 2, x, None, False))
        else:
            events.append(_event(kind, model, pid, clock, value, x, version, segment))
    return events


def _sources(events) -> list:
    offsets = {"predictions": 0, "labels": 0}
    out = []
    for event in events:
        topic = "labels" if isinstance(event, Label) else "predictions"
        out.append((event, Source(topic, 0, offsets[topic])))
        offsets[topic] += 1
    return out


def _snapshot(monitor: Monitor, triggers) -> str:
    return json.dumps({
        "triggers": [{f: str(getattr(t, f)) for f in t.__struct_fields__} for t in triggers],
        "state": monitor.state(),
        "counters": {m: {**dataclasses.asdict(mm.counters), "suppressed": sorted(mm.counters.suppressed.items())}
                     for m, mm in monitor.models.items()},
    }, default=str)


def _run(items, cuts, bulk: bool) -> list[str]:
    monitor, snapshots, start = Monitor(CONFIG), [], 0
    with mock.patch.object(monitor_module, "_BULK_MIN", 1 if bulk else 1 << 30):
        for cut in sorted(set(cuts)) + [len(items)]:
            snapshots.append(_snapshot(monitor, monitor.process(items[start:cut])))
            start = cut
    return snapshots


@settings(max_examples=150, deadline=None)
@given(raw=events_strategy, cuts=st.lists(st.integers(0, 400), max_size=6))
def test_bulk_path_equals_event_by_event(raw, cuts):
    items = _sources(_stream(raw))
    cuts = [c for c in cuts if c < len(items)]
    assert _run(items, cuts, bulk=True) == _run(items, cuts, bulk=False)


def _plain(n: int, model: str = "a") -> list:
    """Predictions labelled a second later, in time order: the usual batch."""
    events = []
    for i in range(n):
        events.append(_event("prediction", model, i, 2 * i, i % 2, (i % 7) / 2, "v1", False))
        events.append(_event("label", model, i, 2 * i + 1, (i // 3) % 2, 0.0, None, False))
    return _sources(events)


def test_a_plain_batch_takes_the_bulk_path_and_an_odd_one_does_not():
    items = _plain(60)
    monitor = Monitor(CONFIG)
    monitor.process(items[:2])  # the first prediction sets the version
    model = monitor.models["a"]
    assert model._bulk(items[2:40])
    assert not model._bulk(items[40:60] + [items[40]])  # a duplicate prediction
    assert not model._bulk(items[40:60] + [items[39]])  # a duplicate label
    orphan = (Label(prediction_id="p-unseen", model_id="a", label=1, timestamp=T0), items[61][1])
    assert not model._bulk(items[40:60] + [orphan])
    early = items[40:60] + [items[61], items[60]]  # a label before its prediction
    assert not model._bulk(early)
    expired = _sources([_event("prediction", "a", 999, 100, 1, 0.0, "v1", False),
                        _event("label", "a", 999, 200, 1, 0.0, None, False)] * 1)
    assert not model._bulk(items[40:60] + expired)  # its label comes after the 20 s TTL
    assert len(model.join.pending) == 0 and model.predictions_total == 20  # refusals changed nothing


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 1200), max_size=8))
def test_plain_streams_of_two_models_in_bulk_equal_event_by_event(cuts):
    items = [item for pair in zip(_plain(300, "a"), _plain(300, "b")) for item in pair]
    with mock.patch.object(monitor_module.ModelMonitor, "_apply_segments", autospec=True,
                           side_effect=monitor_module.ModelMonitor._apply_segments) as bulk:
        assert _run(items, cuts, bulk=True) == _run(items, cuts, bulk=False)
    assert bulk.call_count >= 2  # the bulk path did the work


@settings(max_examples=40, deadline=None)
@given(versions=st.lists(st.sampled_from(["v1", "v2", None]), min_size=1, max_size=40),
       labelled=st.lists(st.booleans(), min_size=1, max_size=40), cuts=st.lists(st.integers(0, 240), max_size=6))
def test_plain_streams_with_versions_and_gaps_in_bulk_equal_event_by_event(versions, labelled, cuts):
    """Versions named, changed or left out, and predictions left unlabelled (the two clocks' cuts
    fall apart), anywhere in a batch."""
    events = []
    for i in range(120):
        events.append(_event("prediction", "a", i, 2 * i, i % 2, (i % 7) / 2, versions[i % len(versions)], False))
        if labelled[i % len(labelled)]:
            events.append(_event("label", "a", i, 2 * i + 1, (i // 3) % 2, 0.0, None, False))
    items = _sources(events)
    with mock.patch.object(monitor_module.ModelMonitor, "_apply_segments", autospec=True,
                           side_effect=monitor_module.ModelMonitor._apply_segments) as bulk:
        assert _run(items, cuts, bulk=True) == _run(items, cuts, bulk=False)
    assert bulk.call_count >= 1



def _windows(monitor: Monitor) -> dict:
    return {model: {name: state[name] for name in ("pair_window", "prediction_window")}
            for model, state in monitor.state().items()}


@settings(max_examples=60, deadline=None)
@given(raw=events_strategy, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_triggers_and_evidence_windows_do_not_depend_on_the_hand_overs(raw, cuts):
    """The evidence windows' rows wait across batches until a trigger or a checkpoint reads them:
    the triggers (with their windows) and the windows' state are the same however the events
    were cut into batches."""
    items = _sources(_stream(raw))

    def run(cuts: list[int]) -> str:
        monitor, triggers, start = Monitor(CONFIG), [], 0
        for cut in sorted({c for c in cuts if c < len(items)}) + [len(items)]:
            triggers += monitor.process(items[start:cut])
            start = cut
        return json.dumps({"triggers": [{f: str(getattr(t, f)) for f in t.__struct_fields__ if f != "trigger_id"}
                                        for t in triggers], "windows": _windows(monitor)}, default=str)

    assert run(cuts) == run([])


def test_the_state_holds_the_evidence_rows_still_waiting():
    items = _plain(5)  # fewer rows than the windows hold: after each batch they wait
    split, whole = Monitor(CONFIG), Monitor(CONFIG)
    for item in items:
        split.process([item])
    whole.process(items)
    assert _windows(split) == _windows(whole)
    assert _windows(split)["a"]["pair_window"]["count"] == 5
