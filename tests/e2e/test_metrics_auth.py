"""A real Prometheus scrapes the metrics endpoint over HTTPS with basic auth, configured as the
README says (``tls_config.ca_file``, ``basic_auth.password_file``: the same password file
driftline reads), and a scrape without the password is refused."""
from __future__ import annotations

import json
import time

import pytest

from streams.core.config import parse_config
from streams.runtime.exporter import Exporter
from tests.certs import server_certificate

from .live import PrometheusServer

pytestmark = pytest.mark.e2e


def scrape_config(target: str, ca, password_file=None) -> str:
    auth = (f"    basic_auth:\n      username: prometheus\n      password_file: {json.dumps(str(password_file))}\n"
            if password_file else "")
    return (f"  - job_name: {'with-auth' if password_file else 'without-auth'}\n    scheme: https\n"
            f"    tls_config:\n      ca_file: {json.dumps(str(ca))}\n{auth}"
            f"    static_configs:\n      - targets: [{json.dumps(target)}]\n")


def test_prometheus_scrapes_https_with_basic_auth(tmp_path):
    certs = server_certificate(tmp_path / "certs")
    password = tmp_path / "scrape-password"
    password.write_text("a long scrape password\n")
    password.chmod(0o600)
    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:1"}, "metrics": {
        "tls_cert_file": str(certs.cert), "tls_key_file": str(certs.key),
        "basic_auth_username": "prometheus", "basic_auth_password_file": str(password)},
        "models": [{"id": "m"}]}, str(tmp_path / "d.toml"))
    exporter = Exporter(config)
    exporter.up.set(1)
    server = exporter.serve("127.0.0.1:0")
    target = server.url.split("//")[1].split("/")[0]
    prom = PrometheusServer(tmp_path, [target])
    prom.config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
                           + scrape_config(target, certs.ca, password) + scrape_config(target, certs.ca))
    prom.start()
    try:
        expected = {"with-auth": "1", "without-auth": "0"}
        deadline = time.monotonic() + 30
        up = {}
        while time.monotonic() < deadline and up != expected:
            up = {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
            time.sleep(0.5)
        assert up == expected, (up, prom.logs()[-2000:])
        engine_up = prom.query('driftline_engine_up{job="with-auth"}')
        assert [r["value"][1] for r in engine_up] == ["1"]
        targets = {t["labels"]["job"]: t for t in prom.api("targets")["activeTargets"]}
        assert "401" in targets["without-auth"]["lastError"], targets["without-auth"]
    finally:
        prom.stop()
        server.stop()
