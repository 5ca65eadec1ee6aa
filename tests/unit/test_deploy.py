"""The deploy/ files, docker-compose.yml and the Dockerfile, checked without Docker, Prometheus or Grafana.

- docker-compose.yml validates against the Compose Specification's JSON schema (the copy the
  check-jsonschema package ships, checked with jsonschema), and its wiring is consistent: startup order,
  healthchecks, mounted files that exist, the driftline config it mounts loads, the simulator's
  command parses with driftline's own CLI parser.
- The Grafana dashboard is the generator's output, uses the template variables, and names only
  metric families the exporter defines; so do the alert rules.
(``make test`` also runs ``promtool check config``, ``check rules`` and ``test rules``; the e2e
test runs every dashboard query against a real Prometheus.)
"""
from __future__ import annotations

import copy
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

from streams.core.config import load_config
from streams.runtime.exporter import Exporter

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "driftline.json").read_text())
ALERTS = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


def compose_errors(doc) -> list[str]:
    # Read the file from the installed distribution without importing the package (its CLI
    # imports depend on the click version).
    spec = metadata.distribution("check-jsonschema").locate_file(
        "check_jsonschema/builtin_schemas/vendor/compose-spec.json")
    schema = json.loads(Path(spec).read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def exported_families() -> set[str]:
    """Every sample name the exporter can produce (histograms: _bucket/_sum/_count)."""
    config = load_config(DEPLOY / "driftline" / "driftline.toml")
    names = set()
    for collector in Exporter(config).registry.collect():
        names.add(collector.name)
        if collector.type == "counter":
            names.add(collector.name + "_total")
        if collector.type == "histogram":
            names.update(collector.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bdriftline_[a-z_]+\b", expr))


# -- docker-compose.yml ---------------------------------------------------------------------
def test_compose_file_validates_against_the_compose_spec_schema():
    assert compose_errors(COMPOSE) == []


def test_the_schema_check_catches_mistakes():
    bad = copy.deepcopy(COMPOSE)
    bad["services"]["driftline"]["healthcheck"]["intervall"] = "5s"
    bad["services"]["kafka"]["depends_on"] = {"zookeeper": {"condition": "service_ready"}}
    errors = compose_errors(bad)
    assert any("intervall" in e for e in errors) and any("service_ready" in e for e in errors), errors


def test_compose_has_every_component_with_the_expected_images():
    assert set(SERVICES) == {"kafka", "kafka-init", "driftline", "simulator", "prometheus", "grafana"}
    assert SERVICES["kafka"]["image"] == SERVICES["kafka-init"]["image"] == "apache/kafka:4.1.1"
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and "CLUSTER_ID" in env  # KRaft, no ZooKeeper
    for name in ("driftline", "simulator"):
        assert SERVICES[name]["build"]["dockerfile"] == "Dockerfile"
        assert SERVICES[name]["image"] == "driftline:local"


def test_startup_order_and_healthchecks():
    def condition(service, dependency):
        return SERVICES[service]["depends_on"][dependency]["condition"]

    assert condition("kafka-init", "kafka") == "service_healthy"
    assert condition("driftline", "kafka-init") == "service_completed_successfully"
    assert condition("simulator", "driftline") == "service_healthy"
    assert condition("grafana", "prometheus") == "service_healthy"
    assert "driftline" in SERVICES["prometheus"]["depends_on"]
    for name in ("kafka", "driftline", "prometheus", "grafana"):  # the long-running services
        assert SERVICES[name]["healthcheck"]["test"], name
    for name, service in SERVICES.items():  # no cycles, no dangling names
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, (name, dependency)
    # every topic the driftline config names is created with matching partition counts
    script = "\n".join(SERVICES["kafka-init"]["command"])
    config = load_config(DEPLOY / "driftline" / "driftline.toml")
    assert f"for t in {config.topics.predictions} {config.topics.labels}; do" in script  # same partitions
    for topic in ("triggers", "dlq", "state"):
        assert f"--topic {getattr(config.topics, topic)} " in script, topic
    assert "cleanup.policy=compact" in script
    assert f"--partitions {config.topics.partitions}" in script


def test_bind_mounts_exist_and_match_what_the_services_read():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), (name, volume)
    prometheus_mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus_mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/driftline.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{dashboards_path}:ro" in SERVICES["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in SERVICES["grafana"]["volumes"]


def test_driftline_config_loads_and_prometheus_and_grafana_point_at_each_other():
    config = load_config(DEPLOY / "driftline" / "driftline.toml")
    assert config.kafka["bootstrap.servers"] == "kafka:9092"
    port = config.metrics.address.rsplit(":", 1)[1]
    assert config.metrics.address.startswith("0.0.0.0:")  # reachable from the prometheus container
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert jobs["driftline"]["static_configs"][0]["targets"] == [f"driftline:{port}"]
    assert f"{port}:{port}" in SERVICES["driftline"]["ports"]
    assert PROMETHEUS["rule_files"] == ["alerts.yml"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert datasource["datasources"][0]["type"] == "prometheus"


def test_simulator_command_parses_with_the_driftline_cli():
    from streams.cli.main import build_parser
    from streams.tools.simulate import parse_model_spec

    command = SERVICES["simulator"]["command"]
    args = build_parser().parse_args(command)
    assert args.command == "simulate" and args.config == "/etc/driftline/driftline.toml"
    config = load_config(DEPLOY / "driftline" / "driftline.toml")
    simulated = {parse_model_spec(spec).model_id for spec in args.model}
    assert simulated == {m.id for m in config.models}


def test_dockerfile_runs_the_cli_and_the_image_gets_the_packages():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["driftline"]' in dockerfile
    assert "EXPOSE 9464" in dockerfile
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, flags=re.M))
    for package in ("streams", "detectors", "retrain_trigger", "pyproject.toml"):
        assert package in copied or any(package in line for line in re.findall(r"^COPY .*$", dockerfile, re.M))
    ignored = (REPO / ".dockerignore").read_text().split()
    for path in ("streams", "detectors", "retrain_trigger", "pyproject.toml", "README.md"):
        assert path not in ignored
    assert ".venv" in ignored and ".git" in ignored


