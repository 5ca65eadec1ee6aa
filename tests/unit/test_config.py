"""Config loading: the example is valid, and every bad config names the file and the key."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.core.config import ConfigError, bootstrap_servers_problem, load_config, parse_config, read_kafka_settings

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "models": [{"id": "m"}]}


def test_example_config_is_valid_and_complete():
    config = load_config(REPO / "driftline.example.toml")
    assert config.kafka["bootstrap.servers"] == "127.0.0.1:19092"
    assert config.topics.predictions == "predictions" and config.topics.partitions == 3
    churn = config.model("churn")
    assert churn.window.size == 1000 and churn.features.categorical == ["plan"]
    assert churn.rules[0]["name"] == "accuracy-floor"
    assert config.model("nope") is None


def test_librdkafka_settings_pass_through():
    config = parse_config({**MINIMAL, "kafka": {"bootstrap.servers": "b:1", "security.protocol": "SASL_SSL",
                                                "sasl.mechanism": "PLAIN", "socket.keepalive.enable": True}})
    assert config.kafka["security.protocol"] == "SASL_SSL" and config.kafka["socket.keepalive.enable"] is True


@pytest.mark.parametrize("raw, message", [
    ({"models": [{"id": "m"}]}, "kafka.bootstrap.servers: missing"),
    ({**MINIMAL, "engine": {"batch_size": "big"}}, "engine.batch_size: expected `int`, got `str`"),
    ({**MINIMAL, "engine": {"batch_size": 0}}, "engine.batch_size: must be >= 1"),
    ({**MINIMAL, "engine": {"unknown_model": "drop"}}, "engine.unknown_model: expected one of dlq, register"),
    ({**MINIMAL, "engine": {"max_registered_models": -1}}, "engine.max_registered_models: must be >= 0"),
    ({**MINIMAL, "models": [{"id": "m", "registered": True}]}, "models[0].registered: is set by the engine"),
    ({**MINIMAL, "models": [{"id": "m", "rules": [{"name": "r", "conditions": [
        {"statistic": "feature.nope.psi", "op": ">", "threshold": 0.2}]}]}]},
     "models[0].rules[0].conditions[0].statistic: 'feature.nope.psi' is not computed for this model; "
     "it computes accuracy"),
    ({**MINIMAL, "models": [{"id": "m", "rules": [{"name": "r", "conditions": [
        {"statistic": "detector.adwin", "fired": True}]}]}]},
     "models[0].rules[0].conditions[0].statistic: 'detector.adwin' is not computed"),
    ({**MINIMAL, "topics": {"predicitons": "x"}}, "topics.predicitons: unknown key (did you mean `predictions`?)"),
    ({**MINIMAL, "engin": {}}, "engin: unknown key (did you mean `engine`?)"),
    ({**MINIMAL, "models": [{"id": "m", "drift": {"windw": 5}}]},
     "models[0].drift.windw: unknown key (did you mean `window`?)"),
    ({**MINIMAL, "metrics": {"address": "9464"}}, "metrics.address: '9464' is not host:port"),
    ({**MINIMAL, "metrics": {"address": "127.0.0.1:99999"}}, "metrics.address: '127.0.0.1:99999': the port must be"),
    ({**MINIMAL, "models": [{"id": "m", "window": {"size": 0}}]}, "models[0].window.size: must be >= 1"),
    ({**MINIMAL, "models": [{"id": "m"}, {"id": "m"}]}, "models[1].id: 'm' is configured twice"),
    ({**MINIMAL, "models": [{"task": "binary"}]}, "models[0].id: required key is missing"),
    ({**MINIMAL, "models": [{"id": "m", "task": "ranking"}]}, "models[0].task: expected one of binary, multiclass, regression"),
    ({**MINIMAL, "models": [{"id": "m", "label_ttl_seconds": 0}]}, "models[0].label_ttl_seconds: must be > 0"),
    ({**MINIMAL, "models": [{"id": "m", "rules": [{"name": "r", "conditions": [
        {"statistic": "accuracy", "op": "=<", "threshold": 0.8}]}]}]},
     "models[0].rules[0].conditions[0].op: expected one of <, <=, >, >="),
])
def test_bad_config_names_file_and_key(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "x.toml")
    text = str(info.value)
    assert text.startswith("x.toml: ")
    assert message in text, text


@pytest.mark.parametrize("servers, problem", [
    ("127.0.0.1:9092", None), ("broker", None), ("a:9092, b:9093", None), ("a:9092,", None),
    ("SASL_SSL://broker-1.example.com:9094", None), ("[::1]:9092", None),
    (":abc", "':abc' is not host:port"), ("host:port", "'host:port' is not host:port"),
    ("::1:9092", "'::1:9092' is not host:port"), ("a:0", "'a:0': the port must be 1..65535"),
    ("a:9092,b:65536", "'b:65536': the port must be 1..65535"), ("", "'' is not host:port[,host:port...]"),
    (9092, "9092 is not host:port[,host:port...]"),
])
def test_bootstrap_servers_are_checked_before_any_connection(servers, problem):
    assert bootstrap_servers_problem(servers) == problem
    raw = {**MINIMAL, "kafka": {"bootstrap.servers": servers}}
    if problem is None:
        parse_config(raw, "x.toml")
    else:
        with pytest.raises(ConfigError, match=re.escape(f"x.toml: kafka.bootstrap.servers: {problem}")):
            parse_config(raw, "x.toml")


@pytest.mark.parametrize("raw, message", [
    ({**MINIMAL, "models": [{"id": "m", "kind": "binary"}]}, "models[0].kind: unknown key"),
    ({**MINIMAL, "models": [{"id": "m", "rules": [{"name": "r", "cooldown": 5, "conditions": []}]}]},
     "models[0].rules[0].cooldown: unknown key (did you mean `cooldown_seconds`?)"),
])
def test_an_unknown_key_gets_a_suggestion_only_when_one_is_near(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "x.toml")
    assert str(info.value) == f"x.toml: {message}"


def test_the_kafka_settings_of_a_config_alone(tmp_path):
    """What a model server reads for its PredictionLogger: the [kafka] table, the models unchecked."""
    path = tmp_path / "driftline.toml"
    path.write_text('[kafka]\nbootstrap.servers = "b:1"\nsasl.username = "me"\n[[models]]\nid = "m"\n'
                    'metrics = ["no such metric"]\n')
    assert read_kafka_settings(path) == {"bootstrap.servers": "b:1", "sasl.username": "me"}
    path.write_text('kafka = "b:1"\n')
    with pytest.raises(ConfigError, match=r"driftline.toml: kafka: expected a table of librdkafka settings"):
        read_kafka_settings(path)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_config(bad)


def test_cli_exits_2_with_one_line_for_bad_config(tmp_path):
    bad = tmp_path / "driftline.toml"
    bad.write_text('[kafka]\n"bootstrap.servers" = "x:1"\n[engine]\nbatch_size = -3\n')
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "run", "--config", str(bad)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"driftline: config error: {bad}: engine.batch_size: must be >= 1"]


def test_check_config_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "check-config", str(REPO / "driftline.example.toml")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and "ok (1 models)" in done.stdout


def test_help_describes_every_option():
    for argv in (["--help"], ["run", "--help"]):
        done = subprocess.run([sys.executable, "-m", "streams.cli.main", *argv], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0
        out = done.stdout
        if argv == ["run", "--help"]:
            for option in ("--config", "--engine", "--bootstrap-servers", "--metrics-address", "--instance"):
                assert option in out
        else:
            for command in ("run", "check-config", "kafka"):
                assert command in out


@pytest.mark.parametrize("kind", ["ddm", "eddm", "hddm_a", "hddm_w"])
def test_a_bit_stream_change_detector_on_a_regression_model_is_a_config_error(kind):
    # Its absolute errors above 1 would otherwise raise inside the engine at every restart.
    raw = {**MINIMAL, "models": [{"id": "m", "task": "regression", "detectors": [{"kind": kind}]}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "x.toml")
    assert str(info.value).startswith(f"x.toml: models[0]: detectors[0].kind: '{kind}' takes 0/1 errors")
