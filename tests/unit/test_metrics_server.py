"""The metrics endpoint: where it binds, HTTPS with the configured certificate, basic auth; real
HTTPS requests to a real socket."""
from __future__ import annotations

import base64
import socket
import ssl
import urllib.error
import urllib.request

import pytest

from streams.core.config import ConfigError, parse_config
from streams.runtime.exporter import BasicAuth, Exporter
from tests.certs import server_certificate

KAFKA = {"bootstrap.servers": "127.0.0.1:1"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return server_certificate(tmp_path_factory.mktemp("certs"))


def config(tmp_path, **metrics):
    return parse_config({"kafka": KAFKA, "metrics": metrics, "models": [{"id": "m"}]}, str(tmp_path / "driftline.toml"))


def get(url: str, ca=None, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def serve():
    servers = []

    def start(cfg, address="127.0.0.1:0"):
        server = Exporter(cfg).serve(address)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_plain_http_binds_where_configured(tmp_path, serve):
    server = serve(config(tmp_path))
    assert server.url.startswith("http://127.0.0.1:")
    status, body = get(server.url)
    assert status == 200 and "driftline_engine_up" in body


def test_https_with_basic_auth_answers_only_the_right_user_and_password(tmp_path, serve, certs):
    (tmp_path / "scrape-password").write_text("s3cret: with spaces and ü\n")  # trailing newline trimmed
    server = serve(config(tmp_path, tls_cert_file=str(certs.cert), tls_key_file=str(certs.key),
                          basic_auth_username="prometheus", basic_auth_password_file="scrape-password"))
    assert server.url.startswith("https://127.0.0.1:")
    status, body = get(server.url, certs.ca, ("prometheus", "s3cret: with spaces and ü"))
    assert status == 200 and "driftline_engine_up" in body
    for auth in (None, ("prometheus", "wrong"), ("someone", "s3cret: with spaces and ü"), ("prometheus", "")):
        status, body = get(server.url, certs.ca, auth)
        assert status == 401 and "driftline" not in body, auth
    # the certificate is the configured one: a client that does not trust its CA refuses it
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(server.url, timeout=5, context=ssl.create_default_context())


def test_a_client_that_stalls_or_speaks_plain_http_blocks_no_scrape(tmp_path, serve, certs):
    server = serve(config(tmp_path, tls_cert_file=str(certs.cert), tls_key_file=str(certs.key)))
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    silent = socket.create_connection(("127.0.0.1", port))  # connects, never sends a ClientHello
    try:
        with pytest.raises(OSError):  # reset, or a bad status line: no HTTP answer either way
            get(server.url.replace("https://", "http://"))  # plain HTTP to the TLS port
        status, _ = get(server.url, certs.ca)  # answered while the silent one still waits
        assert status == 200
    finally:
        silent.close()


@pytest.mark.parametrize("header", [
    "", "Bearer abc", "Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"user-without-colon").decode(),
    "Basic " + base64.b64encode(b"user:pw:extra").decode(), "Basic " + base64.b64encode(b"USER:pw").decode(),
])
def test_basic_auth_refuses_malformed_or_wrong_headers(header):
    assert not BasicAuth(None, "user", "pw").allowed(header)


def test_basic_auth_accepts_the_pair_with_any_scheme_case():
    token = base64.b64encode(b"user:p:w").decode()  # the password may hold ':' (the user may not)
    assert BasicAuth(None, "user", "p:w").allowed(f"Basic {token}")
    assert BasicAuth(None, "user", "p:w").allowed(f"basic {token}")


@pytest.mark.parametrize("metrics, message", [
    ({"tls_cert_file": "c.pem"}, "metrics.tls_cert_file: set both metrics.tls_cert_file and metrics.tls_key_file"),
    ({"basic_auth_password_file": "pw"}, "metrics.basic_auth_username: set both"),
    ({"tls_cert_file": "missing.pem", "tls_key_file": "missing.key"}, "metrics.tls_cert_file: .*missing.pem does not exist"),
    ({"basic_auth_username": "u", "basic_auth_password_file": "empty"}, "metrics.basic_auth_password_file: is empty"),
    ({"basic_auth_username": "a:b", "basic_auth_password_file": "pw"}, "metrics.basic_auth_username: must be"),
])
def test_metrics_auth_config_errors_name_the_key(tmp_path, metrics, message):
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "pw").write_text("x")
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, **metrics)


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(tmp_path, certs):
    other = server_certificate(tmp_path / "other")
    cfg = config(tmp_path, tls_cert_file=str(certs.cert), tls_key_file=str(other.key))
    with pytest.raises(ConfigError, match="metrics.tls_cert_file, metrics.tls_key_file: cannot load"):
        Exporter(cfg).serve("127.0.0.1:0")


def test_an_address_in_use_is_a_config_error(tmp_path, serve):
    server = serve(config(tmp_path))
    address = server.url.split("//")[1].split("/")[0]
    with pytest.raises(ConfigError, match=f"metrics.address: cannot listen on {address}"):
        Exporter(config(tmp_path)).serve(address)


def test_name_parameters_render_only_those_families(tmp_path, serve):
    server = serve(config(tmp_path))
    status, everything = get(server.url)
    status_only, only = get(server.url + "?name[]=driftline_engine_up&name[]=driftline_transaction_commit_seconds_count")
    assert status == status_only == 200
    assert "# TYPE driftline_predictions_total counter" in everything
    assert {line.split()[2] for line in only.splitlines() if line.startswith("# TYPE")} == {
        "driftline_engine_up", "driftline_transaction_commit_seconds"}
    assert "driftline_transaction_commit_seconds_count 0.0" in only and "_bucket" not in only
