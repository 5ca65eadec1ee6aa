"""The listener's broker-free parts: retries and backoff, the handled record, settings, formatting."""
from __future__ import annotations

import argparse
import threading

import pytest

from retrain_trigger import listener
from retrain_trigger.events import TriggerEvent, TriggerWindow
from streams.cli import triggers as cli_triggers

EVENT = TriggerEvent(
    trigger_id="churn:accuracy-floor:000001", model_id="churn", rule="accuracy-floor", metric="accuracy",
    value=0.71, threshold=0.8, triggered_at="2026-11-23T10:15:00.000Z",
    window=TriggerWindow(start="2026-11-23T10:00:00.000Z", end="2026-11-23T10:15:00.000Z", count=5000),
    evidence={"op": "<", "baseline": 0.91, "p_value": 1e-9, "top_features": [
        {"feature": "age", "kind": "psi", "value": 0.31, "p_value": None}]},
)


class FlakyAction:
    def __init__(self, failures: int, permanent: bool = False):
        self.failures, self.permanent, self.attempts = failures, permanent, []

    def __call__(self, event, payload, attempt):
        self.attempts.append(attempt)
        if len(self.attempts) <= self.failures:
            raise listener.ActionFailed(f"failure {attempt}", permanent=self.permanent)


def test_retries_with_exponential_backoff_until_success():
    sleeps = []
    action = FlakyAction(failures=3)
    error, attempts = listener.run_with_retries(action, EVENT, b"{}", max_retries=5,
                                                backoff=listener.Backoff(initial=1, maximum=3), sleep=sleeps.append)
    assert (error, attempts, action.attempts, sleeps) == (None, 4, [1, 2, 3, 4], [1, 2, 3])


def test_gives_up_after_max_retries_with_the_last_error():
    error, attempts = listener.run_with_retries(FlakyAction(failures=99), EVENT, b"{}", max_retries=2,
                                                backoff=listener.Backoff(), sleep=lambda s: None)
    assert (error, attempts) == ("failure 3", 3)


def test_permanent_failure_is_not_retried():
    action = FlakyAction(failures=99, permanent=True)
    error, attempts = listener.run_with_retries(action, EVENT, b"{}", max_retries=5, backoff=listener.Backoff(),
                                                sleep=lambda s: pytest.fail("slept"))
    assert (error, attempts) == ("failure 1", 1)


def test_a_stop_during_the_backoff_ends_the_retries_without_a_verdict():
    stop = threading.Event()
    stop.set()
    action = FlakyAction(failures=99)
    with pytest.raises(listener.Stopped, match="stopped before attempt 2"):
        listener.run_with_retries(action, EVENT, b"{}", max_retries=5, backoff=listener.Backoff(), sleep=stop.wait)
    assert action.attempts == [1]


def test_an_action_bug_is_reported_not_raised():
    def broken(event, payload, attempt):
        raise KeyError("oops")
    error, _ = listener.run_with_retries(broken, EVENT, b"{}", max_retries=0, backoff=listener.Backoff())
    assert error == "KeyError: 'oops'"


def test_handled_record_survives_reopen_and_ignores_a_torn_line(tmp_path):
    path = tmp_path / "state" / "handled-g.jsonl"
    record = listener.HandledLog(path)
    record.record("m:r:000001", "succeeded", "t:0:0")
    record.close()
    with open(path, "ab") as torn:
        torn.write(b'{"trigger_id": "m:r:000002", "outc')  # killed mid-write
    reopened = listener.HandledLog(path)
    assert "m:r:000001" in reopened and "m:r:000002" not in reopened and len(reopened) == 1
    reopened.record("m:r:000003", "succeeded", "t:0:2")
    reopened.close()
    assert {"m:r:000001", "m:r:000003"} <= listener.HandledLog(path)._ids


def test_handled_record_sees_another_listeners_appends(tmp_path):
    path = tmp_path / "handled-g.jsonl"
    mine, theirs = listener.HandledLog(path), listener.HandledLog(path)
    theirs.record("m:r:000007", "succeeded", "t:1:0")
    assert "m:r:000007" in mine


