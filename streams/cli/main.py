"""``driftline``: the command line. Errors a user can cause print one line (no traceback unless
--debug); the exit codes are in :mod:`streams.cli.common`.

This module has ``run``, ``check-config`` and ``kafka``; each other module of this package adds
its commands with ``register(subparsers)``. They import what a command needs when it runs, so
that ``driftline --help`` works with the core install and a command says which extra it misses.
"""
from __future__ import annotations

import argparse
import functools
import gc
import logging
import signal
import sys

from streams.cli import sim, tools, triggers
from streams.cli.common import (EXIT_RUNTIME, CommandError, UsageError, checked_bootstrap, describe, load_config, new_parser,
                                print_error, run, setup_logging)
from streams.core.config import listen_address_problem


def _tune_gc() -> None:
    """Fewer cyclic collections for a process that allocates a few dozen objects per event.

    Reference counting frees nearly all of them; CPython's default young-generation threshold
    (700 allocations) runs a collection every few dozen events (BENCHMARKS.md, the engine's
    throughput with either threshold). 50,000 still bounds what cyclic garbage can pile up;
    ``gc.freeze`` keeps what start-up made (modules, config) out of the full collections.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if args.workers > 1:
        return _run_workers(args)
    config = _config(args)
    _import_engine(args)
    from streams.runtime.exporter import Exporter

    _tune_gc()
    exporter = Exporter(config)
    address = args.metrics_address or config.metrics.address
    server = exporter.serve(address)
    logging.getLogger("driftline").info("metrics on %s", server.url)
    return _engine(args, config, exporter, args.instance)


def _import_engine(args: argparse.Namespace) -> None:
    """Import the engine before ``gc.freeze`` (:func:`_tune_gc`) keeps its modules out of the
    full collections, and before /metrics is served: a missing faust extra stops here."""
    import streams.runtime.engine  # noqa: F401

    if args.engine == "faust":
        import streams.runtime.faust_engine  # noqa: F401


def _config(args: argparse.Namespace):
    config = load_config(args.config)
    if args.bootstrap_servers:
        config.kafka["bootstrap.servers"] = checked_bootstrap(args.bootstrap_servers)
    if args.metrics_address is not None and (problem := listen_address_problem(args.metrics_address)):
        raise UsageError(f"--metrics-address: {problem}")
    return config


def _engine(args: argparse.Namespace, config, exporter, instance: str) -> int:
    """Run one engine until it is stopped; the exit code."""
    from streams.runtime.admin import TopicLayoutError
    from streams.runtime.engine import BrokerLost, Engine

    try:
        if args.engine == "faust":
            from streams.runtime.faust_engine import run_faust

            run_faust(config, exporter, instance=instance)
        else:
            Engine(config, exporter, instance=instance).run()
    except (BrokerLost, TopicLayoutError) as exc:
        if args.debug:
            raise
        raise CommandError(str(exc), EXIT_RUNTIME) from None
    finally:
        # A failed start leaves the engine and its Kafka clients in reference cycles (the
        # exception's frames) that the tuned GC would leave to interpreter shutdown, where a
        # client's destruction calls back into a half-torn-down Python and can crash it:
        # destroy them now.
        gc.collect()
    return 0


def _run_workers(args: argparse.Namespace) -> int:
    """``--workers N``: N engines of one consumer group under a supervisor that serves their
    merged /metrics (:mod:`streams.runtime.supervisor`)."""
    if args.engine == "faust":
        raise UsageError("--workers runs the default engine only; scale --engine faust by starting more "
                         "processes with distinct --instance names")
    config = _config(args)  # a config error stops here, once, not in every worker
    from streams.runtime.exporter import MetricsServer
    from streams.runtime.supervisor import GaveUp, Workers

    log = logging.getLogger("driftline")
    if args.workers > config.topics.partitions:
        log.warning("--workers %d is more than topics.partitions (%d): a worker without an input partition "
                    "stays idle until another leaves", args.workers, config.topics.partitions)
    workers = Workers(functools.partial(_worker, args), args.workers)
    server = MetricsServer(workers.wsgi_app(), args.metrics_address or config.metrics.address,
                           config.metrics, config.source)
    server.start()
    log.info("metrics of %d workers on %s", args.workers, server.url)
    try:
        return workers.run()
    except GaveUp as exc:
        raise CommandError(str(exc), EXIT_RUNTIME) from None
    finally:
        server.stop()


def _worker(args: argparse.Namespace, index: int, conn) -> None:
    """One worker of ``--workers N``, in its own (spawned) process: the engine as ``driftline run``
    runs it, its metrics answered over ``conn`` instead of served."""
    # Ctrl-C reaches the whole process group; the supervisor forwards it as SIGTERM, which is
    # the stop that counts (this ignores the terminal's until the engine sets its handlers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(args.debug, args.log_format)
    from streams.runtime.exporter import Exporter
    from streams.runtime.supervisor import answer_scrapes, worker_instance

    config = _config(args)
    _import_engine(args)
    _tune_gc()
    exporter = Exporter(config)
    answer_scrapes(exporter.registry, conn)
    try:
        code = _engine(args, config, exporter, worker_instance(args.instance, index))
    except Exception as exc:  # the one line ``driftline run`` would print, then the exit code
        code, line = describe(exc)
        if args.debug or line is None:
            raise
        print_error(line, code)
    sys.exit(code)


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: ok ({len(config.models)} models)")
    return 0


def _kafka(args: argparse.Namespace) -> int:
    from streams.tools.kafka_local.__main__ import main as kafka_main

    return kafka_main([args.action])


def build_parser() -> argparse.ArgumentParser:
    parser, sub = new_parser(
        description="Watch ML models in production: join predictions with delayed labels from Kafka, "
                    "track accuracy and drift, export to Prometheus, publish retrain triggers.")

    run_parser = sub.add_parser("run", help="run the monitoring engine", description=(
        "Consume the predictions and labels topics, join them, compute windowed statistics, serve "
        "/metrics and publish retrain triggers, exactly once. Stops cleanly on SIGTERM or Ctrl-C."))
    run_parser.add_argument("--config", "-c", required=True,
                            help="path of the TOML config (see driftline.example.toml)")
    run_parser.add_argument("--engine", choices=["confluent", "faust"], default="confluent",
                            help="stream engine: confluent (exactly-once, default) or faust (faust-streaming "
                                 "agents, at-least-once; consumers de-duplicate by trigger_id)")
    run_parser.add_argument("--bootstrap-servers", help="override kafka.bootstrap.servers from the config")
    run_parser.add_argument("--metrics-address", help="override metrics.address (host:port) from the config")
    run_parser.add_argument("--instance", default="0",
                            help="instance name, unique per engine process of one group on one host; part of "
                                 "the transactional id (default: 0)")
    run_parser.add_argument("--workers", type=int, default=1, metavar="N",
                            help="run N engine processes of one consumer group, sharing the input partitions "
                                 "(exactly once, each with instance <instance>-w<i>), under a supervisor that "
                                 "serves their merged /metrics (label worker), forwards SIGTERM/SIGINT and "
                                 "restarts a worker that dies; exits 1 if one keeps dying within seconds of its "
                                 "start (default: 1, one process)")
    run_parser.set_defaults(func=_run)

    check = sub.add_parser("check-config", help="validate a config file and exit",
                           description="Parse and validate a config file; exit 2 naming the key if it is bad.")
    check.add_argument("config", help="path of the TOML config")
    check.set_defaults(func=_check_config)

    kafka = sub.add_parser("kafka", help="start or stop the local Kafka broker (no Docker needed)",
                           description="Run Apache Kafka 4.x (KRaft) from Maven jars on 127.0.0.1.")
    kafka.add_argument("action", choices=["up", "down", "status"], help="up: start or reuse; down: stop; status")
    kafka.set_defaults(func=_kafka)

    for module in (triggers, sim, tools):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
