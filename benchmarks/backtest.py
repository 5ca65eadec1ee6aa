"""Backtest throughput: JSON-lines history → decode → event-time sort → Monitor (one process, or N workers).

    python benchmarks/backtest.py                       # 200k predictions + 200k labels, 20 features, 3 repeats
    python benchmarks/backtest.py --predictions 50000   # quicker

The history is synthetic (numpy values, msgspec-encoded, one model, 20 numeric features, labels
0–120 s after their prediction, 3% never labelled), made once before timing. Each run is a fresh
process, as each ``driftline backtest`` is (a process that has run before has its memory mapped
already: it loads ~15% faster). Configs of the same model, interleaved (A B C A B C …), median
of ``--repeats``:

* ``accuracy``  — accuracy over a 1000-pair window, one rule: the path of a performance-only model;
* ``drift-20``  — plus PSI and KS on all 20 features (window 1000, reference the first 1000);
* ``drift-20 no timeline`` — the same without the backtest's timeline sampling (the Monitor alone);
* ``drift-20 CLI`` — ``driftline backtest --no-report`` with the drift-20 config, as a user runs
  it; its times are the ones it writes to summary.json (load, replay);
* ``decode``    — the baseline: read + decode + validate + sort only, no Monitor;
* ``realistic`` — the engine benchmark's config (:mod:`benchmarks._configs`): 3 models, each
  with PSI and KS on all 20 features judged by a drift rule every 50 predictions, accuracy,
  ADWIN and an accuracy rule; on a history of the same size spread over the 3 models;
* ``realistic N workers`` — the same in N worker processes, as ``driftline backtest --workers N``
  runs it (the models shared out, the outputs the same): each worker decodes the files itself
  and keeps its models' events, so its load is the time until the workers had decoded, and its
  CPU seconds are the workers' (load included); ``--workers`` says which N.

On a shared machine the wall times wander with the others' load; the CPU seconds do less: ``CPU
s`` is every process's, ``CPU s busiest process`` the parent's (opening the files, forking,
merging) plus the busiest worker's (its load and replay), what the run would take with a core
free for each process.

The timeline (``--every`` 1000; the CLI's default is 984 here) asks the Monitor for every
statistic once per 1000 lines. Per config: wall seconds per stage and lines/s end to end.
``--profile`` prints the top of a cProfile of the drift-20 replay, to say where the time goes.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import progress, table  # noqa: E402
from benchmarks._configs import MODELS, models_toml  # noqa: E402
from streams.tools.backtest import Backtest, load_events, replay_files  # noqa: E402
from streams.core.config import parse_config  # noqa: E402

FEATURES = [f"f{i:02d}" for i in range(20)]


def make_history(directory: Path, predictions: int, seed: int = 1, models: tuple[str, ...] = ("m",)) -> None:
    """``predictions`` predictions, model ``models[i % len(models)]`` for the i-th, and their labels."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    encoder = msgspec.json.Encoder()
    start = 1_767_225_600_000
    values = rng.normal(size=(predictions, len(FEATURES))).round(5)
    values[predictions // 2:, :3] += 1.0  # covariate shift of 3 features halfway
    preds = rng.integers(0, 2, predictions)
    correct = rng.random(predictions) < np.where(np.arange(predictions) < predictions // 2, 0.9, 0.7)
    delays = rng.integers(0, 120_000, predictions)
    labelled = rng.random(predictions) >= 0.03
    labels = []
    with open(directory / "predictions.jsonl", "wb") as f:
        for i in range(predictions):
            ts = start + i * 100
            f.write(encoder.encode({"prediction_id": f"p{i:08d}", "model_id": models[i % len(models)], "model_version": "v1",
                                    "timestamp": ts, "features": dict(zip(FEATURES, values[i].tolist())),
                                    "prediction": int(preds[i]), "score": 0.5}) + b"\n")
            if labelled[i]:
                label = int(preds[i]) if correct[i] else 1 - int(preds[i])
                labels.append((ts + int(delays[i]), i, label))
    labels.sort()
    with open(directory / "labels.jsonl", "wb") as f:
        for ts, i, label in labels:
            f.write(encoder.encode({"prediction_id": f"p{i:08d}", "model_id": models[i % len(models)], "label": label,
                                    "timestamp": ts}) + b"\n")


def config_toml(kind: str) -> str:
    """The benchmark's config: ``accuracy`` or ``drift-20``."""
    drift = f"""features = {{ numeric = {json.dumps(FEATURES)} }}
drift = {{ numeric = ["psi", "ks"], window = 1000, reference_size = 1000 }}
""" if kind == "drift-20" else ""
    drift_rule = """
[[models.rules]]
name = "input-drift"
min_samples = 500
conditions = [{ statistic = "feature.*.psi", op = ">", threshold = 0.2 }]
""" if kind == "drift-20" else ""
    return f"""[kafka]
"bootstrap.servers" = "unused:9092"

[[models]]
id = "m"
window = {{ kind = "count", size = 1000 }}
evaluate_every = 1000
{drift}
[[models.rules]]
name = "accuracy-floor"
min_samples = 500
conditions = [{{ statistic = "accuracy", op = "<", threshold = 0.8 }}]
{drift_rule}"""


def config(kind: str):
    if kind == "realistic":
        text = '[kafka]\n"bootstrap.servers" = "unused:9092"\n' + models_toml(MODELS, FEATURES, "realistic")
        return parse_config(tomllib.loads(text), f"<bench {kind}>")
    return parse_config(tomllib.loads(config_toml(kind)), f"<bench {kind}>")


def history(kind: str, directory: Path) -> Path:
    """Where the history of this config is: the realistic config's has its models."""
    return directory / "realistic" if kind == "realistic" else directory


def run_once(kind: str, directory: Path) -> dict:
    """One run in a fresh process (see the module's docstring)."""
    if kind == "drift-20 CLI":
        return _cli_once(directory)
    out = subprocess.run([sys.executable, __file__, "--one", kind, "--history", str(directory)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def _one(kind: str, directory: Path) -> dict:
    """As run_backtest does it (GC off while loading and replaying), minus the output files."""
    cfg = config({"decode": "accuracy", "drift-20 no timeline": "drift-20"}.get(kind, kind.split(" ")[0]))
    gc.collect()
    gc.disable()
    try:
        return _timed(kind, cfg, directory)
    finally:
        gc.enable()


def _timed(kind: str, cfg, directory: Path) -> dict:
    directory = history(kind.split(" ")[0], directory)
    files = directory / "predictions.jsonl", directory / "labels.jsonl"
    t0, cpu0 = time.perf_counter(), time.process_time()
    if kind.endswith(" workers"):  # as ``driftline backtest --workers N`` runs: the workers decode the files
        result = replay_files(cfg, *files, every=1000, workers=int(kind.split(" ")[1]))
        t2 = time.perf_counter()
        lines, triggers, workers = result.lines, len(result.triggers), result.worker_cpu_seconds
        t1, cpu1 = t0 + result.load_seconds, math.nan  # the load is in the workers, and their CPU seconds
    else:
        loaded = load_events(cfg, *files)
        t1, cpu1 = time.perf_counter(), time.process_time()
        lines, triggers, workers = loaded.lines, 0, []
        if kind != "decode":
            result = Backtest(cfg, every=1000, timeline=kind != "drift-20 no timeline").run(loaded.events)
            triggers = len(result.triggers)
        t2 = time.perf_counter()
    # CPU seconds: this process's (the load and the replay, or the workers' fork and merge) and
    # each worker's; on a shared machine the busiest line of work says what free cores would take.
    cpu = time.process_time() - cpu0
    critical = cpu + (max(workers) if workers else 0.0)
    return {"lines": lines, "load": t1 - t0, "replay": t2 - t1, "total": t2 - t0, "triggers": triggers,
            "cpu_load": cpu1 - cpu0, "cpu": cpu + sum(workers), "cpu_critical": critical}


def _cli_once(directory: Path) -> dict:
    config_file = directory / "drift-20.toml"
    config_file.write_text(config_toml("drift-20"))
    out = directory / "cli-out"
    subprocess.run([sys.executable, "-m", "streams.cli.main", "backtest", "--config", str(config_file),
                    "--predictions", str(directory / "predictions.jsonl"), "--labels", str(directory / "labels.jsonl"),
                    "--out", str(out), "--no-report", "--no-progress"],
                   check=True, capture_output=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    load, replay = summary["seconds"]["load"], summary["seconds"]["replay"]
    return {"lines": summary["lines"], "load": load, "replay": replay, "total": load + replay,
            "triggers": summary["triggers"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", nargs="?", const="drift-20", choices=["drift-20", "realistic"],
                        help="cProfile one replay of this config (default drift-20)")
    parser.add_argument("--configs", help="comma-separated configs to run (default: all)")
    parser.add_argument("--workers", default="2",
                        help="comma-separated worker counts of the realistic config's parallel runs (default 2)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one run of this config, in this process
    parser.add_argument("--history", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one, Path(args.history))))
        return 0
    kinds = ["decode", "accuracy", "drift-20", "drift-20 no timeline", "drift-20 CLI", "realistic",
             *(f"realistic {n} workers" for n in args.workers.split(",") if n.strip() and int(n) > 1)]
    if args.configs:
        kinds = ["decode", *(k for k in args.configs.split(",") if k != "decode")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        progress(f"making {args.predictions} predictions + labels with {len(FEATURES)} features …")
        make_history(directory, args.predictions)
        make_history(directory / "realistic", args.predictions, models=tuple(MODELS))
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(args.repeats):
            for kind in kinds:
                runs[kind].append(run_once(kind, directory))
                progress(f"  round {r + 1}/{args.repeats} {kind}: {runs[kind][-1]['total']:.2f}s")
        if args.profile:
            cfg = config(args.profile)
            where = history(args.profile, directory)
            loaded = load_events(cfg, where / "predictions.jsonl", where / "labels.jsonl")
            profiler = cProfile.Profile()
            profiler.enable()
            Backtest(cfg, every=1000).run(loaded.events)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            print(out.getvalue())
    med = {k: {stage: statistics.median(r.get(stage, math.nan) for r in runs[k])
               for stage in ("load", "replay", "total", "cpu", "cpu_critical")} for k in kinds}
    lines = runs["decode"][0]["lines"]
    rows = []
    for kind in kinds:
        m = med[kind]
        rows.append([kind, f"{m['load']:.2f}", f"{m['replay']:.2f}", f"{m['total']:.2f}",
                     f"{lines / m['total']:,.0f}", f"{lines / m['replay']:,.0f}" if kind != "decode" else "—",
                     f"{m['total'] / med['decode']['total']:.2f}×", str(runs[kind][0]["triggers"]),
                     *([f"{m['cpu']:.2f}", f"{m['cpu_critical']:.2f}", f"{lines / m['cpu_critical']:,.0f}"]
                       if math.isfinite(m["cpu"]) else ["—"] * 3)])  # the CLI run is timed by its own summary
    print(f"backtest: {lines:,} lines ({args.predictions:,} predictions with {len(FEATURES)} features + labels), "
          f"median of {args.repeats}, interleaved, a fresh process each; python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.2f} (before: {load_before:.2f})")
    print(table(["config", "load+decode+sort s", "Monitor s", "total s", "lines/s end to end",
                 "lines/s Monitor only", "vs decode", "triggers", "CPU s", "CPU s busiest process",
                 "lines/s with a core each"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"lines": lines, "median": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
