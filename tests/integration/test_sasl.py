"""Kafka with authentication: SASL/SCRAM-SHA-512 over TLS, against a private broker started
with a SASL_SSL listener whose certificate and users this test makes.

``driftline run`` (serving /metrics over HTTPS with basic auth), ``driftline triggers listen``,
``driftline simulate`` and the producer helper all work with nothing but the config's
``[kafka]`` table; with ``--debug`` and librdkafka's debug contexts on, the password appears in
no output. A wrong password ends each command with one line and its exit code, without waiting
out the broker retry budget.
"""
from __future__ import annotations

import base64
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.tools import kafka_local
from streams.core.config import load_config
from streams.client.producer import PredictionLogger
from tests.certs import server_certificate

from .harness import REPO, pair

pytestmark = pytest.mark.kafka

USER = "driftline"
PASSWORD = "Scram-Pa55-7f3c9e1d"  # distinctive, so that a leak is found by a plain search
WRONG = "not-the-password-4b2a"
SCRAPE_PASSWORD = "scrape-9c41d7"

MODELS = """
[[models]]
id = "loans"
window = { kind = "count", size = 100 }
evaluate_every = 10
  [[models.rules]]
  name = "floor"
  min_samples = 100
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
[[models]]
id = "sim"
"""


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    """A private broker (the shared one is untouched) with a SASL_SSL listener and one user."""
    root = tmp_path_factory.mktemp("sasl")
    certs = server_certificate(root / "certs", "broker")
    bdir = kafka_local.BrokerDir(root / "broker")
    try:
        kafka_local.up(bdir, port=None, sasl_ssl=kafka_local.SaslSsl(certs.keystore, {USER: PASSWORD}))
    except kafka_local.BrokerError as exc:
        message = f"the SASL test needs the local launcher (Java + Maven) for its private broker: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield kafka_local.sasl_ssl_address(bdir), certs
    kafka_local.down(bdir)


def write_config(tmp: Path, address: str, certs, suffix: str, password: str, debug: bool = False) -> Path:
    (tmp / "scrape-password").write_text(SCRAPE_PASSWORD + "\n")
    config = tmp / "driftline.toml"
    config.write_text(f"""
[kafka]
"bootstrap.servers" = "{address}"
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "{USER}"
"sasl.password" = "{password}"
"ssl.ca.location" = "{certs.ca}"
{'"debug" = "conf,security,broker,generic"' if debug else ''}
[topics]
predictions = "predictions-{suffix}"
labels = "labels-{suffix}"
triggers = "triggers-{suffix}"
dlq = "dlq-{suffix}"
state = "state-{suffix}"
[engine]
group_id = "group-{suffix}"
commit_every_ms = 300
poll_timeout_ms = 100
[metrics]
address = "127.0.0.1:{kafka_local._free_port()}"
tls_cert_file = "{certs.cert}"
tls_key_file = "{certs.key}"
basic_auth_username = "prometheus"
basic_auth_password_file = "scrape-password"
{MODELS}""")
    return config