def test_exec_action_success_failure_and_timeout():
    listener.ExecAction("cat > /dev/null")(EVENT, b"{}", 1)
    with pytest.raises(listener.ActionFailed, match="status 4; stderr: bad"):
        listener.ExecAction("echo bad >&2; exit 4")(EVENT, b"{}", 1)
    with pytest.raises(listener.ActionFailed, match="timed out after 0.2s"):
        listener.ExecAction("sleep 5", timeout=0.2)(EVENT, b"{}", 1)


def test_client_settings_split_consumer_and_producer_keys():
    shared = {"bootstrap.servers": "b:9092", "transactional.id": "engine-0", "auto.offset.reset": "latest",
              "security.protocol": "SSL", "linger.ms": 5}
    consumer = listener.consumer_settings(shared, "g")
    producer = listener.producer_settings(shared)
    assert consumer == {"bootstrap.servers": "b:9092", "auto.offset.reset": "latest", "security.protocol": "SSL",
                        "group.id": "g", "enable.auto.commit": False, "isolation.level": "read_committed"}
    assert producer == {"bootstrap.servers": "b:9092", "security.protocol": "SSL", "linger.ms": 5,
                        "enable.idempotence": True, "acks": "all"}


def test_format_trigger_is_one_readable_line():
    line = listener.format_trigger(EVENT)
    assert line == ("2026-11-23T10:15:00.000Z churn accuracy-floor [warning] accuracy=0.71 < 0.8 "
                    "(baseline=0.91, p=1e-09) window 2026-11-23T10:00:00.000Z..2026-11-23T10:15:00.000Z "
                    "count=5000 top: age psi=0.31 id=churn:accuracy-floor:000001")


def test_cli_reads_only_the_kafka_table_in_either_key_spelling(tmp_path):
    config = tmp_path / "driftline.toml"
    config.write_text('[kafka]\nbootstrap.servers = "a:1"\n"security.protocol" = "SSL"\n'
                      '[[models]]\nid = "churn"\n')
    args = argparse.Namespace(config=str(config), bootstrap_servers=None)
    assert cli_triggers.kafka_settings(args) == {"bootstrap.servers": "a:1", "security.protocol": "SSL"}
    args.bootstrap_servers = "b:2"
    assert cli_triggers.kafka_settings(args)["bootstrap.servers"] == "b:2"


def test_the_trigger_topic_is_the_flag_else_the_configs_else_the_default(tmp_path):
    config = tmp_path / "driftline.toml"
    config.write_text('[kafka]\n"bootstrap.servers" = "a:1"\n[topics]\ntriggers = "prod-retrain"\n')
    assert cli_triggers.trigger_topic(argparse.Namespace(config=str(config), topic=None)) == "prod-retrain"
    assert cli_triggers.trigger_topic(argparse.Namespace(config=str(config), topic="other")) == "other"
    assert cli_triggers.trigger_topic(argparse.Namespace(config=None, topic=None)) == listener.DEFAULT_TOPIC


@pytest.mark.parametrize("argv, message", [
    (["listen", "--exec", "true"], "no Kafka address"),
    (["listen", "--exec", "true", "--config", "/nonexistent.toml"], "/nonexistent.toml: file not found"),
])
def test_cli_user_errors_are_one_line(argv, message, capsys):
    assert cli_triggers.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_every_option_has_help():
    parser = argparse.ArgumentParser()
    cli_triggers.register(parser.add_subparsers())
    triggers = parser._subparsers._group_actions[0].choices["triggers"]
    for command in triggers._subparsers._group_actions[0].choices.values():
        for action in command._actions:
            assert action.help, f"{command.prog} {action.option_strings} has no help"


def test_format_trigger_for_a_detector():
    event = TriggerEvent(
        trigger_id="churn:adwin:000002", model_id="churn", rule="adwin", metric="detector.adwin", value=1.0,
        threshold=1.0, triggered_at="2026-11-23T10:15:00.000Z", model_version="v3",
        window=TriggerWindow(start="2026-11-23T10:00:00.000Z", end="2026-11-23T10:15:00.000Z", count=50),
        evidence={"op": "fired", "detector": "adwin", "distance": 0.2})
    assert listener.format_trigger(event).startswith(
        "2026-11-23T10:15:00.000Z churn@v3 adwin [warning] detector.adwin fired (detector=adwin) window")
