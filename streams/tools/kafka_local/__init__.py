"""A real Apache Kafka 4.x broker on loopback, without Docker.

The broker's jars come from Maven Central through Maven (``pom.xml`` beside this file) and are
cached under ``~/.cache/driftline/``. ``up()`` formats KRaft storage and starts ``kafka.Kafka`` in
combined broker+controller mode with Java 17; ``down()`` stops it and deletes its data. A second
``up()`` while a broker runs reuses it. From the shell: ``python -m streams.tools.kafka_local up|down|status``.

``up(bdir, sasl_ssl=SaslSsl(keystore, users))`` adds a second listener that speaks SASL_SSL with
SCRAM-SHA-512, for tests of authenticated clients: the caller makes the broker's certificate and
key and names the users; the PLAINTEXT listener stays for the launcher's own health check.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"
DEFAULT_PORT = 19092


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or reached."""


def cache_root() -> Path:
    return Path(os.environ.get("DRIFTLINE_CACHE", Path.home() / ".cache" / "driftline"))


def kafka_version() -> str:
    text = POM.read_text()
    return text.split("<kafka.version>", 1)[1].split("<", 1)[0]


@dataclass(frozen=True)
class BrokerDir:
    """Where one local broker keeps its config, data, logs, pid and address."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def pidfile(self) -> Path:
        return self.root / "broker.pid"

    @property
    def addressfile(self) -> Path:
        return self.root / "bootstrap"

    @property
    def sasl_ssl_addressfile(self) -> Path:
        return self.root / "bootstrap-sasl-ssl"


@dataclass(frozen=True)
class SaslSsl:
    """An extra SASL_SSL listener with SCRAM-SHA-512.

    Parameters
    ----------
    keystore
        PEM file with the broker's private key (unencrypted PKCS#8, as ``openssl genpkey`` writes
        it) followed by its certificate chain; the certificate must name ``IP:127.0.0.1`` as a
        subject alternative name, since clients check the broker's host name by default.
    users
        SCRAM-SHA-512 user name -> password, written into the storage when it is formatted
        (``kafka-storage format --add-scram``). Names and passwords may not contain ``,``, ``[``,
        ``]`` or ``=``, which that option's syntax uses.
    """

    keystore: Path
    users: Mapping[str, str] = field(default_factory=dict)

    def scram_arguments(self) -> list[str]:
        args = []
        for name, password in self.users.items():
            if any(c in name + password for c in ",[]="):
                raise BrokerError(f"SCRAM user {name!r}: names and passwords may not contain , [ ] or =")
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args


def default_broker_dir() -> BrokerDir:
    return BrokerDir(Path(os.environ.get("DRIFTLINE_KAFKA_DIR", cache_root() / "broker")))


def fetch_jars() -> Path:
    """Resolve the broker's runtime jars with Maven once; later calls return the cache."""
    libs = cache_root() / f"kafka-{kafka_version()}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("mvn not found: install Maven (apt-get install maven) to fetch Kafka's jars")
    libs.mkdir(parents=True, exist_ok=True)
    cmd = ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={libs}"]
    print(f"fetching Apache Kafka {kafka_version()} jars with Maven into {libs}", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise BrokerError(f"Maven could not resolve Kafka's jars ({' '.join(cmd)}): " + " | ".join(tail))
    marker.touch()
    return libs


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java:
        raise BrokerError("java not found: Kafka 4.x needs Java 17 (apt-get install openjdk-17-jre-headless)")
    return java


def _free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise BrokerError("no free TCP port on 127.0.0.1")


def server_properties(port: int, controller_port: int, data_dir: Path, sasl_ssl_port: int | None = None,
                      keystore: Path | None = None) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{port}"]
    protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
    sasl: list[str] = []
    if sasl_ssl_port is not None:
        listeners.append(f"SASL_SSL://127.0.0.1:{sasl_ssl_port}")
        protocols.append("SASL_SSL:SASL_SSL")
        sasl = [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            # A PEM keystore: no keytool and no store password; the key is unencrypted, so the
            # file itself must be kept private (it is the caller's, in a test directory).
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
        ]
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
        f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners={','.join(listeners)}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"listener.security.protocol.map={','.join(protocols)}",
        *sasl,
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=8",
        "group.initial.rebalance.delay.ms=0",
        # Tests create and delete many topics; keep segments small and cleanup quick.
        "log.segment.bytes=67108864",
        "log.cleaner.dedupe.buffer.size=16777216",
        "auto.create.topics.enable=false",
        "",
    ])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    # log_level 0: a broker that is still starting refuses connections; that is expected here.
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000),
                         "log_level": 0})
    try:
        md = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(md.brokers)


