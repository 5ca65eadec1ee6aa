"""``driftline simulate`` and ``driftline backtest`` (registered by streams/cli/main.py).

simulate needs the sim extra (river), backtest the service extra and, for report.html, the
report extra (matplotlib): each is imported when its command runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from streams.cli.common import (EXIT_INVALID_INPUT, EXIT_RUNTIME, CommandError, Interrupted, UsageError,
                                checked_bootstrap, kafka_reason, load_config, require, say)

DEFAULT_MODELS = [
    "id=loans,generator=agrawal,learner=hoeffding,drift=abrupt",
    "id=sensors,generator=sea,learner=hoeffding,drift=covariate,shift=x0:-1|x1:-1",
]

MODEL_HELP = ("a simulated model, key=value pairs separated by commas (repeat for several models): "
              "id=NAME, generator=agrawal|sea|hyperplane|stagger, learner=hoeffding|logistic, "
              "drift=none|abrupt|gradual|covariate|new_category, at=INDEX (prediction index of the drift; "
              "default half of --events, or 5000 without --events), width=N (gradual), concept=A>B, shift=F[:K]|F[:K] (covariate: "
              "features and their shifts in standard deviations, quote the | in a shell; sigma=K sets the "
              "default K, 2), category=VALUE, share=P (new_category), train=N, "
              "version=V. Default: " + " and ".join(repr(m) for m in DEFAULT_MODELS))


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser(
        "simulate", help="produce realistic predictions and labels with injected drift",
        description="Score a synthetic river stream with a river model trained before a scheduled drift and "
                    "emit prediction and (delayed) label events to Kafka, or to JSON-lines files with --out.")
    sim.add_argument("--model", "-m", action="append", metavar="SPEC", help=MODEL_HELP)
    sim.add_argument("--events", "-n", type=_at_least(1), default=None,
                     help="predictions per model (default 10000, or unlimited with --duration)")
    sim.add_argument("--duration", type=_positive, help="stop after this many wall-clock seconds")
    sim.add_argument("--rate", type=_positive, help="messages per second, all kinds (default: as fast as possible)")
    sim.add_argument("--seed", type=int, default=0, help="the same seed gives the same events (default 0)")
    sim.add_argument("--start", default=None,
                     help="event time of the first prediction: ISO-8601 with zone, epoch ms, or 'now' "
                          "(default 2026-01-01T00:00:00Z, so a seed fixes every byte)")
    sim.add_argument("--interval-ms", type=_at_least(1), default=None,
                     help="event time between predictions of a model (default 1000; with --start now and --rate: "
                          "what keeps event time in step with the wall clock)")
    sim.add_argument("--label-delay", default="exp:30",
                     help="label delay in seconds: const:S, exp:MEAN, uniform:A:B, lognormal:MEDIAN:SIGMA, or "
                          "batch:PERIOD (labels land every PERIOD s, like a periodic job) (default exp:30)")
    sim.add_argument("--label-missing", type=_share, default=0.0, help="fraction of labels that never arrive")
    sim.add_argument("--malformed", type=_share, default=0.0,
                     help="extra malformed messages as a fraction of predictions (they belong in the DLQ)")
    sim.add_argument("--out", help="write predictions.jsonl, labels.jsonl and scenario.json here instead of Kafka")
    sim.add_argument("--merged", action="store_true",
                     help="with --out: also events.jsonl, every message in one file in event-time order")
    sim.add_argument("--config", "-c", help="take Kafka settings and topic names from this driftline config")
    sim.add_argument("--bootstrap-servers", help="Kafka address (default: the config's, else $KAFKA_BOOTSTRAP_SERVERS)")
    sim.add_argument("--predictions-topic", help="default: the config's topics.predictions, else predictions")
    sim.add_argument("--labels-topic", help="default: the config's topics.labels, else labels")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    sim.set_defaults(func=_simulate)

    bt = sub.add_parser(
        "backtest", help="replay prediction/label history through the Monitor, offline",
        description="Replay JSON-lines history in event-time order through the same Monitor `driftline run` uses "
                    "(no Kafka) and write triggers.jsonl, timeline.csv, summary.json and report.html.")
    bt.add_argument("--config", "-c", required=True, help="the driftline config (models, rules)")
    bt.add_argument("--predictions", "-p", help="predictions, one JSON event per line (- reads standard input)")
    bt.add_argument("--labels", "-l", help="labels, one JSON event per line (- reads standard input)")
    bt.add_argument("--events", "-e", help="predictions and labels in one file (a line with a \"label\" field is a "
                                           "label; - reads standard input)")
    bt.add_argument("--out", "-o", required=True, help="output directory")
    bt.add_argument("--every", type=_at_least(1), default=None,
                    help="timeline resolution: events between samples (default: about 400 samples, every 200 to "
                         "5000 events); each sample asks the Monitor for every statistic")
    bt.add_argument("--no-report", action="store_true", help="skip report.html (and matplotlib)")
    bt.add_argument("--scenario", help="the simulator's scenario.json, to mark injected drifts (default: found "
                                       "next to the input files)")
    bt.add_argument("--max-invalid-share", type=_share, default=None, metavar="SHARE",
                    help=f"exit {EXIT_INVALID_INPUT} (after writing the outputs) when more than this share of the "
                         "input lines was rejected, e.g. 0.01 (default: no limit; a backtest of which no line was "
                         f"valid always exits {EXIT_INVALID_INPUT})")
    bt.add_argument("--workers", type=_at_least(1), default=None,
                    help="processes the models are replayed in, side by side (default: one per core, no more "
                         "than the models); the outputs are the same for any number")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bt.set_defaults(func=_backtest)


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _at_least(low: int):
    def check(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return check


def _positive(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _share(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _output_dir(path: str, option: str = "--out") -> Path:
    """``path`` can be the output directory: one, or a place where one can be made; else UsageError."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a directory")
    existing = next(p for p in (out, *out.parents) if p.exists()) if not out.exists() else out
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {existing} is not writable")
    return out


