"""The local broker launcher's pure parts (the broker itself is exercised by every integration test)."""
import base64
import re

from streams.kafka_local import _cluster_id, server_properties


def test_cluster_ids_are_kafka_shaped_and_never_look_like_an_option():
    # 1 random id in 64 starts with "-"; 5000 draws miss that with probability ~1e-34
    ids = [_cluster_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_server_properties_are_for_a_single_loopback_test_broker(tmp_path):
    props = dict(line.split("=", 1) for line in server_properties(19092, 19093, tmp_path).splitlines()
                 if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert "127.0.0.1:19092" in props["listeners"] and "127.0.0.1:19093" in props["listeners"]
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
