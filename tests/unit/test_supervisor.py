"""The ``--workers`` supervisor without Kafka: its restart decisions, the merged exposition, and
real child processes that die, answer scrapes and stop on a forwarded signal."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.runtime.supervisor import GaveUp, Restarts, RestartPolicy, Workers, answer_scrapes, merge

FAST = RestartPolicy(min_uptime=5.0, give_up_after=3, first_delay=0.05, max_delay=0.2)


# -- decisions --------------------------------------------------------------------------------
def test_quick_deaths_back_off_then_give_up():
    restarts = Restarts(RestartPolicy(min_uptime=10, give_up_after=3, first_delay=1, max_delay=30))
    assert restarts.after_exit(0, uptime=2) == 1
    assert restarts.after_exit(0, uptime=2) == 2
    assert restarts.after_exit(0, uptime=2) is None


def test_a_worker_that_ran_long_starts_a_new_count():
    restarts = Restarts(RestartPolicy(min_uptime=10, give_up_after=3, first_delay=1, max_delay=30))
    assert restarts.after_exit(0, uptime=1) == 1
    assert restarts.after_exit(0, uptime=2) == 2
    assert restarts.after_exit(0, uptime=3600) == 1  # after an hour up: not the same failure
    assert restarts.after_exit(0, uptime=1) == 1
    assert restarts.after_exit(0, uptime=1) == 2


def test_workers_are_counted_apart_and_the_delay_is_capped():
    restarts = Restarts(RestartPolicy(min_uptime=10, give_up_after=10, first_delay=1, max_delay=5))
    assert [restarts.after_exit(0, uptime=0) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert restarts.after_exit(1, uptime=0) == 1


# -- merged exposition --------------------------------------------------------------------------
def _families(value: float, gauge: float):
    registry = CollectorRegistry()
    Counter("driftline_predictions_total", "Valid prediction events.", ["model"], registry=registry) \
        .labels("churn").inc(value)
    from prometheus_client import Gauge

    Gauge("driftline_engine_up", "1 while the engine is consuming.", registry=registry).set(gauge)
    return list(registry.collect())


def test_the_merged_exposition_labels_each_worker_and_keeps_one_family():
    text = generate_latest(_Fixed(merge([("0", _families(3, 1)), ("1", _families(4, 0))]))).decode()
    assert text.count("# TYPE driftline_predictions_total counter") == 1
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("driftline_predictions_total", (("model", "churn"), ("worker", "0")))] == 3
    assert samples[("driftline_predictions_total", (("model", "churn"), ("worker", "1")))] == 4
    assert samples[("driftline_engine_up", (("worker", "0"),))] == 1
    assert samples[("driftline_engine_up", (("worker", "1"),))] == 0


class _Fixed:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


# -- child processes (spawned: the targets are module-level functions) ---------------------------
def exit_at_once(index: int, conn) -> None:
    sys.exit(3)


def count_and_wait(index: int, conn) -> None:
    """A worker that exports a counter of its index + 1 and runs until SIGTERM, then exits 0."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    registry = CollectorRegistry()
    Counter("driftline_labels_total", "Valid label events.", registry=registry).inc(index + 1)
    answer_scrapes(registry, conn)
    stop.wait(60)
    sys.exit(0 if stop.is_set() else 5)


def run_in_background(workers: Workers, until, timeout: float = 30) -> None:
    """Call ``until()`` from another thread until it is true, then stop the workers as SIGTERM would."""

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            time.sleep(0.05)
        workers._request_stop(signal.SIGTERM, None)

    threading.Thread(target=watch, daemon=True).start()


def test_a_worker_that_keeps_dying_at_start_makes_the_supervisor_give_up():
    workers = Workers(exit_at_once, 2, policy=FAST)
    with pytest.raises(GaveUp, match="worker [01] exited with code 3 3 times in a row"):
        workers.run()
    assert all(w.process.exitcode is not None for w in workers.workers)
    assert signal.getsignal(signal.SIGTERM) is not workers._request_stop  # handlers given back


def samples(workers: Workers) -> dict:
    return {(s.name, s.labels.get("worker")): s.value for f in workers.registry.collect() for s in f.samples}


def test_workers_answer_scrapes_are_restarted_after_a_kill_and_stop_on_sigterm():
    workers = Workers(count_and_wait, 2, policy=FAST)
    seen = {}
    state = {"killed": None}

    def progress() -> bool:
        now = samples(workers)
        if state["killed"] is None:
            if now.get(("driftline_labels_total", "0")) == 1 and now.get(("driftline_labels_total", "1")) == 2:
                seen["before"] = now
                state["killed"] = workers.workers[1].process.pid
                os.kill(state["killed"], signal.SIGKILL)
            return False
        process = workers.workers[1].process
        if process.pid != state["killed"] and now.get(("driftline_labels_total", "1")) == 2:
            seen["after"] = now
            return True
        return False

    run_in_background(workers, progress)
    assert workers.run() == 0  # every running worker stopped on the forwarded SIGTERM, exit 0
    assert "after" in seen, "the killed worker was not restarted"
    assert seen["after"][("driftline_worker_restarts_total", "1")] == 1
    assert seen["after"].get(("driftline_worker_restarts_total", "0"), 0) == 0
