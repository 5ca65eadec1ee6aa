"""``python -m streams.kafka_local up|down|status`` — the Makefile's kafka-up / kafka-down."""
from __future__ import annotations

import argparse
import sys

from . import BrokerError, default_broker_dir, down, running, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.kafka_local",
                                     description="Run a local Apache Kafka 4.x broker (KRaft) from Maven jars.")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    bdir = default_broker_dir()
    try:
        if args.command == "up":
            print(up(bdir))
        elif args.command == "down":
            print("stopped" if down(bdir) else "no local broker was running")
        else:
            address = running(bdir)
            print(address or "not running")
            return 0 if address else 1
    except BrokerError as exc:
        print(f"driftline kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