def _start_ms(value: str | None) -> int:
    from streams.core.codecs import parse_timestamp
    from streams.tools.simulate import DEFAULT_START_MS

    if value is None:
        return DEFAULT_START_MS
    if value == "now":
        return int(time.time() * 1000)
    try:
        return parse_timestamp(int(value) if value.isdigit() else value, "--start")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_topics(kafka: dict, config, predictions: str, labels: str) -> str | None:
    """With a config, create missing topics as ``driftline run`` would (co-partitioned inputs);
    without one, insist the topics exist (a broker may not auto-create them)."""
    from confluent_kafka import KafkaException

    from streams.runtime.admin import ensure_topics, list_topics

    if config is not None and config.topics.predictions == predictions and config.topics.labels == labels:
        try:
            ensure_topics(msgspec_replace(config, kafka))
        except (KafkaException, RuntimeError) as exc:
            return f"cannot create the topics on {kafka['bootstrap.servers']}: {kafka_reason(exc)}"
        return None
    try:
        existing = list_topics(dict(kafka))[1].topics
    except KafkaException as exc:
        return f"Kafka at {kafka['bootstrap.servers']} does not answer: {kafka_reason(exc)}"
    missing = [t for t in (predictions, labels) if t not in existing]
    if missing:
        return (f"topic(s) {', '.join(missing)} do not exist on {kafka['bootstrap.servers']}; start `driftline run` "
                "first (it creates its topics), pass --config to create them, or create them yourself")
    return None


def msgspec_replace(config, kafka: dict):
    import msgspec

    return msgspec.structs.replace(config, kafka=dict(kafka))


def _simulate(args: argparse.Namespace) -> int:
    require("river")  # the sim extra (the models are river's; it brings the service extra too)
    from streams.tools.simulate import ScenarioError

    try:
        return _simulate_scenario(args)
    except ScenarioError as exc:  # a scenario that cannot be simulated: the command line's fault
        raise UsageError(str(exc)) from None


