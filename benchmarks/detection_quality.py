"""Detection quality of the change detectors, driftline's and river's, on streams with known drift.

    python -m benchmarks.detection_quality                      # 3 seeds, 10k events per stream
    python -m benchmarks.detection_quality --seeds 5 --events 20000

Streams: river.datasets.synth.ConceptDriftStream over Agrawal (function 0 -> 2), SEA (variant
0 -> 3) and STAGGER (function 0 -> 2), abrupt and gradual, drift centred half-way, and the
same generators without drift (null streams). A Hoeffding tree learns online (predict, then
learn) and its 0/1 errors are the stream every detector sees. Scores:

* delay: events from the start of the drift (centre - width / 2) to the first detection after it,
  averaged over the drift streams where the drift was detected within ``--max-delay`` events;
* missed: share of drift streams without such a detection;
* false alarms per 10k events: detections before the drift starts, and anywhere in the null
  streams, per 10,000 such events; the first ``--warmup`` events (the model is still learning)
  are not scored.

"Abrupt" is ConceptDriftStream's width 50: with width 1 river's sigmoid overflows
(``math.exp``) once the position is more than ~177 widths into the stream.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import numpy as np  # noqa: E402
from river import tree  # noqa: E402
from river.datasets import synth  # noqa: E402

from benchmarks._common import progress, table  # noqa: E402
from benchmarks.detectors import CHANGE_DETECTORS, our_detections, river_detections  # noqa: E402

GENERATORS = {
    "agrawal": lambda concept, seed: synth.Agrawal(classification_function=(0, 2)[concept], seed=seed),
    "sea": lambda concept, seed: synth.SEA(variant=(0, 3)[concept], seed=seed),
    "stagger": lambda concept, seed: synth.STAGGER(classification_function=(0, 2)[concept], seed=seed),
}
WIDTHS = {"abrupt": 50, "gradual": 2000}


def error_stream(stream, events: int) -> np.ndarray:
    model, errors = tree.HoeffdingTreeClassifier(), np.empty(events)
    for i, (x, y) in enumerate(stream.take(events)):
        errors[i] = model.predict_one(x) != y
        model.learn_one(x, y)
    return errors


def scenarios(events: int, seeds: int):
    """(generator, drift kind or "none", seed, start of the drift or None, error stream)."""
    for name, make in GENERATORS.items():
        for seed in range(seeds):
            for kind, width in WIDTHS.items():
                progress(f"error stream: {name} {kind} seed {seed}")
                stream = synth.ConceptDriftStream(stream=make(0, seed), drift_stream=make(1, seed),
                                                  position=events // 2, width=width, seed=seed)
                yield name, kind, seed, events // 2 - width // 2, error_stream(stream, events)
            progress(f"error stream: {name} null seed {seed}")
            yield name, "none", seed, None, error_stream(make(0, seed), events)


def score(runs, args) -> list[str]:
    """Delays (abrupt, gradual), missed share and false alarms per 10k over all scenarios."""
    delays = {kind: [] for kind in WIDTHS}
    missed = drifts = 0
    false_alarms = quiet_events = 0
    for kind, start, detections in runs:
        detections = [i for i in detections if i >= args.warmup]
        end_of_quiet = start if start is not None else args.events
        false_alarms += sum(i < end_of_quiet for i in detections)
        quiet_events += end_of_quiet - args.warmup
        if start is None:
            continue
        drifts += 1
        hits = [i for i in detections if start <= i < start + args.max_delay]
        if hits:
            delays[kind].append(hits[0] - start)
        else:
            missed += 1
    mean = lambda values: f"{np.mean(values):.0f}" if values else "-"  # noqa: E731
    return [mean(delays["abrupt"]), mean(delays["gradual"]), f"{missed / drifts:.2f}",
            f"{false_alarms / quiet_events * 10_000:.2f}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per stream (drift at half)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-delay", type=int, default=3000, help="a later detection counts as a miss")
    parser.add_argument("--warmup", type=int, default=1000, help="first events not scored")
    parser.add_argument("--batch", type=int, default=5000, help="events per update_many call (ours)")
    args = parser.parse_args(argv)
    all_scenarios = list(scenarios(args.events, args.seeds))
    rows = []
    for name, ours, theirs in CHANGE_DETECTORS:
        progress(f"detector {name}")
        river_factory = (lambda: theirs(seed=0)) if name == "kswin" else theirs
        mine, reference = [], []
        for _, kind, _, start, errors in all_scenarios:
            mine.append((kind, start, our_detections(ours, errors, args.batch)))
            reference.append((kind, start, river_detections(river_factory, errors.tolist())))
        same = all(a[2] == b[2] for a, b in zip(mine, reference))
        rows.append([name, "driftline", *score(mine, args), "yes" if same else "NO"])
        rows.append([name, "river", *score(reference, args), ""])
    command = "python -m benchmarks.detection_quality " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"`{command.strip()}`  \n{len(GENERATORS)} generators x {args.seeds} seeds x (abrupt, gradual, none), "
          f"{args.events:,} events each, drift centred at {args.events // 2:,}; warm-up {args.warmup}, "
          f"max delay {args.max_delay}\n")
    print(table(["detector", "implementation", "mean delay abrupt", "mean delay gradual", "missed",
                 "false alarms / 10k", "same detections as river"], rows))


if __name__ == "__main__":
    main()
