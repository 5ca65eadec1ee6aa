"""The default engine's step (``Engine.step``) without Kafka: what the input pairs release goes to
the partitions' Monitors pair by pair, a trigger commits right after the hand-over that made it,
and while that commit waits for the broker nothing more is handed on (the rest stays in its
pairs, its offsets uncommitted), so the open transaction holds no outputs of a partition whose
checkpoint and offsets it does not hold."""
from __future__ import annotations

import contextlib
import threading
import types

from confluent_kafka import KafkaError, KafkaException

from streams.core.config import parse_config
from streams.runtime.align import LABELS, PREDICTIONS, merge_key
from streams.runtime.engine import _FLIGHT_POLL_S, Engine
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
    engine._flight, engine._held, engine._held_partitions, engine._held_trigger = None, [], set(), False
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

    engine.commit = engine._commit_in_flight = commit
    engine.step()
    assert [monitor for monitor, _ in engine.pipeline.handed] == [0] and commits[0] == {0}
    assert engine.produced == {0}  # the transaction holds partition 0's outputs only
    # pair 1 is as it was: its offsets are not committed past what was not handed on
    assert engine.inputs.aligner.buffered(1, PREDICTIONS) == engine.inputs.aligner.buffered(1, LABELS) == 3
    assert engine.inputs.aligner.first_offset(1, PREDICTIONS) == engine.inputs.aligner.first_offset(1, LABELS) == 0


def test_a_commit_that_cannot_begin_does_not_cut_the_wait_for_messages_to_nothing():
    """A trigger commit and a partition's turn both due cut the wait to nothing, so that they
    begin at once; but while a commit is in flight neither can begin before it lands, and the
    wait is the short one that looks for the landing; while the broker is away, the poll
    timeout. (Cut to nothing, the loop would spin through the commit's round trips.)"""
    engine = _engine({0: 1})
    engine.trigger_pending, engine.last_trigger_commit = True, float("-inf")
    engine.started = engine.last_interval_commit = float("-inf")
    engine.committed_at = {}
    assert engine._idle_timeout() == 0.0
    engine._flight = object()
    assert engine._idle_timeout() == _FLIGHT_POLL_S
    engine._flight, engine.health = None, types.SimpleNamespace(up=False)
    assert engine._idle_timeout() == CONFIG.engine.poll_timeout_ms / 1000


def test_after_a_trigger_commit_the_step_goes_on_with_the_next_pairs():
    engine = _engine({0: 3, 1: 3})
    commits = []

    def commit(partitions=None):
        commits.append(set(partitions))
        engine.trigger_pending, engine.last_trigger_commit = False, 0.0
        engine.produced.difference_update(partitions)
        return True

    engine.commit = engine._commit_in_flight = commit
    engine.step()
    assert [monitor for monitor, _ in engine.pipeline.handed] == [0, 1] and commits == [{0}]
    assert [len(items) for _, items in engine.pipeline.handed] == [5, 5]  # the last label waits for a later prediction


# -- a commit in flight: its broker round trips in their own thread while the step goes on ---------
class _Producer:
    """A transactional producer whose ``send_offsets_to_transaction`` and ``commit_transaction``
    wait for :attr:`go`, then raise what :attr:`fail` names (``"offsets"`` or ``"commit"``, with
    :attr:`error`), else succeed. Each transaction's messages are listed in :attr:`transactions`."""

    def __init__(self):
        self.go = threading.Event()
        self.fail, self.error = None, None
        self.transactions: list[list] = [[]]
        self.committed: list[list] = []

    def produce(self, topic, value, key=None, headers=None):
        self.transactions[-1].append((topic, value))

    def send_offsets_to_transaction(self, offsets, group, timeout):
        self.go.wait(5)
        if self.fail == "offsets":
            raise KafkaException(self.error)

    def commit_transaction(self, timeout):
        self.go.wait(5)
        if self.fail == "commit":
            raise KafkaException(self.error)
        self.committed.append(self.transactions[-1])

    def begin_transaction(self):
        self.transactions.append([])

    def abort_transaction(self, timeout):
        self.transactions[-1] = []


class _Consumer:
    def assignment(self):
        return []

    def consumer_group_metadata(self):
        return None


class _Health(_Stub):
    def __init__(self):
        self.unreachable_since: list[str] = []

    def guard(self, call):
        return contextlib.nullcontext()

    def reachable(self):
        pass

    def unreachable(self, reason):
        self.unreachable_since.append(reason)


class _Exporter(_Stub):
    commit_seconds = types.SimpleNamespace(observe=lambda seconds: None)

    def set_consumer_lag(self, *args):
        pass


