"""The default engine's commit schedule: a partition's turn every commit interval, staggered,
and a busy partition's commits by event count, without starving the others.

The schedule alone (``Engine._interval_commit_due``) on a simulated clock; the commits themselves
are the broker tests' (tests/integration/test_trigger_commits.py, test_exactly_once.py)."""
from __future__ import annotations

from streams.core.config import parse_config
from streams.runtime import engine as engine_module
from streams.runtime.engine import Engine

STEP_S = 0.01


def _schedule(rates: dict[int, float], seconds: float, monkeypatch, produced_every: dict[int, int] | None = None):
    """Each step hands ``rate * STEP_S`` events to each partition (and marks a partition as having
    produced outputs every that many steps); returns each partition's commit times."""
    clock = [100.0]
    monkeypatch.setattr(engine_module.time, "monotonic", lambda: clock[0])
    engine = Engine.__new__(Engine)  # the schedule's state only: no Kafka clients
    engine.config = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [{"id": "m"}]})
    engine.monitors = dict.fromkeys(rates)
    engine.events_since_commit, engine.committed_at, engine.produced = {}, dict.fromkeys(rates, clock[0]), set()
    engine.started = engine.last_interval_commit = clock[0]
    commits: dict[int, list[float]] = {p: [] for p in rates}
    arrived = dict.fromkeys(rates, 0.0)
    for step in range(1, int(seconds / STEP_S) + 1):
        clock[0] += STEP_S
        for p, rate in rates.items():
            arrived[p] += rate * STEP_S
            if arrived[p] >= 1:  # whole events, handed on
                engine.events_since_commit[p] = engine.events_since_commit.get(p, 0) + int(arrived[p])
                arrived[p] -= int(arrived[p])
            if produced_every and p in produced_every and step % produced_every[p] == 0:
                engine.produced.add(p)
        due = engine._interval_commit_due()
        if due is not None:
            for p in engine.produced | {due}:  # what Engine.commit does after a commit
                commits[p].append(clock[0])
                engine.events_since_commit[p], engine.committed_at[p] = 0, clock[0]
            engine.produced.clear()
    return commits


def test_a_busy_partition_committing_by_count_does_not_starve_a_quiet_one(monkeypatch):
    commits = _schedule({0: 50_000, 1: 20, 2: 0}, 30, monkeypatch)
    interval = 1.0
    quiet = commits[1]
    gaps = [b - a for a, b in zip([100.0, *quiet], quiet)]
    assert len(quiet) >= 25 and max(gaps) <= interval + interval / 3 + 2 * STEP_S
    assert len(commits[0]) >= 30 * 50_000 / (60_000 / 3) * 0.9  # its share of commit_every_events
    assert commits[2] == []  # nothing handed on, nothing produced: its turns pass without a transaction


def test_the_partitions_turns_are_staggered_over_the_interval(monkeypatch):
    commits = _schedule({0: 100, 1: 100, 2: 100}, 20, monkeypatch)
    times = sorted(t for p in commits for t in commits[p])
    assert all(len(commits[p]) >= 18 for p in commits)
    # one partition at a time, a third of the interval apart (not three commits at once)
    assert min(b - a for a, b in zip(times, times[1:])) >= 1 / 3 - 2 * STEP_S


def test_an_idle_partition_that_produced_outputs_still_commits(monkeypatch):
    commits = _schedule({0: 0, 1: 0}, 10, monkeypatch, produced_every={1: 150})
    assert len(commits[1]) >= 5 and commits[0] == []
