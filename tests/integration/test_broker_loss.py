"""A lost broker: the engine retries within its budget, then exits 1 with one clear line.

This test runs its own private broker (the project's launcher, in a temporary directory) so it
can kill it without disturbing the shared one.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from streams.tools import kafka_local

from .harness import REPO, Deployment, pair

pytestmark = pytest.mark.kafka

MODEL = """
[[models]]
id = "churn"
"""


@pytest.fixture
def private_broker(tmp_path, kafka_bootstrap):
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not kafka_local.running():
        pytest.fail("the broker-loss test needs the local launcher (Java + Maven) for its private broker",
                    pytrace=False)
    bdir = kafka_local.BrokerDir(tmp_path / "broker")
    bootstrap = kafka_local.up(bdir, port=None)
    yield bdir, bootstrap
    kafka_local.down(bdir)


def test_engine_exits_1_with_one_line_after_the_retry_budget(private_broker, tmp_path, unique):
    bdir, bootstrap = private_broker
    d = Deployment(bootstrap, unique, tmp_path, MODEL, engine_extra="broker_retry_budget_seconds = 8")
    proc = d.start()
    d.send([event for p in [pair(i, "churn", True) for i in range(20)] for event in p])
    d.wait_for_metric("driftline_events_joined_total", 20, model="churn")
    pid = int(bdir.pidfile.read_text())
    os.killpg(pid, signal.SIGKILL)  # the broker dies without a goodbye
    lost_at = time.monotonic()
    code = proc.wait(timeout=120)
    took = time.monotonic() - lost_at
    assert code == 1
    assert 8 <= took < 60, f"it retried for its budget, then gave up promptly (took {took:.0f}s)"
    errors = [line for line in d.logs().splitlines() if line.startswith("driftline:")]
    assert len(errors) == 1 and "unreachable for more than 8s" in errors[0] and bootstrap in errors[0], errors
    assert "Traceback" not in d.logs()
    warnings = [line for line in d.logs().splitlines() if "broker unreachable" in line]
    assert len(warnings) == 1, "logged once per state change, not once per retry"


def test_unreachable_broker_at_start_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\n"bootstrap.servers" = "127.0.0.1:1"\n"socket.connection.setup.timeout.ms" = 2000\n'
                      '[engine]\nbroker_retry_budget_seconds = 3\n[[models]]\nid = "m"\n')
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "run", "--config", str(config),
                           "--metrics-address", "127.0.0.1:0"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("driftline:")]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
