"""Cost of ``detectors.drift.add_columns`` per call, on the backtest's drift-20 model.

    python benchmarks/add_columns.py                  # (340, 40) and (3400, 40), median of 7
    python benchmarks/add_columns.py --repeats 11

The detectors are the drift-20 config of benchmarks/backtest.py (PSI and KS on 20 features,
window 1000, reference the first 1000 rows), built by ``ModelStatistics`` as the Monitor builds
them. The reference goes in first (not timed); then each sample times ``--calls`` calls of
``add_columns`` on fresh matrices of normal values rounded to 5 decimals (the backtest's data),
half of them shifted, and reports microseconds per call: the median over ``--repeats`` samples,
and the binning alone (``bin_columns``) the same way.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import numpy as np  # noqa: E402

from benchmarks._common import table  # noqa: E402
from benchmarks.backtest import config  # noqa: E402
from detectors import drift  # noqa: E402
from streams.statistics import ModelStatistics  # noqa: E402


def detectors_with_reference(rng: np.random.Generator) -> list:
    statistics_ = ModelStatistics(config("drift-20").models[0])
    detectors = [d for d in statistics_.feature_drift.values() if not d.categorical]
    drift.add_columns(detectors, matrices(rng, 1000, len(detectors), 1)[0])
    return detectors


def matrices(rng: np.random.Generator, rows: int, columns: int, count: int) -> list[np.ndarray]:
    """Backtest-like batches: normal values rounded to 5 decimals, every other one shifted."""
    return [(rng.normal(size=(rows, columns)) + (i % 2)).round(5) for i in range(count)]


def per_call(run, batches: list[np.ndarray], repeats: int) -> float:
    """Median over ``repeats`` samples of the microseconds per call of ``run`` on each batch."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        samples.append((time.perf_counter() - start) / len(batches) * 1e6)
    return statistics.median(samples)


def binning_only(detectors: list):
    """Just the codes of every column (what add_columns bins), for the share of binning."""
    bins = [d.profile for d in detectors]
    if hasattr(drift, "bin_columns"):
        return lambda batch: drift.bin_columns(bins, batch)
    return lambda batch: [b.codes(batch[:, j]) for j, b in enumerate(bins)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200, help="calls per sample at 340 rows (a tenth at 3400)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    detectors = detectors_with_reference(rng)
    rows = []
    for n, calls in ((340, args.calls), (3400, max(1, args.calls // 10))):
        batches = matrices(rng, n, len(detectors), calls)
        whole = per_call(lambda batch: drift.add_columns(detectors, batch), batches, args.repeats)
        binning = per_call(binning_only(detectors), batches, args.repeats)
        rows.append([f"({n}, {len(detectors)})", f"{whole:.0f}", f"{binning:.0f}",
                     f"{binning * 1e3 / (n * len(detectors)):.1f}"])
    print(table(["matrix", "add_columns µs/call", "binning µs/call", "binning ns/value"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