# -- Grafana --------------------------------------------------------------------------------
def test_committed_dashboard_is_the_generators_output():
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    assert (DEPLOY / "grafana/dashboards/driftline.json").read_text() == build_dashboard.render(), \
        "run python deploy/grafana/build_dashboard.py"


def all_targets():
    def walk(panels):
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for t in panel.get("targets", []):
                yield panel, t
    return list(walk(DASHBOARD["panels"]))


def test_dashboard_layout_variables_and_datasource():
    assert DASHBOARD["schemaVersion"] >= 36  # Grafana 9.3+; 39 is Grafana 10.4/11
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("model", "version", "segment"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for panel, t in all_targets():
        assert t["datasource"]["uid"] == "${datasource}", panel["title"]
    refs = [(p["title"], t["refId"]) for p, t in all_targets()]
    assert len(refs) == len(set(refs))


def test_dashboard_covers_the_issue_and_filters_by_model():
    titles = " | ".join(p["title"] for p in DASHBOARD["panels"]).lower()
    for needle in ("events/s", "label lag", "consumer lag", "performance", "feature drift", "p-value",
                   "change-detector", "triggers", "dead-letter"):
        assert needle in titles, needle
    annotations = [a for a in DASHBOARD["annotations"]["list"] if "expr" in a]
    assert annotations and "driftline_triggers_total" in annotations[0]["expr"]
    performance = [t["expr"] for p, t in all_targets() if "Performance" in p["title"]]
    assert any("driftline_rule_threshold" in e for e in performance)  # the threshold line
    model_scoped = {"driftline_performance", "driftline_feature_drift", "driftline_window_samples",
                    "driftline_change_detector_statistic", "driftline_triggers_total"}
    for _, t in all_targets():
        for name in metric_names(t["expr"]) & model_scoped:
            assert re.search(name + r'\{[^}]*model=~"\$model"', t["expr"]), t["expr"]


def test_dashboard_and_alerts_name_only_exported_metrics():
    exported = exported_families()
    used = {name for _, t in all_targets() for name in metric_names(t["expr"])}
    used |= {name for a in DASHBOARD["annotations"]["list"] for name in metric_names(a.get("expr", ""))}
    used |= {name for v in DASHBOARD["templating"]["list"] for name in metric_names(v.get("definition", ""))}
    assert used - exported == set()
    rules = [r for g in ALERTS["groups"] for r in g["rules"]]
    assert used  # sanity
    assert {name for r in rules for name in metric_names(r["expr"])} - exported == set()


def test_alert_rules_cover_the_issue():
    rules = {r["alert"]: r for g in ALERTS["groups"] for r in g["rules"]}
    for name in ("DriftlineDown", "DriftlineConsumerLagGrowing", "DriftlineDeadLetterRateHigh",
                 "DriftlineAccuracyBelowThreshold", "DriftlineFeatureDrift", "DriftlineNoLabels"):
        rule = rules[name]
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    tests = yaml.safe_load((DEPLOY / "prometheus/alerts.test.yml").read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert set(rules) <= tested


@pytest.mark.parametrize("path", ["deploy/grafana/provisioning/datasources/prometheus.yml",
                                  "deploy/grafana/provisioning/dashboards/driftline.yml"])
def test_grafana_provisioning_files_are_version_1(path):
    assert yaml.safe_load((REPO / path).read_text())["apiVersion"] == 1


def test_simulated_events_carry_every_feature_the_compose_config_watches(tmp_path):
    """The simulator, run as compose runs it but into files, emits the features driftline watches."""
    from streams.cli.main import main

    command = SERVICES["simulator"]["command"]
    argv = [a for a in command if a not in ("--no-progress",)]
    # the compose run is endless (--duration) and paced (--rate); here: 300 events into files
    for flag in ("--duration", "--rate", "--config", "--start"):
        i = argv.index(flag)
        del argv[i:i + 2]
    assert main(argv + ["--events", "300", "--out", str(tmp_path), "--no-progress"]) == 0
    config = load_config(DEPLOY / "driftline" / "driftline.toml")
    seen: dict[str, set[str]] = {}
    for line in (tmp_path / "predictions.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # --malformed lines
        if isinstance(event, dict) and isinstance(event.get("features"), dict):
            seen.setdefault(event.get("model_id"), set()).update(event["features"])
    for model in config.models:
        watched = set(model.features.numeric) | set(model.features.categorical)
        assert watched <= seen[model.id], (model.id, watched - seen[model.id])


def test_healthchecks_look_for_what_the_exporter_serves():
    from prometheus_client import generate_latest

    exporter = Exporter(load_config(DEPLOY / "driftline" / "driftline.toml"))
    exporter.up.set(1)
    served = generate_latest(exporter.registry).decode()
    probe = "'driftline_engine_up 1.0'"
    assert probe.strip("'") in served
    assert probe in " ".join(SERVICES["driftline"]["healthcheck"]["test"])
    assert probe in (REPO / "Dockerfile").read_text()
