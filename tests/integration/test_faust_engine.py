"""The Faust engine on a real broker, what is Faust's own: table recovery after a stop, a second
worker taking over, the state in the table's changelog, a lost broker.

The contract tests every engine passes (``test_skeleton.py``, ``test_engine_contract.py``) run
for both engines through ``harness.ENGINES``.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from .harness import Deployment, models_config, pair, skip_faust_fetcher_loss
from .test_skeleton import FLOOR_MODEL

pytestmark = pytest.mark.kafka

MODELS = ["churn", "fraud", "ranker"]


@pytest.fixture
def deployment(kafka_bootstrap, unique, tmp_path):
    made: list[Deployment] = []

    def make(models: str = FLOOR_MODEL, **kwargs) -> Deployment:
        kwargs.setdefault("engine", "faust")
        sub = tmp_path / str(len(made))
        sub.mkdir()
        d = Deployment(kafka_bootstrap, f"{unique}{len(made)}", sub, models, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop_all()


# -- table recovery ------------------------------------------------------------------------------
def stream(names: list[str], n: int) -> list:
    """``n`` pairs per model, interleaved; good (95 % right) and bad (50 %) phases of 700 pairs,
    some labels before their prediction: several triggers per model."""
    rng = random.Random(7)
    events = []
    for i in range(n):
        for name in names:
            prediction, label = pair(i, name, rng.random() < (0.5 if (i // 700) % 2 else 0.95))
            events += [label, prediction] if i % 5 == 0 else [prediction, label]
    return events


def short_session(d: Deployment) -> None:
    """librdkafka's session keys, which the faust engine maps: after kill -9 the group drops the
    dead member after 6 s instead of Faust's default 60 s."""
    d.config_path.write_text(d.config_path.read_text().replace(
        "[topics]", '"session.timeout.ms" = 6000\n"heartbeat.interval.ms" = 1000\n[topics]'))


def gauges(d: Deployment, names: list[str]) -> dict:
    return {name: (d.metric("driftline_performance", model=name, version="v1", metric="accuracy"),
                   d.metric("driftline_window_samples", model=name),
                   d.metric("driftline_pending_predictions", model=name)) for name in names}


def wait_for_joined(d: Deployment, names: list[str], per_model: int, timeout: float = 120) -> None:
    for name in names:
        d.wait_for_metric("driftline_events_joined_total", per_model, timeout=timeout, model=name)


def essence(d: Deployment, t: dict) -> dict:
    """What a trigger says about its window, comparable between deployments: the window's
    offsets under the plain topic name. ``triggered_at`` and the evidence's ``breach_started_at``
    are left out: they come from the model's watermark, which also counts predictions read ahead
    of their labels, so they depend on how the two input topics interleave when fetched."""
    window = dict(t["window"])
    window["offsets"] = {k.replace(d.topics["labels"], "labels"): v for k, v in window.get("offsets", {}).items()}
    return {"trigger_id": t["trigger_id"], "model_id": t["model_id"], "model_version": t.get("model_version"),
            "rule": t["rule"], "metric": t["metric"], "value": round(t["value"], 12), "threshold": t["threshold"],
            "window": window}


def distinct(d: Deployment, triggers: list[dict]) -> dict[str, dict]:
    """Triggers by id; a repeated id must carry the same trigger (at-least-once, never different)."""
    by_id: dict[str, dict] = {}
    for t in map(lambda t: essence(d, t), triggers):
        if t["trigger_id"] in by_id:
            assert t == by_id[t["trigger_id"]], f"trigger {t['trigger_id']} repeated with different content"
        by_id[t["trigger_id"]] = t
    return by_id


@pytest.fixture(scope="module")
def events() -> list:
    return stream(MODELS, 2500)


