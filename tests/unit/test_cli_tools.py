"""``driftline status`` against the project's exporter serving a real /metrics page,
``driftline reference`` and ``driftline init`` through the CLI, their output checked by the
config loader and the Monitor."""
from __future__ import annotations

import json
import socket

import pytest

from streams.tools.backtest import load_events
from streams.cli.main import main as cli_main
from streams.core.config import load_config
from streams.runtime.exporter import Exporter
from streams.core.monitor import Monitor
from streams.tools.simulate import FileSink, Simulation, parse_model_spec, run

CONFIG = """
[kafka]
"bootstrap.servers" = "127.0.0.1:1"

[[models]]
id = "loans"
features = { numeric = ["salary", "age"], categorical = ["elevel"] }
window = { kind = "count", size = 300 }
  [models.drift]
  numeric = ["psi", "ks"]
  categorical = ["chi2"]
  reference_size = 300
  window = 300
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 100
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8

[[models]]
id = "sensors"
features = { numeric = ["x0", "x1"] }
  [models.drift]
  numeric = ["psi"]
  reference_size = 300
  window = 300
  [[models.rules]]
  name = "feature-drift"
    [[models.rules.conditions]]
    statistic = "feature.*.psi"
    op = ">"
    threshold = 0.2
"""


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    directory = tmp_path_factory.mktemp("history")
    sim = Simulation(models=[parse_model_spec("id=loans,generator=agrawal,drift=abrupt,at=800"),
                             parse_model_spec("id=sensors,generator=sea,drift=covariate,shift=x0:-2|x1:-2,at=800")],
                     events=1200, seed=11, label_delay="exp:5")
    run(sim, [FileSink(directory, merged=True)], progress=False)
    (directory / "driftline.toml").write_text(CONFIG)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def engine_metrics(history):
    """The Monitor after the history, and the exporter's /metrics of it served on a free port."""
    config = load_config(history / "driftline.toml")
    loaded = load_events(config, history / "predictions.jsonl", history / "labels.jsonl")
    monitor = Monitor(config)
    for start in range(0, len(loaded.events), 500):
        monitor.process(loaded.events[start:start + 500])
    exporter = Exporter(config)
    exporter.observe(monitor)
    exporter.up.set(1)
    address = f"127.0.0.1:{free_port()}"
    exporter.serve(address)
    return monitor, address


