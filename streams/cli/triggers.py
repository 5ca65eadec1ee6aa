"""``driftline triggers listen|tail``: act on or watch the retrain-trigger topic.

``register(subparsers)`` adds the ``triggers`` command to the main CLI (streams/cli/main.py);
``python -m streams.cli.triggers ...`` runs the same commands without it. Both work with the
core install (a retraining job's listener needs no extra).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from retrain_trigger import listener

from streams.cli.common import EXIT_RUNTIME, CommandError, UsageError, checked_bootstrap, new_parser, run
from streams.core.config import ConfigError, read_kafka_settings, read_toml


def register(subparsers: argparse._SubParsersAction) -> None:
    triggers = subparsers.add_parser(
        "triggers", help="act on or watch retrain triggers",
        description="Consume the retrain-trigger topic: run a command or call a URL once per trigger "
                    "(listen), or print triggers as they arrive (tail).")
    commands = triggers.add_subparsers(dest="triggers_command", required=True, metavar="SUBCOMMAND")

    listen = commands.add_parser(
        "listen", help="run a command or POST to a URL once per trigger",
        description="Run an action once per retrain trigger. Offsets are committed only after the action "
                    "succeeded (or, after its retries, the trigger went to the failure topic); a local record "
                    "of handled trigger ids keeps a redelivered trigger from running twice.")
    action = listen.add_mutually_exclusive_group(required=True)
    action.add_argument("--exec", dest="exec_command", metavar="CMD",
                        help="shell command to run; gets the trigger JSON on stdin and DRIFTLINE_TRIGGER_ID, "
                             "DRIFTLINE_MODEL_ID, DRIFTLINE_RULE, ... in its environment; exit 0 means success")
    action.add_argument("--url", help="URL to POST the trigger JSON to; a 2xx response means success")
    _add_kafka_options(listen)
    listen.add_argument("--group", default=listener.DEFAULT_GROUP,
                        help=f"consumer group; one group per kind of action (default: {listener.DEFAULT_GROUP})")
    listen.add_argument("--state-dir", default=".driftline-listener",
                        help="directory for the record of handled trigger ids (default: .driftline-listener)")
    listen.add_argument("--max-retries", type=_non_negative_int, default=5,
                        help="retries after a failed attempt before the trigger goes to the failure topic (default: 5)")
    listen.add_argument("--retry-backoff", type=_positive_float, default=1.0, metavar="SECONDS",
                        help="delay before the first retry; doubles each retry (default: 1)")
    listen.add_argument("--max-backoff", type=_positive_float, default=60.0, metavar="SECONDS",
                        help="longest delay between retries (default: 60)")
    listen.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="give up on one attempt after this long (default: no limit for --exec, 30 for --url)")
    listen.add_argument("--failure-topic", default=listener.DEFAULT_FAILURE_TOPIC,
                        help=f"topic for triggers whose action kept failing, with the error "
                             f"(default: {listener.DEFAULT_FAILURE_TOPIC})")
    listen.set_defaults(func=run_listen)

    tail = commands.add_parser("tail", help="print triggers as they arrive",
                               description="Print each retrain trigger as one readable line (or JSON). "
                                           "Commits nothing, so it never disturbs a listener.")
    _add_kafka_options(tail)
    tail.add_argument("--json", action="store_true", help="print each trigger as one JSON object per line")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the oldest trigger on the topic instead of the next new one")
    tail.set_defaults(func=run_tail)


def _add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]",
                        help="Kafka brokers (overrides the config file's kafka.bootstrap.servers)")
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="driftline TOML config; its [kafka] table (librdkafka settings) and "
                             "topics.triggers are read")
    parser.add_argument("--topic", help="retrain-trigger topic (default: the config's topics.triggers, "
                                        f"else {listener.DEFAULT_TOPIC})")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def kafka_settings(args: argparse.Namespace) -> dict[str, Any]:
    """librdkafka settings: the config file's [kafka] table, then --bootstrap-servers."""
    settings: dict[str, Any] = {}
    if args.config:
        try:
            settings.update(read_kafka_settings(args.config))
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    if args.bootstrap_servers:
        settings["bootstrap.servers"] = checked_bootstrap(args.bootstrap_servers)
    elif "bootstrap.servers" in settings:
        checked_bootstrap(settings["bootstrap.servers"], f"{args.config}: kafka.bootstrap.servers")
    else:
        raise UsageError("no Kafka address: pass --bootstrap-servers HOST:PORT or --config FILE with "
                         "kafka.\"bootstrap.servers\"")
    return settings


def trigger_topic(args: argparse.Namespace) -> str:
    """--topic, else the config's topics.triggers (what the engine publishes to), else the default."""
    if args.topic:
        return args.topic
    topics = _read_config(Path(args.config)).get("topics", {}) if args.config else {}
    return topics.get("triggers", listener.DEFAULT_TOPIC) if isinstance(topics, dict) else listener.DEFAULT_TOPIC


def _read_config(path: Path) -> dict[str, Any]:
    """The config's raw tables: the listener reads only ``[kafka]`` and ``topics``, so a config
    written for another version of the engine still serves it."""
    try:
        return read_toml(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _stop_on_signals(stopping: str = "stopping (after the running action, if any)") -> threading.Event:
    """SIGTERM or a first Ctrl-C stops after the running action; a second Ctrl-C exits at once.
    ``stopping`` is the line logged (``tail`` runs no action)."""
    stop = threading.Event()

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logging.getLogger("driftline.listener").info(stopping)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def run_listen(args: argparse.Namespace) -> int:
    # a URL the action can never POST to is a usage error now, not a failure of every trigger
    if args.url is not None and not _is_http_url(args.url):
        raise UsageError(f"--url {args.url!r}: expected an http:// or https:// URL")
    settings, topic = kafka_settings(args), trigger_topic(args)
    if args.exec_command:
        action = listener.ExecAction(args.exec_command, timeout=args.timeout)
    else:
        action = listener.HttpAction(args.url, timeout=args.timeout or 30.0)
    listen = listener.Listener(
        settings, action, topic=topic, group=args.group, state_dir=args.state_dir,
        max_retries=args.max_retries, failure_topic=args.failure_topic,
        backoff=listener.Backoff(initial=args.retry_backoff, maximum=args.max_backoff),
    )
    try:
        listen.run(_stop_on_signals())
    except listener.ListenerError as exc:
        raise CommandError(str(exc), EXIT_RUNTIME) from None
    return 0


def run_tail(args: argparse.Namespace) -> int:
    settings, topic = kafka_settings(args), trigger_topic(args)
    listener.tail(settings, topic, as_json=args.json, from_beginning=args.from_beginning,
                  stop=_stop_on_signals("stopping"))
    return 0


def _is_http_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m streams.cli.triggers listen|tail ...`` is
    ``driftline triggers listen|tail ...`` (same options, same error handling)."""
    parser, sub = new_parser(description="Act on or watch the retrain-trigger topic.")
    register(sub)
    return run(parser, ["triggers", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
