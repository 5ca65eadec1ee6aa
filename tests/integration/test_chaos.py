"""Crashes and downtime on the real broker: the engine publishes exactly the backtest's triggers.

* chaos: three models streamed at a fixed rate while the engine is SIGKILLed at random moments
  and restarted at once (static membership: it gets its partition back without a rebalance);
* backlog: the engine is down while hours of event time are produced, all predictions before
  any label (the consumer reads one topic far ahead of the other), then started.

Both streams carry 5 % of labels stamped before their predictions and malformed messages. One
partition per topic, so the backtest's offsets (line numbers) are the live offsets too and the
triggers must be equal field for field, evidence offsets included. benchmarks/chaos.py is the
long version (20+ kills, a broker restart, the stall per kill).
"""
from __future__ import annotations

import random
import signal
import time

import pytest

from . import chaos
from .harness import Deployment

pytestmark = pytest.mark.kafka

MODELS = ["churn", "fraud", "ranker"]
# A long idle wait: at the end of the stream the tail waits for it; in between, a label fetch
# delayed by the shared machine must not let predictions overtake it.
ENGINE = "max_idle_ms = 10000"


def deployment(kafka_bootstrap, unique, tmp_path) -> Deployment:
    return Deployment(kafka_bootstrap, unique, tmp_path, chaos.models_config(MODELS), partitions=1,
                      engine_extra=ENGINE)


def check(d: Deployment, h: chaos.History, expected: dict) -> None:
    chaos.wait_until_consumed(d, h)
    got = chaos.outcome(d, h, sum(map(len, expected.values())))
    assert got.duplicates == []
    assert {m: [t["trigger_id"] for t in ts] for m, ts in got.live.items()} == \
        {m: [t["trigger_id"] for t in ts] for m, ts in expected.items()}
    assert got.live == expected  # values, windows, offsets, evidence, event-time timestamps
    assert got.dead_letters == got.malformed  # each malformed message once, nothing else


def test_sigkill_at_random_moments_gives_the_backtest_triggers(kafka_bootstrap, unique, tmp_path):
    h = chaos.history(MODELS, 1200, seed=3)
    d = deployment(kafka_bootstrap, unique, tmp_path)
    expected = chaos.backtest(d, h, tmp_path)
    assert set(expected) == set(MODELS) and len(h.malformed) >= 10
    rng = random.Random(5)
    try:
        proc = d.start()
        producer = chaos.FixedRateProducer(d, h.messages, rate=600)  # ~13 s of traffic
        producer.start()
        for _ in range(4):
            time.sleep(rng.uniform(1.0, 3.5))
            proc, _, _ = chaos.kill_and_restart(d, proc)
        producer.join(120)
        assert producer.error is None, producer.error
        check(d, h, expected)
        assert d.stop(proc) == 0
    finally:
        d.stop_all()
    assert sum("fenced" in line.lower() and "error" in line.lower() for line in d.logs().splitlines()) == 0


def test_a_backlog_with_one_topic_far_ahead_gives_the_backtest_triggers(kafka_bootstrap, unique, tmp_path):
    # 3 models x 2 h of event time at one prediction every 2 s, produced while the engine is down.
    h = chaos.history(MODELS, 3600, seed=4, spacing_ms=2000)
    d = deployment(kafka_bootstrap, unique, tmp_path)
    expected = chaos.backtest(d, h, tmp_path)
    assert set(expected) == set(MODELS)
    try:
        first = d.start()
        assert d.stop(first, signal.SIGTERM) == 0  # it ran, created its topics, and went down
        chaos.produce_all(d, h.backlog_order())
        proc = d.start()
        check(d, h, expected)
        assert d.stop(proc) == 0
    finally:
        d.stop_all()
