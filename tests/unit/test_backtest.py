"""Backtest: outputs produced and consistent, chunking-independent, the Monitor's own triggers."""
from __future__ import annotations

import csv
import json
import os

import pytest
from hypothesis import given, strategies as st

from retrain_trigger.events import decode_trigger
from streams.tools.backtest import Backtest, _no_line_longer, load_events, run_backtest
from streams.cli.main import main as cli_main
from streams.core.codecs import InvalidEvent, Label, Prediction, parse_timestamp
from streams.core.config import parse_config
from streams.core.monitor import InputDecoder, Monitor
from streams.tools.simulate import FileSink, Simulation, parse_model_spec, run

CONFIG = {
    "kafka": {"bootstrap.servers": "127.0.0.1:1"},
    "models": [
        {"id": "loans", "window": {"kind": "count", "size": 300}, "evaluate_every": 25,
         "rules": [{"name": "accuracy-floor", "min_samples": 200,
                    "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8, "rearm": 0.9}]}]},
        {"id": "steady", "window": {"kind": "count", "size": 300},
         "rules": [{"name": "accuracy-floor", "min_samples": 200,
                    "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.5}]}]},
    ],
}


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Two models, 2000 predictions each; loans drifts abruptly at 1000; a few malformed lines."""
    directory = tmp_path_factory.mktemp("history")
    sim = Simulation(models=[parse_model_spec("id=loans,generator=agrawal,drift=abrupt,at=1000"),
                             parse_model_spec("id=steady,generator=sea,drift=none")],
                     events=2000, seed=5, label_delay="exp:20", label_missing=0.05, malformed=0.02)
    summary = run(sim, [FileSink(directory)], progress=False)
    (directory / "scenario.json").write_text(json.dumps(summary.as_dict()))
    # The same events as one merged file, in emission order, as `simulate --merged` writes it.
    again = tmp_path_factory.mktemp("merged")
    run(sim, [FileSink(again, merged=True)], progress=False)
    (directory / "events.jsonl").write_bytes((again / "events.jsonl").read_bytes())
    return directory, summary


@pytest.fixture(scope="module")
def config():
    return parse_config(CONFIG, "test.toml")


def test_outputs_exist_and_agree(history, config, tmp_path):
    directory, summary = history
    result = run_backtest(config, tmp_path, predictions=directory / "predictions.jsonl",
                          labels=directory / "labels.jsonl", progress=False, every=500)
    triggers = [decode_trigger(line) for line in (tmp_path / "triggers.jsonl").read_bytes().splitlines()]
    assert [t.trigger_id for t in triggers] == [t.trigger_id for t in result.triggers]
    assert [t.trigger_id for t in triggers] == ["loans:accuracy-floor:000001"]
    drift_time = parse_timestamp(summary.drifts[0].at_time)
    assert parse_timestamp(triggers[0].triggered_at) > drift_time  # after the injected drift, not before
    totals = json.loads((tmp_path / "summary.json").read_text())
    assert totals["lines"] == summary.predictions + summary.labels + summary.malformed
    assert totals["events"] + sum(totals["invalid"].values()) == totals["lines"]
    assert sum(totals["invalid"].values()) == summary.malformed
    assert totals["models"]["loans"]["predictions"] == 2000
    assert totals["models"]["loans"]["joined"] == totals["models"]["loans"]["labels"]
    assert totals["models"]["loans"]["triggers"] == 1 and totals["models"]["steady"]["triggers"] == 0
    with open(tmp_path / "timeline.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"loans", "steady"}
    loans = [float(r["value"]) for r in rows if r["model"] == "loans" and r["statistic"] == "accuracy"]
    assert loans[0] > 0.9 and loans[-1] < 0.7
    assert [int(r["events"]) for r in rows] == sorted(int(r["events"]) for r in rows)
    report = (tmp_path / "report.html").read_text()
    # per model: its performance and its traffic (neither model watches drift)
    assert report.count("data:image/png;base64,") == 4 and "loans:accuracy-floor:000001" in report
    assert "abrupt at" in report  # the scenario's drift, found next to the inputs


def test_triggers_do_not_depend_on_chunking_or_on_one_file_or_two(history, config, tmp_path):
    directory, _ = history
    loaded = load_events(config, directory / "predictions.jsonl", directory / "labels.jsonl")
    by_chunk = {}
    for every in (1, 97, 10_000):
        result = Backtest(config, every=every, timeline=False).run(loaded.events)
        by_chunk[every] = [(t.trigger_id, t.value, t.window.end) for t in result.triggers]
    assert by_chunk[1] == by_chunk[97] == by_chunk[10_000]
    # One merged file replays the same events in the same order (offsets count lines per role,
    # and a line that is not JSON has no role: it is counted with the predictions).
    merged = load_events(config, events=directory / "events.jsonl")
    assert [(e.prediction_id, s.topic) for e, s in merged.events] == \
        [(e.prediction_id, s.topic) for e, s in loaded.events]
    from_merged = Backtest(config, timeline=False).run(merged.events).triggers
    assert [(t.trigger_id, t.value, t.window.end) for t in from_merged] == by_chunk[1]
    # ... and they are what Monitor.process gives on the same ordered events.
    direct = Monitor(config).process(loaded.events)
    assert [(t.trigger_id, t.value) for t in direct] == [(t[0], t[1]) for t in by_chunk[1]]


def test_events_are_replayed_in_event_time_order_with_file_offsets(history, config):
    directory, _ = history
    loaded = load_events(config, directory / "predictions.jsonl", directory / "labels.jsonl")
    keys = [(e.timestamp, s.topic == "labels") for e, s in loaded.events]
    assert keys == sorted(keys)
    lines = (directory / "labels.jsonl").read_bytes().splitlines()
    for event, source in loaded.events[:200]:
        if source.topic == "labels":
            assert json.loads(lines[source.offset])["prediction_id"] == event.prediction_id


def test_cli_backtest_prints_triggers_and_files(history, tmp_path, capsys):
    directory, _ = history
    config_path = tmp_path / "c.toml"
    config_path.write_text("""
[kafka]
"bootstrap.servers" = "127.0.0.1:1"
[[models]]
id = "loans"
window = { kind = "count", size = 300 }
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 200
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
""")
    code = cli_main(["backtest", "-c", str(config_path), "--events", str(directory / "events.jsonl"),
                     "-o", str(tmp_path / "out"), "--no-report", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "loans:accuracy-floor:000001" in out
    # steady is not in this config: its lines are counted as unknown_model, as the DLQ would.
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["invalid"]["predictions:unknown_model"] == 2000
    assert cli_main(["backtest", "-c", str(config_path), "-p", str(tmp_path / "nope.jsonl"), "-o",
                     str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err


def test_a_merged_line_is_a_label_only_with_a_top_level_label_field(config, tmp_path):
    lines = [b'{"prediction_id":"a","model_id":"loans","timestamp":1,"prediction":1,"features":{"label":"x"}}',
             b'{"prediction_id":"a","model_id":"loans","timestamp":2,"label":1}',
             b'not json']
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    loaded = load_events(config, events=tmp_path / "events.jsonl")
    assert [(isinstance(e, Label), s.topic, s.offset) for e, s in loaded.events] == \
        [(False, "predictions", 0), (True, "labels", 0)]
    assert loaded.invalid == {("predictions", "invalid_json"): 1}


def test_a_crlf_file_replays_as_its_lf_twin(history, config, tmp_path):
    directory, _ = history
    for name in ("predictions.jsonl", "labels.jsonl"):
        (tmp_path / name).write_bytes((directory / name).read_bytes().replace(b"\n", b"\r\n"))
    lf = load_events(config, directory / "predictions.jsonl", directory / "labels.jsonl")
    crlf = load_events(config, tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl")
    assert crlf.events == lf.events and crlf.invalid == lf.invalid and crlf.lines == lf.lines
    assert lf.invalid  # the history's malformed lines are rejected alike


@given(st.lists(st.integers(0, 40), max_size=8), st.booleans(), st.integers(1, 30))
def test_a_file_is_said_to_have_no_line_over_the_limit_only_when_it_has_none(lengths, newline_at_end, limit):
    data = b"\n".join(b"x" * n for n in lengths) + (b"\n" if newline_at_end else b"")
    if _no_line_longer(data, limit):
        assert max(lengths, default=0) <= limit


def _valid(i: int, pad: bytes = b"") -> bytes:
    """A valid prediction whose unknown field holds ``pad`` (msgspec skips it unread)."""
    return b'{"prediction_id": "p%d", "model_id": "loans", "timestamp": %d, "prediction": 1, "pad": "%s"}' % (i, i, pad)


@pytest.mark.parametrize("reason", ["too_large", "invalid_utf8"])
def test_a_line_too_long_or_not_utf8_is_rejected_as_one_by_one(tmp_path, reason):
    """The whole-file checks let the decoder skip its per-line ones; a file that fails them is
    decoded with them, and the odd line (valid JSON otherwise) gets its reason."""
    limit = 200
    odd = _valid(7, b"y" * limit if reason == "too_large" else b"\xff")
    lines = [_valid(i) for i in range(7)] + [odd] + [_valid(i) for i in range(8, 30)]
    (tmp_path / "predictions.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = parse_config({**CONFIG, "engine": {"max_message_bytes": limit}}, "test.toml")
    loaded = load_events(config, tmp_path / "predictions.jsonl")
    assert loaded.invalid == {("predictions", reason): 1}
    assert [s.offset for _, s in loaded.events] == [i for i in range(30) if i != 7]


def test_a_file_of_usual_lines_is_read_whole_and_loads_as_line_by_line(history, config, tmp_path, monkeypatch):
    """Without malformed lines, each file is decoded in one call from its mapped bytes (the
    fast path); what it loads is what the line-by-line path loads."""
    directory, _ = history
    decode = InputDecoder(config)
    for name, topic in (("predictions.jsonl", "predictions"), ("labels.jsonl", "labels")):
        valid = []
        for line in (directory / name).read_bytes().splitlines():
            try:
                decode(topic, line)
                valid.append(line)
            except InvalidEvent:
                pass
        (tmp_path / name).write_bytes(b"\n".join(valid) + b"\n")
    whole_calls = []
    original = InputDecoder.buffer

    def spied(self, topic, data):
        events = original(self, topic, data)
        whole_calls.append(events is not None)
        return events

    monkeypatch.setattr(InputDecoder, "buffer", spied)
    whole = load_events(config, tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl")
    assert whole_calls == [True, True]
    monkeypatch.setattr(InputDecoder, "buffer", lambda self, topic, data: None)
    by_line = load_events(config, tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl")
    names = {n for e, _ in by_line.events if isinstance(e, Prediction) for n in e.features}
    assert [_comparable(item, names) for item in whole.events] == [_comparable(item, names) for item in by_line.events]
    assert whole.lines == by_line.lines and not whole.invalid


def _comparable(item, names):
    """An (event, source) as the Monitor reads it: features by name, whether a dict or a struct."""
    event, source = item
    fields = {f: getattr(event, f) for f in event.__struct_fields__ if f != "features"}
    if isinstance(event, Label):
        return "label", fields, source
    return "prediction", fields, {n: event.features.get(n) for n in sorted(names)}, source


def test_an_empty_file_loads_nothing(config, tmp_path):
    (tmp_path / "predictions.jsonl").write_bytes(b"")
    loaded = load_events(config, tmp_path / "predictions.jsonl")
    assert (loaded.events, loaded.lines, dict(loaded.invalid)) == ([], 0, {})


def test_a_pipe_is_read_as_its_file_would_be(history, config):
    """``-p <(zcat predictions.jsonl.gz)`` hands the backtest a pipe, which cannot be mapped."""
    directory, _ = history
    data = (directory / "labels.jsonl").read_bytes()[:50_000]  # within the pipe's buffer
    data = data[:data.rindex(b"\n") + 1]
    read, write = os.pipe()
    try:
        os.write(write, data)
        os.close(write)
        from_pipe = load_events(config, labels=f"/dev/fd/{read}")
    finally:
        os.close(read)
    (directory / "part.jsonl").write_bytes(data)
    from_file = load_events(config, labels=directory / "part.jsonl")
    assert from_pipe.events == from_file.events and from_pipe.lines == from_file.lines > 0


def test_class_ids_past_int64_stay_apart_whatever_the_chunking(tmp_path):
    """Class ids of 2**63 and more decode into uint64 arrays where the others are int64: the
    accuracy over a batch of both (two wrong pairs of eight) is that of the pairs one by one."""
    import tomllib

    config = parse_config(tomllib.loads("""
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"
[[models]]
id = "m"
task = "multiclass"
metrics = ["accuracy"]
window = { kind = "count", size = 100 }
evaluate_every = 2
[[models.rules]]
name = "acc"
conditions = [{ statistic = "accuracy", op = "<", threshold = 0.0 }]
"""), "<test>")
    big = 2**63
    pairs = [(big, big), (big + 1, big + 1), (0, 0), (1, 1), (big, big + 1), (big, big + 1), (0, 0), (1, 1)]
    predictions, labels = tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl"
    with open(predictions, "w") as p, open(labels, "w") as l:
        for i, (predicted, label) in enumerate(pairs):
            ts = 1_700_000_000_000 + 20 * i
            p.write(json.dumps({"prediction_id": f"a{i}", "model_id": "m", "timestamp": ts + 10,
                                "prediction": predicted}) + "\n")
            l.write(json.dumps({"prediction_id": f"a{i}", "model_id": "m", "timestamp": ts + 20, "label": label}) + "\n")
    events = load_events(config, predictions, labels).events
    for every in (8, 1, 16):
        timeline = Backtest(config, every=every).run(events).timeline
        assert [value for *_, name, value, _ in timeline if name == "accuracy"][-1] == 0.75


def test_a_registered_model_is_announced_once(history, tmp_path, caplog):
    """The loader registers the unconfigured models as it reads them and says so; the replay's
    Monitor registers them again, quietly (in one process here: a forked worker's log records
    would not reach caplog)."""
    directory, _ = history
    config = parse_config({"kafka": CONFIG["kafka"], "engine": {"unknown_model": "register"}}, "test.toml")
    with caplog.at_level("INFO", logger="driftline.monitor"):
        run_backtest(config, tmp_path, predictions=directory / "predictions.jsonl", labels=directory / "labels.jsonl",
                     progress=False, report=False, workers=1)
    announced = sorted(r.model for r in caplog.records if r.getMessage().startswith("registered model"))
    assert announced == ["loans", "steady"]
