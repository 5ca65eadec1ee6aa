"""Chaos: several models streamed at a fixed rate while the engine is SIGKILLed at random moments
(and restarted at once) and the broker is restarted once; then the published triggers against
the backtest of the same events, the dead-letter topic against the malformed input, and the
stall per kill (kill -> the restarted engine's first batch handed to the Monitor).

    .venv/bin/python benchmarks/chaos.py [--kills 20] [--models 4] [--seconds 420] [--rate 500]

The traffic must outlast the kills (each waits for the restarted engine's first batch, then 1-4 s),
so that every restart finds events to process.

Runs its own broker (the project's launcher in a temporary directory), never a shared one.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.tools import kafka_local  # noqa: E402
from tests.integration import chaos  # noqa: E402
from tests.integration.harness import Deployment  # noqa: E402


def restart_broker(bdir: kafka_local.BrokerDir, bootstrap: str) -> float:
    """Stop the broker (SIGTERM, as an orchestrator does) and start it again on its data and
    address; returns the seconds it was unreachable."""
    pid = int(bdir.pidfile.read_text())
    stopped = time.monotonic()
    kafka_local._terminate(pid)
    jvm = kafka_local.jvm_command(bdir)
    out = open(bdir.logs / "stdout.log", "ab")
    proc = subprocess.Popen(jvm + ["kafka.Kafka", str(bdir.config)], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    bdir.pidfile.write_text(str(proc.pid))
    while not kafka_local.answers(bootstrap, timeout=2.0):
        if proc.poll() is not None:
            raise SystemExit(f"the broker did not restart; see {bdir.logs}")
        time.sleep(0.5)
    return time.monotonic() - stopped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=420, help="seconds of traffic; must outlast the kills")
    parser.add_argument("--rate", type=float, default=500, help="messages per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    load_before = f"{os.getloadavg()[0]:.1f}"
    names = [f"model-{i}" for i in range(args.models)]
    # Each prediction comes with a label, and 1 % extra malformed messages.
    h = chaos.history(names, int(args.seconds * args.rate / (2.01 * args.models)), seed=args.seed)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="driftline-chaos-"))
    bdir = kafka_local.BrokerDir(tmp / "broker")
    bootstrap = kafka_local.up(bdir, port=None)
    d = Deployment(bootstrap, f"chaos{os.getpid()}", tmp, chaos.models_config(names), partitions=1,
                   engine_extra="max_idle_ms = 10000")
    try:
        expected = chaos.backtest(d, h, tmp)
        print(f"{len(h.messages)} messages ({len(h.malformed)} malformed), {sum(map(len, expected.values()))} "
              f"backtest triggers; {len(h.messages) / args.rate:.0f} s of traffic at {args.rate:.0f}/s", flush=True)
        proc = d.start()
        producer = chaos.FixedRateProducer(d, h.messages, rate=args.rate)
        producer.start()
        kills: list[tuple[float, Path]] = []
        broker_restart_at = args.kills // 2
        outage = None
        for k in range(args.kills):
            time.sleep(rng.uniform(1.0, 4.0))
            if not producer.is_alive():
                print("the traffic ended before the kills did: run with more --seconds", flush=True)
                break
            if k == broker_restart_at:
                outage = restart_broker(bdir, bootstrap)
                print(f"broker restarted: unreachable {outage:.1f} s", flush=True)
                time.sleep(rng.uniform(1.0, 4.0))
            proc, killed_at, log = chaos.kill_and_restart(d, proc)
            kills.append((killed_at, log))
            # The next kill comes at a random moment after this instance processed again.
            deadline = time.monotonic() + 120
            while chaos.first_batch_at(log) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            print(f"kill {k + 1}/{args.kills}", flush=True)
        producer.join(3600)
        if producer.error is not None:
            raise producer.error
        chaos.wait_until_consumed(d, h, timeout=600)
        got = chaos.outcome(d, h, sum(map(len, expected.values())))
        d.stop(proc, signal.SIGTERM)
    finally:
        d.stop_all()
        kafka_local.down(bdir)

    stalls, startups = [], []
    for killed_at, log in kills:
        first, started = chaos.first_batch_at(log), chaos.started_at(log)
        stalls.append(first - killed_at if first is not None else float("nan"))
        startups.append(started - killed_at if started is not None else float("nan"))
    live_ids = {t["trigger_id"] for ts in got.live.values() for t in ts}
    expected_ids = {t["trigger_id"] for ts in expected.values() for t in ts}
    ordered = sorted(stalls)
    print()
    print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print("| kills | broker restarts | stall per kill: median / p90 / max (s) | of which process start (median s) | triggers (backtest) | lost | duplicate | "
          "equal to backtest | DLQ = malformed input |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {len(kills)} | 1 ({outage:.0f} s down) | {statistics.median(stalls):.2f} / "
          f"{ordered[int(0.9 * (len(ordered) - 1))]:.2f} / {ordered[-1]:.2f} | {statistics.median(startups):.2f} | "
          f"{len(live_ids)} ({len(expected_ids)}) | "
          f"{len(expected_ids - live_ids)} | {len(got.duplicates)} | {'yes' if got.live == expected else 'NO'} | "
          f"{'yes' if got.dead_letters == got.malformed else 'NO'} ({sum(got.dead_letters.values())} of "
          f"{len(h.malformed)}) |")
    print("stalls:", " ".join(f"{s:.2f}" for s in stalls))
    print("process start:", " ".join(f"{s:.2f}" for s in startups))
    ok = got.live == expected and not got.duplicates and got.dead_letters == got.malformed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
