"""``driftline``: the command line. Errors a user can cause print one line (no traceback unless --debug).

Exit codes: 0 success; 1 a runtime failure (a broker lost, a file that cannot be written); 2 a
usage or config error (named on the one line); 3 a backtest whose input had more rejected lines
than ``--max-invalid-share`` allows (or none valid); 130 interrupted (Ctrl-C), the line saying
what was written and what was not. A closed standard output (``| head -1``) is not an error:
what would have been printed is dropped and the command finishes its work.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import sys

from confluent_kafka import KafkaException

from streams.core.config import ConfigError, load_config

EXIT_RUNTIME = 1
EXIT_USAGE = EXIT_CONFIG = 2
EXIT_INVALID_INPUT = 3
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A command line that cannot work (an option out of range, a path of the wrong kind); the
    message is the one line the user sees, exit 2."""


class Interrupted(Exception):
    """Ctrl-C, with what the command had written and what it had not (exit 130)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the usage block, then the error)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("driftline")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def _tune_gc() -> None:
    """Fewer cyclic collections for a process that allocates a few dozen objects per event.

    Reference counting frees nearly all of them; CPython's default young-generation threshold
    (700 allocations) still ran a collection every ~30 events: benchmarks/engine.py measured the
    default engine at 79k events/s with it and 92k with this. 50,000 still bounds what cyclic
    garbage can pile up; ``gc.freeze`` keeps what start-up made (modules, config) out of the
    full collections.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from streams.runtime.engine import BrokerLost, Engine
    from streams.runtime.admin import TopicLayoutError
    from streams.runtime.exporter import Exporter

    _tune_gc()

    if args.bootstrap_servers:
        config.kafka["bootstrap.servers"] = args.bootstrap_servers
    exporter = Exporter(config)
    address = args.metrics_address or config.metrics.address
    server = exporter.serve(address)
    logging.getLogger("driftline").info("metrics on %s", server.url)
    try:
        if args.engine == "faust":
            from streams.runtime.faust_engine import run_faust

            run_faust(config, exporter, instance=args.instance)
        else:
            Engine(config, exporter, instance=args.instance).run()
    except (BrokerLost, TopicLayoutError) as exc:
        if args.debug:
            raise
        print(f"driftline: {exc}", file=sys.stderr)
        return 1
    finally:
        # A failed start leaves the engine and its Kafka clients in reference cycles (the
        # exception's frames) that the tuned GC would leave to interpreter shutdown, where a
        # client's destruction calls back into a half-torn-down Python (a refused login once
        # ended with SIGSEGV instead of exit 1): destroy them now.
        gc.collect()
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: ok ({len(config.models)} models)")
    return 0


def _kafka(args: argparse.Namespace) -> int:
    from streams.tools.kafka_local.__main__ import main as kafka_main

    return kafka_main([args.action])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="driftline",
        description="Watch ML models in production: join predictions with delayed labels from Kafka, "
                    "track accuracy and drift, export to Prometheus, publish retrain triggers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="log line format (default: text)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the monitoring engine", description=(
        "Consume the predictions and labels topics, join them, compute windowed statistics, serve "
        "/metrics and publish retrain triggers, exactly once. Stops cleanly on SIGTERM or Ctrl-C."))
    run.add_argument("--config", "-c", required=True, help="path of the TOML config (see driftline.example.toml)")
    run.add_argument("--engine", choices=["confluent", "faust"], default="confluent",
                     help="stream engine: confluent (exactly-once, default) or faust (faust-streaming agents, "
                          "at-least-once; consumers de-duplicate by trigger_id)")
    run.add_argument("--bootstrap-servers", help="override kafka.bootstrap.servers from the config")
    run.add_argument("--metrics-address", help="override metrics.address (host:port) from the config")
    run.add_argument("--instance", default="0",
                     help="instance name, unique per engine process of one group on one host; part of the "
                          "transactional id (default: 0)")
    run.set_defaults(func=_run)

    check = sub.add_parser("check-config", help="validate a config file and exit",
                           description="Parse and validate a config file; exit 2 naming the key if it is bad.")
    check.add_argument("config", help="path of the TOML config")
    check.set_defaults(func=_check_config)

    kafka = sub.add_parser("kafka", help="start or stop the local Kafka broker (no Docker needed)",
                           description="Run Apache Kafka 4.x (KRaft) from Maven jars on 127.0.0.1.")
    kafka.add_argument("action", choices=["up", "down", "status"], help="up: start or reuse; down: stop; status")
    kafka.set_defaults(func=_kafka)

    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction) -> None:
    """Subcommands that live in their own modules register themselves here."""
    for module in ("triggers", "sim", "tools"):
        try:
            register = importlib.import_module(f"{__package__}.{module}").register
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise
            continue
        register(sub)


class _Formatter(logging.Formatter):
    """Text or JSON log lines; ``model`` and ``partition`` passed as ``extra`` become fields."""

    FIELDS = ("model", "partition")

    def __init__(self, as_json: bool):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)}
        if self.as_json:
            line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                    "message": record.getMessage(), **fields}
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
            return json.dumps(line)
        text = super().format(record)
        return text + "".join(f" {k}={v}" for k, v in fields.items())


def _setup_logging(debug: bool, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    if not debug:
        logging.getLogger("driftline.librdkafka").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug, args.log_format)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader of our standard output went away (| head): not an error worth a line
        _drop_stdout()
        return 0
    except BaseException as exc:  # noqa: B036 - KeyboardInterrupt too: it gets its own line
        code, line = _describe(exc)
        if args.debug or line is None:
            raise
        _print_error(line)
        del exc
        gc.collect()  # Kafka clients in the exception's frames go now, not at shutdown (see _run)
        return code


def _describe(exc: BaseException) -> tuple[int, str | None]:
    """The exit code and the line for an error a user can cause; (1, None) for a bug (traceback)."""
    from streams.tools.simulate import ScenarioError

    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, f"config error: {exc}"
    if isinstance(exc, (UsageError, ScenarioError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, Interrupted):
        return EXIT_INTERRUPTED, f"interrupted: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else exc
        return EXIT_RUNTIME, f"Kafka error: {err.str() if hasattr(err, 'str') else err}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return EXIT_RUNTIME, f"{where}{exc.strerror or exc}"
    return EXIT_RUNTIME, None


def _print_error(line: str) -> None:
    try:
        print(f"driftline: {line}", file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):  # stderr closed as well: the exit code says it
        pass


def _drop_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that the interpreter's flush at exit does not
    fail again on the closed pipe (and print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def say(line: str = "") -> None:
    """``print`` to standard output for a command that has more work to do after it: a reader
    that went away (``| head -1``) drops the rest of the output, never the work."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _drop_stdout()


if __name__ == "__main__":
    sys.exit(main())
