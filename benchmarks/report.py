"""The backtest's report: what its recorder adds to a replay, and how long report.html takes to draw.

    python benchmarks/report.py                   # 10 and 50 numeric features, 20k predictions, 3 repeats
    python benchmarks/report.py --predictions 5000 --repeats 1   # quicker

The history is synthetic (one binary model, numeric features ~ N(0, 1), the first five shifted by
one standard deviation after 60% of the predictions, a label 20 s after each prediction), made in
memory and decoded once. Per feature count, interleaved (A B A B …), median of ``--repeats``:

* ``replay``: :class:`streams.tools.backtest.Backtest` without and with the report's
  :class:`streams.tools.report.ReportRecorder` (the config watches PSI and KS on every feature);
* ``write_report``: drawing report.html from that replay (matplotlib, PNGs embedded).
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run as a script, benchmarks/ would come first on sys.path and benchmarks/detectors.py would shadow `detectors`
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import numpy as np  # noqa: E402

from streams.tools.backtest import Backtest, load_events  # noqa: E402
from streams.core.config import parse_config  # noqa: E402
from streams.tools.report import ReportRecorder, write_report  # noqa: E402


def history(directory: Path, n: int, features: int, seed: int = 1) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, features))
    x[int(n * 0.6):, :5] += 1.0
    score = 1 / (1 + np.exp(-x[:, :3].sum(axis=1)))
    start = 1_767_225_600_000
    predictions, labels = directory / "predictions.jsonl", directory / "labels.jsonl"
    with open(predictions, "w") as p, open(labels, "w") as lab:
        for i in range(n):
            t = start + i * 1000
            pred = int(score[i] > 0.5)
            p.write(json.dumps({"prediction_id": f"p{i}", "model_id": "m", "timestamp": t, "prediction": pred,
                                "score": round(float(score[i]), 4),
                                "features": {f"f{j:02d}": round(float(v), 4) for j, v in enumerate(x[i])}}) + "\n")
            truth = pred if rng.random() < 0.9 else 1 - pred
            lab.write(json.dumps({"prediction_id": f"p{i}", "model_id": "m", "label": truth,
                                  "timestamp": t + 20_000}) + "\n")
    return predictions, labels


def measure(n: int, features: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        predictions, labels = history(directory, n, features)
        config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:1"}, "models": [{
            "id": "m", "features": {"numeric": [f"f{j:02d}" for j in range(features)]},
            "drift": {"numeric": ["psi", "ks"]},
            "rules": [{"name": "accuracy-floor", "min_samples": 500,
                       "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8}]}]}]},
            str(directory / "driftline.toml"))
        events = load_events(config, predictions, labels).events
        times: dict[str, list[float]] = {"replay": [], "replay + recorder": [], "write_report": []}
        for _ in range(repeats):
            for recorded in (False, True):
                gc.collect()
                recorder = ReportRecorder(config) if recorded else None
                backtest = Backtest(config, every=None, observer=recorder)
                started = time.perf_counter()
                result = backtest.run(events)
                times["replay + recorder" if recorded else "replay"].append(time.perf_counter() - started)
            started = time.perf_counter()
            write_report(config, result, directory / "report.html", recorder=recorder)
            times["write_report"].append(time.perf_counter() - started)
        return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=20_000)
    parser.add_argument("--features", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"| features | predictions | replay s | replay + recorder s | ratio | write_report s |")
    print("|---|---|---|---|---|---|")
    for features in args.features:
        m = measure(args.predictions, features, args.repeats)
        print(f"| {features} | {args.predictions} | {m['replay']:.2f} | {m['replay + recorder']:.2f} | "
              f"{m['replay + recorder'] / m['replay']:.2f} | {m['write_report']:.2f} |")


if __name__ == "__main__":
    main()
