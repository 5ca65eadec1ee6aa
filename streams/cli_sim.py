"""``driftline simulate`` and ``driftline backtest`` (registered by streams/cli.py)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

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
    sim.add_argument("--events", "-n", type=int, default=None,
                     help="predictions per model (default 10000, or unlimited with --duration)")
    sim.add_argument("--duration", type=float, help="stop after this many wall-clock seconds")
    sim.add_argument("--rate", type=float, help="messages per second, all kinds (default: as fast as possible)")
    sim.add_argument("--seed", type=int, default=0, help="the same seed gives the same events (default 0)")
    sim.add_argument("--start", default=None,
                     help="event time of the first prediction: ISO-8601 with zone, epoch ms, or 'now' "
                          "(default 2026-01-01T00:00:00Z, so a seed fixes every byte)")
    sim.add_argument("--interval-ms", type=int, default=None,
                     help="event time between predictions of a model (default 1000; with --start now and --rate: "
                          "what keeps event time in step with the wall clock)")
    sim.add_argument("--label-delay", default="exp:30",
                     help="label delay in seconds: const:S, exp:MEAN, uniform:A:B, lognormal:MEDIAN:SIGMA, or "
                          "batch:PERIOD (labels land every PERIOD s, like a periodic job) (default exp:30)")
    sim.add_argument("--label-missing", type=float, default=0.0, help="fraction of labels that never arrive")
    sim.add_argument("--malformed", type=float, default=0.0,
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
    bt.add_argument("--predictions", "-p", help="predictions, one JSON event per line")
    bt.add_argument("--labels", "-l", help="labels, one JSON event per line")
    bt.add_argument("--events", "-e", help="predictions and labels in one file (a line with a \"label\" field is a label)")
    bt.add_argument("--out", "-o", required=True, help="output directory")
    bt.add_argument("--every", type=int, default=None,
                    help="timeline resolution: events between samples (default: about 400 samples, every 200 to "
                         "5000 events); each sample asks the Monitor for every statistic")
    bt.add_argument("--no-report", action="store_true", help="skip report.html (and matplotlib)")
    bt.add_argument("--scenario", help="the simulator's scenario.json, to mark injected drifts (default: found "
                                       "next to the input files)")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bt.set_defaults(func=_backtest)


def _fail(message: str) -> int:
    print(f"driftline: {message}", file=sys.stderr)
    return 2


def _start_ms(value: str | None) -> int:
    from .codecs import parse_timestamp
    from .simulate import DEFAULT_START_MS, ScenarioError

    if value is None:
        return DEFAULT_START_MS
    if value == "now":
        return int(time.time() * 1000)
    try:
        return parse_timestamp(int(value) if value.isdigit() else value, "--start")
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None


def _check_topics(kafka: dict, config, predictions: str, labels: str) -> str | None:
    """With a config, create missing topics as ``driftline run`` would (co-partitioned inputs);
    without one, insist the topics exist (a broker may not auto-create them)."""
    from confluent_kafka import KafkaException

    from .kafka_admin import ensure_topics, list_topics

    if config is not None and config.topics.predictions == predictions and config.topics.labels == labels:
        try:
            ensure_topics(msgspec_replace(config, kafka))
        except (KafkaException, RuntimeError) as exc:
            return f"cannot create the topics on {kafka['bootstrap.servers']}: {_reason(exc)}"
        return None
    try:
        existing = list_topics(dict(kafka))[1].topics
    except KafkaException as exc:
        return f"Kafka at {kafka['bootstrap.servers']} does not answer: {_reason(exc)}"
    missing = [t for t in (predictions, labels) if t not in existing]
    if missing:
        return (f"topic(s) {', '.join(missing)} do not exist on {kafka['bootstrap.servers']}; start `driftline run` "
                "first (it creates its topics), pass --config to create them, or create them yourself")
    return None


def _reason(exc: Exception) -> str:
    """librdkafka's words for a KafkaException (its repr is KafkaError{code=…,val=…,str="…"})."""
    err = exc.args[0] if exc.args else exc
    return err.str() if hasattr(err, "str") else str(err)


def msgspec_replace(config, kafka: dict):
    import msgspec

    return msgspec.structs.replace(config, kafka=dict(kafka))


