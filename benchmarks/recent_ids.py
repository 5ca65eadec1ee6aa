"""The remembered ids' upkeep while a busy model's de-duplication horizon fills.

    python benchmarks/recent_ids.py                          # 10,000 ids/s for 1,000 s of event time
    python benchmarks/recent_ids.py --compare-ref HEAD~3     # also the RecentIds of another commit

A model's joined ids (:class:`streams.core.recent_ids.RecentIds`, the default 600 s horizon or
``--horizon``) take ``--rate`` ids a second of event time, a 5-s bucket at a time, each bucket
purged (sealed) as the watermark passes it, as the join does in the hand-over that moves the
watermark. The time of each purge is what that hand-over pays for the upkeep: a lay-out of the
whole index stalls the loop for it. Reported: the slowest purge, the second slowest, p99,
median, all purges together, and how many took over 20 ms. With ``--compare-ref`` each round
runs this tree, then the ref (from a git worktree, in a fresh process each), ``--repeats`` rounds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grow(root: str, rate: int, seconds: int, horizon_s: int) -> dict:
    """In this process, the RecentIds of the tree at ``root``: every purge's seconds."""
    sys.path.insert(0, root)
    import numpy as np

    from streams.core.recent_ids import MAX_WIDTH_MS, RecentIds

    start = 1_767_225_600_000
    ids = RecentIds(horizon_s * 1000)
    rng = np.random.default_rng(1)
    per_bucket = rate * MAX_WIDTH_MS // 1000
    purges = []
    for k in range(seconds * 1000 // MAX_WIDTH_MS):
        t = start + k * MAX_WIDTH_MS
        ids.add_many(rng.integers(0, 2**64, per_bucket, dtype=np.uint64), np.full(per_bucket, t), np.full(per_bucket, t))
        began = time.perf_counter()
        ids.purge(t + MAX_WIDTH_MS)
        purges.append(time.perf_counter() - began)
    return {"ids": len(ids), "purges": purges}


def summary(label: str, result: dict) -> list[str]:
    purges = sorted(result["purges"])
    ms = lambda s: f"{s * 1000:.1f}"  # noqa: E731
    return [label, f"{result['ids']:,}", ms(purges[-1]), ms(purges[-2]), ms(purges[int(0.99 * (len(purges) - 1))]),
            ms(purges[len(purges) // 2]), f"{sum(purges):.2f}", str(sum(p > 0.02 for p in purges))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000, help="ids a second of event time")
    parser.add_argument("--seconds", type=int, default=1_000, help="seconds of event time")
    parser.add_argument("--horizon", type=int, default=600, help="the de-duplication horizon, seconds")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compare-ref", help="also the RecentIds of this git ref")
    parser.add_argument("--grow-in", help=argparse.SUPPRESS)  # a fresh process's run: the tree's root
    args = parser.parse_args(argv)
    if args.grow_in:
        print(json.dumps(grow(args.grow_in, args.rate, args.seconds, args.horizon)))
        return 0
    sys.path.insert(0, str(ROOT))
    from benchmarks._common import progress, ref_worktree, table

    with tempfile.TemporaryDirectory() as tmp, ref_worktree(args.compare_ref, Path(tmp)) as ref_root:
        trees = {"this tree": str(ROOT)}
        if ref_root is not None:
            trees[args.compare_ref] = str(ref_root)
        rows = []
        for r in range(args.repeats):
            for label, root in trees.items():
                out = subprocess.run([sys.executable, __file__, "--grow-in", root, "--rate", str(args.rate),
                                      "--seconds", str(args.seconds), "--horizon", str(args.horizon)],
                                     check=True, capture_output=True, text=True).stdout
                rows.append(summary(f"{label}, round {r + 1}", json.loads(out)))
                progress(f"  {rows[-1][0]}: slowest purge {rows[-1][2]} ms")
    print(f"remembered ids: {args.rate:,} a second for {args.seconds:,} s of event time, horizon {args.horizon:,} s, "
          f"a purge every 5 s (ms)")
    print(table(["run", "ids at the end", "slowest purge", "2nd", "p99", "median", "all purges s", "over 20 ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
