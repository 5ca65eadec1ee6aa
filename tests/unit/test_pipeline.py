"""The pipeline's batch hand-over: the same as item by item."""
from __future__ import annotations

import itertools

from hypothesis import given, settings, strategies as st

from streams.core.codecs import InvalidEvent
from streams.core.config import parse_config
from streams.core.monitor import Source
from streams.runtime.pipeline import Metrics, Pipeline, by_partition

T0 = 1_700_000_000_000
CONFIG = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "models": [{"id": "m"}]})


def _line(i: int) -> bytes:
    return b'{"prediction_id": "p%d", "model_id": "m", "timestamp": %d, "prediction": 1, "score": 0.5}' % (i, T0 + i)


def _label(i: int) -> bytes:
    return b'{"prediction_id": "p%d", "model_id": "m", "timestamp": %d, "label": 1}' % (i, T0 + i)


class _Outputs:
    def __init__(self):
        self.dead, self.triggers = [], []

    def dead_letter(self, message, source, error):
        self.dead.append((message, source.offset, error.reason))

    def trigger(self, trigger):
        self.triggers.append(trigger)


class _Rejections(Metrics):
    def __init__(self):
        self.rejected = []

    def count_rejected(self, topic, reason):
        self.rejected.append((topic, reason))


@settings(max_examples=60, deadline=None)
@given(partitions=st.lists(st.integers(0, 11), max_size=60))
def test_by_partition_keeps_each_partitions_order_and_first_seen_order(partitions):
    items = [(None, Source("t", p, i), i) for i, p in enumerate(partitions)]
    expected: dict[int, list] = {}
    for item in items:
        expected.setdefault(item[1].partition, []).append(item)
    grouped = by_partition(items)
    assert grouped == expected and list(grouped) == list(expected)


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from(["prediction", "label", "bad", "unknown"]), min_size=1, max_size=40))
def test_hand_over_sends_rejections_to_dead_letters_and_events_in_order(kinds):
    lines = {"prediction": _line, "label": _label, "bad": lambda i: b"not json",
             "unknown": lambda i: _line(i).replace(b'"m"', b'"x"')}
    topics = ["labels" if kind == "label" else "predictions" for kind in kinds]
    values = [lines[kind](i) for i, kind in enumerate(kinds)]
    outputs, metrics = _Outputs(), _Rejections()
    pipeline = Pipeline(CONFIG, outputs, metrics, log_triggers=False)
    items = pipeline.decode(topics, [0] * len(kinds), list(range(len(kinds))), values, values)
    handed = []

    def process(monitor, events):
        handed.extend(events)
        return []

    pipeline.process = process
    pipeline.hand_over(pipeline.monitor(), items)
    rejected = [i for i, kind in enumerate(kinds) if kind in ("bad", "unknown")]
    assert [offset for _, offset, _ in outputs.dead] == rejected
    assert [reason for _, reason in metrics.rejected] == [
        "invalid_json" if kinds[i] == "bad" else "unknown_model" for i in rejected]
    assert [source.offset for _, source in handed] == [i for i in range(len(kinds)) if i not in rejected]
    assert all(not isinstance(event, InvalidEvent) for event, _ in handed)
    assert [event.prediction_id for event, _ in handed] == [f"p{i}" for i in range(len(kinds)) if i not in rejected]


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from(["prediction", "label", "bad", "unknown"]), min_size=1, max_size=40))
def test_decode_run_of_each_run_gives_the_items_of_decode(kinds):
    """The engine decodes a consumed batch a run (one partition's messages) at a time: the same
    items as the batch decoded at once, a rejection's message kept only with it."""
    lines = {"prediction": _line, "label": _label, "bad": lambda i: b"not json",
             "unknown": lambda i: _line(i).replace(b'"m"', b'"x"')}
    topics = ["labels" if kind == "label" else "predictions" for kind in kinds]
    values = [lines[kind](i) for i, kind in enumerate(kinds)]
    pipeline = Pipeline(CONFIG, _Outputs(), Metrics(), log_triggers=False)
    whole = pipeline.decode(topics, [0] * len(kinds), list(range(len(kinds))), values, values)
    runs = _decoded_by_runs(pipeline, topics, values)

    def comparable(items):  # a run without a bad line may decode into the struct of the watched features
        return [(getattr(item[0], "reason", None), getattr(item[0], "prediction_id", None), item[1], item[2:])
                for item in items]

    assert comparable(runs) == comparable(whole)
    assert [len(item) for item in whole] == [3 if kind in ("bad", "unknown") else 2 for kind in kinds]


