"""Certificates for tests that speak TLS: a throwaway CA and a server certificate for 127.0.0.1,
made with the ``openssl`` command line (as an operator would), never committed."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerCertificate:
    ca: Path        #: the CA certificate clients trust (PEM)
    cert: Path      #: the server's certificate (PEM)
    key: Path       #: its private key (PEM, unencrypted PKCS#8)
    keystore: Path  #: key and certificate in one PEM file, as Kafka's PEM keystore wants them


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")


def server_certificate(directory: Path, name: str = "server") -> ServerCertificate:
    """A CA, and a certificate it signed for ``IP:127.0.0.1`` (clients check the host name)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", "/CN=driftline test CA")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    keystore = directory / f"{name}-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    for secret in (ca_key, key, keystore):
        secret.chmod(0o600)
    return ServerCertificate(ca=ca, cert=cert, key=key, keystore=keystore)
