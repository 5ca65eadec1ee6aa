"""A backtest replayed in several worker processes, or with its chunks flushed together, writes
exactly what one process handing the Monitor a chunk at a time writes."""
from __future__ import annotations

import pytest

from streams.cli.main import main as cli_main
from streams.core.config import parse_config
from streams.tools import backtest as bt
from streams.tools.backtest import OUTPUTS, default_workers, load_events, replay, run_backtest
from streams.tools.report import ReportRecorder
from streams.tools.simulate import FileSink, Simulation, parse_model_spec, run

CONFIG_TOML = """
[kafka]
"bootstrap.servers" = "127.0.0.1:1"

[[models]]
id = "loans"
features = { numeric = ["salary", "age"], categorical = ["elevel"] }
window = { kind = "count", size = 300 }
  [models.drift]
  numeric = ["psi", "ks"]
  categorical = ["chi2"]
  reference_size = 300
  window = 300
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 100
  conditions = [{ statistic = "accuracy", op = "<", threshold = 0.8 }]
  [[models.rules]]
  name = "feature-drift"
  conditions = [{ statistic = "feature.*", fired = true }]

[[models]]
id = "sensors"
features = { numeric = ["x0", "x1"] }
  [models.drift]
  numeric = ["psi", "ks"]
  reference_size = 300
  window = 300
  [[models.rules]]
  name = "feature-drift"
  conditions = [{ statistic = "feature.*.psi", op = ">", threshold = 0.2 }]

[[models]]
id = "churn"
window = { kind = "count", size = 200 }
evaluate_every = 10
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 100
  conditions = [{ statistic = "accuracy", op = "<", threshold = 0.99 }]

[[models]]
id = "idle"
"""


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Three models of different traffic (one configured model has none), each with triggers."""
    import tomllib

    directory = tmp_path_factory.mktemp("history")
    sim = Simulation(models=[parse_model_spec("id=loans,generator=agrawal,drift=abrupt,at=600"),
                             parse_model_spec("id=sensors,generator=sea,drift=covariate,shift=x0:-2|x1:-2,at=500"),
                             parse_model_spec("id=churn,generator=hyperplane,drift=none")],
                     events=1000, seed=11, label_delay="exp:30", label_missing=0.05, malformed=0.01)
    run(sim, [FileSink(directory)], progress=False)
    (directory / "driftline.toml").write_text(CONFIG_TOML)
    return directory, parse_config(tomllib.loads(CONFIG_TOML), "driftline.toml")


def _outputs(directory, config, out, workers, every, report=True):
    run_backtest(config, out, predictions=directory / "predictions.jsonl", labels=directory / "labels.jsonl",
                 every=every, progress=False, workers=workers, report=report)
    return {name: (out / name).read_bytes() for name in OUTPUTS if (out / name).exists()}


@pytest.mark.parametrize("every, workers, report", [(97, 2, False), (97, 3, False), (2500, 2, False)])
def test_every_output_is_byte_identical_with_any_number_of_workers(history, tmp_path, every, workers, report):
    directory, config = history
    one = _outputs(directory, config, tmp_path / "1", workers=1, every=every, report=report)
    triggers = one["triggers.jsonl"].decode()
    assert all(f'"model_id":"{m}"' in triggers for m in ("loans", "sensors", "churn"))
    assert b'"no_events": true' in one["summary.json"]  # the idle model
    many = _outputs(directory, config, tmp_path / str(workers), workers=workers, every=every, report=report)
    assert sorted(many) == sorted(one)
    for name in one:
        if name == "summary.json":  # its seconds differ
            one_lines, many_lines = (
                [line for line in text.splitlines() if b'"load"' not in line and b'"replay"' not in line
                 and b"lines_per_second" not in line] for text in (one[name], many[name]))
            assert one_lines == many_lines
        else:
            assert one[name] == many[name], name


def test_the_report_recordings_are_the_same_merged(history):
    directory, config = history
    loaded = load_events(config, directory / "predictions.jsonl", directory / "labels.jsonl")
    recordings = []
    for workers in (1, 2):
        recorder = ReportRecorder(config)
        replay(config, loaded.events, every=50, workers=workers, recorder=recorder)
        recorder.finish()
        # test_sizes is looked up by key: the order its keys were added in does not matter
        recordings.append(repr({k: dict(sorted(v.items())) if k == "test_sizes" else v
                                for k, v in vars(recorder).items() if k != "monitor"}))
    assert recordings[0] == recordings[1]


@pytest.mark.parametrize("every, flush_events", [(7, 100), (97, 5000), (250, 1000), (50, 10**9)])
def test_chunks_flushed_together_write_what_a_chunk_at_a_time_writes(history, tmp_path, monkeypatch, every,
                                                                     flush_events):
    """Marks inside a flush sample what a flush per chunk sampled: triggers (and their order),
    timeline, totals and the report's recordings (traffic, test sizes, trigger snapshots)."""
    directory, config = history
    loaded = load_events(config, directory / "predictions.jsonl", directory / "labels.jsonl")
    found = []
    for at_once in (0, flush_events):  # 0: a flush per chunk
        monkeypatch.setattr(bt, "FLUSH_EVENTS", at_once)
        outputs = _outputs(directory, config, tmp_path / str(at_once), workers=1, every=every, report=False)
        recorder = ReportRecorder(config)
        replay(config, loaded.events, every=every, recorder=recorder)
        recorder.finish()
        found.append(({name: _without_timings(name, data) for name, data in outputs.items()},
                      repr({k: dict(sorted(v.items())) if k == "test_sizes" else v
                            for k, v in vars(recorder).items() if k != "monitor"})))
    assert found[0] == found[1]
    assert b"sensors" in found[0][0]["triggers.jsonl"] and "Snapshot(" in found[0][1]


