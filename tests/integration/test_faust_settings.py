"""The Faust engine's pieces that need no broker: settings mapping, table state, log filter."""
from __future__ import annotations

import logging
import subprocess
import sys

import faust
import pytest

from streams.core.config import ConfigError, parse_config
from streams.runtime.faust_engine import (
    FaustConfigError,
    _OncePerInterval,
    broker_urls,
    credentials,
)
from streams.core.monitor import Source
from streams.runtime.pipeline import Metrics, Pipeline
from streams.runtime.state import Checkpoint, decode_table_value, encode_table_value

from .harness import REPO, pair


def test_bootstrap_servers_become_faust_broker_urls():
    assert broker_urls("a:9092, b:9093") == ["kafka://a:9092", "kafka://b:9093"]
    assert broker_urls("PLAINTEXT://a:9092") == ["kafka://a:9092"]
    with pytest.raises(FaustConfigError):
        broker_urls(" , ")


def test_security_settings_map_onto_faust_credentials():
    assert credentials({"bootstrap.servers": "a:1"}) is None
    sasl = credentials({"security.protocol": "sasl_plaintext", "sasl.mechanism": "SCRAM-SHA-512",
                        "sasl.username": "u", "sasl.password": "p"})
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value) == ("u", "p", "SCRAM-SHA-512")
    assert sasl.ssl_context is None
    tls = credentials({"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.username": "u",
                       "sasl.password": "p", "enable.ssl.certificate.verification": "false"})
    assert tls.ssl_context is not None and tls.ssl_context.check_hostname is False
    assert isinstance(credentials({"security.protocol": "SSL"}), faust.SSLCredentials)


@pytest.mark.parametrize("kafka, key", [
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "sasl.mechanism"),
    ({"security.protocol": "carrier-pigeon"}, "security.protocol"),
    ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"}, "kafka.ssl"),
])
def test_settings_the_faust_engine_cannot_use_are_config_errors_naming_the_key(kafka, key):
    with pytest.raises(ConfigError, match=key):
        credentials(kafka)


def test_cli_reports_an_unusable_setting_in_one_line_before_connecting(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\n"bootstrap.servers" = "127.0.0.1:1"\n"security.protocol" = "SASL_SSL"\n'
                      '"sasl.mechanism" = "OAUTHBEARER"\n[[models]]\nid = "m"\n')
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "run", "--engine", "faust", "--config", str(config),
                           "--metrics-address", "127.0.0.1:0"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("driftline:")]
    assert len(lines) == 1 and "sasl.mechanism" in lines[0] and "OAUTHBEARER" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_partition_state_round_trips_the_monitor_and_its_offsets():
    config = parse_config({"kafka": {"bootstrap.servers": "a:1"}, "models": [{"id": "churn"}]})
    pipeline = Pipeline(config, outputs=None, metrics=Metrics())
    assert decode_table_value(None) == Checkpoint()
    monitor = pipeline.monitor()
    events = []
    for i in range(30):
        prediction, label = pair(i, "churn", i % 3 != 0)
        events += [(prediction, Source("predictions", 0, i)), (label, Source("labels", 0, i))]
    monitor.process(events)
    raw = encode_table_value(Checkpoint(monitor.state(), {"predictions": 30, "labels": 30}))
    again = decode_table_value(raw)
    assert again.next_offsets == {"predictions": 30, "labels": 30} and again.nbytes == len(raw)
    assert encode_table_value(Checkpoint(pipeline.monitor(again.models).state(), again.next_offsets)) == raw


def test_repeated_library_errors_are_logged_once_per_interval():
    limit = _OncePerInterval(prefixes=("aiokafka",), seconds=60)

    def record(name, msg):
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)

    assert limit.filter(record("aiokafka", "Unable connect to node %s"))
    assert not limit.filter(record("aiokafka", "Unable connect to node %s"))
    assert limit.filter(record("aiokafka.consumer", "Unable connect to node %s"))
    assert limit.filter(record("driftline.faust", "x")) and limit.filter(record("driftline.faust", "x"))
