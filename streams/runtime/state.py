"""Where each input partition's Monitor state is kept between runs: one interface, two stores.

As in Quix Streams, state belongs to an input partition: whoever owns the partition reads its
checkpoint when it is assigned and writes it as it goes. :class:`StateStore` is that contract,
:class:`Checkpoint` what goes in and out (each model's state, as ``ModelMonitor.state()`` gives
it). The two layouts are the ones existing deployments hold, so their checkpoints restore:

* :class:`KafkaStateStore` (the default engine): the compacted ``topics.state``, partition *p*
  for input partition *p*, one message per model keyed ``<group>:<p>:<model>`` holding that
  model's JSON state, except the buckets of its remembered ids (duplicates), one message each
  keyed ``<group>:<p>/joined_ids/<bucket>/<model>``, and the references of its drift detectors
  (their learned reference samples, which stay as they are once learned) in one message
  keyed ``<group>:<p>/references/<model>``. A changelog: a write carries the models touched
  since the last one, and of their id buckets and references the ones that changed (a tombstone
  for a bucket dropped); a read takes the last value of each key. The engine produces the
  writes in its transaction.
* :class:`FaustTableStore` (the Faust engine): one entry of the Faust table per partition,
  keyed ``<group>:<p>``, holding ``{"next_offsets": {topic: offset}, "monitor": {model: state}}``
  (every model: Faust's changelog keeps the last value of each key); the next input offsets let
  a worker skip what a replay after a crash repeats.
"""
from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.core.config import Config
from streams.runtime.admin import librdkafka_log

log = logging.getLogger("driftline.state")

# Errors a just-created topic gives until its leader serves requests.
_NOT_READY = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}

#: The parts of a drift detector's state that its model's references message holds: its learned
#: reference (``detectors.drift``), about half of a model's drift state and the same from one
#: checkpoint to the next once learned. The model's own message keeps them as None: a build
#: from before this layout restores such a detector without its reference, which it learns
#: again from the stream, rather than failing on a missing key. (A model whose references come
#: from ``drift.reference_file`` keeps them in its message: see ``KafkaStateStore``.)
REFERENCE_PARTS = ("profile", "reference_counts", "reference_raw")
#: A model state whose drift references are in their own message says so under this key.
REFERENCES_APART = "references_apart"


@dataclass
class Checkpoint:
    """One input partition's stored state."""

    #: model id -> that model's state
    models: dict[str, Any] = field(default_factory=dict)
    #: input topic -> the next offset the state covers (kept by the Faust engine only)
    next_offsets: dict[str, int] = field(default_factory=dict)
    #: the stored size, as read
    nbytes: int = 0


class StateStore(Protocol):
    """Read and write the checkpoint of one input partition."""

    def read(self, partition: int) -> Checkpoint:
        """The partition's checkpoint as stored (empty if none)."""

    def write(self, partition: int, checkpoint: Checkpoint) -> Any:
        """Store a checkpoint of the partition (what a store needs of it: see the store)."""


