"""Soak: ``driftline run`` on a long stream, its RSS and checkpoint size sampled as it goes.

    python benchmarks/soak.py                         # the three cases below
    python benchmarks/soak.py --compare-ref main      # each case also with the engine of <ref>
    python benchmarks/soak.py --cases issue --predictions 200000     # quick

Broker: ``--bootstrap`` (default ``$KAFKA_BOOTSTRAP_SERVERS``, else 127.0.0.1:19092). Topics start
with ``bench-soak-<pid>-`` and are deleted at the end.

Cases (each a fresh ``driftline run`` while the stream is produced at ``--rate`` events/s):

* ``issue``  — one model, two numeric features with PSI, an accuracy rule, a prediction every
  ``--step-ms`` of event time and its label 2 s later, the default label TTL (86,400 s) and
  de-duplication horizon;
* ``short``  — the same with ``label_ttl_seconds = --ttl`` and one prediction in ten never
  labelled: pending predictions expire, expired ids are remembered, the TTL passes many times;
* ``wide``   — ``--wide-models`` models × ``--wide-features`` features (PSI each, accuracy, ADWIN,
  a rule), ``label_ttl_seconds = --ttl``, a prediction every 100 ms per model, labels 2 s later.

Every 0.5 s: the engine's resident set (``VmRSS``), ``driftline_checkpoint_bytes`` (the last
checkpoint of every model, summed), ``driftline_pending_predictions`` and the events processed. Reported at 10, 25, 50, 75 and 100 %
of the stream, and the spread (max / min - 1) of RSS and checkpoint bytes between 25 and 100 %.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import progress, ref_worktree, table  # noqa: E402
from benchmarks._kafka_load import (START_MS, _produce, create_topics, delete_topics_with_prefix,  # noqa: E402
                                    metric_sum, producer)
from benchmarks._configs import model_toml  # noqa: E402
from benchmarks.engine import EngineProcess, _q, free_port, write_config  # noqa: E402

MB = 1 << 20
FRACTIONS = (0.10, 0.25, 0.50, 0.75, 1.00)


def small_model(ttl: float | None) -> str:
    ttl_line = f"label_ttl_seconds = {_q(ttl)}\n" if ttl else ""
    return f"""
[[models]]
id = "m"
{ttl_line}metrics = ["accuracy"]
[models.features]
numeric = ["a", "b"]
[models.drift]
numeric = ["psi"]
categorical = []
prediction = []
[[models.rules]]
name = "accuracy-floor"
min_samples = 500
conditions = [{{statistic = "accuracy", op = "<", threshold = 0.5}}]
"""


class PacedStream(threading.Thread):
    """Produces, at ``rate`` events/s of wall time, for each model a prediction every ``step_ms``
    of event time (features N(0, 1)) and its label 2 s later (none for every
    ``unlabelled_every``-th), models interleaved, each model's events in event-time order."""

    LABEL_DELAY_MS = 2000

    def __init__(self, bootstrap: str, topics: tuple[str, str], models: list[str], features: list[str],
                 predictions: int, step_ms: int, rate: float, unlabelled_every: int = 0):
        super().__init__(daemon=True)
        self.bootstrap, self.topics, self.models, self.features = bootstrap, topics, models, features
        self.predictions, self.step_ms, self.rate, self.unlabelled_every = predictions, step_ms, rate, unlabelled_every
        lag = self.LABEL_DELAY_MS // step_ms
        labelled = sum(1 for k in range(predictions) if not (unlabelled_every and k % unlabelled_every == 0))
        self.expected = (predictions + labelled) * len(models)
        self.lag = lag
        self.produced = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def _run(self) -> None:
        rng = np.random.default_rng(3)
        enc = msgspec.json.Encoder()
        p = producer(self.bootstrap)
        started = time.monotonic()
        chunk = 200
        for lo in range(0, self.predictions + self.lag, chunk):
            for model in self.models:
                values = rng.normal(size=(chunk, len(self.features))).round(5).tolist()
                correct = (rng.random(chunk) < 0.9).tolist()
                key = model.encode()
                for j, i in enumerate(range(lo, lo + chunk)):
                    if i < self.predictions:
                        _produce(p, self.topics[0], enc.encode({
                            "prediction_id": f"{model}-{i:010d}", "model_id": model, "model_version": "v1",
                            "timestamp": START_MS + i * self.step_ms, "features": dict(zip(self.features, values[j])),
                            "prediction": 1, "score": 0.8}), key)
                        self.produced += 1
                    k = i - self.lag
                    if 0 <= k < self.predictions and not (self.unlabelled_every and k % self.unlabelled_every == 0):
                        _produce(p, self.topics[1], enc.encode({
                            "prediction_id": f"{model}-{k:010d}", "model_id": model, "label": 1 if correct[j] else 0,
                            "timestamp": START_MS + k * self.step_ms + self.LABEL_DELAY_MS}), key)
                        self.produced += 1
                p.poll(0)
                ahead = self.produced / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        p.flush(120)


