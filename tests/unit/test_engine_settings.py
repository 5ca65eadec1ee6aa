"""The default engine's client settings: what it sets itself and what a [kafka] setting overrides."""
from __future__ import annotations

from streams.core.config import parse_config
from streams.runtime.engine import _producer_settings


class _Health:
    def on_error(self, err) -> None:
        pass


def _settings(kafka: dict) -> dict:
    config = parse_config({"kafka": {"bootstrap.servers": "unused:9092", **kafka}, "models": [{"id": "m"}]})
    return _producer_settings(config, "txn-0", _Health())


def test_a_commit_right_after_another_retries_its_offsets_soon():
    # librdkafka's default (100 ms) is what a commit would wait for the previous one's markers
    assert _settings({})["retry.backoff.ms"] == 10


def test_a_kafka_setting_overrides_the_retry_backoff_but_not_the_transaction():
    settings = _settings({"retry.backoff.ms": 50, "transactional.id": "mine"})
    assert settings["retry.backoff.ms"] == 50
    assert settings["transactional.id"] == "txn-0"


def test_the_commit_does_not_serve_a_delivery_report_per_message():
    # served in Python while commit_transaction flushes, each one waiting for the loop's GIL;
    # a [kafka] setting does not bring them back
    assert _settings({"delivery.report.only.error": False})["delivery.report.only.error"] is True
