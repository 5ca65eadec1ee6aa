"""``driftline run --workers N``: N engine processes of one consumer group under one supervisor.

One engine process is bound by one core (the GIL); the group protocol already spreads the input
partitions over the members of a group, and each member's transactions keep exactly-once (see
:mod:`~streams.runtime.engine`). The supervisor starts the N members as child processes, each
with its own instance name (so its own ``group.instance.id`` and transactional id), and adds
what a user would otherwise have to build around N processes:

* SIGTERM/SIGINT are forwarded, so each child commits and leaves the group, then the supervisor
  exits (0 when every child stopped cleanly);
* one ``/metrics`` address: the supervisor asks each child for its exposition over a pipe at
  scrape time and serves them together, each sample labelled ``worker="<index>"`` (see
  :meth:`Workers.exposition`);
* a child that exits unasked is restarted after a back-off, with one log line. Under its own
  instance name it rejoins as the same static member and gets its partitions back at once; one
  that stays down longer than ``engine.session_timeout_ms`` has its partitions moved to the others
  by a rebalance. A child that keeps dying soon after it starts (:class:`RestartPolicy`) makes the
  supervisor stop the others and exit 1 (:class:`GaveUp`).

The children are started with ``multiprocessing``'s spawn method: a fresh interpreter each,
with no Kafka client or thread inherited from the supervisor, whose HTTP server threads a fork
would copy in an undefined state.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterable
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, generate_latest

log = logging.getLogger("driftline.supervisor")

#: The label each child's samples get on the supervisor's /metrics.
WORKER_LABEL = "worker"
#: Seconds a scrape waits for one child's samples before serving the others without them.
SCRAPE_TIMEOUT = 10.0


class GaveUp(RuntimeError):
    """A worker kept dying soon after it started; ``str()`` is the one line the user sees."""


def worker_instance(instance: str, index: int) -> str:
    """The instance name of worker ``index`` (part of its group.instance.id and transactional id)."""
    return f"{instance}-w{index}"


@dataclass(frozen=True)
class RestartPolicy:
    """When a worker that exited unasked is started again.

    A worker is started again ``first_delay`` seconds after it exits. One that ran less than
    ``min_uptime`` seconds died quickly: each further quick death in a row doubles the wait (at
    most ``max_delay``), and the ``give_up_after``-th in a row gives up: a child that cannot start
    (a topic layout it refuses, a broker that rejects it) would otherwise be restarted forever
    while the others carry its partitions. A worker that ran longer starts a new count.
    """

    min_uptime: float = 10.0
    give_up_after: int = 3
    first_delay: float = 1.0
    max_delay: float = 30.0


@dataclass
class Restarts:
    """The restart decisions of :class:`RestartPolicy`, per worker, apart from any process."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    quick_deaths: dict[int, int] = field(default_factory=dict)

    def after_exit(self, worker: int, uptime: float) -> float | None:
        """Seconds to wait before starting ``worker`` again after it ran ``uptime`` seconds;
        None: give up."""
        p = self.policy
        streak = self.quick_deaths.get(worker, 0) + 1 if uptime < p.min_uptime else 0
        self.quick_deaths[worker] = streak
        if streak >= p.give_up_after:
            return None
        return min(p.max_delay, p.first_delay * 2 ** max(streak - 1, 0))


def _restricted(registry: CollectorRegistry, names: list[str] | None):
    """The registry, or only its families ``names`` (a scrape's ``name[]``, as
    ``prometheus_client.make_wsgi_app`` serves them)."""
    return registry if not names else registry.restricted_registry(names)


