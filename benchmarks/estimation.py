"""Estimated performance (CBPE) before the labels arrive: driftline's live estimator against
NannyML's batch CBPE, and how much earlier a rule on the estimate fires than one on the labels.

    pip install -e '.[bench]'                 # nannyml, for the side-by-side columns
    python -m benchmarks.estimation           # 3 seeds, 40k predictions per stream
    python -m benchmarks.estimation --seeds 5 --lag-hours 6
    python -m benchmarks.estimation --cost    # the Monitor's time with estimation off / on

Streams: one prediction a second; each label arrives ``--lag-hours`` later. Inputs x1, x2 ~ N(0, 1);
the true concept is P(y=1 | x) = sigmoid(3 x1); the model scores sigmoid(4.8 x1), an
overconfident but ranking-perfect score, so the estimate needs its calibration. From prediction
20,000 on:

* ``none``: nothing changes (false alarms, and the estimate's error with no drift);
* ``covariate``: x1 ~ N(0, 0.3): the inputs move to where the model is unsure; P(y | x) is
  unchanged, so the accuracy falls and the calibrated scores say so;
* ``concept``: where x2 > 0 the concept flips to sigmoid(-3 x1); the inputs and the scores are
  unchanged, so no estimate from scores can see it.

Scores:

* MAE before / after: mean absolute error of the estimated accuracy of each window of 1,000
  predictions after the reference (before the drift / from it on) against its realized accuracy (known once every label has arrived), for
  driftline's :class:`detectors.estimation.CBPE` and NannyML's ``CBPE`` on the same windows, both
  calibrated (isotonic) on the first 5,000 labelled predictions;
* largest gap to NannyML in a window: the largest |driftline - NannyML| of one window's estimates;
* band coverage: share of windows whose realized accuracy lies in driftline's 95 % band;
* fired at: the prediction (from the start of the drift) at which the Monitor fired each rule,
  ``estimated.accuracy < 0.75`` and ``accuracy < 0.75`` (windows of 1,000, min_samples 1,000,
  judged every 50 predictions / labelled predictions), fed the events in arrival order (labels
  interleaved at their lag); "earlier" is how many predictions before the realized rule the
  estimated one fired.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import numpy as np  # noqa: E402

from benchmarks._common import progress, table  # noqa: E402
from detectors.estimation import CBPE  # noqa: E402
from streams.core.codecs import Label, Prediction  # noqa: E402
from streams.core.config import parse_config  # noqa: E402
from streams.core.monitor import Monitor, Source  # noqa: E402

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DRIFT_AT = 20_000
REFERENCE = 5_000
WINDOW = 1_000
THRESHOLD = 0.75
SCENARIOS = ("none", "covariate", "concept")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def make_stream(scenario: str, events: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, prediction, label) of every prediction."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, events), rng.normal(0, 1, events)
    after = np.arange(events) >= DRIFT_AT
    if scenario == "covariate":
        x1[after] *= 0.3
    p_true = _sigmoid(3 * x1)
    if scenario == "concept":
        flipped = after & (x2 > 0)
        p_true[flipped] = _sigmoid(-3 * x1[flipped])
    label = (rng.uniform(size=events) < p_true).astype(int)
    score = _sigmoid(4.8 * x1)
    return score, (score >= 0.5).astype(int), label


def windows(events: int) -> list[tuple[int, int]]:
    return [(start, start + WINDOW) for start in range(REFERENCE, events - WINDOW + 1, WINDOW)]


def driftline_estimates(score, predicted, label, spans) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cbpe = CBPE(window=WINDOW, reference_size=REFERENCE)
    cbpe.learn_many(label[:REFERENCE], score[:REFERENCE])
    values, lower, upper = [], [], []
    for start, end in spans:
        cbpe.update_many(predicted[start:end], score[start:end])
        estimate = cbpe.estimate()["accuracy"]
        values.append(estimate.value)
        lower.append(estimate.lower)
        upper.append(estimate.upper)
    return np.array(values), np.array(lower), np.array(upper)


def nannyml_estimates(score, predicted, label, spans) -> np.ndarray | None:
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # it would post usage statistics to its vendor
    try:
        import nannyml
        import pandas as pd
    except ImportError:
        return None
    frame = pd.DataFrame({"y_pred_proba": score, "y_pred": predicted, "y_true": label})
    reference = frame.iloc[:REFERENCE]
    analysis = frame.iloc[spans[0][0]:spans[-1][1]].drop(columns=["y_true"]).reset_index(drop=True)
    estimator = nannyml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true", metrics=["accuracy"],
                             chunk_size=WINDOW, problem_type="classification_binary")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(reference)
        result = estimator.estimate(analysis).filter(period="analysis").to_df()
    return result[("accuracy", "value")].to_numpy()[:len(spans)]


def fire_points(score, predicted, label, lag_s: int) -> dict[str, int | None]:
    """The prediction (1-based, one a second) at which each rule first fired, or None."""
    config = parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [{
        "id": "m", "window": {"size": WINDOW}, "evaluate_every": 50, "label_ttl_seconds": 2 * lag_s + 3600,
        "estimation": {"reference_size": REFERENCE},
        "rules": [{"name": name, "min_samples": WINDOW,
                   "conditions": [{"statistic": statistic, "op": "<", "threshold": THRESHOLD}]}
                  for name, statistic in (("estimated", "estimated.accuracy"), ("realized", "accuracy"))]}]})
    events = []
    for i, (s, p, y) in enumerate(zip(score.tolist(), predicted.tolist(), label.tolist())):
        ts = T0 + i * 1000
        events.append((ts, 0, Prediction(prediction_id=f"p{i}", model_id="m", timestamp=ts, prediction=p, score=s)))
        events.append((ts + lag_s * 1000, 1, Label(prediction_id=f"p{i}", model_id="m", label=y,
                                                   timestamp=ts + lag_s * 1000)))
    events.sort(key=lambda e: (e[0], e[1]))
    monitor, fired = Monitor(config), {}
    for start in range(0, len(events), 5000):
        batch = [(e, Source("labels" if k else "predictions", 0, start + j))
                 for j, (_, k, e) in enumerate(events[start:start + 5000])]
        for trigger in monitor.process(batch):
            if trigger.rule not in fired:
                fired[trigger.rule] = _prediction_at(trigger.triggered_at)
    return {rule: fired.get(rule) for rule in ("estimated", "realized")}


def _prediction_at(iso: str) -> int:
    import datetime as dt
    moment = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return int(round(moment.timestamp() * 1000 - T0)) // 1000 + 1


def monitor_cost(repeats: int, events: int = 50_000) -> str:
    """The Monitor's time over one covariate stream (labels 10 min late, batches of 5000 events),
    without estimation, with it (no rule reads it; the exporter is not timed) and with an
    estimated-accuracy rule; interleaved A B C A B C, medians."""
    from benchmarks._common import interleaved_medians

    score, predicted, label = make_stream("covariate", events, 0)
    timed = []
    for i, (s, p, y) in enumerate(zip(score.tolist(), predicted.tolist(), label.tolist())):
        ts = T0 + i * 1000
        timed.append((ts, 0, Prediction(prediction_id=f"p{i}", model_id="m", timestamp=ts, prediction=p, score=s)))
        timed.append((ts + 600_000, 1, Label(prediction_id=f"p{i}", model_id="m", label=y, timestamp=ts + 600_000)))
    timed.sort(key=lambda e: (e[0], e[1]))
    batches = [[(e, Source("labels" if k else "predictions", 0, start + j))
                for j, (_, k, e) in enumerate(timed[start:start + 5000])] for start in range(0, len(timed), 5000)]

    def config(estimation: bool, rule: bool):
        model = {"id": "m", "window": {"size": WINDOW}, "evaluate_every": 50, "rules": [
            {"name": "floor", "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.5}]}]}
        if estimation:
            model["estimation"] = {"reference_size": 1000}
        if rule:
            model["rules"].append({"name": "estimated", "conditions": [
                {"statistic": "estimated.accuracy", "op": "<", "threshold": 0.5}]})
        return parse_config({"kafka": {"bootstrap.servers": "unused:9092"}, "models": [model]})

    def run(config):
        def replay():
            monitor = Monitor(config)
            for batch in batches:
                monitor.process(batch)
        return replay

    variants = {"no estimation": config(False, False), "estimation, no rule on it": config(True, False),
                "estimation and an estimated.accuracy rule": config(True, True)}
    medians = interleaved_medians({name: run(c) for name, c in variants.items()}, repeats)
    base = medians["no estimation"]
    rows = [[name, f"{seconds * 1e5 / len(timed):.2f}", f"{seconds / base:.2f}"] for name, seconds in medians.items()]
    return table(["Monitor", "s per 100k events", "vs no estimation"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--lag-hours", type=float, default=2.0)
    parser.add_argument("--cost", action="store_true", help="time the Monitor with estimation off / on instead")
    parser.add_argument("--repeats", type=int, default=5, help="with --cost: interleaved runs per variant")
    args = parser.parse_args(argv)
    if args.cost:
        print(f"`python -m benchmarks.estimation --cost --repeats {args.repeats}`  ")
        print("one model, window 1,000, judged every 50, 50k predictions + 50k labels (10 min late) in batches of "
              f"5,000; medians of {args.repeats}, interleaved\n")
        print(monitor_cost(args.repeats))
        return 0
    lag_s = int(args.lag_hours * 3600)
    rows = []
    for scenario in SCENARIOS:
        ours, theirs, gap, coverage, realized_after, fired = [], [], [], [], [], []
        for seed in range(args.seeds):
            progress(f"{scenario} seed {seed}")
            score, predicted, label = make_stream(scenario, args.events, seed)
            spans = windows(args.events)
            realized = np.array([np.mean(predicted[a:b] == label[a:b]) for a, b in spans])
            after = np.array([a >= DRIFT_AT for a, _ in spans])
            value, lower, upper = driftline_estimates(score, predicted, label, spans)
            ours.append(_mae(value, realized, after))
            coverage.append(np.mean((lower <= realized) & (realized <= upper)))
            nml = nannyml_estimates(score, predicted, label, spans)
            theirs.append(None if nml is None else _mae(nml, realized, after))
            gap.append(None if nml is None else np.abs(nml - value).max())
            realized_after.append((realized[~after].mean(), realized[after].mean()))
            fired.append(fire_points(score, predicted, label, lag_s))
        before_after = np.mean(realized_after, axis=0)
        rows.append([
            scenario,
            f"{before_after[0]:.3f} -> {before_after[1]:.3f}",
            _pair(np.mean(ours, axis=0)),
            "n/a" if None in theirs else _pair(np.mean(theirs, axis=0)),
            "n/a" if None in gap else f"{max(gap):.1e}",
            f"{np.mean(coverage):.2f}",
            _fired(fired, "estimated"),
            _fired(fired, "realized"),
            _earlier(fired),
        ])
    print(f"`python -m benchmarks.estimation --seeds {args.seeds} --events {args.events} "
          f"--lag-hours {args.lag_hours:g}`  ")
    print(f"{args.seeds} seeds; one prediction a second, labels {args.lag_hours:g} h later; drift at prediction "
          f"{DRIFT_AT:,}; windows of {WINDOW:,}; calibration on the first {REFERENCE:,} labelled pairs; "
          f"rules `< {THRESHOLD}`\n")
    print(table(["stream", "realized accuracy before -> after", "MAE driftline before / after", "MAE NannyML before / after", "largest gap to NannyML in a window",
                 "95 % band coverage", "estimated rule fired at", "realized rule fired at",
                 "estimated earlier by"], rows))
    return 0


def _mae(estimated: np.ndarray, realized: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """Mean absolute error of the windows before the drift and of those after it."""
    error = np.abs(estimated - realized)
    return error[~after].mean(), error[after].mean()


def _pair(values) -> str:
    return f"{values[0]:.4f} / {values[1]:.4f}"


def _fired(fired: list[dict], rule: str) -> str:
    """Mean prediction of the first trigger relative to the drift, over the seeds that fired."""
    points = [f[rule] - DRIFT_AT for f in fired if f[rule] is not None]
    if not points:
        return "never"
    return f"{np.mean(points):+,.0f} ({len(points)}/{len(fired)})"


def _earlier(fired: list[dict]) -> str:
    both = [f["realized"] - f["estimated"] for f in fired if None not in (f["realized"], f["estimated"])]
    return f"{np.mean(both):,.0f} predictions" if both else "-"


if __name__ == "__main__":
    sys.exit(main())
