"""The trigger listener and tail against a real Kafka broker (the ``kafka_bootstrap`` fixture)."""
from __future__ import annotations

import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from retrain_trigger import listener
from retrain_trigger.events import TriggerEvent, TriggerWindow, decode_trigger, encode_trigger, make_trigger_id

from .harness import Deployment, pair
from .test_skeleton import FLOOR_MODEL

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
FAST_BACKOFF = listener.Backoff(initial=0.05, maximum=0.2)


# -- helpers ----------------------------------------------------------------------------------


def make_trigger(sequence: int, model_id: str = "churn") -> TriggerEvent:
    return TriggerEvent(
        trigger_id=make_trigger_id(model_id, "accuracy-floor", sequence),
        model_id=model_id, model_version="2024-06-01", rule="accuracy-floor", metric="accuracy",
        value=0.71, threshold=0.8,
        window=TriggerWindow(start="2026-11-23T10:00:00.000Z", end="2026-11-23T10:15:00.000Z", count=5000,
                             offsets={"predictions:0": [0, 4999]}),
        triggered_at="2026-11-23T10:15:00.000Z",
        evidence={"op": "<", "baseline": 0.91, "n": 5000},
    )


@pytest.fixture
def topics(kafka_bootstrap, unique):
    """Fresh trigger and failure topics for one test."""
    names = {"triggers": f"triggers-{unique}", "failed": f"triggers-failed-{unique}"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names.values()]).values():
        future.result(30)
    return names


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for payload in payloads:
        producer.produce(topic, key=b"churn", value=payload)
    assert producer.flush(30) == 0


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset on ``topic``: the largest over its partitions (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return max(tp.offset for tp in committed)
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    values, deadline = [], time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(message.value())
        # A little longer, to catch anything unexpected beyond ``expected``.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                values.append(message.value())
    finally:
        consumer.close()
    return values


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RunningListener:
    """A Listener in a background thread of this process."""

    def __init__(self, bootstrap, action, topics, group, state_dir, max_retries=2, extra_settings=None):
        self.listener = listener.Listener(
            {"bootstrap.servers": bootstrap, **(extra_settings or {})}, action, topic=topics["triggers"], group=group,
            state_dir=state_dir, max_retries=max_retries, failure_topic=topics["failed"],
            backoff=FAST_BACKOFF, poll_interval=0.2)
        self.stop = threading.Event()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.listener.run(self.stop)
        except BaseException as exc:
            self.error.append(exc)

    def __enter__(self):
        self.thread.start()
        return self.listener

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "listener did not stop"
        assert not self.error, self.error


def recording_command(runs_file: Path) -> str:
    """A command that appends the trigger id it was run for to ``runs_file``."""
    return f'echo "$DRIFTLINE_TRIGGER_ID" >> {runs_file}'


def runs(runs_file: Path) -> list[str]:
    return runs_file.read_text().split() if runs_file.exists() else []


def listen_subprocess(config_file, topics, group, state_dir, command, extra_env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli.triggers", "listen", "--exec", command,
         "--config", str(config_file), "--topic", topics["triggers"], "--group", group,
         "--state-dir", str(state_dir), "--failure-topic", topics["failed"], "--retry-backoff", "0.05"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# -- tests ------------------------------------------------------------------------------------


def test_killed_between_action_and_commit_runs_the_command_once(kafka_bootstrap, topics, unique, tmp_path):
    """The whole path: the engine publishes a trigger; the listener acts on it exactly once."""
    engine = Deployment(kafka_bootstrap, unique, tmp_path, FLOOR_MODEL)
    try:
        engine.start()
        engine.send([e for i in range(120) for e in pair(i, "churn", correct=i % 3 != 0)])  # 67 % < 80 %
        (published,) = engine.triggers(expected=1)
    finally:
        engine.stop_all()
    trigger = decode_trigger(json.dumps(published).encode())
    topics = {**topics, "triggers": engine.topics["retrain-triggers"]}
    group, state_dir, runs_file = f"listen-{unique}", tmp_path / "state", tmp_path / "runs.txt"
    # The killed member stays in the group until its session times out; keep that short.
    # Both TOML spellings of a librdkafka key: unquoted (nested table) and quoted.
    config_file = tmp_path / "listener.toml"
    config_file.write_text(f'[kafka]\nbootstrap.servers = "{kafka_bootstrap}"\n"session.timeout.ms" = 6000\n')

    # First listener: runs the command, records it, then (test hook) waits before committing.
    first = listen_subprocess(config_file, topics, group, state_dir, recording_command(runs_file),
                              {listener.PAUSE_BEFORE_COMMIT_ENV: "120"})
    record = state_dir / f"handled-{group}.jsonl"
    try:
        wait_for(lambda: record.exists() and trigger.trigger_id in record.read_text(), what="the handled record")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    assert runs(runs_file) == [trigger.trigger_id]
    assert committed_offset(kafka_bootstrap, group, topics["triggers"]) < 0  # nothing committed

    # Second listener: the trigger is redelivered, recognised, committed, not run again.
    second = listen_subprocess(config_file, topics, group, state_dir, recording_command(runs_file))
    try:
        wait_for(lambda: committed_offset(kafka_bootstrap, group, topics["triggers"]) == 1, what="the commit")
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
    finally:
        second.kill()
    assert second.returncode == 0, output
    assert "already handled" in output
    assert runs(runs_file) == [trigger.trigger_id]


def test_failing_command_goes_to_failure_topic_after_retries(kafka_bootstrap, topics, unique, tmp_path):
    group = f"listen-{unique}"
    attempts_file = tmp_path / "attempts.txt"
    command = f'echo "$DRIFTLINE_ATTEMPT" >> {attempts_file}; echo "model store unreachable" >&2; exit 3'
    trigger = make_trigger(7)
    produce(kafka_bootstrap, topics["triggers"], [encode_trigger(trigger)])

    with RunningListener(kafka_bootstrap, listener.ExecAction(command), topics, group, tmp_path, max_retries=2) as running:
        (failure,) = [json.loads(v) for v in read_all(kafka_bootstrap, topics["failed"], expected=1)]
        wait_for(lambda: committed_offset(kafka_bootstrap, group, topics["triggers"]) == 1, what="the commit")
    assert attempts_file.read_text().split() == ["1", "2", "3"]
    assert failure["attempts"] == 3
    assert failure["error"] == "command exited with status 3; stderr: model store unreachable"
    assert failure["trigger"]["trigger_id"] == trigger.trigger_id
    assert failure["source"] == {"topic": topics["triggers"], "partition": 0, "offset": 0}
    assert running.counts["failed"] == 1
    assert '"outcome":"failed"' in (tmp_path / f"handled-{group}.jsonl").read_text()


def test_transactional_triggers_seen_aborted_ones_not(kafka_bootstrap, topics, unique, tmp_path):
    group, runs_file = f"listen-{unique}", tmp_path / "runs.txt"
    committed_a, aborted, committed_c = make_trigger(1), make_trigger(2), make_trigger(3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"engine-{unique}"})
    producer.init_transactions(30)
    for event, commit in ((committed_a, True), (aborted, False), (committed_c, True)):
        producer.begin_transaction()
        producer.produce(topics["triggers"], key=b"churn", value=encode_trigger(event))
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)

    with RunningListener(kafka_bootstrap, listener.ExecAction(recording_command(runs_file)), topics, group, tmp_path):
        wait_for(lambda: len(runs(runs_file)) >= 2, what="two runs")
        wait_for(lambda: committed_offset(kafka_bootstrap, group, topics["triggers"]) >= 5, what="the commit")
    assert runs(runs_file) == [committed_a.trigger_id, committed_c.trigger_id]

    out = io.StringIO()
    printed = listener.tail({"bootstrap.servers": kafka_bootstrap}, topics["triggers"], as_json=True,
                            from_beginning=True, out=out, max_messages=2)
    assert printed == 2
    assert [decode_trigger(line.encode()).trigger_id for line in out.getvalue().splitlines()] == \
        [committed_a.trigger_id, committed_c.trigger_id]


