"""Cost of ``detectors.drift.add_columns`` per call, on the backtest's drift-20 model.

    python benchmarks/add_columns.py                  # (340, 40) and (3400, 40), median of 7
    python benchmarks/add_columns.py --repeats 11

The detectors are the drift-20 config of benchmarks/backtest.py (PSI and KS on 20 features,
window 1000, reference the first 1000 rows), built by ``ModelStatistics`` as the Monitor builds
them. The reference goes in first (not timed); then each sample times ``--calls`` calls of
``add_columns`` on fresh matrices of normal values rounded to 5 decimals (the backtest's data),
half of them shifted, and reports microseconds per call (the median over ``--repeats`` samples),
and the same for the binning alone: one ``NumericBins.codes`` per column (the binary search
add_columns used to do) next to ``NumericBins.codes_of_columns`` (what it does now).
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
from streams.core.statistics import ModelStatistics  # noqa: E402


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


def per_column(bins: list, batch: np.ndarray) -> np.ndarray:
    """The codes, one ``NumericBins.codes`` call per column (a binary search per value)."""
    columns = np.ascontiguousarray(batch.T)
    return np.stack([b.codes(columns[j]) for j, b in enumerate(bins)])


def together(bins: list, batch: np.ndarray) -> np.ndarray:
    """The codes of all the columns at once, as add_columns bins them."""
    return drift.NumericBins.codes_of_columns(bins, np.ascontiguousarray(batch.T))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200, help="calls per sample at 340 rows (a tenth at 3400)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    detectors = detectors_with_reference(rng)
    bins = [d.profile for d in detectors]
    rows = []
    for n, calls in ((340, args.calls), (3400, max(1, args.calls // 10))):
        batches = matrices(rng, n, len(detectors), calls)
        whole = per_call(lambda batch: drift.add_columns(detectors, batch), batches, args.repeats)
        one_by_one = per_call(lambda batch: per_column(bins, batch), batches, args.repeats)
        all_at_once = per_call(lambda batch: together(bins, batch), batches, args.repeats)
        ns = 1e3 / (n * len(detectors))
        rows.append([f"({n}, {len(detectors)})", f"{whole:.0f}", f"{one_by_one:.0f} ({one_by_one * ns:.1f} ns)",
                     f"{all_at_once:.0f} ({all_at_once * ns:.1f} ns)"])
    print(table(["matrix", "add_columns µs/call", "per-column searchsorted µs (/value)",
                 "codes_of_columns µs (/value)"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