class KafkaStateStore:
    """The default engine's store: a compacted topic of one message per model (a changelog).

    Parameters
    ----------
    config
        Its ``kafka`` settings, ``topics.state`` and ``engine.group_id`` (the keys' prefix).
    producer
        The engine's transactional producer: a write is part of the open transaction.
    sized
        Called as ``sized(partition, bytes)`` after a write with the size of the partition's
        latest checkpoint (the latest state of each of its models).
    """

    def __init__(self, config: Config, producer: Producer, sized: Callable[[int, int], None]):
        self.config = config
        self.topic = config.topics.state
        self.producer = producer
        self.sized = sized
        #: partition -> model -> bytes of its latest state (with its id buckets)
        self.sizes: dict[int, dict[str, int]] = {}
        #: (partition, model) -> bucket -> the text of its latest id bucket message
        self.buckets: dict[tuple[int, str], dict[str, str]] = {}
        #: :attr:`buckets` as of the last committed transaction (what an abort goes back to)
        self._committed: dict[tuple[int, str], dict[str, str]] = {}
        #: (partition, model) -> (the reference parts last written, their text): a detector hands
        #: out the same objects while its reference stays, so most writes compare them by
        #: identity and encode nothing
        self.references: dict[tuple[int, str], tuple[list, bytes]] = {}
        #: :attr:`references` as of the last committed transaction
        self._committed_references: dict[tuple[int, str], tuple[list, bytes]] = {}
        #: models whose references come from ``drift.reference_file``: their message keeps them,
        #: because a build from before the references went apart reads that message alone and
        #: would learn a reference from the stream instead of the file's
        self._references_inside = {model.id for model in config.models
                                   if model.drift is not None and model.drift.reference_file is not None}

    def _prefix(self, partition: int) -> bytes:
        return f"{self.config.engine.group_id}:{partition}:".encode()

    def _bucket_prefix(self, partition: int) -> bytes:
        return f"{self.config.engine.group_id}:{partition}/joined_ids/".encode()

    def _references_prefix(self, partition: int) -> bytes:
        return f"{self.config.engine.group_id}:{partition}/references/".encode()

    def write(self, partition: int, checkpoint: Checkpoint) -> None:
        """Produce the state of each model in ``checkpoint`` (the ones touched since the last
        write: idle models are not rewritten) and those of its id buckets that changed.

        The buckets hold a model's ids for the whole de-duplication horizon, most of a busy
        model's state; only the newest takes ids as time goes on (an older one changes only
        when a late label joins), so the others are written when they change, not with every
        commit. So are the drift detectors' references (written when one changes), except a
        model's whose references come from a reference file."""
        sizes = self.sizes.setdefault(partition, {})
        for model_id, state in checkpoint.models.items():
            ids = state.get("joined_ids")
            size = 0
            if ids is not None and "buckets" in ids:
                size = self._write_buckets(partition, model_id, ids["buckets"])
                state = {**state, "joined_ids": {**ids, "buckets": {}, "apart": sorted(ids["buckets"])}}
            stripped = None if model_id in self._references_inside else _without_references(state)
            if stripped is not None:
                state, parts, references = stripped
                size += self._write_references(partition, model_id, parts, references)
            payload = msgspec.json.encode(state)
            self.producer.produce(self.topic, payload, key=self._prefix(partition) + model_id.encode(),
                                  partition=partition)
            sizes[model_id] = len(payload) + size
        self.sized(partition, sum(sizes.values()))

    def _write_buckets(self, partition: int, model_id: str, buckets: dict[str, str]) -> int:
        """Produce the buckets whose text differs from the one last written, a tombstone for each
        one gone; return the bytes of the model's buckets."""
        written = self.buckets.setdefault((partition, model_id), {})
        prefix, model = self._bucket_prefix(partition), model_id.encode()
        for bucket in [b for b in written if b not in buckets]:
            self.producer.produce(self.topic, None, key=prefix + f"{bucket}/".encode() + model, partition=partition)
            del written[bucket]
        for bucket, text in buckets.items():
            last = written.get(bucket)
            if last is not text and last != text:  # the RecentIds keeps an unchanged bucket's text
                self.producer.produce(self.topic, text.encode(), key=prefix + f"{bucket}/".encode() + model,
                                      partition=partition)
                written[bucket] = text
        return sum(map(len, written.values()))

    def _write_references(self, partition: int, model_id: str, parts: list, references: dict) -> int:
        """Produce the model's drift references unless the message last written holds them;
        return their bytes."""
        key = (partition, model_id)
        last = self.references.get(key)
        if last is not None and len(last[0]) == len(parts) and all(map(operator.is_, last[0], parts)):
            return len(last[1])
        text = msgspec.json.encode(references)
        if last is None or last[1] != text:
            self.producer.produce(self.topic, text, key=self._references_prefix(partition) + model_id.encode(),
                                  partition=partition)
        self.references[key] = (parts, text)
        return len(text)

    def committed(self) -> None:
        """The open transaction committed: what it wrote is in the topic."""
        self._committed = {key: dict(texts) for key, texts in self.buckets.items()}
        self._committed_references = dict(self.references)

    def aborted(self) -> None:
        """The open transaction was aborted: what it wrote is gone, and the topic holds the
        buckets and references of the last commit (those the next writes compare with, and
        tombstone when dropped)."""
        self.buckets = {key: dict(texts) for key, texts in self._committed.items()}
        self.references = dict(self._committed_references)

    def read(self, partition: int, timeout: float = 30.0) -> Checkpoint:
        """The partition's checkpoint, retrying while a new state topic gets its leader."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._read(partition)
            except KafkaException as exc:
                if exc.args[0].code() not in _NOT_READY or time.monotonic() > deadline:
                    raise
                log.info("state partition %d not ready (%s); retrying", partition, exc.args[0].str())
                time.sleep(0.2)

    def _read(self, partition: int) -> Checkpoint:
        """Read the partition to its end; the last value of each key wins."""
        # librdkafka's own lines (a broker down: one a second) go where the engine's clients' go
        reader = Consumer({**self.config.kafka, "group.id": f"{self.config.engine.group_id}-restore",
                           "enable.auto.commit": False, "isolation.level": "read_committed",
                           "logger": librdkafka_log})
        messages: list[tuple[bytes, bytes | None]] = []
        try:
            low, high = reader.get_watermark_offsets(TopicPartition(self.topic, partition), 10)
            if high <= low:
                return Checkpoint()
            reader.assign([TopicPartition(self.topic, partition, low)])
            position = low
            while position < high:
                # A short wait: the partition ends with a transaction marker, no message, so the last
                # call returns empty, and a restart should not sit out a long timeout on it.
                for msg in reader.consume(1000, 0.1):
                    if msg.error():
                        continue
                    position = msg.offset() + 1
                    messages.append((msg.key() or b"", msg.value()))
                if reader.position([TopicPartition(self.topic, partition)])[0].offset >= high:
                    break
        finally:
            reader.close()
        return self.assemble(partition, messages)

    def assemble(self, partition: int, messages: list[tuple[bytes, bytes | None]]) -> Checkpoint:
        """The partition's checkpoint from its messages ``(key, value)`` in the order stored (the
        last value of each key wins); what is stored becomes what the next writes compare with."""
        prefix, bucket_prefix = self._prefix(partition), self._bucket_prefix(partition)
        references_prefix = self._references_prefix(partition)
        latest: dict[str, bytes] = {}
        buckets: dict[str, dict[str, bytes | None]] = {}
        references: dict[str, bytes] = {}
        for key, value in messages:
            if key.startswith(prefix):
                latest[key[len(prefix):].decode()] = value
            elif key.startswith(bucket_prefix):
                bucket, model_id = key[len(bucket_prefix):].decode().split("/", 1)
                buckets.setdefault(model_id, {})[bucket] = value
            elif key.startswith(references_prefix):
                references[key[len(references_prefix):].decode()] = value
        models = {model_id: msgspec.json.decode(value) for model_id, value in latest.items()}
        self.sizes[partition] = {}
        for written in (self.buckets, self._committed, self.references, self._committed_references):
            for key in [k for k in written if k[0] == partition]:
                del written[key]
        for model_id, state in models.items():
            self.sizes[partition][model_id] = len(latest[model_id]) + self._join_buckets(
                partition, model_id, state, buckets.get(model_id, {})) + self._join_references(
                partition, model_id, state, references.get(model_id))
        return Checkpoint(models=models, nbytes=sum(self.sizes[partition].values()))

    def _join_references(self, partition: int, model_id: str, state: dict, stored: bytes | None) -> int:
        """Put a model's drift references, kept apart, back into its state; return their bytes."""
        if not state.pop(REFERENCES_APART, False):  # a checkpoint that holds its references itself
            return 0
        if stored is None:
            raise ValueError(f"{self.topic}: the checkpoint of model {model_id!r} (partition {partition}) "
                             "keeps its drift references apart, and they are not in the topic")
        references = msgspec.json.decode(stored)
        stats = state["stats"]
        if [d[:2] for d in stats["feature_drift"]] != [r[:2] for r in references["feature_drift"]] \
                or stats["prediction_drift"].keys() != references["prediction_drift"].keys():
            raise ValueError(f"{self.topic}: the drift references of model {model_id!r} (partition {partition}) "
                             "are not those of its detectors")
        for (_, _, detector), (_, _, parts) in zip(stats["feature_drift"], references["feature_drift"]):
            detector.update(parts)
        for kind, detector in stats["prediction_drift"].items():
            detector.update(references["prediction_drift"][kind])
        # as stored: the next write compares its references with this text
        self.references[(partition, model_id)] = self._committed_references[(partition, model_id)] = ([], stored)
        return len(stored)

    def _join_buckets(self, partition: int, model_id: str, state: dict, stored: dict[str, bytes | None]) -> int:
        """Put the id buckets a model's state lists as stored apart back into it; return their bytes."""
        ids = state.get("joined_ids")
        if not ids or "apart" not in ids:  # a checkpoint that holds its buckets itself
            return 0
        texts = {}
        for bucket in ids.pop("apart"):
            value = stored.get(bucket)
            if value is None:  # written in the same transaction as the state that lists it
                raise ValueError(f"{self.topic}: the checkpoint of model {model_id!r} (partition {partition}) "
                                 f"lists id bucket {bucket}, which is not in the topic")
            texts[bucket] = value.decode()
        ids["buckets"] = texts
        self.buckets[(partition, model_id)] = dict(texts)
        self._committed[(partition, model_id)] = dict(texts)
        return sum(map(len, texts.values()))