def read_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def soak(proc: EngineProcess, stream: PacedStream, timeout: float, label: str) -> list[tuple[float, int, float, float]]:
    """(processed, RSS bytes, checkpoint bytes, pending predictions) every 0.5 s while ``stream`` produces, until the
    engine has processed every event."""
    expected = stream.expected
    stream.start()
    samples: list[tuple[float, int, float, float]] = []
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        if stream.error is not None:
            raise RuntimeError(f"producing failed: {stream.error}")
        if proc.proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.proc.returncode}:\n" + "\n".join(proc.tail))
        text = proc.metrics()
        if text is not None:
            done = proc.processed(text)
            samples.append((done, read_rss(proc.proc.pid), metric_sum(text, "driftline_checkpoint_bytes"),
                            metric_sum(text, "driftline_pending_predictions")))
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                progress(f"    {label}: {done:,.0f}/{expected:,} events, RSS {samples[-1][1] / MB:.0f} MB, "
                         f"checkpoint {samples[-1][2] / MB:.2f} MB")
            if done >= expected:
                break
        time.sleep(0.5)
    time.sleep(2.5)  # the checkpoint of the last batch commits within commit_every_ms
    text = proc.metrics() or ""
    samples.append((proc.processed(text) if text else 0, read_rss(proc.proc.pid),
                    metric_sum(text, "driftline_checkpoint_bytes") if text else 0,
                    metric_sum(text, "driftline_pending_predictions") if text else 0))
    return samples


def at_fractions(samples: list[tuple[float, int, float, float]], expected: int) -> dict[float, tuple[float, int, float, float]]:
    out = {}
    for fraction in FRACTIONS:
        out[fraction] = next((s for s in samples if s[0] >= fraction * expected), samples[-1])
    return out


def spread(samples: list[tuple[float, int, float, float]], expected: int, column: int) -> float:
    values = [s[column] for s in samples if s[0] >= 0.25 * expected and s[column] > 0]
    return max(values) / min(values) - 1 if values else float("nan")