def test_status_reads_models_alarms_and_rule_states_from_metrics(history, engine_metrics, capsys):
    monitor, address = engine_metrics
    assert cli_main(["status", "--url", address, "--config", str(history / "driftline.toml"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["engine"]["up"] is True
    models = {m["model"]: m for m in status["models"]}
    assert set(models) == {"loans", "sensors"}
    loans = monitor.models["loans"]
    accuracy = loans.stats.performance()["accuracy"].statistic
    assert models["loans"]["window_samples"] == loans.stats.window_samples() == 300
    assert models["loans"]["performance"]["accuracy"] == pytest.approx(accuracy)
    assert models["loans"]["predictions"] == 1200
    observed = {name: o for name, o in monitor.models["sensors"].observations().items()}
    alarms = sorted(name for name, o in observed.items() if name.startswith("feature.") and o.fired)
    assert alarms, "the covariate shift should alarm"
    assert sorted(f"feature.{r['feature']}.{r['detector']}" for r in status["drift"]
                  if r["model"] == "sensors" and r["feature"] != "(prediction)") == alarms
    rules = {(r["model"], r["rule"]): r for r in status["rules"]}
    assert rules["loans", "accuracy-floor"]["state"] == ("breach" if accuracy < 0.8 else "ok")
    assert rules["sensors", "feature-drift"]["value"] == sum(
        1 for name, o in observed.items() if name.startswith("feature.") and name.endswith(".psi") and o.value > 0.2)

    assert cli_main(["status", "--url", f"http://{address}/metrics"]) == 0
    table = capsys.readouterr().out
    assert "loans" in table and "sensors" in table and "in alarm" in table and "unknown" in table


def test_status_of_an_address_that_does_not_answer_is_one_line_and_exit_1(capsys):
    assert cli_main(["status", "--url", f"127.0.0.1:{free_port()}", "--timeout", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no metrics" in err[0] and "127.0.0.1" in err[0]


def test_reference_holds_the_first_predictions_and_the_monitor_takes_it(history, tmp_path, capsys):
    out = tmp_path / "reference.json"
    assert cli_main(["reference", "-c", str(history / "driftline.toml"), "-m", "loans",
                     "-p", str(history / "events.jsonl"), "-o", str(out), "-n", "250"]) == 0
    reference = json.loads(out.read_text())
    firsts = [json.loads(line) for line in (history / "events.jsonl").read_text().splitlines()]
    firsts = [e for e in firsts if e.get("model_id") == "loans" and "label" not in e]
    firsts.sort(key=lambda e: e["timestamp"])
    firsts = firsts[:250]
    assert reference["salary"] == [float(e["features"]["salary"]) for e in firsts]
    assert reference["elevel"] == [e["features"]["elevel"] for e in firsts]
    assert reference["prediction"] == [e["score"] for e in firsts]
    # the config that names it loads, and the detectors start from it, not from the stream
    config_text = CONFIG.replace("  reference_size = 300\n  window = 300\n  [[models.rules]]\n  name = \"accuracy-floor\"",
                                 "  reference_size = 300\n  window = 300\n  reference_file = \"reference.json\"\n"
                                 "  [[models.rules]]\n  name = \"accuracy-floor\"", 1)
    (tmp_path / "driftline.toml").write_text(config_text)
    stats = Monitor(load_config(tmp_path / "driftline.toml")).model("loans").stats
    assert stats.feature_drift["salary", "psi"].reference_counts.sum() == 250
    assert stats.feature_drift["elevel", "chi2"].reference_counts.sum() == 250

    assert cli_main(["reference", "-c", str(history / "driftline.toml"), "-p", str(history / "events.jsonl"),
                     "-o", str(out)]) == 2
    assert "name one with --model" in capsys.readouterr().err


def test_init_scaffolds_a_config_that_checks(history, tmp_path, capsys):
    out = tmp_path / "driftline.toml"
    assert cli_main(["init", "-e", str(history / "events.jsonl"), "-o", str(out)]) == 0
    capsys.readouterr()
    assert cli_main(["check-config", str(out)]) == 0
    config = load_config(out)
    models = {m.id: m for m in config.models}
    assert set(models) == {"loans", "sensors"}
    assert models["loans"].task == "binary"
    assert "salary" in models["loans"].features.numeric and "elevel" in models["loans"].features.categorical
    assert models["sensors"].features.numeric == ["x0", "x1", "x2"]
    assert all(len(m.rules) == 1 for m in config.models)
    assert "# " in out.read_text()  # commented
    assert cli_main(["init", "-e", str(history / "events.jsonl"), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_init_tells_the_task_from_the_predictions(tmp_path, capsys):
    lines = []
    for i in range(60):
        lines.append({"prediction_id": f"r{i}", "model_id": "price", "timestamp": i, "prediction": i * 0.5 + 0.25,
                      "features": {"rooms": i % 5, "city": "x"}})
        lines.append({"prediction_id": f"r{i}", "model_id": "price", "timestamp": i + 1, "label": i * 0.5})
        lines.append({"prediction_id": f"c{i}", "model_id": "kind", "timestamp": i, "prediction": ["a", "b", "c"][i % 3],
                      "probabilities": {"a": 0.2, "b": 0.3, "c": 0.5}, "features": {"w": 1.5}})
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(map(json.dumps, lines)) + "\nnot json\n")
    assert cli_main(["init", "-e", str(sample), "-o", str(tmp_path / "c.toml")]) == 0
    config = load_config(tmp_path / "c.toml")
    models = {m.id: m for m in config.models}
    assert models["price"].task == "regression" and models["kind"].task == "multiclass"
    assert models["kind"].classes == ["a", "b", "c"]
    condition = models["price"].rules[0]["conditions"][0]
    assert condition["statistic"] == "mae" and condition["threshold"] == pytest.approx(0.375)  # 1.5 x 0.25
    assert "1 skipped" in capsys.readouterr().out


def test_status_of_two_workers_lists_each_rule_once(history, engine_metrics):
    """`run --workers` serves every worker's series with a `worker` label: each worker exports
    the configured rules' thresholds, whichever models it owns; status lists each rule once."""
    from prometheus_client import generate_latest

    from streams.cli.tools import parse_status
    from streams.runtime.supervisor import merge

    monitor, _ = engine_metrics
    config = load_config(history / "driftline.toml")
    owner, idle = Exporter(config), Exporter(config)
    owner.observe(monitor)
    single = parse_status(generate_latest(owner.registry).decode())
    merged = parse_status(merge([("0", generate_latest(idle.registry).decode()),
                                 ("1", generate_latest(owner.registry).decode())]))
    assert [(r["model"], r["rule"], r["statistic"]) for r in merged["rules"]] == \
        [(r["model"], r["rule"], r["statistic"]) for r in single["rules"]]
    assert merged["rules"] == single["rules"]


def _openssl_self_signed(directory, name: str):
    """A self-signed certificate for a name the test connects by no other way (127.0.0.1)."""
    import subprocess

    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={name}"], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory, history):
    """The history's metrics served over HTTPS with basic auth, with a self-signed certificate
    for a host name (not the address it is read at), as `driftline run` serves them with that config."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = _openssl_self_signed(directory, "driftline.internal")
    (directory / "scrape-password").write_text("s3cret\n")
    port = free_port()
    metrics = (f'[metrics]\naddress = "127.0.0.1:{port}"\ntls_cert_file = "{cert.name}"\ntls_key_file = "{key.name}"\n'
               'basic_auth_username = "prometheus"\nbasic_auth_password_file = "scrape-password"\n')
    (directory / "tls.toml").write_text(CONFIG + "\n" + metrics)
    config = load_config(directory / "tls.toml")
    loaded = load_events(config, history / "predictions.jsonl", history / "labels.jsonl")
    monitor = Monitor(config)
    monitor.process(loaded.events)
    exporter = Exporter(config)
    exporter.observe(monitor)
    exporter.up.set(1)
    server = exporter.serve(config.metrics.address)
    yield directory, port
    server.stop()


def test_status_with_the_config_reads_an_https_endpoint_with_basic_auth(tls_engine, capsys):
    directory, port = tls_engine
    assert cli_main(["status", "--config", str(directory / "tls.toml"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["url"] == f"https://127.0.0.1:{port}/metrics"
    assert status["engine"]["up"] is True and {m["model"] for m in status["models"]} == {"loans", "sensors"}
    # a bare host:port with the config is read the way the config serves it, too
    assert cli_main(["status", "--config", str(directory / "tls.toml"), "--url", f"127.0.0.1:{port}"]) == 0
    assert f"engine at https://127.0.0.1:{port}/metrics: up" in capsys.readouterr().out


def test_status_with_url_options_reads_an_https_endpoint_with_basic_auth(tls_engine, capsys):
    directory, port = tls_engine
    url = f"https://127.0.0.1:{port}"
    # the system's CAs do not know a self-signed certificate: one line naming the address
    assert cli_main(["status", "--url", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "CERTIFICATE_VERIFY_FAILED" in err[0]
    # the certificate trusted, the name it holds given (not the URL's host), no credentials: 401, one line
    trust = ["--cacert", str(directory / "driftline.internal.pem"), "--server-name", "driftline.internal"]
    assert cli_main(["status", "--url", url, *trust]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "401" in err[0]
    (directory / "wrong").write_text("nope\n")
    for password_file, code in (("wrong", 1), ("scrape-password", 0)):
        # --cacert checks the host name as usual: the certificate names driftline.internal, not 127.0.0.1
        argv = ["status", "--url", url, "--cacert", str(directory / "driftline.internal.pem"),
                "--user", "prometheus", "--password-file", str(directory / password_file)]
        assert cli_main(argv) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err
        assert cli_main([*argv, "--server-name", "driftline.internal"]) == code
        out, err = capsys.readouterr()
        assert ("engine at" in out) if code == 0 else ("401" in err and len(err.strip().splitlines()) == 1)
        # the config's pinned certificate and the options' credentials
        assert cli_main(["status", "--config", str(directory / "tls.toml"), "--url", url, "--user", "prometheus",
                         "--password-file", str(directory / password_file)]) == code
        out, err = capsys.readouterr()
        assert ("engine at" in out) if code == 0 else ("401" in err and len(err.strip().splitlines()) == 1)
    assert cli_main(["status", "--url", url, "--user", "prometheus"]) == 2
    assert "--password-file" in capsys.readouterr().err


def test_status_pins_the_configs_certificate_not_any_other(tls_engine, tmp_path, capsys):
    """With --config the trust anchor is the config's certificate: a server that presents
    another one (also self-signed, for the same name) is refused."""
    directory, port = tls_engine
    other, _ = _openssl_self_signed(tmp_path, "driftline.internal")
    text = (directory / "tls.toml").read_text().replace(
        'tls_cert_file = "driftline.internal.pem"', f'tls_cert_file = "{other}"')
    (tmp_path / "other.toml").write_text(text.replace('"scrape-password"', f'"{directory / "scrape-password"}"')
                                         .replace('tls_key_file = "driftline.internal.key"',
                                                  f'tls_key_file = "{directory / "driftline.internal.key"}"'))
    assert cli_main(["status", "--config", str(tmp_path / "other.toml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"https://127.0.0.1:{port}/metrics" in err[0] and "CERTIFICATE_VERIFY_FAILED" in err[0]


def test_status_pins_a_ca_signed_certificate_too(tmp_path, capsys):
    """A certificate signed by a CA the system does not know, read by --config: the certificate
    itself is the trust anchor, the CA need not be given."""
    from tests.certs import server_certificate

    certs = server_certificate(tmp_path / "certs")
    port = free_port()
    (tmp_path / "ca.toml").write_text(f'[kafka]\n"bootstrap.servers" = "127.0.0.1:1"\n[metrics]\n'
                                      f'address = "127.0.0.1:{port}"\ntls_cert_file = "{certs.cert}"\n'
                                      f'tls_key_file = "{certs.key}"\n[[models]]\nid = "m"\n')
    server = Exporter(load_config(tmp_path / "ca.toml")).serve(f"127.0.0.1:{port}")
    try:
        assert cli_main(["status", "--config", str(tmp_path / "ca.toml")]) == 0
        assert f"engine at https://127.0.0.1:{port}/metrics" in capsys.readouterr().out
        assert cli_main(["status", "--url", f"https://127.0.0.1:{port}", "--cacert", str(certs.ca)]) == 0
        # a TLS endpoint read as plain HTTP: one line that says what to try
        assert cli_main(["status", "--url", f"127.0.0.1:{port}"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"127.0.0.1:{port}" in err[0]
    finally:
        server.stop()


def test_the_pinned_certificate_is_the_first_of_the_file_whatever_comes_before_it(tmp_path, capsys):
    from streams.cli.tools import pinned_context

    cert, key = _openssl_self_signed(tmp_path, "driftline.internal")
    (tmp_path / "combined.pem").write_text(key.read_text() + cert.read_text() + cert.read_text())
    anchors = pinned_context(tmp_path / "combined.pem").get_ca_certs()
    assert [a["subject"] for a in anchors] == [((("commonName", "driftline.internal"),),)]
    (tmp_path / "driftline.toml").write_text(f'[kafka]\n"bootstrap.servers" = "127.0.0.1:1"\n[metrics]\n'
                                             f'tls_cert_file = "{key}"\ntls_key_file = "{key}"\n[[models]]\nid = "m"\n')
    assert cli_main(["status", "--config", str(tmp_path / "driftline.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"driftline: metrics.tls_cert_file {key}: cannot load a certificate (no PEM certificate in it)"]