def running(bdir: BrokerDir | None = None) -> str | None:
    """The bootstrap address of the broker this directory runs, if it is up and answering."""
    bdir = bdir or default_broker_dir()
    try:
        pid = int(bdir.pidfile.read_text())
        bootstrap = bdir.addressfile.read_text().strip()
    except (OSError, ValueError):
        return None
    if _alive(pid) and answers(bootstrap):
        return bootstrap
    return None


def jvm_command(bdir: BrokerDir, libs: Path | None = None) -> list[str]:
    """The ``java`` command line, up to the main class, of a broker in ``bdir`` (its storage
    format and the broker itself; a restart on its data takes the same)."""
    # The GC settings of Kafka's own start scripts (kafka-run-class.sh): G1's default pause
    # target (200 ms) let young collections stop the broker for up to a tenth of a second, a stall
    # every client saw (a transaction's round trip among them).
    return [_java(), "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={bdir.logs}",
            "-cp", f"{libs or fetch_jars()}/*"]


def up(bdir: BrokerDir | None = None, port: int | None = DEFAULT_PORT, timeout: float = 90.0,
       sasl_ssl: SaslSsl | None = None) -> str:
    """Start (or reuse) the local broker; return its (PLAINTEXT) bootstrap address.

    With ``sasl_ssl`` the broker also listens with SASL_SSL/SCRAM-SHA-512 on another port, whose
    address :func:`sasl_ssl_address` returns. A broker already running in ``bdir`` is reused as
    it is, so a private ``bdir`` is the way to get one with that listener.
    """
    bdir = bdir or default_broker_dir()
    if (existing := running(bdir)) is not None:
        return existing
    _stop_stale(bdir)
    libs = fetch_jars()
    port = _free_port(port)
    controller_port = _free_port()
    sasl_ssl_port = _free_port() if sasl_ssl else None
    shutil.rmtree(bdir.data, ignore_errors=True)
    bdir.logs.mkdir(parents=True, exist_ok=True)
    bdir.sasl_ssl_addressfile.unlink(missing_ok=True)
    bdir.config.write_text(server_properties(port, controller_port, bdir.data, sasl_ssl_port,
                                             sasl_ssl.keystore if sasl_ssl else None))
    jvm = jvm_command(bdir, libs)
    fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "--standalone",
                                "-t", _cluster_id(), "-c", str(bdir.config),
                                *(sasl_ssl.scram_arguments() if sasl_ssl else [])],
                         capture_output=True, text=True)
    if fmt.returncode != 0:
        raise BrokerError(f"kafka-storage format failed: {(fmt.stdout + fmt.stderr).strip()[-500:]}")
    out = open(bdir.logs / "stdout.log", "ab")
    proc = subprocess.Popen(jvm + ["kafka.Kafka", str(bdir.config)], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    bootstrap = f"127.0.0.1:{port}"
    bdir.pidfile.write_text(str(proc.pid))
    bdir.addressfile.write_text(bootstrap)
    if sasl_ssl_port is not None:
        bdir.sasl_ssl_addressfile.write_text(f"127.0.0.1:{sasl_ssl_port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"Kafka exited with code {proc.returncode} on start; see {bdir.logs}/server.log")
        if answers(bootstrap, timeout=2.0):
            return bootstrap
        time.sleep(0.5)
    down(bdir)
    raise BrokerError(f"Kafka did not answer on {bootstrap} within {timeout:.0f}s; see {bdir.logs}/server.log")


def sasl_ssl_address(bdir: BrokerDir | None = None) -> str | None:
    """The SASL_SSL bootstrap address of the broker in ``bdir``, if it was started with one."""
    try:
        return (bdir or default_broker_dir()).sasl_ssl_addressfile.read_text().strip()
    except OSError:
        return None


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding. Like Kafka's own
    # Uuid.randomUuid, draw again when the id starts with "-": the storage tool would read it as
    # an option (1 start in 64 failed that way).
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _stop_stale(bdir: BrokerDir) -> None:
    """A pidfile whose broker no longer answers: make sure that process is gone."""
    try:
        pid = int(bdir.pidfile.read_text())
    except (OSError, ValueError):
        return
    if _alive(pid):
        _terminate(pid)
    bdir.pidfile.unlink(missing_ok=True)


def _terminate(pid: int, grace: float = 30.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def down(bdir: BrokerDir | None = None) -> bool:
    """Stop the local broker if one runs from this directory, and delete its data (the next
    :func:`up` formats new storage anyway; a benchmark leaves gigabytes); its logs stay. True if
    one was stopped."""
    bdir = bdir or default_broker_dir()
    try:
        pid = int(bdir.pidfile.read_text())
    except (OSError, ValueError):
        return False
    was_alive = _alive(pid)
    if was_alive:
        _terminate(pid)
    shutil.rmtree(bdir.data, ignore_errors=True)
    bdir.pidfile.unlink(missing_ok=True)
    bdir.addressfile.unlink(missing_ok=True)
    bdir.sasl_ssl_addressfile.unlink(missing_ok=True)
    return was_alive
