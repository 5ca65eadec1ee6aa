"""The default engine's input side: consumed messages buffered per partition pair and released
in event-time order (:class:`~streams.runtime.align.Aligner`), with what that asks of the
consumer: each partition's lag, pausing a partition far ahead of its pair, and the offsets a
transaction may commit (never past a message not handed on yet).
"""
from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Iterator, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.core.codecs import InvalidEvent
from streams.core.config import Config
from streams.runtime.align import LABELS, PREDICTIONS, Aligner, merge_key, rejected_key
from streams.runtime.health import COMMIT_TIMEOUT
from streams.runtime.pipeline import Item

_EVENT, _TIMESTAMP = operator.itemgetter(0), operator.attrgetter("timestamp")


class AlignedInputs:
    """Partition *p* of the predictions topic and partition *p* of the labels topic, read by one
    consumer, buffered and released together.

    Parameters
    ----------
    config
        The input topics and ``engine.max_idle_ms`` (how long a pair waits for a caught-up
        partition), ``engine.batch_size`` (how much of one partition a pair buffers before that
        partition is paused) and ``engine.poll_timeout_ms``.
    consumer
        The engine's consumer.
    """

    def __init__(self, config: Config, consumer: Consumer):
        self.config = config
        self.consumer = consumer
        self.topics = {PREDICTIONS: config.topics.predictions, LABELS: config.topics.labels}
        self.roles = {topic: role for role, topic in self.topics.items()}
        self.aligner = Aligner(config.engine.max_idle_ms / 1000)
        #: input partitions paused because their pair holds a full batch of their events unreleased
        self.paused: set[tuple[str, int]] = set()
        self._start_offsets: dict[tuple[str, int], int] = {}

    def buffer(self, topic: str, partition: int, offsets: list[int], items: list[Item]) -> None:
        """A run of items read in order from one input partition (:meth:`Pipeline.decode_run`),
        read at ``offsets``, buffered in its pair."""
        role = self.roles[topic]
        try:  # merge_key(timestamp, role) of each, inlined
            keys = [2 * timestamp + role for timestamp in map(_TIMESTAMP, map(_EVENT, items))]
        except AttributeError:  # a rejected message among them
            keys = [rejected_key(role) if type(item[0]) is InvalidEvent else merge_key(item[0].timestamp, role)
                    for item in items]
        self.aligner.extend(partition, role, keys, offsets, items)

    def release(self, owned: Mapping[int, object]) -> Iterator[tuple[int, list[Item]]]:
        """``(partition, items)`` of each pair with items to hand on now, in merge order. A pair
        of a partition no longer ``owned`` (revoked while its batch was in flight) is dropped."""
        now = time.monotonic()
        for partition in self.aligner.partitions():
            if partition not in owned:
                self.aligner.drop(partition)
                continue
            items = self.aligner.release(partition, lambda role: self._lag(role, partition), now)
            if items:
                yield partition, items

    def _lag(self, role: int, partition: int) -> int | None:
        """Records of that input partition on the broker and not consumed yet (None: not known).
        The high watermark is the one the last fetch brought (no request to the broker)."""
        tp = TopicPartition(self.topics[role], partition)
        try:
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self.consumer.position([tp])[0].offset
            if position < 0:  # nothing consumed since the assignment: it starts where the group committed
                position = self._start_offset(tp, low)
        except KafkaException:
            return None
        if high < 0 or position < 0:
            return None
        return max(0, high - position)

    def _start_offset(self, tp: TopicPartition, low: int) -> int:
        """Where consuming ``tp`` began: the group's committed offset (asked once per assignment),
        or the log start without one (``auto.offset.reset = earliest``)."""
        key = (tp.topic, tp.partition)
        start = self._start_offsets.get(key)
        if start is None:
            start = self.consumer.committed([tp], timeout=COMMIT_TIMEOUT)[0].offset
            self._start_offsets[key] = start
        return start if start >= 0 else low

    def flow_control(self, partitions: Iterable[int]) -> None:
        """Pause an input partition whose pair holds a batch of its events unreleased: the pair
        waits for the other partition, and reading more of this one would only grow the buffer.
        The partition a pair waits for is never paused (it has nothing buffered)."""
        limit = self.config.engine.batch_size
        pause, resume = [], []
        for partition in partitions:
            for role, topic in self.topics.items():
                key, full = (topic, partition), self.aligner.buffered(partition, role) >= limit
                if full and key not in self.paused:
                    pause.append(key)
                elif not full and key in self.paused:
                    resume.append(key)
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
            self.paused.update(pause)
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])
            self.paused.difference_update(resume)

    def poll_timeout(self) -> float:
        """The wait for a message while none come in: shorter while a pair waits out its idle
        time, so it is released on time."""
        timeout = self.config.engine.poll_timeout_ms / 1000
        if any(pair.blocked_since is not None for pair in self.aligner.pairs.values()):
            return min(timeout, max(0.01, self.aligner.max_idle_s / 4))
        return timeout

    def commit_offsets(self, assignment: list[TopicPartition]) -> list[TopicPartition]:
        """What to commit per input partition: the first offset not handed to the Monitor yet
        (buffered), else the consumer's position."""
        offsets = []
        for tp in self.consumer.position(assignment) if assignment else []:
            first = self.aligner.first_offset(tp.partition, self.roles[tp.topic])
            offset = first if first is not None else tp.offset
            if offset >= 0:
                offsets.append(TopicPartition(tp.topic, tp.partition, offset))
        return offsets

    def positions(self, assignment: list[TopicPartition]) -> list[tuple[str, int, int]]:
        """``(topic, partition, next offset to read)`` of each assigned partition."""
        return [(tp.topic, tp.partition, tp.offset) for tp in self.consumer.position(assignment)] if assignment else []

    def highwater(self, topic: str, partition: int) -> int:
        """The partition's end as the last fetch brought it (no request to the broker)."""
        return self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)[1]

    def assigned(self) -> None:
        """A new assignment: where each partition starts is asked again."""
        self._start_offsets.clear()

    def rewind(self) -> None:
        """Forget everything buffered: it is read again from the committed offsets."""
        self.aligner.clear()
        self._start_offsets.clear()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop what the pairs of revoked or lost partitions buffered (not committed: their next
        owner reads it again), and resume those of them that were paused."""
        for p in {tp.partition for tp in partitions}:
            self.aligner.drop(p)
        if self.paused:
            revoked = [TopicPartition(tp.topic, tp.partition) for tp in partitions
                       if (tp.topic, tp.partition) in self.paused]
            self.paused.difference_update((tp.topic, tp.partition) for tp in revoked)
            try:  # not paused when it comes back in a later assignment
                self.consumer.resume(revoked)
            except KafkaException:
                pass