def driftline(*args: str, log: Path | None = None, debug: bool = False):
    argv = [sys.executable, "-m", "streams.cli.main", *(["--debug"] if debug else []), *args]
    if log is None:
        return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.Popen(argv, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def scrape(config: Path, certs, metric: str, **labels) -> float:
    url = f"https://{load_config(config).metrics.address}/metrics"
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(f"prometheus:{SCRAPE_PASSWORD}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=5, context=ssl.create_default_context(cafile=certs.ca)) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(condition, what: str, timeout: float = 60, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(p.read_text()[-2000:] for p in logs))


def test_engine_listener_simulate_and_producer_over_sasl_ssl_never_log_the_password(
        sasl_broker, tmp_path, unique, caplog):
    address, certs = sasl_broker
    config = write_config(tmp_path, address, certs, unique, PASSWORD, debug=True)
    kafka = load_config(config).kafka
    engine_log, listener_log, runs = tmp_path / "engine.log", tmp_path / "listener.log", tmp_path / "runs.txt"
    engine = driftline("run", "--config", str(config), log=engine_log, debug=True)
    listener = driftline("triggers", "listen", "--config", str(config), "--group", f"listener-{unique}",
                         "--state-dir", str(tmp_path / "state"), "--failure-topic", f"failed-{unique}",
                         "--exec", f'echo "$DRIFTLINE_TRIGGER_ID" >> {runs}', log=listener_log, debug=True)
    try:
        simulate = driftline("simulate", "--config", str(config), "--events", "100", "--no-progress",
                             "--model", "id=sim,generator=sea,learner=logistic,drift=none", debug=True)
        sim_out, sim_err = simulate.communicate(timeout=120)
        assert simulate.returncode == 0, sim_out + sim_err
        # the producer helper: an accuracy below the rule's floor, so the engine publishes a trigger
        caplog.set_level(logging.DEBUG, logger="driftline.producer.librdkafka")
        with PredictionLogger(kafka, f"predictions-{unique}", f"labels-{unique}", prometheus=False) as logger:
            for i in range(150):
                prediction, label = pair(i, "loans", correct=i % 2 == 0)
                logger.log_prediction("loans", prediction.features, prediction.prediction,
                                      prediction_id=prediction.prediction_id, timestamp=prediction.timestamp)
                logger.log_label(label.prediction_id, "loans", label.label, timestamp=label.timestamp)
        assert logger.dropped_total == 0 and logger.delivered == 300, dict(logger.dropped)

        logs = (engine_log, listener_log)
        wait_for(lambda: scrape(config, certs, "driftline_predictions_total", model="sim") >= 100,
                 "the simulated predictions in the engine's metrics", logs=logs)
        wait_for(lambda: runs.exists() and runs.read_text().startswith("loans:floor:"),
                 "the listener to run its command for the engine's trigger", logs=logs)
        # the last pairs may wait up to engine.max_idle_ms in the event-time aligner
        wait_for(lambda: scrape(config, certs, "driftline_events_joined_total", model="loans") == 150,
                 "all 150 pairs joined", logs=logs)
    finally:
        for proc in (engine, listener):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in (engine, listener)]
    assert codes == [0, 0], "\n".join(p.read_text()[-3000:] for p in logs)

    outputs = {"engine": engine_log.read_text(errors="replace"), "listener": listener_log.read_text(errors="replace"),
               "simulate": sim_out + sim_err, "producer helper": caplog.text}
    assert "sasl.password = [redacted]" in outputs["engine"], "librdkafka echoed its configuration (the test can see a leak)"
    assert "[redacted]" in outputs["producer helper"]
    for name, text in outputs.items():
        assert PASSWORD not in text, f"the SASL password appears in the {name}'s output"
        assert SCRAPE_PASSWORD not in text, f"the scrape password appears in the {name}'s output"


def test_a_wrong_password_ends_each_command_with_one_line(sasl_broker, tmp_path, unique, caplog):
    address, certs = sasl_broker
    config = write_config(tmp_path, address, certs, unique, WRONG)
    # the producer helper never raises into the serving path: its one warning names the refusal
    caplog.set_level(logging.WARNING, logger="driftline.producer")
    logger = PredictionLogger(load_config(config).kafka, f"predictions-{unique}", f"labels-{unique}",
                              prometheus=False)
    logger.log_prediction("loans", {}, 1)
    procs = {
        "run": driftline("run", "--config", str(config)),
        "listen": driftline("triggers", "listen", "--config", str(config), "--exec", "true",
                            "--state-dir", str(tmp_path / "state")),
        "simulate": driftline("simulate", "--config", str(config), "--events", "10", "--no-progress"),
    }
    # a refused login is not retried for engine.broker_retry_budget_seconds (60 s here)
    results = {name: (proc.wait(timeout=50), *proc.communicate()) for name, proc in procs.items()}
    expected_code = {"run": 1, "listen": 1, "simulate": 1}
    for name, (code, out, err) in results.items():
        lines = [line for line in err.splitlines() if line.startswith("driftline:")]
        assert code == expected_code[name], (name, code, err)
        assert len(lines) == 1 and "authentication" in lines[0].lower(), (name, err)
        assert "Traceback" not in err and WRONG not in out + err, (name, err)
        assert not [line for line in err.splitlines() if line.startswith("%")], \
            f"{name}: librdkafka printed to stderr past the logging setup: {err}"
    warnings = [r.getMessage() for r in caplog.records if r.name == "driftline.producer"]
    logger.close(0)
    assert warnings and "SASL authentication error" in warnings[0], warnings
    assert WRONG not in caplog.text
