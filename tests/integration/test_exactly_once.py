"""Exactly-once on the real broker: a kill -9 mid-stream, and two instances in one group,
publish the same triggers as one uninterrupted run: none missing, none twice."""
from __future__ import annotations

import re
import signal

import pytest

from .harness import Deployment, models_config, pair

pytestmark = pytest.mark.kafka

MODELS = ["churn", "fraud", "ranker", "upsell"]


def phases(n: int, seed: int) -> list[bool]:
    """Alternating good (95 % right) and bad (50 % right) phases: a trigger per bad phase."""
    import random

    rng = random.Random(seed)
    return [rng.random() < (0.5 if (i // 1500) % 2 else 0.95) for i in range(n)]


def stream(names: list[str], n: int) -> list:
    events = []
    outcomes = {name: phases(n, seed) for seed, name in enumerate(names)}
    for i in range(n):
        for name in names:
            prediction, label = pair(i, name, outcomes[name][i])
            events += [prediction, label]
    return events


def trigger_key(t: dict) -> tuple:
    return t["trigger_id"], round(t["value"], 12), t["window"]["count"], t["window"]["end"]


def final_gauges(d: Deployment, names: list[str]) -> dict:
    """What the statistics say at the end: accuracy, window fill and pending predictions per model."""
    return {name: (d.metric("driftline_performance", model=name, version="v1", metric="accuracy"),
                   d.metric("driftline_window_samples", model=name),
                   d.metric("driftline_pending_predictions", model=name)) for name in names}


def reference_run(make, names, events) -> tuple[list[tuple], dict]:
    """One uninterrupted run: its triggers and its final gauges."""
    d = make(names)
    proc = d.start()
    d.send(events)
    d.wait_until_committed(len(events) // 2)
    gauges = final_gauges(d, names)
    assert all(accuracy > 0 and samples > 0 for accuracy, samples, _ in gauges.values()), gauges  # exported
    d.stop(proc)
    triggers = [trigger_key(t) for t in d.triggers(timeout=10, settle=1, to_end=True)]
    assert len(triggers) >= len(names), "every model must trigger at least once"
    return sorted(triggers), gauges


@pytest.fixture
def make(kafka_bootstrap, unique, tmp_path):
    made: list[Deployment] = []

    def factory(names: list[str], partitions: int = 4) -> Deployment:
        sub = tmp_path / str(len(made))
        sub.mkdir()
        d = Deployment(kafka_bootstrap, f"{unique}{len(made)}", sub, models_config(names), partitions=partitions)
        made.append(d)
        return d

    yield factory
    for d in made:
        d.stop_all()


def test_kill_9_mid_stream_loses_no_trigger_and_duplicates_none(make):
    names = ["churn"]
    events = stream(names, 12000)
    expected, expected_gauges = reference_run(make, names, events)

    d = make(names)
    proc = d.start()
    d.send(events)
    d.wait_for_metric("driftline_events_joined_total", 3000, timeout=60, model="churn")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    d.start()  # same transactional id: fences the dead instance's open transaction
    d.wait_until_committed(len(events) // 2)
    got = [trigger_key(t) for t in d.triggers(timeout=10, settle=1, to_end=True)]
    ids = [key[0] for key in got]
    assert len(ids) == len(set(ids)), f"duplicate trigger ids: {ids}"
    assert sorted(got) == expected
    # The restored state continued where the committed checkpoint left off: same final statistics.
    assert final_gauges(d, names) == expected_gauges


def test_two_instances_in_one_group_publish_the_union_of_one_instance(make):
    events = stream(MODELS, 3000)
    expected, _ = reference_run(make, MODELS, events)

    d = make(MODELS)
    first = d.start(instance="a")
    half = len(events) // 2
    d.send(events[:half])
    d.wait_for_metric("driftline_events_joined_total", 500, timeout=60, model="churn")
    from streams.tools.kafka_local import _free_port

    second = d.start(instance="b", metrics_port=_free_port())  # joins mid-stream: a rebalance
    d.send(events[half:])
    d.wait_until_committed(len(events) // 2)
    got = [trigger_key(t) for t in d.triggers(timeout=10, settle=1, to_end=True)]
    ids = [key[0] for key in got]
    assert len(ids) == len(set(ids)), f"duplicate trigger ids: {ids}"
    assert sorted(got) == expected
    assert d.stop(first) == 0 and d.stop(second) == 0
    second_log = next(d.tmp.glob("engine-b-*.log")).read_text()
    assignments = re.findall(r"assigned partitions \[([\d, ]*)\]", second_log)
    assert assignments and assignments[-1], "the second instance took over partitions"