def merge(expositions: Iterable[tuple[str, str]]) -> str:
    """The text expositions (format 0.0.4) of several processes as one: every sample gets the
    label ``worker`` (first), so the series of two children never collide (each child counts its
    own partitions' events; ``sum without (worker)`` gives the group's total), and a family that
    several children export is one block with one HELP and TYPE.

    Text, not parsed families: a metric name has no ``{`` or space, so the label goes in at the
    first of them whatever the label values hold, at a fraction of the cost of parsing and
    rendering every sample again at each scrape.
    """
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for worker, text in expositions:
        label = f'{WORKER_LABEL}="{worker}"'
        name = ""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) < 3:
                    continue
                name = parts[2]
                if name not in headers:
                    headers[name], samples[name] = [], []
                if line not in headers[name]:
                    headers[name].append(line)
                continue
            cut = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=len(line))
            if line[cut:cut + 1] == "{":
                line = f"{line[:cut + 1]}{label},{line[cut + 1:]}"
            else:
                line = f"{line[:cut]}{{{label}}}{line[cut:]}"
            if name not in samples:  # a sample before any header (not what prometheus_client writes)
                headers[name], samples[name] = [], []
            samples[name].append(line)
    out = [line for name in headers for line in headers[name] + samples[name]]
    return "\n".join(out) + "\n" if out else ""


