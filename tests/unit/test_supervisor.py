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

from streams.runtime.supervisor import GaveUp, RestartPolicy, Restarts, Workers, answer_scrapes, merge

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
def _exposition(value: float, gauge: float) -> str:
    from prometheus_client import Gauge

    registry = CollectorRegistry()
    Counter("driftline_predictions_total", "Valid prediction events.", ["model", "segment"], registry=registry) \
        .labels("churn", 'a b,c="{x} "').inc(value)
    Gauge("driftline_engine_up", "1 while the engine is consuming.", registry=registry).set(gauge)
    return generate_latest(registry).decode()


def parsed(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_merged_exposition_labels_each_worker_and_keeps_one_family():
    text = merge([("0", _exposition(3, 1)), ("1", _exposition(4, 0))])
    assert text.count("# TYPE driftline_predictions_total counter") == 1
    assert text.count("# HELP driftline_engine_up ") == 1
    samples = parsed(text)
    segment = ("segment", 'a b,c="{x} "')  # a label value with braces, spaces and quotes survives
    assert samples[("driftline_predictions_total", (("model", "churn"), segment, ("worker", "0")))] == 3
    assert samples[("driftline_predictions_total", (("model", "churn"), segment, ("worker", "1")))] == 4
    assert samples[("driftline_engine_up", (("worker", "0"),))] == 1
    assert samples[("driftline_engine_up", (("worker", "1"),))] == 0
    # nothing else: every sample of each child, once
    assert len(samples) == 2 * len(parsed(_exposition(3, 1)))


def test_nothing_to_merge_is_an_empty_exposition():
    assert merge([]) == ""


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
    return {(s.name, s.labels.get("worker")): s.value
            for f in text_string_to_metric_families(workers.exposition()) for s in f.samples}


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


def test_a_scrape_with_name_gets_only_those_families_of_every_worker():
    """``/metrics?name[]=…`` as ``driftline run`` alone serves it: each child and the supervisor
    render only the families asked for (a poll for progress does not pay for a full exposition)."""
    workers = Workers(count_and_wait, 2, policy=FAST)
    app, seen = workers.wsgi_app(), {}

    def scrape(query: str) -> str:
        return b"".join(app({"QUERY_STRING": query}, lambda status, headers: None)).decode()

    def ready() -> bool:
        now = samples(workers)
        if now.get(("driftline_labels_total", "0")) == 1 and now.get(("driftline_labels_total", "1")) == 2:
            seen["all"], seen["only"] = scrape(""), scrape("name[]=driftline_labels_total")
            return True
        return False

    run_in_background(workers, ready)
    assert workers.run() == 0
    assert "# TYPE driftline_worker_restarts_total counter" in seen["all"]
    assert "driftline_labels_created" in seen["all"]
    only = {(s.name, s.labels.get("worker")): s.value
            for f in text_string_to_metric_families(seen["only"]) for s in f.samples}
    assert only == {("driftline_labels_total", "0"): 1, ("driftline_labels_total", "1"): 2}


# -- the command line ----------------------------------------------------------------------------
CONFIG = """
[kafka]
"bootstrap.servers" = "127.0.0.1:1"
[[models]]
id = "loans"
"""


@pytest.mark.parametrize("argv, says", [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--workers", "2", "--engine", "faust"], "--workers runs the default engine only"),
])
def test_workers_the_run_command_refuses_in_one_line(argv, says, tmp_path, capsys):
    from streams.cli.main import main

    config = tmp_path / "driftline.toml"
    config.write_text(CONFIG)
    assert main(["run", "--config", str(config), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