@settings(max_examples=40, deadline=None)
@given(models=st.lists(st.tuples(st.sampled_from(["predictions", "labels"]), st.sampled_from("mabc")), max_size=12))
def test_decode_run_registers_unknown_models_in_message_order_as_decode_does(models):
    """With unknown_model = "register", the last free place goes to the model whose message was
    read first, whether the batch is decoded at once or a run at a time (each run its own pipeline)."""
    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "models": [{"id": "m"}],
                           "engine": {"unknown_model": "register", "max_registered_models": 2}})
    topics = [topic for topic, _ in models]
    values = [(_line(i) if topic == "predictions" else _label(i)).replace(b'"m"', b'"%s"' % model.encode())
              for i, (topic, model) in enumerate(models)]
    whole_pipeline, runs_pipeline = (Pipeline(config, _Outputs(), Metrics(), log_triggers=False) for _ in range(2))
    whole = whole_pipeline.decode(topics, [0] * len(models), list(range(len(models))), values, values)
    runs = _decoded_by_runs(runs_pipeline, topics, values)
    assert [getattr(item[0], "reason", None) for item in runs] == [getattr(item[0], "reason", None) for item in whole]
    assert [m.id for m in runs_pipeline.models] == [m.id for m in whole_pipeline.models]


def _decoded_by_runs(pipeline: Pipeline, topics: list[str], values: list[bytes]) -> list:
    """The items of a batch (partition 0, offsets from 0) decoded a run of one topic at a time,
    as the engine decodes a consumed batch."""
    runs, start = [], 0
    for topic, run in itertools.groupby(topics):
        end = start + len(list(run))
        runs += pipeline.decode_run(topic, 0, list(range(start, end)), values[start:end], values[start:end])
        start = end
    return runs


def test_a_restored_partitions_models_are_exported_at_once():
    """After a restart the engines restore each partition's Monitor through the pipeline: the
    restored models' gauges (window, performance, drift, pending) are set right away, as they
    were before the restart, not when the model's next event comes."""
    from prometheus_client import generate_latest

    from streams.runtime.exporter import Exporter

    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "metrics": {"refresh_ms": 0}, "models": [
        {"id": "m", "features": {"numeric": ["x"]}, "evaluate_every": 5,
         "drift": {"numeric": ["psi"], "prediction": [], "window": 20, "reference_size": 20}}]})
    predictions = [b'{"prediction_id": "p%d", "model_id": "m", "timestamp": %d, "prediction": 1, "score": 0.5, '
                   b'"features": {"x": %d}}' % (i, T0 + i, i % 7) for i in range(60)]
    labels = [b'{"prediction_id": "p%d", "model_id": "m", "timestamp": %d, "label": %d}' % (i, T0 + i, i % 3 > 0)
              for i in range(50)]

    def gauges(exporter: Exporter) -> list[str]:
        return [line for line in generate_latest(exporter.registry).decode().splitlines()
                if line.startswith(("driftline_performance{", "driftline_window_samples", "driftline_feature_drift{",
                                    "driftline_pending_predictions"))]

    before = Exporter(config)
    pipeline = Pipeline(config, _Outputs(), before)
    monitor = pipeline.monitor()
    for topic, values in (("predictions", predictions), ("labels", labels)):
        pipeline.hand_over(monitor, pipeline.decode_run(topic, 0, list(range(len(values))), values, values))
    assert len(gauges(before)) == 4
    after = Exporter(config)
    Pipeline(config, _Outputs(), after).monitor(monitor.state())
    assert gauges(after) == gauges(before)


def test_a_model_on_a_second_partition_is_warned_once_per_partition(caplog):
    """The contract keys events by model_id: a model whose events come on a second partition
    (keyed otherwise) has its state split, which the user is told; its own partition again, a
    restored partition, or a backtest (no partitions) is not worth a word."""
    pipeline = Pipeline(CONFIG, _Outputs(), Metrics(), log_triggers=False)

    def hand(partition, i, monitor=None):
        monitor = monitor or pipeline.monitor(partition=partition)
        items = pipeline.decode(["predictions"], [partition], [i], [_line(i)], [_line(i)])
        pipeline.hand_over(monitor, items)
        return monitor

    first = hand(0, 0)
    hand(0, 1, first)
    hand(0, 2)  # partition 0 again (a Monitor restored after a rewind)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    hand(2, 3)
    hand(2, 4)
    hand(1, 5)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["model 'm' has events on input partitions 0, 2: each keeps a state of its own, so its "
                      "metrics show one partition's and its rules judge part of its events; key prediction "
                      "and label events by model_id (README: The event contract)",
                      "model 'm' has events on input partitions 0, 1, 2: each keeps a state of its own, so "
                      "its metrics show one partition's and its rules judge part of its events; key prediction "
                      "and label events by model_id (README: The event contract)"]
    caplog.clear()
    restored = pipeline.monitor({"m": first.models["m"].state()}, partition=3)
    assert "m" in restored.models
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"][0].startswith(
        "model 'm' has events on input partitions 0, 1, 2, 3:")
    caplog.clear()
    backtest = Pipeline(CONFIG, _Outputs(), Metrics(), log_triggers=False)
    for i in range(2):
        m = backtest.monitor()
        backtest.hand_over(m, backtest.decode(["predictions"], [i], [i], [_line(i)], [_line(i)]))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
