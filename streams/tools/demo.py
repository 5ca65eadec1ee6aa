"""``make demo``: driftline end to end on a real broker, in under a minute.

1. writes a demo config with two models and starts ``driftline run`` on it;
2. runs the simulator (``streams.tools.simulate``) through the PredictionLogger:
   * ``loans`` — a Hoeffding tree trained on Agrawal's loan concept 0; at prediction 3000 the
     concept switches abruptly to function 2 (the accuracy falls);
   * ``sensors`` — a Hoeffding tree on SEA; at prediction 3000 the inputs ``x0`` and ``x1``
     shift down by 1σ (covariate shift: same concept, inputs from elsewhere);
3. prints each retrain trigger as it arrives on Kafka, with its evidence;
4. replays the same events (also written to files) with ``driftline backtest`` and leaves its
   report; prints where to look and shuts the engine down. Exit 0 when both models triggered.

``sensors`` is watched by a feature-drift rule (KS and PSI per input, each past its threshold
calibrated to the default false-alarm budget): its accuracy barely moves, its inputs do. Needs ``KAFKA_BOOTSTRAP_SERVERS`` (``make demo`` starts the local broker and sets it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

EVENTS = 6000          # predictions per model
DRIFT_AT = 3000        # prediction index where the drift starts
RATE = 10_000          # messages per second into Kafka (predictions + labels)
WAIT_SECONDS = 45

BASE = """
[kafka]
"bootstrap.servers" = "{bootstrap}"

[topics]
predictions = "demo-{run}-predictions"
labels = "demo-{run}-labels"
triggers = "demo-{run}-retrain-triggers"
dlq = "demo-{run}-dlq"
state = "demo-{run}-state"
partitions = 3

[engine]
group_id = "demo-{run}"
commit_every_ms = 300
poll_timeout_ms = 100

[metrics]
address = "127.0.0.1:{metrics_port}"

[[models]]
id = "loans"
window = {{ kind = "count", size = 500 }}
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 300
  cooldown_seconds = 3600
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.80
"""

#: sensors, watched on its inputs: KS and PSI per feature (window 1000 vs its first 1000 values),
#: each past its threshold calibrated to the default false-alarm budget (one false alarm per
#: 1,000,000 predictions for all of them together) fires the rule
SENSORS_DRIFT = """
[[models]]
id = "sensors"
window = {{ kind = "count", size = 1000 }}
features = {{ numeric = ["x0", "x1", "x2"] }}
drift = {{ numeric = ["ks", "psi"], window = 1000, reference_size = 1000 }}
  [[models.rules]]
  name = "input-drift"
  min_samples = 500
  cooldown_seconds = 3600
    [[models.rules.conditions]]
    statistic = "feature.*"
    fired = true
"""

MODELS = [
    f"id=loans,generator=agrawal,learner=hoeffding,drift=abrupt,at={DRIFT_AT}",
    f"id=sensors,generator=sea,learner=hoeffding,drift=covariate,at={DRIFT_AT},shift=x0:-1|x1:-1",
]


def format_trigger(t: dict) -> str:
    """A trigger event as a few readable lines."""
    window = t.get("window", {})
    evidence = dict(t.get("evidence") or {})
    offsets = ", ".join(f"{k} [{v[0]}..{v[1]}]" for k, v in window.get("offsets", {}).items())
    conditions = evidence.pop("conditions", None) or []
    what = []
    for c in conditions:
        if c.get("fired") is not None and c.get("op") is None:
            matched = ", ".join(c.get("matched") or []) or c["statistic"]
            what.append(f"{c['statistic']} fired ({matched})")
        else:
            what.append(f"{c.get('statistic')} = {c.get('value', t['value']):.4g} {c.get('op', '')} "
                        f"{c.get('threshold', t['threshold']):g} (n={c.get('n')})")
    if not what:
        what = [f"{t['metric']} = {t['value']:.4g} (threshold {t['threshold']:g})"]
    # drift and estimate rules are judged on the predictions' clock: their window counts predictions
    unit = "predictions" if evidence.get("source") in ("drift", "estimated") else "labelled predictions"
    lines = [f"TRIGGER {t['trigger_id']}  ({t.get('severity', 'warning')})",
             f"  model {t['model_id']} {t.get('model_version') or ''}, rule {t['rule']}: " + "; ".join(what),
             f"  window: {window.get('count')} {unit}, {window.get('start')} .. {window.get('end')}"
             + (f", offsets {offsets}" if offsets else ""),
             f"  triggered at (event time) {t.get('triggered_at')}"]
    for f in evidence.pop("top_features", None) or []:
        p = f.get("p_value")
        lines.append(f"  drifted feature {f.get('feature')}: {f.get('kind')} = {f.get('value', 0):.4g}"
                     + (f", p = {p:.2g}" if p is not None else "") + f", n = {f.get('n')}"
                     + (" (alarm)" if f.get("fired") else ""))
    for key, value in evidence.items():
        if value is None or value == [] or value == {} or key in ("statistic", "op", "n", "combine", "distance"):
            continue  # empty, or already on the lines above
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
            value = value if len(value) < 160 else value[:157] + "..."
        lines.append(f"  evidence.{key}: {value}")
    return "\n".join(lines)


class TriggerWatcher(threading.Thread):
    """Reads the triggers topic (read_committed) and prints each trigger as it arrives."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-reader-{uuid.uuid4().hex[:6]}",
                                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        self.consumer.subscribe([topic])
        self.triggers: list[dict] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                trigger = json.loads(msg.value())
                with self.lock:
                    self.triggers.append(trigger)
                sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "")
                print(format_trigger(trigger), flush=True)
        finally:
            self.consumer.close()