def answer_scrapes(registry: CollectorRegistry, conn: Connection) -> threading.Thread:
    """In a child: a daemon thread that answers each request on ``conn`` with the registry's
    exposition, as ``driftline run`` alone would serve it (a request is the scrape's ``name[]``
    list, or None for every family). The supervisor merges them.

    prometheus_client's multiprocess mode would share the samples through files instead, but it
    cannot carry the exporter's own collectors (the batch histogram, p-values computed at
    scrape).

    When the supervisor is gone (the pipe closes: it was killed), the child stops itself as on
    SIGTERM, committing what it processed, instead of running on unsupervised.
    """

    def serve() -> None:
        while True:
            try:
                names = conn.recv()
            except (EOFError, OSError):
                log.warning("the supervisor is gone: stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                text = generate_latest(_restricted(registry, names))
            except Exception:  # noqa: BLE001 - a broken collector must not end the scrapes
                log.exception("metrics: collecting failed")
                text = b""
            try:
                conn.send_bytes(text)
            except (OSError, ValueError):
                return

    thread = threading.Thread(target=serve, name="driftline-scrapes", daemon=True)
    thread.start()
    return thread


@dataclass
class _Worker:
    index: int
    process: multiprocessing.process.BaseProcess | None = None
    conn: Connection | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = 0.0
    restart_at: float | None = None
    late: bool = False  # a scrape's request is unanswered on ``conn``


class Workers:
    """The supervisor: starts ``count`` children running ``target(index, conn)``, forwards stop
    signals, restarts the ones that die, and merges their metrics.

    ``target`` must be picklable (a module-level function, or a ``functools.partial`` of one):
    the spawned child imports it by name.
    """

    def __init__(self, target: Callable[[int, Connection], None], count: int,
                 policy: RestartPolicy | None = None, registry: CollectorRegistry | None = None):
        self.target = target
        self.workers = [_Worker(i) for i in range(count)]
        self.restarts = Restarts(policy or RestartPolicy())
        self.context = multiprocessing.get_context("spawn")
        self.stopping = False
        self.registry = registry or CollectorRegistry()  # the supervisor's own
        self.restart_count = Counter("driftline_worker_restarts_total",
                                     "Worker processes restarted after they exited unasked.", [WORKER_LABEL],
                                     registry=self.registry)

    # -- processes ------------------------------------------------------------------------
    def _start(self, worker: _Worker) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=self.target, args=(worker.index, theirs),
                                       name=f"driftline-worker-{worker.index}", daemon=False)
        process.start()
        theirs.close()  # the child's end: only the child holds it, so its death closes the pipe
        with worker.lock:
            if worker.conn is not None:
                worker.conn.close()
            worker.process, worker.conn, worker.late = process, ours, False
        worker.started, worker.restart_at = time.monotonic(), None
        log.info("worker %d started (pid %d)", worker.index, process.pid)
        if self.stopping:  # the stop signal came while it was being started: it missed the forward
            os.kill(process.pid, signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.exitcode is None:
                try:
                    os.kill(worker.process.pid, signum)
                except ProcessLookupError:
                    pass

    def _request_stop(self, signum, frame) -> None:
        log.info("signal %s: stopping %d workers", signum, len(self.workers))
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (0: every worker stopped cleanly, 1: one did not), or raise
        :class:`GaveUp` after stopping the others."""
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in self.workers:
                self._start(worker)
            while not self.stopping:
                self._step()
        except BaseException:
            self.stopping = True
            self._signal_all(signal.SIGTERM)
            self._join()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        # A worker stopped before its engine set its handlers ends by SIGTERM itself: nothing
        # was consumed, so nothing was lost.
        return 0 if all(code in (0, -signal.SIGTERM) for code in self._join()) else 1

    def _step(self) -> None:
        alive = [w.process.sentinel for w in self.workers if w.process is not None and w.restart_at is None]
        wait(alive, timeout=0.2)
        now = time.monotonic()
        for worker in self.workers:
            if self.stopping:
                return
            if worker.restart_at is None and worker.process is not None and worker.process.exitcode is not None:
                self._exited(worker, now)
            elif worker.restart_at is not None and now >= worker.restart_at:
                self.restart_count.labels(str(worker.index)).inc()
                self._start(worker)

    def _exited(self, worker: _Worker, now: float) -> None:
        code, uptime = worker.process.exitcode, now - worker.started
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        delay = self.restarts.after_exit(worker.index, uptime)
        if delay is None:
            raise GaveUp(f"worker {worker.index} exited with {how} {self.restarts.policy.give_up_after} times in "
                         f"a row within {self.restarts.policy.min_uptime:.0f}s of starting; stopped all workers")
        log.warning("worker %d (pid %d) exited with %s after %.1fs; restarting it in %.0fs",
                    worker.index, worker.process.pid, how, uptime, delay)
        worker.restart_at = now + delay

    def _join(self) -> list[int]:
        """Wait for every child to exit (each bounds its own stop: the engine's last commit gives
        up after ``engine.broker_retry_budget_seconds``); the exit codes of those that were
        running (one waiting for its restart had exited before)."""
        codes = []
        for worker in self.workers:
            if worker.process is None:
                continue
            worker.process.join()
            if worker.restart_at is None:
                codes.append(worker.process.exitcode)
            with worker.lock:
                if worker.conn is not None:
                    worker.conn.close()
                    worker.conn = None
        return codes

    # -- metrics --------------------------------------------------------------------------
    def exposition(self, names: list[str] | None = None) -> str:
        """The children's expositions merged (:func:`merge`), then the supervisor's own, at
        scrape time, in the HTTP thread; with ``names`` (a scrape's ``name[]``), only those
        families, as ``driftline run`` alone serves them. A child that is restarting, or does
        not answer within :data:`SCRAPE_TIMEOUT`, is left out of this scrape."""
        expositions = []
        for worker in self.workers:
            with worker.lock:  # one request at a time on a pipe; scrapes may be concurrent
                conn = worker.conn
                if conn is None or worker.restart_at is not None:
                    continue
                try:
                    if worker.late:  # the answer to a scrape that timed out: take it first
                        if not conn.poll(0):
                            continue  # still busy with it
                        conn.recv_bytes()
                        worker.late = False
                    conn.send(names)
                    if not conn.poll(SCRAPE_TIMEOUT):
                        log.warning("metrics: worker %d did not answer within %.0fs", worker.index, SCRAPE_TIMEOUT)
                        worker.late = True
                        continue
                    expositions.append((str(worker.index), conn.recv_bytes().decode()))
                except (EOFError, OSError):
                    continue  # it died; the supervisor loop restarts it
        return merge(expositions) + generate_latest(_restricted(self.registry, names)).decode()

    def wsgi_app(self):
        """``/metrics`` of the group, for :class:`~streams.runtime.exporter.MetricsServer`."""

        def app(environ, start_response):
            body = self.exposition(parse_qs(environ.get("QUERY_STRING", "")).get("name[]")).encode()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4),
                                      ("Content-Length", str(len(body)))])
            return [body]

        return app