def _simulate_scenario(args: argparse.Namespace) -> int:
    from streams.tools.simulate import (FileSink, KafkaSink, ScenarioError, Simulation, SimulationInterrupted,
                                        check_simulation, parse_model_spec, run)

    models = [parse_model_spec(spec) for spec in (args.model or DEFAULT_MODELS)]
    events = args.events if args.events is not None else (None if args.duration else 10_000)
    interval = args.interval_ms
    if interval is None:
        interval = 1000
        if args.start == "now" and args.rate:  # event time keeps pace with the wall clock
            per_prediction = 2 - args.label_missing + args.malformed  # messages per prediction
            interval = max(1, round(1000 * len(models) * per_prediction / args.rate))
    sim = Simulation(models=models, events=events, seed=args.seed, start_ms=_start_ms(args.start),
                     interval_ms=interval, label_delay=args.label_delay,
                     label_missing=args.label_missing, malformed=args.malformed)
    if events is None and all(m.drift_at is None for m in models) and args.duration is None:
        raise ScenarioError("give --events or --duration")
    check_simulation(sim)
    if args.merged and not args.out:
        raise UsageError("simulate: --merged needs --out DIR")
    config = load_config(args.config) if args.config else None
    sinks = []
    if args.out:
        sinks.append(FileSink(_output_dir(args.out), merged=args.merged))
    else:
        kafka = dict(config.kafka) if config else {}
        if args.bootstrap_servers:
            kafka["bootstrap.servers"] = checked_bootstrap(args.bootstrap_servers, "simulate: --bootstrap-servers")
        elif "bootstrap.servers" not in kafka and os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            kafka["bootstrap.servers"] = checked_bootstrap(os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                                                           "simulate: $KAFKA_BOOTSTRAP_SERVERS")
        if not kafka.get("bootstrap.servers"):
            raise UsageError("simulate: no Kafka address; pass --bootstrap-servers, --config or --out DIR "
                             "(or set KAFKA_BOOTSTRAP_SERVERS)")
        predictions = args.predictions_topic or (config.topics.predictions if config else "predictions")
        labels = args.labels_topic or (config.topics.labels if config else "labels")
        problem = _check_topics(kafka, config, predictions, labels)
        if problem and "do not exist" in problem:
            raise UsageError(f"simulate: {problem}")
        if problem:  # the broker: a runtime failure
            raise CommandError(f"simulate: {problem}", EXIT_RUNTIME)
        sinks.append(KafkaSink(kafka, predictions, labels))
    try:
        summary = run(sim, sinks, rate=args.rate, duration=args.duration, progress=not args.no_progress)
    except SimulationInterrupted as stop:
        raise Interrupted(_simulation_left(args, stop.summary)) from None
    if args.out:
        # the files first: a reader of stdout that went away must not cost scenario.json
        (Path(args.out) / "scenario.json").write_text(json.dumps(
            {"seed": sim.seed, "events_per_model": sim.events, "label_delay": sim.label_delay,
             "label_missing": sim.label_missing, "malformed": sim.malformed, **summary.as_dict()}, indent=2) + "\n")
    for line in summary.lines():
        say(line)
    if args.out:
        say(f"wrote {args.out}/predictions.jsonl, labels.jsonl, " + ("events.jsonl, " if args.merged else "")
            + "scenario.json")
    else:
        dropped = sinks[0].logger.dropped_total
        if dropped:
            raise CommandError(f"simulate: {dropped} messages could not be delivered: {dict(sinks[0].logger.dropped)}",
                               EXIT_RUNTIME)
    return 0