def _without_references(state: dict) -> tuple[dict, list, dict] | None:
    """A model's state without its drift detectors' references (and marked so), the reference
    parts in order, and the references as their message holds them; None for a model without
    drift detectors. The caller's state is left as it was."""
    stats = state.get("stats")
    if not stats or not (stats.get("feature_drift") or stats.get("prediction_drift")):
        return None
    parts: list = []
    feature_drift, feature_references = [], []
    for feature, kind, detector in stats["feature_drift"]:
        kept, moved = _split_detector(detector, parts)
        feature_drift.append([feature, kind, kept])
        feature_references.append([feature, kind, moved])
    prediction_drift, prediction_references = {}, {}
    for kind, detector in stats["prediction_drift"].items():
        prediction_drift[kind], prediction_references[kind] = _split_detector(detector, parts)
    stripped = {**state, "stats": {**stats, "feature_drift": feature_drift, "prediction_drift": prediction_drift},
                REFERENCES_APART: True}
    return stripped, parts, {"feature_drift": feature_references, "prediction_drift": prediction_references}


def _split_detector(detector: dict, parts: list) -> tuple[dict, dict]:
    """A drift detector's state with its reference parts None, and those parts (added to ``parts``)."""
    moved = {name: detector[name] for name in REFERENCE_PARTS}
    parts.extend(moved.values())
    return {**detector, **dict.fromkeys(REFERENCE_PARTS)}, moved