def test_command_gets_trigger_on_stdin_and_in_environment(kafka_bootstrap, topics, unique, tmp_path):
    group = f"listen-{unique}"
    command = f"cat > {tmp_path}/stdin.json; env | grep '^DRIFTLINE_' | sort > {tmp_path}/env.txt"
    trigger = make_trigger(3)
    produce(kafka_bootstrap, topics["triggers"], [encode_trigger(trigger)])
    with RunningListener(kafka_bootstrap, listener.ExecAction(command), topics, group, tmp_path):
        wait_for(lambda: committed_offset(kafka_bootstrap, group, topics["triggers"]) == 1, what="the commit")
    assert decode_trigger((tmp_path / "stdin.json").read_bytes()) == trigger
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())
    assert env["DRIFTLINE_TRIGGER_ID"] == "churn:accuracy-floor:000003"
    assert env["DRIFTLINE_MODEL_ID"] == "churn"
    assert env["DRIFTLINE_MODEL_VERSION"] == "2024-06-01"
    assert env["DRIFTLINE_RULE"] == "accuracy-floor"
    assert env["DRIFTLINE_WINDOW_COUNT"] == "5000"
    assert env["DRIFTLINE_ATTEMPT"] == "1"


class _Endpoint(http.server.BaseHTTPRequestHandler):
    """Answers with the next status in ``statuses`` and keeps what it was sent."""

    statuses: list[int] = []
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"nope" if status >= 400 else b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    handler = type("Endpoint", (_Endpoint,), {"statuses": [], "received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_port}/retrain"
    server.shutdown()


def test_url_action_retries_server_errors_and_sends_idempotency_key(kafka_bootstrap, topics, unique, tmp_path, endpoint):
    handler, url = endpoint
    handler.statuses = [503, 502]
    trigger = make_trigger(4)
    produce(kafka_bootstrap, topics["triggers"], [encode_trigger(trigger)])
    with RunningListener(kafka_bootstrap, listener.HttpAction(url, timeout=5), topics, f"l-{unique}", tmp_path,
                         max_retries=3) as running:
        wait_for(lambda: committed_offset(kafka_bootstrap, f"l-{unique}", topics["triggers"]) == 1, what="the commit")
    assert len(handler.received) == 3
    headers, body = handler.received[-1]
    assert headers["Idempotency-Key"] == trigger.trigger_id
    assert headers["Content-Type"] == "application/json"
    assert decode_trigger(body) == trigger
    assert running.counts["succeeded"] == 1


def test_url_client_error_is_not_retried_and_undecodable_input_is_reported(
        kafka_bootstrap, topics, unique, tmp_path, endpoint):
    handler, url = endpoint
    handler.statuses = [400]
    produce(kafka_bootstrap, topics["triggers"], [b"{not json", encode_trigger(make_trigger(5))])
    with RunningListener(kafka_bootstrap, listener.HttpAction(url, timeout=5), topics, f"l-{unique}", tmp_path,
                         max_retries=3):
        failures = [json.loads(v) for v in read_all(kafka_bootstrap, topics["failed"], expected=2)]
        wait_for(lambda: committed_offset(kafka_bootstrap, f"l-{unique}", topics["triggers"]) == 2, what="the commit")
    assert len(handler.received) == 1
    invalid, rejected = failures
    assert invalid["raw"] == "{not json" and invalid["error"].startswith("invalid trigger:")
    assert rejected["attempts"] == 1 and "HTTP 400: nope" in rejected["error"]


def test_tail_prints_a_readable_line(kafka_bootstrap, topics):
    trigger = make_trigger(9)
    produce(kafka_bootstrap, topics["triggers"], [encode_trigger(trigger)])
    out = io.StringIO()
    listener.tail({"bootstrap.servers": kafka_bootstrap}, topics["triggers"], from_beginning=True, out=out,
                  max_messages=1)
    line = out.getvalue().strip()
    assert line.startswith("2026-11-23T10:15:00.000Z churn@2024-06-01 accuracy-floor [warning] accuracy=0.71 < 0.8")
    assert "baseline=0.91" in line and line.endswith("id=churn:accuracy-floor:000009")


def test_action_longer_than_max_poll_interval_keeps_the_partition(kafka_bootstrap, topics, unique, tmp_path):
    """The listener polls its paused consumer while the action runs, so the group keeps it."""
    group, runs_file = f"listen-{unique}", tmp_path / "runs.txt"
    produce(kafka_bootstrap, topics["triggers"], [encode_trigger(make_trigger(1)), encode_trigger(make_trigger(2))])
    command = f'sleep 8; echo "$DRIFTLINE_TRIGGER_ID" >> {runs_file}'
    short_poll_interval = {"session.timeout.ms": 6000, "max.poll.interval.ms": 6000}
    with RunningListener(kafka_bootstrap, listener.ExecAction(command), topics, group, tmp_path,
                         extra_settings=short_poll_interval):
        wait_for(lambda: committed_offset(kafka_bootstrap, group, topics["triggers"]) == 1, timeout=30,
                 what="the first commit")
        wait_for(lambda: committed_offset(kafka_bootstrap, group, topics["triggers"]) == 2, timeout=30,
                 what="the second commit")
    assert runs(runs_file) == ["churn:accuracy-floor:000001", "churn:accuracy-floor:000002"]