def _wait_for_topics(bootstrap: str, topics: list[str], engine: subprocess.Popen, log: Path, timeout=30) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.poll() is not None:
            raise RuntimeError(f"driftline run exited with {engine.returncode}; see {log}")
        if set(topics) <= set(admin.list_topics(timeout=5).topics):
            return
        time.sleep(0.2)
    raise RuntimeError(f"driftline run did not create its topics within {timeout}s; see {log}")


def _metrics_lines(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return []
    wanted = ("driftline_performance{", "driftline_triggers_total{", "driftline_feature_drift{",
              "driftline_events_invalid_total{")
    return [line for line in text.splitlines() if line.startswith(wanted)]


def main() -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("demo: set KAFKA_BOOTSTRAP_SERVERS (make demo does)", file=sys.stderr)
        return 2
    from streams.tools.backtest import run_backtest
    from streams.core.config import load_config
    from streams.tools.kafka_local import _free_port
    from streams.tools.simulate import FileSink, KafkaSink, Simulation, parse_model_spec, run

    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    metrics_port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    base = BASE.format(bootstrap=bootstrap, run=run_id, metrics_port=metrics_port)
    sensors = SENSORS_DRIFT.format()
    sensors_rule = ("KS or PSI of an input (x0, x1, x2) against its first 1000 values past its threshold "
                    "(calibrated to the default false-alarm budget)")
    config_path = work / "driftline.toml"
    config_path.write_text(base + sensors)
    config = load_config(config_path)
    topics = config.topics
    log_path = work / "engine.log"
    print(f"demo: config {config_path}")
    print(f"demo: starting driftline run (log: {log_path})")
    engine = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "run", "--config", str(config_path)],
                              stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    watcher = None
    status = 1
    try:
        _wait_for_topics(bootstrap, [topics.predictions, topics.labels, topics.triggers], engine, log_path)
        watcher = TriggerWatcher(bootstrap, topics.triggers)
        watcher.start()
        print("demo: models and rules:\n  loans   (Hoeffding tree, Agrawal): accuracy < 0.80 over the last 500 "
              f"labelled predictions\n  sensors (Hoeffding tree, SEA): {sensors_rule}")
        sim = Simulation(models=[parse_model_spec(m) for m in MODELS], events=EVENTS, seed=7,
                         start_ms=int(time.time() * 1000) - EVENTS * 1000, interval_ms=1000,
                         label_delay="exp:20", label_missing=0.02, malformed=0.002,
                         predictions_topic=topics.predictions, labels_topic=topics.labels)
        data = work / "events"
        sinks = [KafkaSink(bootstrap, topics.predictions, topics.labels), FileSink(data)]
        print(f"demo: simulating {EVENTS} predictions per model at {RATE} messages/s; drift at prediction {DRIFT_AT}")
        summary = run(sim, sinks, rate=RATE)
        for line in summary.lines():
            print(f"demo: {line}")
        (data / "scenario.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")

        print("demo: replaying the same events offline (driftline backtest) …")
        result = run_backtest(config, work / "backtest", predictions=data / "predictions.jsonl",
                              labels=data / "labels.jsonl", progress=False)
        expected = {t.trigger_id for t in result.triggers}
        deadline = time.monotonic() + WAIT_SECONDS
        both_since = None
        while time.monotonic() < deadline:
            with watcher.lock:
                live = {t["trigger_id"] for t in watcher.triggers}
            if expected <= live:
                break
            if {t.split(":", 1)[0] for t in live} >= {"loans", "sensors"}:
                both_since = both_since or time.monotonic()
                if time.monotonic() - both_since > 5:  # live took another (valid) order; enough
                    break
            time.sleep(0.3)
        time.sleep(1.0)  # let a straggler print
        with watcher.lock:
            live = {t["trigger_id"] for t in watcher.triggers}
        print(f"demo: {len(live)} trigger(s) live on {topics.triggers}: {', '.join(sorted(live)) or 'none'}")
        print(f"demo: the backtest of the same events gives {len(expected)}: {', '.join(sorted(expected)) or 'none'}"
              + ("" if expected == live else " (Kafka interleaves the two topics in its own order; the Monitor's "
                 "evaluation points follow it — see tests/integration/test_backtest_live.py)"))
        for line in _metrics_lines(metrics_port):
            print(f"  {line}")
        print(f"demo: metrics:         http://127.0.0.1:{metrics_port}/metrics (served until the demo stops the "
              f"engine; to keep one: driftline run --config {config_path})")
        print(f"demo: backtest report: {work / 'backtest' / 'report.html'}")
        print(f"demo: timeline + triggers: {work / 'backtest'}/timeline.csv, triggers.jsonl")
        print(f"demo: events replayable with: driftline backtest -c {config_path} -p {data}/predictions.jsonl "
              f"-l {data}/labels.jsonl -o OUT")
        triggered = {t.split(":", 1)[0] for t in live}
        missing = {"loans", "sensors"} - triggered
        if missing:
            print(f"demo: no trigger for {', '.join(sorted(missing))}; engine log: {log_path}", file=sys.stderr)
        status = 1 if missing else 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
    finally:
        if watcher is not None:
            watcher.stop.set()
            watcher.join(5)
        engine.send_signal(signal.SIGTERM)
        try:
            code = engine.wait(30)
        except subprocess.TimeoutExpired:
            engine.kill()
            code = engine.wait(10)
        print(f"demo: driftline run stopped (exit {code}); {time.monotonic() - started:.0f}s in all")
    if code != 0:  # the engine must stop cleanly on SIGTERM; anything else is a failed demo
        print(f"demo: driftline run exited {code}; engine log: {log_path}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