def _simulate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .simulate import FileSink, KafkaSink, ScenarioError, Simulation, parse_model_spec, run

    try:
        models = [parse_model_spec(spec) for spec in (args.model or DEFAULT_MODELS)]
        events = args.events if args.events is not None else (None if args.duration else 10_000)
        interval = args.interval_ms
        if interval is None:
            interval = 1000
            if args.start == "now" and args.rate:  # event time keeps pace with the wall clock
                per_prediction = 2 - args.label_missing + args.malformed  # messages per prediction
                interval = max(1, round(1000 * len(models) * per_prediction / args.rate))
        if interval < 1:
            raise ScenarioError("--interval-ms must be >= 1")
        sim = Simulation(models=models, events=events, seed=args.seed, start_ms=_start_ms(args.start),
                         interval_ms=interval, label_delay=args.label_delay,
                         label_missing=args.label_missing, malformed=args.malformed)
        for name in ("label_missing", "malformed"):
            if not 0 <= getattr(sim, name) <= 1:
                raise ScenarioError(f"--{name.replace('_', '-')} must be in [0, 1]")
        if events is None and all(m.drift_at is None for m in models) and args.duration is None:
            raise ScenarioError("give --events or --duration")
        from .simulate import parse_delay

        parse_delay(sim.label_delay)
    except ScenarioError as exc:
        return _fail(str(exc))
    config = load_config(args.config) if args.config else None
    sinks = []
    if args.out:
        sinks.append(FileSink(args.out, merged=args.merged))
    else:
        kafka = dict(config.kafka) if config else {}
        if args.bootstrap_servers:
            kafka["bootstrap.servers"] = args.bootstrap_servers
        kafka.setdefault("bootstrap.servers", os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "")
        if not kafka["bootstrap.servers"]:
            return _fail("simulate: no Kafka address; pass --bootstrap-servers, --config or --out DIR "
                         "(or set KAFKA_BOOTSTRAP_SERVERS)")
        predictions = args.predictions_topic or (config.topics.predictions if config else "predictions")
        labels = args.labels_topic or (config.topics.labels if config else "labels")
        problem = _check_topics(kafka, config, predictions, labels)
        if problem:
            return _fail(f"simulate: {problem}")
        sinks.append(KafkaSink(kafka, predictions, labels))
    summary = run(sim, sinks, rate=args.rate, duration=args.duration, progress=not args.no_progress)
    for line in summary.lines():
        print(line)
    if args.out:
        (Path(args.out) / "scenario.json").write_text(json.dumps(
            {"seed": sim.seed, "events_per_model": sim.events, "label_delay": sim.label_delay,
             "label_missing": sim.label_missing, "malformed": sim.malformed, **summary.as_dict()}, indent=2) + "\n")
        print(f"wrote {args.out}/predictions.jsonl, labels.jsonl, " + ("events.jsonl, " if args.merged else "")
              + "scenario.json")
    else:
        dropped = sinks[0].logger.dropped_total
        if dropped:
            print(f"simulate: {dropped} messages could not be delivered: {dict(sinks[0].logger.dropped)}",
                  file=sys.stderr)
            return 1
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from .backtest import BacktestError, run_backtest
    from .config import load_config

    if not (args.events or args.predictions or args.labels):
        return _fail("backtest: give --predictions and --labels, or --events")
    config = load_config(args.config)
    try:
        result = run_backtest(config, args.out, predictions=args.predictions, labels=args.labels, events=args.events,
                              every=args.every, report=not args.no_report, progress=not args.no_progress,
                              scenario=args.scenario)
    except BacktestError as exc:
        return _fail(f"backtest: {exc}")
    summary = result.summary()
    invalid = sum(summary["invalid"].values())
    print(f"backtest: {summary['lines']} lines, {summary['events']} events, {invalid} invalid, "
          f"{summary['triggers']} triggers; load {summary['seconds']['load']}s, replay "
          f"{summary['seconds']['replay']}s ({summary['lines_per_second']:,} lines/s)")
    for trigger in result.triggers:
        print(f"  {trigger.trigger_id}  at {trigger.triggered_at}  {trigger.metric}={trigger.value:.4g} "
              f"(threshold {trigger.threshold:g})")
    out = Path(args.out)
    print(f"wrote {out / 'triggers.jsonl'}, {out / 'timeline.csv'}, {out / 'summary.json'}"
          + ("" if args.no_report else f", {out / 'report.html'}"))
    return 0