@pytest.fixture(scope="module")
def reference(kafka_bootstrap, events, tmp_path_factory):
    """One uninterrupted run (shared by this module's tests): its triggers and final gauges."""
    d = Deployment(kafka_bootstrap, uuid.uuid4().hex[:10], tmp_path_factory.mktemp("reference"),
                        models_config(MODELS), engine="faust")
    try:
        proc = d.start()
        d.send(events)
        d.wait_until_committed(len(events) // 2)
        final = gauges(d, MODELS)
        consumed = d.metric("driftline_events_consumed_total", topic=d.topics["predictions"])
        assert d.stop(proc) == 0
        triggers = d.triggers(timeout=10, settle=1, to_end=True)
    finally:
        d.stop_all()
    assert consumed == len(events) // 2
    ids = [t["trigger_id"] for t in triggers]
    assert len(ids) == len(set(ids)) and {t["model_id"] for t in triggers} == set(MODELS), ids
    return distinct(d, triggers), final


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_table_recovery_after_a_stop_mid_stream_gives_the_uninterrupted_result(deployment, events, reference, sig):
    want_triggers, want_gauges = reference
    d = deployment(models_config(MODELS))
    short_session(d)
    proc = d.start()
    d.send(events)
    # Stop after the first trigger of each model (pair ~750) and well before the end (2500).
    d.wait_for_metric("driftline_events_joined_total", 1100, timeout=60, model=MODELS[0])
    progress = d.metric("driftline_events_joined_total", model=MODELS[0])
    assert d.stop(proc, sig) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert progress < 2500, "the first run must stop mid-stream"
    committed = d.committed("predictions")
    assert committed < len(events) // 2

    d.start()
    d.wait_until_committed(len(events) // 2)
    skip_faust_fetcher_loss(d)
    # The restarted worker's table gave it every partition's windows and pending predictions back.
    assert gauges(d, MODELS) == want_gauges
    consumed = d.metric("driftline_events_consumed_total", topic=d.topics["predictions"])
    # Faust replays from its last commit (after kill -9, or events still in flight at a clean stop);
    # what the table already holds is skipped, so nothing is counted twice.
    assert consumed <= len(events) // 2 - committed
    got = d.triggers(expected=len(want_triggers), timeout=30, settle=2)
    # At-least-once: the same triggers as the uninterrupted run; a repeat is only ever the same id.
    assert distinct(d, got) == want_triggers
    if sig == signal.SIGTERM:
        assert len(got) == len(want_triggers), "a clean stop publishes nothing twice"


def move_commits_past_the_state(d: Deployment, by: int) -> None:
    """Commit the (stopped) worker's group ``by`` offsets past where it is on every partition
    of both inputs, as if Faust's fetcher had skipped those events (faust-streaming#216)."""
    consumer = Consumer({"bootstrap.servers": d.bootstrap, "group.id": d.group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(d.topics[topic], p) for topic in ("predictions", "labels") for p in range(d.partitions)]
        committed = [tp for tp in consumer.committed(parts, timeout=10) if tp.offset >= 0]
        assert committed, "the first run committed nothing"
        consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, tp.offset + by) for tp in committed],
                        asynchronous=False)
    finally:
        consumer.close()