def test_the_cli_takes_workers(history, tmp_path):
    directory, config = history
    assert cli_main(["backtest", "-c", str(directory / "driftline.toml"), "-p", str(directory / "predictions.jsonl"),
                     "-l", str(directory / "labels.jsonl"), "-o", str(tmp_path / "cli"), "--every", "200",
                     "--no-report", "--no-progress", "--workers", "2"]) == 0
    api = _outputs(directory, config, tmp_path / "api", workers=1, every=200, report=False)
    assert (tmp_path / "cli" / "triggers.jsonl").read_bytes() == api["triggers.jsonl"]
    assert (tmp_path / "cli" / "timeline.csv").read_bytes() == api["timeline.csv"]


def test_a_workers_error_is_raised_by_the_backtest(history, tmp_path, monkeypatch):
    directory, config = history

    def broken(*args):
        raise ValueError("boom")

    monkeypatch.setattr(bt, "diagnose", broken)  # forked workers run the patched module
    with pytest.raises(ValueError, match="boom") as raised:
        _outputs(directory, config, tmp_path / "x", workers=2, every=100, report=False)
    assert "in backtest worker" in "".join(raised.value.__notes__) and "broken" in "".join(raised.value.__notes__)
    assert not (tmp_path / "x").exists()


def test_default_workers_are_no_more_than_the_models():
    assert default_workers(1) == 1
    assert 1 <= default_workers(3) <= 3


@pytest.mark.parametrize("workers", [1, 2])
def test_the_progress_counts_each_event_once(history, workers):
    directory, config = history
    loaded = load_events(config, directory / "predictions.jsonl", directory / "labels.jsonl")

    class Bar:
        seen: list[int] = []

        def update(self, n: int) -> None:
            self.seen.append(n)

    bar = Bar()
    replay(config, loaded.events, every=100, workers=workers, progress=lambda events: bar)
    assert bar.seen and bar.seen == sorted(bar.seen) and bar.seen[-1] == len(loaded.events)


def test_chunk_order_is_each_chunks_models_as_they_first_come():
    """The models of each chunk of ``every`` events, in the order they first come in it."""
    import numpy as np
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=200, deadline=None)
    @given(models=st.lists(st.integers(0, 4), min_size=1, max_size=300), every=st.integers(1, 40))
    def check(models, every):
        names = [f"m{k}" for k in range(5)]
        ids = [names[k] for k in models]
        expected = [list(dict.fromkeys(ids[start:start + every])) for start in range(0, len(ids), every)]
        assert bt._chunk_order(np.asarray(models, dtype=np.int64), every, names) == expected

    check()