def run_case(case: str, args, prefix: str, tmp: Path, models: str, stream_args: dict,
             engine_dir: Path | None, tag: str) -> dict:
    name = f"{case}-{tag}"
    inputs = (f"{prefix}{name}-predictions", f"{prefix}{name}-labels")
    create_topics(args.bootstrap, list(inputs), 1)
    port = free_port()
    cfg = write_config(tmp / f"{name}.toml", args.bootstrap, prefix, name, inputs, models, 1000, port, 1)
    stream = PacedStream(args.bootstrap, inputs, rate=args.rate, **stream_args)
    proc = EngineProcess(cfg, "confluent", port, cwd=engine_dir)
    try:
        samples = soak(proc, stream, args.timeout, f"{case} {tag}")
    finally:
        proc.stop()
    expected = stream.expected
    points = at_fractions(samples, expected)
    return {"case": case, "engine": tag, "events": expected,
            "rss_mb": {f"{f:.0%}": round(s[1] / MB, 1) for f, s in points.items()},
            "checkpoint_mb": {f"{f:.0%}": round(s[2] / MB, 3) for f, s in points.items()},
            "pending": {f"{f:.0%}": int(s[3]) for f, s in points.items()},
            "max_rss_mb": round(max(s[1] for s in samples) / MB, 1),
            "max_checkpoint_mb": round(max(s[2] for s in samples) / MB, 3),
            "max_pending": int(max(s[3] for s in samples)),
            "rss_spread_25_100": round(spread(samples, expected, 1), 3),
            "checkpoint_spread_25_100": round(spread(samples, expected, 2), 3),
            "warnings": proc.warning_count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"))
    parser.add_argument("--cases", default="issue,short,wide")
    parser.add_argument("--predictions", type=int, default=500_000, help="predictions of the issue and short cases")
    parser.add_argument("--step-ms", type=int, default=100, help="event time between two predictions")
    parser.add_argument("--ttl", type=float, default=300.0, help="label TTL (s) of the short and wide cases")
    parser.add_argument("--wide-models", type=int, default=100)
    parser.add_argument("--wide-features", type=int, default=50)
    parser.add_argument("--wide-per-model", type=int, default=4_000)
    parser.add_argument("--rate", type=float, default=10_000, help="events/s produced while the engine runs")
    parser.add_argument("--compare-ref", help="also run each case with the engine of this git ref (before)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    prefix = f"bench-soak-{os.getpid()}-"
    results = []
    with tempfile.TemporaryDirectory() as tmp_name, ref_worktree(args.compare_ref, Path(tmp_name)) as before:
        tmp = Path(tmp_name)
        engines: list[tuple[str, Path | None]] = [("this", None)]
        if before is not None:
            engines.insert(0, (args.compare_ref, before))
        try:
            for case in args.cases.split(","):
                if case == "issue":
                    models, stream_args = small_model(None), {"models": ["m"], "features": ["a", "b"],
                                                              "predictions": args.predictions, "step_ms": args.step_ms}
                elif case == "short":
                    models, stream_args = small_model(args.ttl), {
                        "models": ["m"], "features": ["a", "b"], "predictions": args.predictions,
                        "step_ms": args.step_ms, "unlabelled_every": 10}
                elif case == "wide":
                    names = [f"m{i:03d}" for i in range(args.wide_models)]
                    features = [f"x{i:02d}" for i in range(args.wide_features)]
                    models = "".join(model_toml(m, features, "psi", label_ttl_seconds=args.ttl) for m in names)
                    stream_args = {"models": names, "features": features, "predictions": args.wide_per_model,
                                   "step_ms": 100}
                else:
                    parser.error(f"--cases: unknown case {case!r}")
                for tag, engine_dir in engines:
                    progress(f"{case}: driftline run ({tag}) while {args.rate:,.0f} events/s are produced …")
                    result = run_case(case, args, prefix, tmp, models, stream_args, engine_dir, tag)
                    results.append(result)
                    progress(json.dumps(result))
        finally:
            delete_topics_with_prefix(args.bootstrap, prefix)
    rows = []
    for r in results:
        rows.append([r["case"], r["engine"], f"{r['events']:,}",
                     " / ".join(f"{v:.0f}" for v in r["rss_mb"].values()), f"{r['max_rss_mb']:.0f}",
                     f"{r['rss_spread_25_100']:.1%}",
                     " / ".join(f"{v:.2f}" for v in r["checkpoint_mb"].values()),
                     f"{r['checkpoint_spread_25_100']:.1%}", f"{r['max_pending']:,}", r["warnings"]])
    print(table(["case", "engine", "events", "RSS MB at 10/25/50/75/100 %", "max RSS MB", "RSS spread 25–100 %",
                 "checkpoint MB at 10/25/50/75/100 %", "checkpoint spread 25–100 %", "max pending", "warning lines"], rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
