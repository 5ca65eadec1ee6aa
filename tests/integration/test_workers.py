"""``driftline run --workers 2`` on the real broker: the two workers share the partitions, every
event is counted once on the supervisor's one /metrics, a worker killed with SIGKILL is
restarted, and the triggers are those of one uninterrupted engine: none missing, none twice."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import REPO, Deployment
from .test_exactly_once import MODELS, make, stream, trigger_key  # noqa: F401 - make: a fixture

pytestmark = pytest.mark.kafka


def start_workers(d: Deployment, count: int) -> subprocess.Popen:
    log = open(d.tmp / "engine-workers.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "run", "--config", str(d.config_path),
                             "--workers", str(count)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    d.processes.append(proc)
    d.wait_for_topics()
    return proc


def pids(d: Deployment, worker: int) -> list[int]:
    """The pids worker ``worker`` was started with, in order (the supervisor's log lines)."""
    return [int(p) for p in re.findall(rf"worker {worker} started \(pid (\d+)\)", d.logs())]


def total(d: Deployment, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(d.metrics()) for s in f.samples if s.name == name)


def reference_run(make, events) -> list[tuple]:
    """The triggers of one uninterrupted engine (read until as many as it counted have come)."""
    d = make(MODELS)
    proc = d.start()
    d.send(events)
    d.wait_until_committed(len(events) // 2)
    count = int(total(d, "driftline_triggers_total"))
    assert count >= len(MODELS), "every model must trigger at least once"
    assert d.stop(proc) == 0
    return sorted(trigger_key(t) for t in d.triggers(count, timeout=30, settle=0.5))


def per_worker(d: Deployment, name: str) -> dict[str, float]:
    """A counter's samples summed per worker label."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(d.metrics()):
        for sample in family.samples:
            if sample.name == name:
                sums[sample.labels["worker"]] = sums.get(sample.labels["worker"], 0) + sample.value
    return sums


def wait_for(condition, timeout: float, what: str, d: Deployment) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:  # /metrics not up yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}\n{d.logs()[-3000:]}")


def test_two_workers_count_each_event_once_and_survive_a_kill(make):
    events = stream(MODELS, 2000)  # each model turns bad at its 1500th pair: a trigger each
    expected = reference_run(make, events)
    half = len(events) // 2

    d = make(MODELS)
    supervisor = start_workers(d, 2)
    # The range assignor's split of the 4 partitions between the two members; the models'
    # keys fall on both halves.
    wait_for(lambda: "assigned partitions [0, 1]" in d.logs() and "assigned partitions [2, 3]" in d.logs(), 60,
             "the two workers did not share the partitions", d)
    d.send(events[:half])
    d.wait_until_committed(half // 2)
    # Both workers consumed (the four models' partitions are shared), and the merged /metrics
    # counts every event once: no series of one worker hides or repeats another's.
    wait_for(lambda: sum(per_worker(d, "driftline_predictions_total").values()) == half // 2, 30,
             "predictions not counted once", d)
    assert sum(per_worker(d, "driftline_labels_total").values()) == half // 2
    assert set(per_worker(d, "driftline_events_consumed_total")) == {"0", "1"}

    killed = pids(d, 1)[-1]
    subprocess.run(["kill", "-KILL", str(killed)], check=True)
    d.send(events[half:])
    wait_for(lambda: len(pids(d, 1)) == 2, 30, "the killed worker was not restarted", d)
    d.wait_until_committed(len(events) // 2)
    got = [trigger_key(t) for t in d.triggers(len(expected), timeout=30, settle=1)]
    ids = [key[0] for key in got]
    assert len(ids) == len(set(ids)), f"duplicate trigger ids: {ids}"
    assert sorted(got) == expected
    assert per_worker(d, "driftline_worker_restarts_total") == {"1": 1.0}
    assert "worker 1 (pid %d) exited with signal SIGKILL" % killed in d.logs()

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0  # each worker committed and left