def _simulation_left(args: argparse.Namespace, summary) -> str:
    counts = f"{summary.predictions} predictions, {summary.labels} labels, {summary.malformed} malformed"
    if args.out:
        files = "predictions.jsonl, labels.jsonl" + (", events.jsonl" if args.merged else "")
        return (f"simulate stopped after {counts}; {files} in {args.out} hold only those (the last line may be "
                "cut), scenario.json was not written")
    return f"simulate stopped after {counts} had been produced (queued messages were flushed); the run is incomplete"


def _backtest(args: argparse.Namespace) -> int:
    inputs = {"--predictions": args.predictions, "--labels": args.labels, "--events": args.events}
    if not (args.events or args.predictions):
        raise UsageError("backtest: give --predictions (and --labels), or --events"
                         + ("; --labels alone has no prediction to join" if args.labels else ""))
    if args.events and (args.predictions or args.labels):
        raise UsageError("backtest: give --events, or --predictions and --labels, not both")
    if sum(value == "-" for value in inputs.values()) > 1:
        raise UsageError("backtest: only one input can be - (standard input)")
    for option, value in inputs.items():
        if value and value != "-" and not Path(value).exists():
            raise UsageError(f"backtest: {option} {value}: file not found")
    if args.scenario and not Path(args.scenario).is_file():
        raise UsageError(f"backtest: --scenario {args.scenario}: file not found")
    if args.scenario:
        try:
            json.loads(Path(args.scenario).read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise UsageError(f"backtest: --scenario {args.scenario}: not a JSON file: {exc}") from None
    out = _output_dir(args.out)
    if not args.no_report:
        require("matplotlib")  # the report extra (with the service extra): known now, not after the replay
    from streams.tools.backtest import OUTPUTS, BacktestError, run_backtest

    written: list[Path] = []
    try:
        config = load_config(args.config)
        result = run_backtest(config, out, predictions=args.predictions, labels=args.labels, events=args.events,
                              every=args.every, report=not args.no_report, progress=not args.no_progress,
                              scenario=args.scenario, written=written, workers=args.workers)
    except BacktestError as exc:
        raise UsageError(f"backtest: {exc}") from None
    except KeyboardInterrupt:
        raise Interrupted(_backtest_left(out, written, OUTPUTS[:-1] if args.no_report else OUTPUTS)) from None
    summary = result.summary()
    invalid = sum(summary["invalid"].values())
    rejects = out / "rejects.jsonl"
    problems = result.problems()
    if result.lines and not result.events:  # nothing was replayed: the outputs are empty
        raise CommandError(f"backtest: no valid event: {problems[0]}; see {rejects}", EXIT_INVALID_INPUT)
    for problem in problems:
        print(f"backtest: {problem}" + (f"; see {rejects}" if problem is problems[0] and invalid else ""),
              file=sys.stderr)
    say(f"backtest: {summary['lines']} lines, {summary['events']} events, {invalid} invalid, "
        f"{summary['triggers']} triggers; load {summary['seconds']['load']}s, replay "
        f"{summary['seconds']['replay']}s ({summary['lines_per_second']:,} lines/s)")
    for trigger in result.triggers:
        say(f"  {trigger.trigger_id}  at {trigger.triggered_at}  {trigger.metric}={trigger.value:.4g} "
            f"(threshold {trigger.threshold:g})")
    say("wrote " + ", ".join(str(path) for path in written))
    if args.max_invalid_share is not None and result.invalid_share() > args.max_invalid_share:
        raise CommandError(f"backtest: {result.invalid_share():.2%} of the lines were rejected, more than "
                           f"--max-invalid-share {args.max_invalid_share:g}; see {rejects}", EXIT_INVALID_INPUT)
    return 0


def _backtest_left(out: Path, written: list[Path], expected: tuple[str, ...]) -> str:
    if not written:
        return f"backtest stopped before it wrote anything to {out}"
    done = [path.name for path in written]
    missing = [name for name in expected if name not in done]
    return (f"backtest stopped while writing its outputs: {out} has {', '.join(done)} of this run; "
            f"not written: {', '.join(missing)}")
