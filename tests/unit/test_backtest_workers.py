"""A backtest replayed in several worker processes writes exactly what one process writes."""
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
        recordings.append(repr({k: v for k, v in vars(recorder).items() if k != "monitor"}))
    assert recordings[0] == recordings[1]


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
    replay(config, loaded.events, every=100, workers=workers, progress=lambda: bar)
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