class FaustTableStore:
    """The Faust engine's store: one entry per partition in a Faust table of raw bytes.

    Parameters
    ----------
    table
        The Faust table (``key_type=bytes, value_type=bytes``), partitioned like the inputs.
    group_id
        ``engine.group_id``, the keys' prefix.
    sized
        Called as ``sized(partition, bytes)`` after each write.
    """

    def __init__(self, table: Any, group_id: str, sized: Callable[[int, int], None]):
        self.table = table
        self.group_id = group_id
        self.sized = sized

    def _key(self, partition: int) -> bytes:
        return f"{self.group_id}:{partition}".encode()

    def read(self, partition: int) -> Checkpoint:
        """The partition's entry as the table holds it now (Faust recovers the table from its
        changelog before the partition's events reach the agent; meanwhile it may be behind)."""
        return decode_table_value(self.table.data.get(self._key(partition)))

    def write(self, partition: int, checkpoint: Checkpoint):
        """Put the partition's whole state (every model, and the next offsets) in the table and
        send it to the changelog at once. Returns the send (a coroutine): awaited, it gives the
        write's delivery future."""
        payload = encode_table_value(checkpoint)
        key = self._key(partition)
        self.table.data[key] = payload
        self.sized(partition, len(payload))
        # The changelog partition is the input partition, so recovery gives it to its owner.
        return self.table.changelog_topic.send(
            key=key, value=payload, partition=partition, key_serializer=self.table.key_serializer,
            value_serializer=self.table.value_serializer, force=True)  # force: now, not attached to an event


def encode_table_value(checkpoint: Checkpoint) -> bytes:
    """A partition's entry in the Faust table."""
    return msgspec.json.encode({"next_offsets": checkpoint.next_offsets, "monitor": checkpoint.models})


def decode_table_value(raw: bytes | None) -> Checkpoint:
    if not raw:
        return Checkpoint()
    data = msgspec.json.decode(raw)
    return Checkpoint(models=data["monitor"], next_offsets=dict(data["next_offsets"]), nbytes=len(raw))
