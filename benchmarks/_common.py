"""Helpers shared by the benchmarks: interleaved timing, peak memory, tables, progress, a git
worktree of the ref a run compares against."""
from __future__ import annotations

import contextlib
import gc
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (s) of each run, the runs interleaved A B A B … so drift in machine load
    hits every candidate alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(run: Callable[[], object]) -> int:
    """Peak bytes allocated while ``run`` executes (tracemalloc; inputs made before are not counted)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = run()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del result
    return peak


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


@contextlib.contextmanager
def ref_worktree(ref: str | None, parent: Path) -> Iterator[Path | None]:
    """A detached git worktree of ``ref`` in ``parent`` for the block (None without a ref),
    removed after it."""
    if ref is None:
        yield None
        return
    path = parent / "worktree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)
