"""Topic creation (the inputs with the same partition count: co-partitioned; a compacted state
topic), and leaving the consumer group."""
from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.core.config import Config

log = logging.getLogger("driftline.admin")
#: librdkafka's own lines, of every Kafka client the service makes (one per failed connection
#: attempt while a broker is down): the engine reports broker trouble itself, once per state
#: change, so the CLI shows these only with --debug
librdkafka_log = logging.getLogger("driftline.librdkafka")


class TopicLayoutError(RuntimeError):
    """Existing topics that driftline cannot work with (e.g. inputs not co-partitioned)."""


#: largest state checkpoint message; state topics are created to accept it
STATE_MAX_BYTES = 64 << 20


#: librdkafka errors that say the broker refused the client's credentials or certificate:
#: retrying the same settings cannot cure them.
LOGIN_REFUSED = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED)


class _RefusedLogin:
    """An ``error_cb`` that keeps the last login refusal librdkafka reported."""

    def __init__(self):
        self.error: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.code() in LOGIN_REFUSED:
            self.error = err


def list_topics(kafka: dict, timeout: float = 10.0):
    """An AdminClient of the ``kafka`` settings and the cluster's metadata. A login the broker
    refused raises a *fatal* ``KafkaException`` that names it, at once: librdkafka alone says
    "Broker transport failure" after the timeout (and retries forever)."""
    refused = _RefusedLogin()
    admin = AdminClient({**kafka, "error_cb": refused, "logger": librdkafka_log})
    deadline = time.monotonic() + timeout
    while True:  # in short tries, so that a refused login ends the wait at once
        try:
            return admin, admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException:
            admin.poll(0)  # serves the error callbacks that say why
            if refused.error is not None:
                break
            if time.monotonic() >= deadline:
                raise
    raise KafkaException(KafkaError(refused.error.code(), f"login refused ({refused.error.str()}); check "
                                        "kafka.sasl.username, kafka.sasl.password and kafka.ssl.*",
                                        fatal=True))


def ensure_topics(config: Config, timeout: float = 10.0) -> None:
    """Create missing topics; fail clearly if the two input topics are not co-partitioned."""
    admin, metadata = list_topics(config.kafka, timeout)
    t = config.topics
    existing = metadata.topics
    wanted = {
        t.predictions: NewTopic(t.predictions, t.partitions, 1),
        t.labels: NewTopic(t.labels, t.partitions, 1),
        t.triggers: NewTopic(t.triggers, 1, 1),
        t.dlq: NewTopic(t.dlq, 1, 1),
        t.state: NewTopic(t.state, t.partitions, 1, config={"cleanup.policy": "compact",
                                                            "max.message.bytes": str(STATE_MAX_BYTES)}),
    }
    missing = [topic for name, topic in wanted.items() if name not in existing]
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result()
                log.info("created topic %s", name)
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another instance was first
                    raise
        existing = _wait_for_leaders(admin, list(wanted), timeout)
    inputs = {name: len(existing[name].partitions) for name in (t.predictions, t.labels)}
    if len(set(inputs.values())) != 1:
        raise TopicLayoutError(f"input topics are not co-partitioned: {inputs}; both need the same partition count")
    state_partitions = len(existing[t.state].partitions)
    if state_partitions < inputs[t.predictions]:
        raise TopicLayoutError(f"state topic {t.state} has {state_partitions} partitions; it needs at least "
                             f"{inputs[t.predictions]} (one per input partition)")


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float):
    """New topics answer metadata before their partitions have leaders; wait for the leaders."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        ready = all(name in topics and topics[name].error is None and topics[name].partitions
                    and all(p.leader >= 0 and p.error is None for p in topics[name].partitions.values())
                    for name in names)
        if ready or time.monotonic() > deadline:
            return topics
        time.sleep(0.1)


def leave_group(consumer: Consumer, config: Config, instance_id: str, timeout: float = 10.0) -> None:
    """Take a static member (``group.instance.id``) out of its consumer group now, so the other
    instances take over its partitions.

    A static member's close() keeps its place (KIP-345: librdkafka sends no LeaveGroup when
    a static member terminates) until the session times out. An unsubscribe does send one,
    once its revocation is served, and only if close() has not begun: so serve it here
    until the broker no longer lists this instance in the group.
    """
    consumer.unsubscribe()
    admin = AdminClient({**config.kafka, "logger": librdkafka_log})
    group = config.engine.group_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer.consume(1, 0.1)  # serves the revocation; nothing is assigned any more
        try:
            description = admin.describe_consumer_groups([group], request_timeout=2)[group].result()
        except KafkaException:
            continue
        if all(m.group_instance_id != instance_id for m in description.members):
            log.info("left the consumer group %s", group)
            return
    log.warning("still a member of the consumer group %s after %.0fs; its partitions move when the "
                "session times out (engine.session_timeout_ms)", group, timeout)
