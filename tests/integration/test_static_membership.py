"""Static group membership on the real broker: a crashed instance that restarts gets its own
partitions back without a rebalance (the other instance is not disturbed), and a graceful stop
leaves the group at once (a static member's plain close would keep its partitions for the
whole session timeout)."""
from __future__ import annotations

import re
import signal
import time

import pytest

from streams.tools.kafka_local import _free_port

from .harness import Deployment, models_config, pair

pytestmark = pytest.mark.kafka

#: A session far longer than the waits below: a takeover within them was not a session expiry.
ENGINE = "session_timeout_ms = 300000"


def assignments(d: Deployment, instance: str) -> list[list[int]]:
    """Each "assigned partitions" line of an instance's logs, in order, over all its runs."""
    found = []
    for log in sorted(d.tmp.glob(f"engine-{instance}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        for match in re.finditer(r"assigned partitions \[([\d, ]*)\]", log.read_text(errors="replace")):
            found.append([int(p) for p in match.group(1).split(",") if p.strip()])
    return found


def wait_for(condition, timeout: float, what: str, d: Deployment) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}\n{d.logs()[-3000:]}")


@pytest.fixture
def pair_of_instances(kafka_bootstrap, unique, tmp_path):
    d = Deployment(kafka_bootstrap, unique, tmp_path, models_config(["churn"]), partitions=4, engine_extra=ENGINE)
    a = d.start(instance="a")
    wait_for(lambda: assignments(d, "a") == [[0, 1, 2, 3]], 60, "instance a got no partitions", d)
    b = d.start(instance="b", metrics_port=_free_port())
    wait_for(lambda: assignments(d, "b") and assignments(d, "b")[-1] and len(assignments(d, "a")[-1]) == 2, 90,
             "the two instances did not share the partitions", d)
    yield d, a, b
    d.stop_all()


def test_a_restarted_instance_gets_its_partitions_back_without_a_rebalance(pair_of_instances):
    d, a, b = pair_of_instances
    mine, theirs = assignments(d, "a")[-1], assignments(d, "b")
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    d.start(instance="a")
    wait_for(lambda: len(assignments(d, "a")) == 3, 60, "the restarted instance got no partitions", d)
    assert assignments(d, "a")[-1] == mine  # the same ones, at once
    # Traffic on every partition, consumed and committed by both: any rebalance callback the
    # restart caused has been served by then.
    events = [event for i in range(200) for event in pair(i, "churn", True)]
    d.send(events)  # one model is one partition; bad messages under other keys reach the rest
    d.send([(topic, f"k{k}".encode(), b"not json") for k in range(40) for topic in ("predictions", "labels")])
    d.wait_until_committed(200 + 40)
    assert assignments(d, "b") == theirs, "the other instance was not disturbed"


def test_a_graceful_stop_leaves_the_group_at_once(pair_of_instances):
    d, a, b = pair_of_instances
    assert d.stop(a, signal.SIGTERM) == 0
    # Far sooner than the 300 s session: b takes every partition because a left.
    wait_for(lambda: assignments(d, "b")[-1] == [0, 1, 2, 3], 60, "b did not take over a's partitions", d)