def test_offsets_faust_skipped_are_sought_back_to_and_nothing_is_lost(deployment, events, reference):
    """faust-streaming#216 made to happen: the worker restarts 40 offsets past its table state on
    every partition of both inputs. It must seek back and give the uninterrupted run's result."""
    want_triggers, want_gauges = reference
    d = deployment(models_config(MODELS))
    first, rest = events[:len(events) // 2], events[len(events) // 2:]
    proc = d.start()
    d.send(first)
    d.wait_until_committed(len(first) // 2)
    assert d.stop(proc) == 0
    before = d.committed("predictions")
    d.send(rest)
    move_commits_past_the_state(d, by=40)

    d.start()
    d.wait_until_committed(len(events) // 2)
    logs = d.logs()
    assert "skipped by Faust's fetcher" in logs and "never reached the worker" not in logs, logs[-3000:]
    assert gauges(d, MODELS) == want_gauges
    # Each event of the second run processed once: the ones set aside were not counted.
    assert d.metric("driftline_events_consumed_total", topic=d.topics["predictions"]) == len(events) // 2 - before
    assert distinct(d, d.triggers(expected=len(want_triggers), timeout=30, settle=2)) == want_triggers


def test_state_lives_in_the_faust_table_changelog_keyed_by_input_partition(deployment):
    d = deployment()
    proc = d.start()
    d.send([e for p, lab in (pair(i, "churn", True) for i in range(120)) for e in (p, lab)])
    d.wait_for_metric("driftline_events_joined_total", 120, model="churn")
    assert d.stop(proc) == 0
    changelog = f"{d.group}-monitor-state-changelog"
    # The worker has stopped: the changelog is complete once every partition's end is reached.
    latest = {msg.partition(): (msg.key(), json.loads(msg.value()))
              for msg in d.read(changelog, timeout=30, settle=0, to_end=True)}
    assert len(latest) == 1, "one model: one input partition, one table entry"
    (partition, (key, state)), = latest.items()
    assert key == f"group-{d.suffix}:{partition}".encode()
    assert state["next_offsets"] == {d.topics["predictions"]: 120, d.topics["labels"]: 120}
    assert state["monitor"]["churn"]["joined_total"] == 120


def test_a_second_worker_takes_over_partitions_and_their_table_state(deployment, events, reference):
    """Worker a runs alone, b joins (a rebalance), a stops: b recovers a's partitions from the
    changelog and finishes with the triggers and gauges of one uninterrupted worker."""
    want_triggers, want_gauges = reference
    d = deployment(models_config(MODELS))
    short_session(d)
    first = d.start(instance="a")
    half = len(events) // 2
    d.send(events[:half])
    d.wait_for_metric("driftline_events_joined_total", 300, timeout=60, model=MODELS[0])
    from streams.tools.kafka_local import _free_port

    port = _free_port()
    second = d.start(instance="b", metrics_port=port)  # joins mid-stream: a rebalance
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # b is in the group (its first assignment)
        try:
            if d.metric("driftline_engine_up", port) == 1:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise AssertionError(f"worker b never got an assignment\n{d.logs()[-3000:]}")
    assert d.stop(first) == 0  # b takes over every partition
    d.send(events[half:])
    d.wait_until_committed(len(events) // 2)
    got = d.triggers(expected=len(want_triggers), timeout=30, settle=2)
    skip_faust_fetcher_loss(d)  # a rebalance here too: seen once, a label lost (one pending prediction)
    assert distinct(d, got) == want_triggers
    assert {name: (d.metric("driftline_performance", port, model=name, version="v1", metric="accuracy"),
                   d.metric("driftline_window_samples", port, model=name),
                   d.metric("driftline_pending_predictions", port, model=name)) for name in MODELS} == want_gauges
    assert d.stop(second) == 0
    second_log = next(d.tmp.glob("engine-b-*.log")).read_text()
    assert re.findall(r"assigned partitions \[([\d, ]*)\]", second_log)[-1] == "0, 1, 2"
    assert "restored partition" in second_log, "b rebuilt a's partitions from the table"


# -- a lost broker -------------------------------------------------------------------------------
@pytest.fixture
def private_broker(tmp_path, kafka_bootstrap):
    """A broker of this test's own (the project's launcher, in a temporary directory), so it can
    be killed without disturbing the shared one."""
    from streams.tools import kafka_local

    bdir = kafka_local.BrokerDir(tmp_path / "broker")
    try:
        bootstrap = kafka_local.up(bdir, port=None)
    except kafka_local.BrokerError as exc:
        pytest.fail(f"the broker-loss test needs the local launcher (Java + Maven): {exc}", pytrace=False)
    yield bdir, bootstrap
    kafka_local.down(bdir)


def test_lost_broker_ends_the_worker_after_the_retry_budget_with_one_line(private_broker, tmp_path, unique):
    bdir, bootstrap = private_broker
    d = Deployment(bootstrap, unique, tmp_path, FLOOR_MODEL, engine="faust",
                        engine_extra="broker_retry_budget_seconds = 8")
    proc = d.start()
    d.send([event for p in [pair(i, "churn", True) for i in range(20)] for event in p])
    d.wait_for_metric("driftline_events_joined_total", 20, model="churn")
    os.killpg(int(bdir.pidfile.read_text()), signal.SIGKILL)  # the broker dies without a goodbye
    lost_at = time.monotonic()
    code = proc.wait(timeout=120)
    took = time.monotonic() - lost_at
    assert code == 1
    assert 8 <= took < 60, f"it retried for its budget, then gave up promptly (took {took:.0f}s)"
    errors = [line for line in d.logs().splitlines() if line.startswith("driftline:")]
    assert len(errors) == 1 and "unreachable for more than 8s" in errors[0] and bootstrap in errors[0], errors
    assert "Traceback" not in d.logs()
    assert len([line for line in d.logs().splitlines() if "broker unreachable" in line]) == 1
