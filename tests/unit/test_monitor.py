"""The Monitor without Kafka: joins, TTL, duplicates, determinism, checkpoints."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from streams.core.codecs import InvalidEvent, Label, Prediction
from streams.core.config import parse_config
from streams.core.monitor import InputDecoder, Monitor, Source

T0 = 1_700_000_000_000
CONFIG = parse_config({
    "kafka": {"bootstrap.servers": "unused:9092"},
    "models": [{
        "id": "m", "label_ttl_seconds": 60, "window": {"size": 20}, "evaluate_every": 5,
        "rules": [{"name": "floor", "min_samples": 10, "conditions": [
            {"statistic": "accuracy", "op": "<", "threshold": 0.7}]}],
    }],
})


def prediction(i: int, ts: int | None = None, value=1) -> Prediction:
    return Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i * 1000 if ts is None else ts,
                      prediction=value, model_version="v1")


def label(i: int, value=1, ts: int | None = None) -> Label:
    return Label(prediction_id=f"p{i}", model_id="m", label=value, timestamp=T0 + i * 1000 + 500 if ts is None else ts)


def feed(monitor: Monitor, events, offset: int = 0):
    return monitor.process((e, Source("labels" if isinstance(e, Label) else "predictions", 0, offset + k))
                           for k, e in enumerate(events))


def stream(outcomes: list[bool]) -> list:
    events = []
    for i, ok in enumerate(outcomes):
        events += [prediction(i), label(i, 1 if ok else 0)]
    return events


def test_joins_in_either_order_and_counts():
    monitor = Monitor(CONFIG)
    feed(monitor, [prediction(0), label(0), label(1), prediction(1)])
    m = monitor.models["m"]
    assert m.counters.joined == 2 and not m.join.pending and not m.join.early_labels
    accuracy = m.stats.performance()["accuracy"]
    assert accuracy.statistic == 1.0 and accuracy.n == 2
    assert m.counters.label_lags == [0.5, 0.5]


def test_predictions_expire_after_the_ttl_of_event_time():
    monitor = Monitor(CONFIG)
    feed(monitor, [prediction(0), prediction(1)])
    # p100 is 100 s later: p0 and p1 are older than the 60 s TTL and expire at the purge.
    feed(monitor, [prediction(100)])
    m = monitor.models["m"]
    assert m.counters.expired_predictions == 2 and list(m.join.pending) == ["p100"]
    # A label for an expired prediction does not join: it is late, with its lag recorded,
    # even after the watermark jumped far ahead.
    feed(monitor, [prediction(150)])
    feed(monitor, [label(0)])
    assert m.counters.joined == 0 and m.counters.labels == 1 and m.counters.expired_predictions == 2
    assert m.counters.late_labels == 1 and m.counters.label_lags == [0.5]
    assert not m.join.early_labels


def test_a_late_label_in_the_same_batch_is_judged_by_event_time_not_by_the_purge():
    monitor = Monitor(CONFIG)
    feed(monitor, [prediction(0), prediction(100), label(0)])
    m = monitor.models["m"]
    assert m.counters.joined == 0 and m.counters.expired_predictions == 1 and m.counters.late_labels == 1


def test_duplicates_are_counted_and_ignored():
    monitor = Monitor(CONFIG)
    feed(monitor, [prediction(0), prediction(0), label(0), label(0), prediction(0)])
    m = monitor.models["m"]
    assert m.counters.joined == 1
    assert m.counters.duplicate_predictions == 2 and m.counters.duplicate_labels == 1


def test_unknown_models_are_not_monitored():
    monitor = Monitor(CONFIG)
    feed(monitor, [Prediction(prediction_id="x", model_id="other", timestamp=T0, prediction=1)])
    assert monitor.models == {}


def test_floor_trigger_on_evaluation_points():
    # 10 right then 10 wrong, evaluated every 5 pairs: at pair 15 accuracy is 10/15 = 0.667 < 0.7.
    triggers = feed(Monitor(CONFIG), stream([True] * 10 + [False] * 10))
    assert [t.trigger_id for t in triggers] == ["m:floor:000001"]
    assert triggers[0].value == 10 / 15 and triggers[0].window.count == 15


OUTCOMES = [True] * 12 + [False] * 9 + [True] * 30 + [False] * 14 + [True] * 5


def triggers_as_json(triggers) -> list:
    return [json.loads(json.dumps(t, default=lambda s: {f: getattr(s, f) for f in s.__struct_fields__}))
            for t in triggers]


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 2 * len(OUTCOMES) - 1), max_size=12, unique=True))
def test_same_events_any_batching_same_triggers(cuts):
    events = stream(OUTCOMES)
    whole = triggers_as_json(feed(Monitor(CONFIG), events))
    monitor, got, start = Monitor(CONFIG), [], 0
    for cut in sorted(cuts) + [len(events)]:
        got += feed(monitor, events[start:cut], offset=start)
        start = cut
    assert triggers_as_json(got) == whole
    assert len(whole) == 2


@settings(max_examples=30, deadline=None)
@given(split=st.integers(1, 2 * len(OUTCOMES) - 1))
def test_checkpoint_anywhere_restores_identical_future(split):
    events = stream(OUTCOMES)
    whole = triggers_as_json(feed(Monitor(CONFIG), events))
    first = Monitor(CONFIG)
    before = feed(first, events[:split])
    checkpoint = json.loads(json.dumps(first.state()))  # what the state topic carries
    second = Monitor(CONFIG)
    second.restore(checkpoint)
    after = feed(second, events[split:], offset=split)
    assert triggers_as_json(before + after) == whole


def _registering(limit: int):
    return parse_config({"kafka": {"bootstrap.servers": "unused:9092"},
                         "engine": {"unknown_model": "register", "max_registered_models": limit},
                         "models": [{"id": "m"}]})


def _line(model: str, i: int = 0) -> bytes:
    return (b'{"prediction_id": "p%d", "model_id": "%s", "timestamp": %d, "prediction": 1}'
            % (i, model.encode(), T0 + i))


def test_unknown_models_go_to_the_dlq_unless_registered_and_registration_is_capped():
    with pytest.raises(InvalidEvent) as info:
        InputDecoder(CONFIG)("predictions", _line("other"))
    assert info.value.reason == "unknown_model" and "'other' is not in the config" in info.value.detail
    config = _registering(limit=2)
    decode = InputDecoder(config)
    assert [decode("predictions", _line(m)).model_id for m in ("m", "a", "b", "a")] == ["m", "a", "b", "a"]
    with pytest.raises(InvalidEvent) as info:
        decode("predictions", _line("c"))
    assert info.value.reason == "unknown_model" and "the 2 allowed by engine.max_registered_models" in info.value.detail
    assert [(m.id, m.registered) for m in decode.models] == [("m", False), ("a", True), ("b", True)]
    assert [m.id for m in config.models] == ["m"]  # the registry adds them, the config stays as read


def test_a_batch_of_messages_decodes_as_one_by_one_and_registers_models_in_message_order():
    # The last free place goes to the model whose message comes first, whatever its topic: here
    # a label of "b" before a prediction of "c" (a topic-by-topic check would register "c").
    label = b'{"prediction_id": "p9", "model_id": "b", "timestamp": %d, "label": 1}' % T0
    messages = [("predictions", _line("m", 0)), ("labels", label), ("predictions", _line("c", 1)),
                ("predictions", b"not json"), ("labels", label.replace(b'"b"', b'"m"'))]
    one_by_one_config, batch_config = _registering(limit=1), _registering(limit=1)

    one_by_one = InputDecoder(one_by_one_config)

    def one(topic, data, decode=one_by_one):
        try:
            return decode(topic, data)
        except InvalidEvent as exc:
            return exc

    def outcome(event):
        if isinstance(event, InvalidEvent):
            return "rejected", event.reason
        return ("label" if isinstance(event, Label) else "prediction"), event.model_id

    expected = [one(topic, data) for topic, data in messages]
    batch_decoder = InputDecoder(batch_config)
    batch = batch_decoder.messages(messages)
    assert list(map(outcome, batch)) == list(map(outcome, expected)) == \
        [("prediction", "m"), ("label", "b"), ("rejected", "unknown_model"), ("rejected", "invalid_json"),
         ("label", "m")]
    assert [m.id for m in batch_decoder.models] == [m.id for m in one_by_one.models] == ["m", "b"]
    assert [m.id for m in batch_config.models] == [m.id for m in one_by_one_config.models] == ["m"]


def test_a_registered_model_is_monitored_with_the_defaults_and_its_state_survives_a_restart():
    config = _registering(limit=10)
    decode = InputDecoder(config)
    monitor = Monitor(config)
    events = [(decode("predictions", _line("new", i)), Source("predictions", 0, i)) for i in range(3)]
    events.append((Label(prediction_id="p1", model_id="new", label=1, timestamp=T0 + 5), Source("labels", 0, 0)))
    monitor.process(events)
    assert monitor.models["new"].counters.joined == 1
    state = json.loads(json.dumps(monitor.state()))
    restarted = Monitor(_registering(limit=10))  # a fresh process: the model is not in its config yet
    restarted.restore(state)
    assert restarted.models["new"].state() == monitor.models["new"].state()


def test_dirty_states_are_the_touched_models_states_each_made_when_read():
    config = parse_config({"kafka": {"bootstrap.servers": "unused:9092"},
                           "models": [{"id": "m"}, {"id": "n"}, {"id": "idle"}]})
    monitor = Monitor(config)
    feed(monitor, [prediction(1), label(1)] + [Prediction(prediction_id="q1", model_id="n", timestamp=T0,
                                                          prediction=0, model_version="v1")])
    states = monitor.dirty_states()
    assert list(states) == ["m", "n"] and monitor.dirty_states() == {}
    # a checkpoint encodes one model at a time: no state is made before it is read
    made = []
    for model_id, model in monitor.models.items():
        model.state = (lambda model_id=model_id, state=model.state: made.append(model_id) or state())
    assert made == []
    assert json.loads(json.dumps(dict(states))) == json.loads(json.dumps(
        {model_id: monitor.models[model_id].state() for model_id in ("m", "n")}))
    assert made == ["m", "n", "m", "n"]