class _Store:
    def write(self, partition, checkpoint):
        pass

    def committed(self):
        pass

    def aborted(self):
        pass


class _TriggeringPipeline(_Pipeline):
    """As :class:`_Pipeline`, and partition 0's hand-overs produce their trigger through the engine."""

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine

    def hand_over(self, monitor, items):
        triggers = super().hand_over(monitor, items)
        for _ in triggers:
            self.engine._produce(self.engine.topics.triggers, b"trigger", "m")
        return triggers


class _Monitor(int):
    """A stub pipeline's "Monitor" (its partition) with no state to checkpoint."""

    def dirty_states(self) -> dict:
        return {}


def _flying_engine() -> Engine:
    """A stub engine (:func:`_engine`) with a producer, consumer and store, and a commit of
    partition 1 in flight (its broker calls wait for ``engine.producer.go``)."""
    engine = _engine({0: 3, 1: 3})
    engine.topics, engine.producer, engine.consumer = CONFIG.topics, _Producer(), _Consumer()
    engine.health, engine.exporter, engine.store = _Health(), _Exporter(), _Store()
    engine.pipeline = _TriggeringPipeline(engine)
    engine.monitors = {partition: _Monitor(partition) for partition in engine.monitors}
    engine.inputs.commit_offsets = lambda assignment: ["offsets"]
    engine.inputs._lag = lambda role, partition: None  # not known: a pair waits for its other half
    engine._rewind = lambda: None
    engine._prepared_partitions, engine._prepared_counts = None, {}
    engine.committed_at = {}
    engine._commit_in_flight({1})
    assert engine._flight is not None
    return engine


def _flying_step(engine: Engine) -> None:
    engine.step()
    assert [monitor for monitor, _ in engine.pipeline.handed] == [0, 1]  # handed on meanwhile
    assert engine.producer.transactions == [[]] and engine._held  # the trigger is held
    assert engine.produced == set() and not engine.trigger_pending


def test_while_a_commit_is_in_flight_the_step_hands_on_and_holds_the_outputs_for_the_next_transaction():
    engine = _flying_engine()
    _flying_step(engine)
    engine.producer.go.set()
    engine._flight.thread.join()
    engine.step()  # it lands: the next transaction begins with the trigger, which commits at once
    assert engine.producer.committed[0] == []  # the commit in flight held no trigger
    assert engine.producer.transactions[1] == [(CONFIG.topics.triggers, b"trigger")]
    assert engine._flight is not None and engine._prepared_partitions == {0}  # the trigger's commit
    engine._land()
    assert engine.producer.committed[1] == [(CONFIG.topics.triggers, b"trigger")]
    assert not engine._held and engine.produced == set() and not engine.trigger_pending


def _failed_flight(call: str, error: KafkaError) -> Engine:
    """An engine whose commit in flight (made by :func:`_flying_step`) failed in ``call``
    ("offsets" or "commit") with ``error``, landed."""
    engine = _flying_engine()
    _flying_step(engine)
    engine.producer.fail = call
    engine.producer.error = error
    engine.producer.go.set()
    engine._land()
    return engine


def test_an_aborted_commit_in_flight_drops_the_held_outputs():
    engine = _failed_flight("commit", KafkaError(KafkaError.INVALID_TXN_STATE, txn_requires_abort=True))
    assert not engine._held and engine.produced == set() and not engine.trigger_pending
    assert engine.producer.committed == [] and engine.producer.transactions[-1] == []


def test_held_outputs_go_into_the_open_transaction_when_its_offsets_could_not_be_sent():
    engine = _failed_flight("offsets", KafkaError(KafkaError._TIMED_OUT, retriable=True))
    assert not engine._prepared and engine.health.unreachable_since
    # the transaction is open, not committing: the trigger goes in, to commit with partition 0
    assert engine.producer.transactions == [[(CONFIG.topics.triggers, b"trigger")]]
    assert engine.produced == {0} and engine.trigger_pending and not engine._held


def test_held_outputs_wait_for_the_retried_commit_when_the_commit_call_failed():
    engine = _failed_flight("commit", KafkaError(KafkaError._TIMED_OUT, retriable=True))
    assert engine._prepared and engine._held and engine.producer.transactions == [[]]
    engine.producer.fail = None
    assert engine.commit({1})  # the retry commits what was prepared; the held outputs follow it
    assert engine.producer.committed == [[]]
    assert engine.producer.transactions[-1] == [(CONFIG.topics.triggers, b"trigger")]
    assert engine.produced == {0} and engine.trigger_pending and not engine._held
