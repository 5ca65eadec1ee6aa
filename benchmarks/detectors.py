"""Speed and memory of driftline's detectors next to river's, on the same streams, in one run.

    python -m benchmarks.detectors                 # 1M events, 3 repeats
    python -m benchmarks.detectors --events 100000 # quicker

Change detectors get the same 0/1 error stream (its error rate moves every quarter, so the
detectors fire and reset). river's are fed value by value the way a river user does
(``update`` then ``drift_detected``), ours ``--batch`` values per ``update_many`` call as the
Monitor does. Windowed drift statistics of one numeric feature (window 1000, a reference of
1000 values) are compared with river's KSWIN, the only windowed two-sample test river has.
river's KSWIN runs a scipy test per value, so it is timed on the first
``--kswin-events`` values only; per-event figures stay comparable.

Timing: runs interleaved (river, ours, river, ours, …), median of ``--repeats``; peak memory:
tracemalloc over one more run (the input stream, made before, is not counted).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run as a script, benchmarks/ would come first on sys.path and this file would shadow `detectors`
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import numpy as np  # noqa: E402
import river  # noqa: E402
from river import drift as river_drift  # noqa: E402

from benchmarks._common import interleaved_medians, peak_memory, progress, table  # noqa: E402
from detectors import change, drift  # noqa: E402

CHANGE_DETECTORS = [
    ("adwin", change.ADWIN, river_drift.ADWIN),
    ("ddm", change.DDM, river_drift.binary.DDM),
    ("eddm", change.EDDM, river_drift.binary.EDDM),
    ("hddm_a", change.HDDM_A, river_drift.binary.HDDMA),
    ("hddm_w", change.HDDM_W, river_drift.binary.HDDMW),
    ("page_hinkley", change.PageHinkley, river_drift.PageHinkley),
    ("kswin", change.KSWIN, river_drift.KSWIN),
]

DRIFT_STATISTICS = [
    ("psi (10 bins)", lambda ref: drift.PSI(reference=ref, window=1000)),
    ("ks (100 bins)", lambda ref: drift.KS(reference=ref, window=1000)),
    ("ks (exact, scipy)", lambda ref: drift.KS(reference=ref, window=1000, exact=True)),
    ("wasserstein (100 bins)", lambda ref: drift.Wasserstein(reference=ref, window=1000)),
    ("js (10 bins)", lambda ref: drift.JS(reference=ref, window=1000)),
]


def error_stream(events: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = np.repeat([0.1, 0.3, 0.15, 0.4], -(-events // 4))[:events]
    return (rng.random(events) < rates).astype(np.float64)


def feature_stream(events: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(np.where(np.arange(events) < events // 2, 0.0, 0.5), 1.0)


def river_detections(detector_class, values: list) -> list[int]:
    detector, hits = detector_class(), []
    for i, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            hits.append(i)
    return hits


def our_detections(make, values: np.ndarray, batch: int, keep: list | None = None) -> list[int]:
    detector, hits = make(), []
    for start in range(0, len(values), batch):
        detector.update_many(values[start:start + batch])
        hits += getattr(detector, "last_detections", [])
    if keep is not None:
        keep.append(detector)
    return hits


def state_kib(detector) -> str:
    """Size of the detector's checkpoint (its JSON state) at the end of the stream."""
    return f"{len(json.dumps(detector.state())) / 1024:.1f}"


def bench_change_detectors(args) -> list[list[str]]:
    errors = error_stream(args.events)
    rows = []
    for name, ours, theirs in CHANGE_DETECTORS:
        n = min(args.events, args.kswin_events) if name == "kswin" else args.events
        values, as_list = errors[:n], errors[:n].tolist()
        progress(f"change detector {name}: {n:,} events x {args.repeats} repeats")
        outputs, finished = {}, []
        runs = {
            "river": lambda: outputs.__setitem__("river", river_detections(theirs, as_list)),
            "ours": lambda: outputs.__setitem__("ours", our_detections(ours, values, args.batch, finished)),
        }
        seconds = interleaved_medians(runs, args.repeats)
        memory = {who: peak_memory(run) for who, run in runs.items()}
        river_us, our_us = (seconds[who] / n * 1e6 for who in ("river", "ours"))
        rows.append([name, f"{n:,}", f"{river_us:.3f}", f"{our_us:.3f}", f"{river_us / our_us:.2f}x",
                     f"{memory['river'] / 1024:.1f}", f"{memory['ours'] / 1024:.1f}", state_kib(finished[-1]),
                     f"{len(outputs['ours'])} / {len(outputs['river'])}",
                     "yes" if outputs["ours"] == outputs["river"] else "NO"])
    return rows


def bench_drift_statistics(args) -> list[list[str]]:
    values = feature_stream(args.events)
    reference, stream = values[:1000], values[1000:]
    kswin_values = stream[: args.kswin_events]
    progress(f"river KSWIN on one feature: {len(kswin_values):,} events x {args.repeats} repeats")
    kswin_list = kswin_values.tolist()
    baseline_run = lambda: river_detections(river_drift.KSWIN, kswin_list)  # noqa: E731
    rows = []
    for name, make in DRIFT_STATISTICS:
        progress(f"drift statistic {name}: {len(stream):,} events x {args.repeats} repeats")
        finished = []
        runs = {"river KSWIN": baseline_run,
                "ours": lambda: our_detections(lambda: make(reference), stream, args.batch, finished)}
        seconds = interleaved_medians(runs, args.repeats)
        river_us = seconds["river KSWIN"] / len(kswin_values) * 1e6
        our_us = seconds["ours"] / len(stream) * 1e6
        rows.append([name, f"{river_us:.2f}", f"{our_us:.4f}", f"{river_us / our_us:,.0f}x",
                     f"{peak_memory(runs['ours']) / 1024:.1f}", state_kib(finished[-1])])
    rows.append(["(river KSWIN peak memory, KiB)", "", "", "", f"{peak_memory(baseline_run) / 1024:.1f}", ""])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="stream length (default 1M)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per candidate (median)")
    parser.add_argument("--batch", type=int, default=5000,
                        help="events per update_many call (default: the engine's default batch_size)")
    parser.add_argument("--kswin-events", type=int, default=20_000, help="events for river's KSWIN")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.detectors " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"`{command.strip()}`  \n"
          f"python {platform.python_version()}, numpy {np.__version__}, river {river.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; batch {args.batch}, median of {args.repeats}\n")
    print("Change detectors on a 0/1 error stream (µs per event; speed-up = river / ours; "
          "detections ours / river, and whether they are the same positions):\n")
    print(table(["detector", "events", "river µs", "ours µs", "speed-up", "river peak KiB", "ours peak KiB",
                 "ours state KiB", "detections", "same"], bench_change_detectors(args)))
    print("\nWindowed drift statistic of one numeric feature (window 1000, reference 1000) vs river's KSWIN "
          f"(window 100, stat 30; timed on {min(args.kswin_events, args.events - 1000):,} events):\n")
    print(table(["ours", "river KSWIN µs", "ours µs", "cheaper by", "ours peak KiB", "ours state KiB"],
                bench_drift_statistics(args)))
    print("\nPeak KiB: tracemalloc peak during the run, batch temporaries included (ours handle "
          f"{args.batch} events per call); state KiB: the JSON checkpoint at the end of the stream.")


if __name__ == "__main__":
    main()
