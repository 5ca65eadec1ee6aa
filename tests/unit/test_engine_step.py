"""The default engine's step (``Engine.step``) without Kafka: what the input pairs release goes to
the partitions' Monitors pair by pair, a trigger commits right after the hand-over that made it,
and while that commit waits for the broker nothing more is handed on (the rest stays in its
pairs, its offsets uncommitted), so the open transaction holds no outputs of a partition whose
checkpoint and offsets it does not hold."""
from __future__ import annotations

from streams.core.config import parse_config
from streams.runtime.align import LABELS, PREDICTIONS, merge_key
from streams.runtime.engine import Engine
from streams.runtime.inputs import AlignedInputs

CONFIG = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [{"id": "m"}]})


class _Stub:
    up = True

    def check(self) -> None:
        pass

    def refresh(self) -> None:
        pass


class _Pipeline:
    """Hands over nothing to a real Monitor: notes each hand-over; partition 0's make a trigger."""

    def __init__(self):
        self.handed: list[tuple[int, list]] = []

    def hand_over(self, monitor: int, items: list) -> list:
        self.handed.append((monitor, items))
        return ["trigger"] if monitor == 0 else []


def _engine(pairs: dict[int, int]) -> Engine:
    """An engine whose pairs hold ``count`` predictions and labels each, interleaved in time."""
    engine = Engine.__new__(Engine)  # the step's state only: no Kafka clients
    engine.config = CONFIG
    engine.inputs = AlignedInputs(CONFIG, consumer=None)
    for partition, count in pairs.items():
        for role, tag in ((PREDICTIONS, "p"), (LABELS, "l")):
            engine.inputs.aligner.extend(partition, role, [merge_key(t, role) for t in range(count)],
                                         list(range(count)), [f"{tag}{partition}-{t}" for t in range(count)])
    engine.monitors = {partition: partition for partition in pairs}  # the stub pipeline's "Monitors"
    engine.pipeline, engine.health, engine.exporter = _Pipeline(), _Stub(), _Stub()
    engine._consume = lambda: []
    engine._interval_commit_due = lambda: None
    engine._prepared, engine.trigger_pending, engine._first_batch_logged = False, False, True
    engine.produced, engine.events_since_commit = set(), {}
    engine.last_trigger_commit = float("-inf")
    return engine


def test_nothing_more_is_handed_on_while_a_trigger_commit_waits_for_the_broker():
    engine = _engine({0: 3, 1: 3})
    commits = []

    def commit(partitions=None):  # the broker does not answer: the commit stays prepared
        commits.append(set(partitions))
        engine._prepared, engine._prepared_partitions = True, set(partitions)
        return False

    engine.commit = commit
    engine.step()
    assert [monitor for monitor, _ in engine.pipeline.handed] == [0] and commits[0] == {0}
    assert engine.produced == {0}  # the transaction holds partition 0's outputs only
    # pair 1 is as it was: its offsets are not committed past what was not handed on
    assert engine.inputs.aligner.buffered(1, PREDICTIONS) == engine.inputs.aligner.buffered(1, LABELS) == 3
    assert engine.inputs.aligner.first_offset(1, PREDICTIONS) == engine.inputs.aligner.first_offset(1, LABELS) == 0


def test_after_a_trigger_commit_the_step_goes_on_with_the_next_pairs():
    engine = _engine({0: 3, 1: 3})
    commits = []

    def commit(partitions=None):
        commits.append(set(partitions))
        engine.trigger_pending, engine.last_trigger_commit = False, 0.0
        engine.produced.difference_update(partitions)
        return True

    engine.commit = commit
    engine.step()
    assert [monitor for monitor, _ in engine.pipeline.handed] == [0, 1] and commits == [{0}]
    assert [len(items) for _, items in engine.pipeline.handed] == [5, 5]  # the last label waits for a later prediction
