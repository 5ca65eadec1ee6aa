"""What every ``driftline`` command shares: exit codes, errors, the one-line error handling, the
parser, logging, output, and the config as the CLI loads it.

Exit codes: 0 success; 1 a runtime failure (a broker lost, a file that cannot be written); 2 a
usage or config error (named on the one line); 3 a backtest whose input had more rejected lines
than ``--max-invalid-share`` allows (or none valid); 4 the command needs an extra that is not
installed (the line says which: ``pip install 'driftline[service]'``); 130 interrupted (Ctrl-C),
the line saying what was written and what was not. A closed standard output (``| head -1``) is
not an error: what would have been printed is dropped and the command finishes its work.

This module imports only what the core install has (``pip install driftline``, the producer
helper's dependencies), so that every command starts and can say which extra it misses.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from streams.core.config import Config, ConfigError, bootstrap_servers_problem, load_config as _load_config

EXIT_RUNTIME = 1
EXIT_USAGE = EXIT_CONFIG = 2
EXIT_INVALID_INPUT = 3
EXIT_MISSING_EXTRA = 4
EXIT_INTERRUPTED = 130

#: The modules outside the core install, each with the extra that installs it. The extras are
#: in pyproject.toml; faust, report and sim each include service.
EXTRA_OF_MODULE = {
    "numpy": "service",
    "scipy": "service",
    "tqdm": "service",
    "faust": "faust",
    "matplotlib": "report",
    "river": "sim",
}


class CommandError(Exception):
    """A failure the user can act on: ``str()`` is the one line printed, ``code`` the exit code."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME):
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    """A command line that cannot work (an option out of range, a path of the wrong kind, a file
    it names missing or empty); the message is the one line the user sees, exit 2."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


class Interrupted(Exception):
    """Ctrl-C, with what the command had written and what it had not (exit 130)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the usage block, then the error)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def new_parser(**kwargs: Any) -> tuple[Parser, argparse._SubParsersAction]:
    """The ``driftline`` parser with the options every command takes, and its subcommands."""
    parser = Parser(prog="driftline", **kwargs)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="log line format (default: text)")
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("driftline")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command it names: the exit code, errors a user can cause as
    one line on standard error (a traceback with ``--debug``)."""
    args = parser.parse_args(argv)
    setup_logging(args.debug, args.log_format)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader of our standard output went away (| head): not an error worth a line
        _drop_stdout()
        return 0
    except BaseException as exc:  # noqa: B036 - KeyboardInterrupt too: it gets its own line
        code, line = describe(exc)
        if args.debug or line is None:
            raise
        print_error(line, code)
        del exc
        # Kafka clients in the exception's frames go now, not at interpreter shutdown, where a
        # client's destruction can call back into a half-torn-down Python
        gc.collect()
        return code


def describe(exc: BaseException) -> tuple[int, str | None]:
    """The exit code and the line for an error a user can cause; (1, None) for a bug (traceback)."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, f"config error: {exc}"
    if isinstance(exc, CommandError):
        return exc.code, str(exc)
    if isinstance(exc, Interrupted):
        return EXIT_INTERRUPTED, f"interrupted: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, ModuleNotFoundError) and missing_extra(exc) is not None:
        return EXIT_MISSING_EXTRA, missing_extra(exc)
    if isinstance(exc, KafkaException):
        return EXIT_RUNTIME, f"Kafka error: {kafka_reason(exc)}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return EXIT_RUNTIME, f"{where}{exc.strerror or exc}"
    return EXIT_RUNTIME, None


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The line for a module of an extra that is not installed; None for any other module."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return f"this command needs the {extra} extra ({module} is not installed): pip install 'driftline[{extra}]'"


def require(*modules: str) -> None:
    """Fail now, with the line naming the extra, if a module that later work needs is missing."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def kafka_reason(exc: KafkaException) -> str:
    """librdkafka's words for a KafkaException (its repr is KafkaError{code=…,val=…,str="…"})."""
    err = exc.args[0] if exc.args else exc
    return err.str() if hasattr(err, "str") else str(err)


def print_error(line: str, code: int) -> None:
    """The one line of a command that failed, on standard error: ``driftline: <line>``, or with
    ``--log-format json`` a JSON log line (with the exit code) like the lines before it, so a
    log collector does not get one line it cannot parse."""
    try:
        if _log_format == "json":
            record = logging.makeLogRecord({"name": "driftline", "levelno": logging.ERROR, "levelname": "ERROR",
                                            "msg": line, "exit_code": code})
            print(Formatter(as_json=True).format(record), file=sys.stderr, flush=True)
        else:
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


# -- logging ---------------------------------------------------------------------------------
class Formatter(logging.Formatter):
    """Text or JSON log lines; ``model`` and ``partition`` passed as ``extra`` become fields."""

    FIELDS = ("model", "partition", "exit_code")

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


#: ``--log-format``, for :func:`print_error`
_log_format = "text"


def setup_logging(debug: bool, fmt: str) -> None:
    global _log_format
    _log_format = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(fmt == "json"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    if not debug:
        logging.getLogger("driftline.librdkafka").setLevel(logging.CRITICAL)


# -- the config --------------------------------------------------------------------------------
def load_config(path: str | Path) -> Config:
    """The config, checked as ``check-config`` checks it: librdkafka's check of the [kafka]
    settings included."""
    return _load_config(path, kafka_check=librdkafka_problem)


def checked_bootstrap(servers: str, option: str = "--bootstrap-servers") -> str:
    """A Kafka address given on the command line (or in ``option``), or :class:`UsageError`
    naming it: librdkafka would take it and fail only after the broker retry budget."""
    if problem := bootstrap_servers_problem(servers):
        raise UsageError(f"{option}: {problem}")
    return servers


def librdkafka_problem(settings: dict[str, Any]) -> tuple[str, str] | None:
    """(key, problem) if librdkafka refuses a key of these settings (an unknown name, a bad
    value): a client configuration is built offline, a producer with no broker address, which
    never connects and accepts consumer-only keys. Only the refusals of single settings count:
    the checks of the whole made when a client is created ("Failed to create producer: …", e.g.
    SASL credentials or a build without GSSAPI) depend on the librdkafka build and are left to
    the client the engine creates."""
    from confluent_kafka import Producer

    quiet = logging.getLogger("driftline.config.librdkafka")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())

    def refusal(conf: dict[str, Any]) -> str | None:
        try:
            Producer({**conf, "logger": quiet})
        except KafkaException as exc:
            message = kafka_reason(exc)
            return None if message.startswith("Failed to create") else message
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    others = {k: v for k, v in settings.items() if k != "bootstrap.servers"}
    if refusal(others) is None:
        return None
    for key, value in others.items():
        problem = refusal({key: value})
        if problem is not None:
            return f"kafka.{key}", f"librdkafka refuses it: {problem}"
    return None
