"""Every error a user can cause, through the real console script: its exit code and one line.

The probes run as subprocesses of the installed ``driftline`` script, as a user runs it. Each
start costs about a second of imports, so the table's probes run together, a few at a time, in
one module-scoped fixture; each test then checks one probe's result.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.tools.backtest import OUTPUTS, load_events, run_backtest
from streams.core.config import parse_config

SCRIPT = Path(sys.executable).with_name("driftline")
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the driftline console script is not installed")

START = 1_767_225_600_000
KAFKA = '[kafka]\n"bootstrap.servers" = "127.0.0.1:9"\n'
MODEL = ('[[models]]\nid = "loans"\nfeatures = { numeric = ["age", "never_sent"], categorical = ["plan"] }\n'
         '[models.drift]\nreference_size = 20\nwindow = 20\n')


def prediction(i: int, model: str = "loans", **extra) -> dict:
    return {"prediction_id": f"p{i}", "model_id": model, "timestamp": START + 1000 * i, "prediction": i % 2,
            "score": 0.5, "features": {"age": 20 + i % 40, "plan": "pro" if i % 3 else "free"}, **extra}


def label(i: int, model: str = "loans") -> dict:
    return {"prediction_id": f"p{i}", "model_id": model, "timestamp": START + 1000 * i + 500, "label": i % 2}


def jsonl(path: Path, events: list) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("probes")
    (d / "ok.toml").write_text(KAFKA + MODEL)
    (d / "churn.toml").write_text(KAFKA + MODEL.replace('"loans"', '"churn"'))
    (d / "no_models.toml").write_text(KAFKA)
    (d / "same_topic.toml").write_text(KAFKA + '[topics]\nlabels = "predictions"\n' + MODEL)
    (d / "both_kinds.toml").write_text(KAFKA + MODEL.replace('categorical = ["plan"]', 'categorical = ["age"]'))
    (d / "typo.toml").write_text(KAFKA + '"sasl.usernme" = "me"\n' + MODEL)
    (d / "bad_value.toml").write_text(KAFKA + 'acks = "most"\n' + MODEL)
    (d / "latin1.toml").write_bytes(KAFKA.encode() + b"# caf\xe9\n" + MODEL.encode())
    (d / "a_directory").mkdir()
    (d / "a_file").write_text("")
    jsonl(d / "predictions.jsonl", [prediction(i) for i in range(60)])
    jsonl(d / "labels.jsonl", [label(i) for i in range(60)])
    jsonl(d / "orphan_labels.jsonl", [{**label(i), "prediction_id": f"x{i}"} for i in range(60)])
    lines = [json.dumps(prediction(i)) for i in range(60)]
    lines[3] = json.dumps(prediction(3, features={"age": float("nan")}))
    (d / "nan.jsonl").write_text("\n".join(lines) + "\n")
    (d / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + (d / "predictions.jsonl").read_bytes())
    (d / "array.json").write_text(json.dumps([prediction(i) for i in range(5)], indent=2))
    (d / "events.jsonl.gz").write_bytes(gzip.compress((d / "predictions.jsonl").read_bytes()))
    (d / "scenario.txt").write_text("not json")
    return d


@dataclass(frozen=True)
class Probe:
    name: str
    args: tuple[str, ...]
    code: int
    says: str  # in the one error line (or, with code 0, in stdout)
    stdin: str | None = None  # a file of the fixture's directory
    shell: bool = False  # args[0] is a shell command line run with pipefail


def probe(name, args, code, says, **kw) -> Probe:
    return Probe(name, tuple(args.split()) if isinstance(args, str) else tuple(args), code, says, **kw)


BT = "backtest -c ok.toml --no-progress --no-report"
PROBES = [
    # usage and config: 2
    probe("config is a directory", "check-config a_directory", 2, "a_directory: is a directory"),
    probe("config not UTF-8", "check-config latin1.toml", 2, f"latin1.toml: byte {len(KAFKA) + 5} is not UTF-8"),
    probe("config missing", "check-config nowhere.toml", 2, "nowhere.toml: file not found"),
    probe("no models", "check-config no_models.toml", 2, "no_models.toml: models: none configured"),
    probe("one topic for both inputs", "check-config same_topic.toml", 2,
          "same_topic.toml: topics.labels: 'predictions' is topics.predictions as well"),
    probe("feature of both kinds", "check-config both_kinds.toml", 2,
          "both_kinds.toml: models[0].features: 'age' listed as both numeric and categorical"),
    probe("librdkafka key typo", "check-config typo.toml", 2,
          'typo.toml: kafka.sasl.usernme: librdkafka refuses it: No such configuration property: "sasl.usernme"'),
    probe("librdkafka bad value", "check-config bad_value.toml", 2, "bad_value.toml: kafka.acks: librdkafka refuses it"),
    probe("run with a missing config", "run --config nowhere.toml", 2, "nowhere.toml: file not found"),
    probe("run --metrics-address without a port", "run --config ok.toml --metrics-address nonsense", 2,
          "--metrics-address: 'nonsense' is not host:port"),
    probe("run --metrics-address past the ports", "run --config ok.toml --metrics-address 127.0.0.1:99999 --workers 2",
          2, "--metrics-address: '127.0.0.1:99999': the port must be 0..65535"),
    probe("run --bootstrap-servers without a host", "run --config ok.toml --bootstrap-servers :abc", 2,
          "--bootstrap-servers: ':abc' is not host:port"),
    probe("triggers tail --bootstrap-servers past the ports", "triggers tail --bootstrap-servers 127.0.0.1:99999", 2,
          "--bootstrap-servers: '127.0.0.1:99999': the port must be 1..65535"),
    probe("simulate --bootstrap-servers not a port", "simulate --events 10 --bootstrap-servers host:port", 2,
          "simulate: --bootstrap-servers: 'host:port' is not host:port"),
    probe("init with a bad $KAFKA_BOOTSTRAP_SERVERS", [f"KAFKA_BOOTSTRAP_SERVERS=:x {SCRIPT} init --events predictions.jsonl"], 2,
          "$KAFKA_BOOTSTRAP_SERVERS: ':x' is not host:port", shell=True),
    probe("unknown command", "frobnicate", 2, "invalid choice: 'frobnicate'"),
    probe("backtest predictions a directory", f"{BT} -p a_directory -o out1", 2, "a_directory: is a directory"),
    probe("backtest predictions missing", f"{BT} -p nowhere.jsonl -o out2", 2, "--predictions nowhere.jsonl: file not found"),
    probe("backtest --out a file", f"{BT} -p predictions.jsonl -o a_file", 2, "--out a_file: exists and is not a directory"),
    probe("backtest --out under a file", f"{BT} -p predictions.jsonl -o a_file/out", 2, "a_file is not a directory"),
    probe("backtest --scenario missing", f"{BT} -p predictions.jsonl -o out3 --scenario nowhere.json", 2,
          "--scenario nowhere.json: file not found"),
    probe("backtest --scenario not JSON", f"{BT} -p predictions.jsonl -o out4 --scenario scenario.txt", 2,
          "--scenario scenario.txt: not a JSON file"),
    probe("backtest --labels alone", f"{BT} -l labels.jsonl -o out5", 2, "--labels alone has no prediction to join"),
    probe("backtest --every 0", f"{BT} -p predictions.jsonl -o out6 --every 0", 2, "--every: must be >= 1, got 0"),
    probe("backtest --max-invalid-share 2", f"{BT} -p predictions.jsonl -o out7 --max-invalid-share 2", 2,
          "--max-invalid-share: must be in [0, 1]"),
    probe("backtest two stdins", f"{BT} -p - -l - -o out8", 2, "only one input can be -"),
    probe("backtest a JSON array", f"{BT} -p array.json -o out9", 2,
          "array.json: is one JSON array (of 5 items), not JSON Lines"),
    probe("backtest a gzip file as --events", f"{BT} -e events.jsonl.gz -o out10", 2,
          "events.jsonl.gz: is gzip-compressed; decompress it first, e.g. -e <(zcat events.jsonl.gz)"),
    probe("simulate --events -5", "simulate --out sim1 --events -5", 2, "--events/-n: must be >= 1, got -5"),
    probe("simulate --rate 0", "simulate --out sim2 --rate 0", 2, "--rate: must be > 0"),
    probe("simulate --label-missing 2", "simulate --out sim3 --label-missing 2", 2, "--label-missing: must be in [0, 1]"),
    probe("simulate duplicate model id", "simulate --out sim4 --events 10 -m id=a,generator=sea -m id=a,generator=sea",
          2, "--model id=a: given twice"),
    probe("simulate shift of an unknown feature", "simulate --out sim5 --events 10 -m id=a,generator=sea,drift=covariate,"
          "shift=nosuch:1", 2, "model 'a': cannot shift 'nosuch'; the numeric features of sea are x0, x1, x2"),
    probe("simulate bad --start", "simulate --out sim6 --events 10 --start yesterday", 2, "'yesterday' is not ISO-8601"),
    probe("simulate --out a file", "simulate --out a_file --events 10 -m id=a,generator=sea,drift=none", 2,
          "--out a_file: exists and is not a directory"),
    probe("triggers tail without an address", "triggers tail", 2, "no Kafka address"),
    probe("triggers listen --url not a URL", "triggers listen --url hooks/retrain --bootstrap-servers 127.0.0.1:9", 2,
          "--url 'hooks/retrain': expected an http:// or https:// URL"),
    probe("triggers listen config a directory", "triggers listen --exec true --config a_directory", 2,
          "a_directory: is a directory"),
    # bad input: 3
    probe("backtest unknown model ids", "backtest -c churn.toml --no-progress --no-report -p predictions.jsonl "
          "-l labels.jsonl -o out10", 3, "no valid event: 120 of 120 lines rejected (unknown_model 120); model ids not "
          "in the config: 'loans' 120; see out10/rejects.jsonl"),
    probe("backtest --max-invalid-share", f"{BT} -p nan.jsonl -o out11 --max-invalid-share 0.01", 3,
          "1.67% of the lines were rejected, more than --max-invalid-share 0.01"),
    # fine
    probe("version", "--version", 0, "driftline "),
    probe("backtest of standard input", f"{BT} -p - -o out12", 0, "60 lines, 60 events, 0 invalid",
          stdin="predictions.jsonl"),
    probe("backtest skips a BOM", f"{BT} -p bom.jsonl -o out13", 0, "60 lines, 60 events, 0 invalid"),
    probe("backtest | head -0", [f"{SCRIPT} {BT} -p predictions.jsonl -l labels.jsonl -o out14 | head -0"], 0, "",
          shell=True),
    probe("check-config | head -0", [f"{SCRIPT} check-config ok.toml | head -0"], 0, "", shell=True),
    probe("simulate | head -1", [f"{SCRIPT} simulate --out sim7 --events 20 --no-progress "
                                 "-m id=a,generator=sea,drift=none,train=20 | head -1"], 0, "simulated", shell=True),
]


def _run(files: Path, p: Probe) -> subprocess.CompletedProcess:
    stdin = open(files / p.stdin, "rb") if p.stdin else subprocess.DEVNULL
    try:
        cmd = ["bash", "-c", "set -o pipefail; " + p.args[0]] if p.shell else [str(SCRIPT), *p.args]
        return subprocess.run(cmd, cwd=files, stdin=stdin, capture_output=True, text=True, timeout=120)
    finally:
        if p.stdin:
            stdin.close()


@pytest.fixture(scope="module")
def results(files) -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip((p.name for p in PROBES), pool.map(lambda p: _run(files, p), PROBES)))


@pytest.mark.parametrize("p", PROBES, ids=[p.name for p in PROBES])
def test_probe(p: Probe, results, files):
    done = results[p.name]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == p.code, (done.returncode, done.stderr)
    if p.code == 0:
        assert p.says in done.stdout
        assert not [line for line in done.stderr.splitlines() if line.startswith("driftline:")]
        return
    errors = [line for line in done.stderr.splitlines() if line.startswith("driftline")]
    assert len(errors) == 1, done.stderr
    assert p.says in errors[0], errors[0]
    if p.code == 2:
        assert done.stderr.strip() == errors[0]  # nothing else


def test_a_closed_stdout_costs_no_output_file(results, files):
    """``| head`` took the output away, not the work."""
    assert {path.name for path in (files / "out14").iterdir()} == set(OUTPUTS[:-1])
    assert (files / "sim7" / "scenario.json").exists()


def test_backtest_problems_are_named_on_stderr_and_in_the_outputs(results, files):
    done = results["backtest --max-invalid-share"]
    assert "backtest: 1 of 60 lines rejected (non_finite 1); see out11/rejects.jsonl" in done.stderr
    assert "backtest: model 'loans': watched features never seen: never_sent" in done.stderr
    rejects = [json.loads(line) for line in (files / "out11" / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [{"file": "nan.jsonl", "line": 4, "reason": "non_finite",
                        "detail": "features.age is NaN; JSON has no NaN or infinity (send null, or leave it out)",
                        "text": (files / "nan.jsonl").read_text().splitlines()[3], "bytes": rejects[0]["bytes"]}]
    summary = json.loads((files / "out10" / "summary.json").read_text())
    assert summary["unknown_models"] == {"loans": 120}
    assert summary["models"] == {"churn": {"no_events": True}}


def test_debug_keeps_the_traceback(files):
    done = subprocess.run([str(SCRIPT), "--debug", "check-config", "nowhere.toml"], cwd=files, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ConfigError" in done.stderr


# -- Ctrl-C ----------------------------------------------------------------------------------------
def _interruptible(args: list[str], cwd: Path) -> subprocess.Popen:
    # a child of a non-interactive shell may inherit SIGINT ignored; a user's Ctrl-C is not
    return subprocess.Popen([str(SCRIPT), *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_during_a_backtest_writes_nothing_and_says_so(files):
    fifo = files / "never_ending.jsonl"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # holds the pipe open: the backtest waits for more input
    try:
        proc = _interruptible(["backtest", "-c", "ok.toml", "-p", fifo.name, "-o", "interrupted"], files)
        assert proc.stderr.readline().startswith("backtest: reading")  # it is loading now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 130
    assert err.strip() == "driftline: interrupted: backtest stopped before it wrote anything to interrupted"
    assert not (files / "interrupted").exists()


def test_ctrl_c_during_a_simulation_names_the_partial_files(files):
    proc = _interruptible(["simulate", "--out", "sim_interrupted", "--events", "10000000", "--no-progress",
                           "-m", "id=a,generator=sea,drift=none,train=10"], files)
    predictions = files / "sim_interrupted" / "predictions.jsonl"
    try:
        while not (predictions.exists() and predictions.stat().st_size > 0):  # it is emitting now
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    [line] = err.strip().splitlines()
    assert line.startswith("driftline: interrupted: simulate stopped after ")
    assert line.endswith("predictions.jsonl, labels.jsonl in sim_interrupted hold only those (the last line may be "
                         "cut), scenario.json was not written")
    assert not (files / "sim_interrupted" / "scenario.json").exists()


def test_an_interrupted_write_leaves_whole_files_and_lists_them(tmp_path, monkeypatch, files):
    """Each output is written under a temporary name and renamed: Ctrl-C leaves no half file."""
    import streams.tools.report as report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", interrupted)
    config = parse_config({"kafka": {"bootstrap.servers": "x:1"}, "models": [{"id": "loans"}]})
    written: list[Path] = []
    with pytest.raises(KeyboardInterrupt):
        run_backtest(config, tmp_path / "out", predictions=files / "predictions.jsonl", progress=False,
                     written=written)
    assert [p.name for p in written] == list(OUTPUTS[:-1])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(OUTPUTS[:-1])
    from streams.cli.sim import _backtest_left

    assert _backtest_left(tmp_path / "out", written, OUTPUTS).endswith("; not written: report.html")


# -- what the backtest reports, in process ------------------------------------------------------------
def test_rejects_of_a_merged_file_carry_their_line_numbers(tmp_path):
    lines = [json.dumps(prediction(0)), json.dumps(label(0)), "not json", json.dumps(label(9, model="fraud")),
             json.dumps(prediction(1, model="fraud")), "x" * 1000]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    config = parse_config({"kafka": {"bootstrap.servers": "x:1"}, "models": [{"id": "loans"}]})
    loaded = load_events(config, events=tmp_path / "events.jsonl")
    assert [(r.line, r.reason) for r in loaded.rejects] == [
        (3, "invalid_json"), (4, "unknown_model"), (5, "unknown_model"), (6, "invalid_json")]
    assert loaded.unknown_models == {"fraud": 2}
    assert len(loaded.rejects[-1].text) == 300 and loaded.rejects[-1].bytes == 1000
    assert len(loaded.events) == 2


def test_unjoined_labels_and_predictions_are_counted_at_the_end(tmp_path, files):
    config = parse_config({"kafka": {"bootstrap.servers": "x:1"}, "models": [{"id": "loans"}]})
    result = run_backtest(config, tmp_path / "out", predictions=files / "predictions.jsonl",
                          labels=files / "orphan_labels.jsonl", report=False, progress=False)
    found = result.summary()["models"]["loans"]
    assert found["joined"] == 0
    assert found["labels_without_prediction"] == 60 and found["predictions_without_label"] == 60
    assert result.problems() == ["model 'loans': 60 labels without a prediction; 60 predictions without a label"]


def test_a_feature_seen_only_while_the_reference_fills_was_seen(tmp_path):
    events = [prediction(i, features={"age": 1.0} if i < 5 else {}) for i in range(40)]
    jsonl(tmp_path / "p.jsonl", events)
    config = parse_config({"kafka": {"bootstrap.servers": "x:1"}, "models": [
        {"id": "loans", "features": {"numeric": ["age", "gone"]}, "drift": {"reference_size": 20, "window": 20}}]})
    result = run_backtest(config, tmp_path / "out", predictions=tmp_path / "p.jsonl", report=False, progress=False)
    assert result.diagnostics["loans"]["features_never_seen"] == ["gone"]


def test_the_script_is_the_one_this_python_runs():
    assert shutil.which("driftline", path=str(SCRIPT.parent)) == str(SCRIPT)


@pytest.mark.parametrize("args, code, says", [
    (["check-config", "typo.toml"], 2, "typo.toml: kafka.sasl.usernme: librdkafka refuses it"),
    ([*BT.split(), "-p", "nan.jsonl", "-o", "out-json", "--max-invalid-share", "0.01"], 3,
     "1.67% of the lines were rejected, more than --max-invalid-share 0.01"),
])
def test_with_json_logs_the_error_line_is_json_too(files, args, code, says):
    """A log collector reading ``--log-format json`` gets the final error as a JSON line as well."""
    done = subprocess.run([str(SCRIPT), "--log-format", "json", *args], cwd=files, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == code, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert not [line for line in done.stderr.splitlines() if line.startswith("driftline:")], done.stderr
    last = lines[-1]
    assert last["level"] == "ERROR" and last["logger"] == "driftline" and last["exit_code"] == code
    assert says in last["message"], last