def test_plan_shares_out_the_models_most_events_first():
    """Each model to the worker with the fewest events so far, the models with the most events
    first (ties: by name; the lower worker); each event's worker is its model's; the reporter is
    the worker with the fewest events (ties: the last)."""
    import dataclasses
    from collections import Counter

    import numpy as np
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=200, deadline=None)
    @given(ids=st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=200), workers=st.integers(1, 4),
           every=st.integers(1, 40))
    def check(ids, workers, every):
        share, worker_of = [0] * workers, {}
        for model, n in sorted(Counter(ids).items(), key=lambda item: (-item[1], item[0])):
            worker_of[model] = share.index(min(share))
            share[worker_of[model]] += n
        plan = bt._Plan.of(ids, every, workers)
        assert list(plan.worker_of.items()) == list(worker_of.items())
        assert plan.owner.tolist() == [worker_of[model] for model in ids]
        assert plan.reporter == min(range(workers), key=lambda w: (share[w], -w))
        assert plan.chunk_order == [list(dict.fromkeys(ids[start:start + every])) for start in range(0, len(ids), every)]
        assert (plan.every, plan.events) == (every, len(ids))
        # numbered otherwise (a decoding worker numbers the models in file order): the same plan
        names = sorted(set(ids), reverse=True)
        codes = np.array([names.index(model) for model in ids], dtype=np.int64)
        other = bt._Plan.of_codes(codes, names, every, workers)
        assert other.owner.tolist() == plan.owner.tolist()
        assert dataclasses.replace(other, owner=None) == dataclasses.replace(plan, owner=None)

    check()


@pytest.fixture(scope="module")
def odd_history(tmp_path_factory):
    """The config's models and one it does not have ("other"), malformed lines, as two files and
    as one merged file."""
    directory = tmp_path_factory.mktemp("odd")
    sim = Simulation(models=[parse_model_spec("id=loans,generator=agrawal,drift=abrupt,at=600"),
                             parse_model_spec("id=other,generator=sea,drift=none"),
                             parse_model_spec("id=sensors,generator=sea,drift=covariate,shift=x0:-2|x1:-2,at=500"),
                             parse_model_spec("id=churn,generator=hyperplane,drift=none")],
                     events=800, seed=3, label_delay="exp:30", label_missing=0.05, malformed=0.02)
    run(sim, [FileSink(directory, merged=True)], progress=False)
    (directory / "garbage.jsonl").write_text('not json\n{"model_id": "loans"}\n')
    (directory / "bom_crlf.jsonl").write_bytes(b"\xef\xbb\xbf" + (directory / "predictions.jsonl").read_bytes()
                                               .replace(b"\n", b"\r\n"))
    return directory


def _without_timings(name: str, data: bytes) -> bytes | list[bytes]:
    if name != "summary.json":
        return data
    return [line for line in data.splitlines()
            if b'"load"' not in line and b'"replay"' not in line and b"lines_per_second" not in line]


@pytest.mark.parametrize("inputs", ["two files", "merged", "a pipe", "bom and crlf", "no valid line"])
@pytest.mark.parametrize("register", [False, True])
def test_workers_that_decode_the_files_write_what_one_process_writes(odd_history, tmp_path, inputs, register):
    """Rejects, unknown (or registered) models, line numbers of a merged file, a pipe read once,
    a byte order mark and CRLF line ends."""
    import os
    import threading
    import tomllib

    text = ('[engine]\nunknown_model = "register"\n' if register else "") + CONFIG_TOML
    config = parse_config(tomllib.loads(text), "driftline.toml")
    files = {"two files": {"predictions": odd_history / "predictions.jsonl", "labels": odd_history / "labels.jsonl"},
             "merged": {"events": odd_history / "events.jsonl"},
             "a pipe": {"predictions": odd_history / "predictions.jsonl", "labels": None},
             "bom and crlf": {"predictions": odd_history / "bom_crlf.jsonl", "labels": odd_history / "labels.jsonl"},
             "no valid line": {"predictions": odd_history / "garbage.jsonl"}}[inputs]
    written = {}
    for workers in (1, 2, 3):
        kwargs = dict(files)
        if inputs == "a pipe":
            read, write = os.pipe()
            data = (odd_history / "labels.jsonl").read_bytes()
            threading.Thread(target=lambda: (os.write(write, data), os.close(write)), daemon=True).start()
            kwargs["labels"] = f"/dev/fd/{read}"
        out = tmp_path / str(workers)
        try:
            result = run_backtest(config, out, **kwargs, every=97, progress=False, workers=workers, report=False)
        finally:
            if inputs == "a pipe":
                os.close(read)
        written[workers] = {name: _without_timings(name, (out / name).read_bytes()) for name in OUTPUTS[:-1]}
        assert result.lines and (result.events == 0) == (inputs == "no valid line")
    assert written[1] == written[2] == written[3]
    if inputs != "no valid line":
        assert b"unknown_model" in written[1]["rejects.jsonl"] or register


