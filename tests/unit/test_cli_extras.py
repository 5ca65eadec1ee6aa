"""A command whose extra is not installed says which one in one line (exit 4); what the core
install serves (the CLI's start, ``triggers``, the producer helper) needs none.

Each probe is a fresh interpreter in which the extras' modules cannot be imported
(``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError, as a missing
package does); the probes run together, a few at a time.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.cli.common import EXIT_MISSING_EXTRA, EXTRA_OF_MODULE

REPO = Path(__file__).resolve().parents[2]
EXTRAS = tuple(EXTRA_OF_MODULE)  # every module outside the core install
CONFIG = '[kafka]\n"bootstrap.servers" = "127.0.0.1:9"\n[[models]]\nid = "m"\n'


@dataclass(frozen=True)
class Probe:
    name: str
    blocked: tuple[str, ...]
    argv: tuple[str, ...] = ()
    code: str = ""  # Python run after the block instead of the CLI


CLI = [
    Probe("check-config without numpy", ("numpy",), ("check-config", "ok.toml")),
    Probe("check-config with the core install", EXTRAS, ("check-config", "ok.toml")),
    Probe("run with the core install", EXTRAS, ("run", "--config", "ok.toml")),
    Probe("run --engine faust without faust", ("faust",), ("run", "--engine", "faust", "--config", "ok.toml")),
    Probe("simulate without river", ("river",), ("simulate", "--out", "sim", "--events", "10")),
    Probe("simulate with the core install", EXTRAS, ("simulate", "--out", "sim", "--events", "10")),
    Probe("backtest without matplotlib", ("matplotlib",), ("backtest", "-c", "ok.toml", "-p", "p.jsonl", "-o", "bt")),
    Probe("reference with the core install", EXTRAS,
          ("reference", "-c", "ok.toml", "-p", "p.jsonl", "-o", "ref.json")),
]
MISSING = {  # probe -> the extra its line names, and the module it found missing
    "check-config without numpy": ("service", "numpy"), "check-config with the core install": ("service", "numpy"),
    "run with the core install": ("service", "numpy"), "run --engine faust without faust": ("faust", "faust"),
    "simulate without river": ("sim", "river"), "simulate with the core install": ("sim", "river"),
    "backtest without matplotlib": ("report", "matplotlib"), "reference with the core install": ("service", "numpy"),
}
CORE = [
    Probe("--help", EXTRAS, ("--help",)),
    Probe("triggers tail --help", EXTRAS, ("triggers", "tail", "--help")),
    Probe("triggers listen, a usage error", EXTRAS, ("triggers", "listen", "--exec", "true")),
    Probe("the producer helper", EXTRAS, code=(
        "from streams.client.producer import PredictionLogger\n"
        "from streams.core.config import read_kafka_settings\n"
        "logger = PredictionLogger(read_kafka_settings('ok.toml'), prometheus=True)\n"
        "assert logger.log_prediction('m', features={'x': 1.0}, prediction=1, score=0.5)\n"
        "logger.close(timeout=0)  # no broker there: the event is counted as unflushed\n"
        "assert logger.dropped['unflushed'] == 1\n"
        "print('logged')\n")),
]


def _command(probe: Probe) -> list[str]:
    block = f"import sys\nfor name in {probe.blocked!r}:\n    sys.modules[name] = None\n"
    body = probe.code or f"from streams.cli.main import main\nsys.exit(main({list(probe.argv)!r}))\n"
    return [sys.executable, "-c", block + body]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    d = tmp_path_factory.mktemp("extras")
    (d / "ok.toml").write_text(CONFIG)
    (d / "p.jsonl").write_text('{"prediction_id": "p0", "model_id": "m", "timestamp": 0, "prediction": 1}\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    def run(probe: Probe) -> subprocess.CompletedProcess:
        return subprocess.run(_command(probe), cwd=d, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120)

    probes = CLI + CORE
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip((p.name for p in probes), pool.map(run, probes)))


@pytest.mark.parametrize("probe", CLI, ids=[p.name for p in CLI])
def test_a_missing_extra_is_one_line_naming_it(probe, results):
    done = results[probe.name]
    extra, module = MISSING[probe.name]
    assert done.returncode == EXIT_MISSING_EXTRA, done.stderr
    # the only line: a backtest stops before it reads its input, a run before it serves /metrics
    assert done.stderr.splitlines() == [f"driftline: this command needs the {extra} extra ({module} is not "
                                        f"installed): pip install 'driftline[{extra}]'"]


@pytest.mark.parametrize("probe", CORE, ids=[p.name for p in CORE])
def test_the_core_install_serves_the_cli_start_triggers_and_the_producer(probe, results):
    done = results[probe.name]
    assert "Traceback" not in done.stderr, done.stderr
    if probe.name == "triggers listen, a usage error":
        assert done.returncode == 2 and done.stderr.strip() == (
            "driftline: no Kafka address: pass --bootstrap-servers HOST:PORT or --config FILE with "
            'kafka."bootstrap.servers"')
        return
    assert done.returncode == 0, done.stderr
    assert ("logged" if probe.code else "usage: driftline") in done.stdout
