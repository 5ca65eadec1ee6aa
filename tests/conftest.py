"""Session fixtures. ``kafka_bootstrap`` is a real Apache Kafka 4.x broker, chosen in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` from the environment (``make test`` sets it after ``make kafka-up``);
2. testcontainers' Kafka (apache/kafka image, KRaft) when a Docker engine answers;
3. the project's own launcher (``streams.tools.kafka_local``), Kafka's jars from Maven Central.

When ``CI`` is set and none of these gives a broker, Kafka tests fail with one clear line;
they are never skipped silently.
"""
from __future__ import annotations

import os
import uuid

import pytest

KAFKA_IMAGE = "apache/kafka:4.1.1"


def _testcontainers_broker():
    try:
        from testcontainers.kafka import KafkaContainer
    except ImportError:
        return None
    try:
        container = KafkaContainer(KAFKA_IMAGE).with_kraft()
        container.start()
    except Exception:  # no Docker engine (docker.errors.DockerException) or the image cannot run
        return None
    return container


@pytest.fixture(scope="session")
def kafka_bootstrap():
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    container = _testcontainers_broker()
    if container is not None:
        try:
            yield container.get_bootstrap_server()
        finally:
            container.stop()
        return
    from streams.tools import kafka_local

    already = kafka_local.running()
    try:
        bootstrap = already or kafka_local.up()
    except kafka_local.BrokerError as exc:
        message = f"no Kafka broker for the integration tests: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield bootstrap
    finally:
        if not already:
            kafka_local.down()


@pytest.fixture
def unique():
    """A short unique suffix for topic and group names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]
