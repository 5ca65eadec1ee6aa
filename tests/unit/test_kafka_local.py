"""The local broker launcher's pure parts (the broker itself is exercised by every integration test)."""
import base64
import re
import subprocess

from streams.tools import kafka_local
from streams.tools.kafka_local import _cluster_id, server_properties


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


def test_a_sasl_ssl_listener_is_added_beside_plaintext_with_scram_and_a_pem_keystore(tmp_path):
    from streams.tools.kafka_local import SaslSsl

    props = dict(line.split("=", 1) for line in server_properties(
        19092, 19093, tmp_path, sasl_ssl_port=19094, keystore=tmp_path / "ks.pem").splitlines() if line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,SASL_SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092,SASL_SSL://127.0.0.1:19094"
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"].split(",")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(tmp_path / "ks.pem")
    assert SaslSsl(tmp_path, {"a": "b"}).scram_arguments() == ["--add-scram", "SCRAM-SHA-512=[name=a,password=b]"]
    assert "sasl." not in server_properties(19092, 19093, tmp_path / "data")


def test_scram_users_that_the_format_option_cannot_carry_are_refused(tmp_path):
    import pytest

    from streams.tools.kafka_local import BrokerError, SaslSsl

    with pytest.raises(BrokerError, match="may not contain"):
        SaslSsl(tmp_path, {"a": "pass,word"}).scram_arguments()


def test_with_a_command_that_cannot_run_is_one_line_and_127(monkeypatch, capsys):
    from streams.tools.kafka_local.__main__ import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # given: no broker is started
    assert main(["with", "driftline-no-such-command"]) == 127
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "driftline kafka: cannot run 'driftline-no-such-command': No such file or directory"


def test_down_deletes_the_brokers_data_and_keeps_its_logs(tmp_path):
    bdir = kafka_local.BrokerDir(tmp_path / "broker")
    (bdir.data / "topic-0").mkdir(parents=True)
    (bdir.data / "topic-0" / "00000000000000000000.log").write_bytes(b"x" * 1024)
    bdir.logs.mkdir()
    (bdir.logs / "server.log").write_text("started\n")
    ended = subprocess.Popen(["true"])
    ended.wait()
    bdir.pidfile.write_text(str(ended.pid))  # a broker that is gone already

    assert kafka_local.down(bdir) is False
    assert not bdir.data.exists() and not bdir.pidfile.exists()
    assert (bdir.logs / "server.log").read_text() == "started\n"
