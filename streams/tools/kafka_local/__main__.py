"""``python -m streams.tools.kafka_local up|down|status|with CMD…`` — the Makefile's broker commands.

``with CMD…`` starts the broker unless one runs, runs CMD with ``KAFKA_BOOTSTRAP_SERVERS`` set,
stops the broker again if it started it, and exits with CMD's exit code.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import BrokerError, default_broker_dir, down, running, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.tools.kafka_local",
                                     description="Run a local Apache Kafka 4.x broker (KRaft) from Maven jars.")
    parser.add_argument("command", choices=["up", "down", "status", "with"])
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="with: the command to run against the broker")
    args = parser.parse_args(argv)
    bdir = default_broker_dir()
    try:
        if args.command == "up":
            print(up(bdir))
        elif args.command == "down":
            print("stopped" if down(bdir) else "no local broker was running")
        elif args.command == "status":
            address = running(bdir)
            print(address or "not running")
            return 0 if address else 1
        else:
            return _with_broker(bdir, args.argv)
    except BrokerError as exc:
        print(f"driftline kafka: {exc}", file=sys.stderr)
        return 1
    return 0


def _with_broker(bdir, argv: list[str]) -> int:
    if not argv:
        print("driftline kafka: 'with' needs a command to run", file=sys.stderr)
        return 2
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    started = False
    if not configured:
        configured = running(bdir)
        if configured is None:
            configured = up(bdir)
            started = True
    print(f"Kafka at {configured}", file=sys.stderr)
    try:
        return subprocess.call(argv, env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": configured})
    except OSError as exc:  # not found, not executable: the shell's exit code for it
        print(f"driftline kafka: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    finally:
        if started:
            down(bdir)


if __name__ == "__main__":
    sys.exit(main())