@pytest.mark.parametrize("inputs", ["two files", "merged", "no valid line"])
def test_a_load_left_in_file_order_gives_the_order_and_times_of_the_ordered_one(odd_history, inputs):
    """What a decoding worker puts in order itself: ``events[order]`` is the ordered load's events
    (rejects, unknown models and line counts the same), ``times`` each event's time."""
    import tomllib

    config = parse_config(tomllib.loads(CONFIG_TOML), "driftline.toml")
    files = {"two files": {"predictions": odd_history / "predictions.jsonl", "labels": odd_history / "labels.jsonl"},
             "merged": {"events": odd_history / "events.jsonl"},
             "no valid line": {"predictions": odd_history / "garbage.jsonl"}}[inputs]
    with bt._opened(config, **files) as opened:
        ordered, unordered = bt._load(config, opened), bt._load(config, opened, ordered=False)
    assert [unordered.events[i] for i in unordered.order.tolist()] == ordered.events
    assert unordered.times.tolist() == [event.timestamp for event, _ in unordered.events]
    assert (unordered.invalid, unordered.lines, unordered.rejects, unordered.unknown_models) \
        == (ordered.invalid, ordered.lines, ordered.rejects, ordered.unknown_models)
    assert ordered.order is None and (len(ordered.events) > 0) == (inputs != "no valid line")


def test_a_files_error_is_raised_once_as_by_one_process(odd_history, tmp_path, capsys):
    """Every worker finds it; the parent raises the first, without a worker's note."""
    import json
    import tomllib

    directory = tmp_path
    (directory / "array.json").write_text(json.dumps([{"model_id": "loans"}] * 3, indent=2))
    config = parse_config(tomllib.loads(CONFIG_TOML), "driftline.toml")
    with pytest.raises(bt.BacktestError) as alone:
        load_events(config, directory / "array.json", odd_history / "labels.jsonl")
    with pytest.raises(bt.BacktestError) as parallel:
        bt.replay_files(config, directory / "array.json", odd_history / "labels.jsonl", workers=2)
    assert str(parallel.value) == str(alone.value) and "one JSON array" in str(alone.value)
    assert not getattr(parallel.value, "__notes__", None)
    (directory / "driftline.toml").write_text(CONFIG_TOML)
    capsys.readouterr()
    assert cli_main(["backtest", "-c", str(directory / "driftline.toml"), "-p", str(directory / "array.json"),
                     "-o", str(directory / "out"), "--no-report", "--no-progress", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("one JSON array") == 1 and err.startswith("driftline: backtest: "), err
    assert not (directory / "out").exists()


def test_the_progress_of_decoding_workers_counts_each_event_once(history):
    directory, config = history

    class Bar:
        totals: list[int] = []
        seen: list[int] = []

        def update(self, n: int) -> None:
            self.seen.append(n)

    bar = Bar()
    result = bt.replay_files(config, directory / "predictions.jsonl", directory / "labels.jsonl", every=100,
                             workers=2, progress=lambda events: bar.totals.append(events) or bar)
    assert bar.totals == [result.events] and bar.seen == sorted(bar.seen) and bar.seen[-1] == result.events


def test_registered_models_are_decoded_here_and_shared_out_as_found(odd_history, monkeypatch):
    """Under ``unknown_model = "register"`` the models are known only once the files are decoded:
    decoded once, here, and the workers forked for the models found, not one per model there
    could be, each decoding every line."""
    import tomllib

    made = []
    real = bt._ParallelReplay.__init__

    def spy(self, *args, **kwargs):
        made.append((args[2], "inputs" if kwargs.get("inputs") is not None else "events"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(bt._ParallelReplay, "__init__", spy)
    files = (odd_history / "predictions.jsonl", odd_history / "labels.jsonl")
    register = parse_config(tomllib.loads('[engine]\nunknown_model = "register"\n' + CONFIG_TOML), "driftline.toml")
    workers = default_workers(4)  # loans, sensors, churn and the registered "other" (or the config's "idle")
    bt.replay_files(register, *files, every=97, workers=None)
    assert made == ([(workers, "events")] if workers > 1 else [])
    made.clear()
    bt.replay_files(parse_config(tomllib.loads(CONFIG_TOML), "driftline.toml"), *files, every=97, workers=None)
    assert made == ([(workers, "inputs")] if workers > 1 else [])
