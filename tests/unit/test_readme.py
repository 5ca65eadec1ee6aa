"""README.md stays true: its configs load, its quick start calls the producer as it is, and its
configuration reference names every config key there is and no other."""
from __future__ import annotations

import ast
import inspect
import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from streams.client.producer import PredictionLogger
from streams.core.config import Config, Drift, Engine, Estimation, Metrics, Model, Topics, Window, parse_config

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()

#: keys a user never writes: set by the engine, or refused with a pointer to their replacement
NOT_USER_KEYS = {"models[].registered", "models[].drift.ert"}


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def section(heading: str) -> str:
    return README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("block", [b for b in fenced("toml") if "[[models]]" in b])
def test_every_model_config_in_the_readme_loads(block, tmp_path):
    raw = tomllib.loads(block)
    raw.setdefault("kafka", {"bootstrap.servers": "127.0.0.1:19092"})
    config = parse_config(raw, "README.md")
    assert config.models


def test_quick_start_calls_the_producer_as_it_is():
    feed = next(b for b in fenced("python") if "PredictionLogger(" in b and "log_label" in b)
    tree = ast.parse(feed)  # it is valid Python
    methods = {"log_prediction": PredictionLogger.log_prediction, "log_label": PredictionLogger.log_label}
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods:
            signature = inspect.signature(methods[node.func.attr])
            signature.bind(None, *node.args, **{k.arg: None for k in node.keywords})  # raises on a bad call
            called.add(node.func.attr)
    assert called == set(methods)


def documented_keys() -> set[str]:
    keys = set()
    for cell in re.findall(r"^\| ([^|]+) \|", section("Configuration reference"), flags=re.M):
        names = re.findall(r"`([a-z_\[\]]+(?:\.[a-z_<>]+)*)`|`\.([a-z_]+)`", cell)
        first = None
        for full, short in names:
            if full:
                first = full
                keys.add(full)
            elif first:  # `.labels` after `topics.predictions`: the same table
                keys.add(first.rsplit(".", 1)[0] + "." + short)
    return keys


def config_keys() -> set[str]:
    tables = {"topics": Topics, "engine": Engine, "metrics": Metrics, "models[]": Model,
              "models[].window": Window, "models[].drift": Drift}
    keys = set()
    for prefix, struct in tables.items():
        for field in msgspec.structs.fields(struct):
            if struct is Model and field.name in ("window", "drift"):
                continue  # documented by their keys
            keys.add(f"{prefix}.{field.name}")
    keys.discard("models[].drift.params")
    keys.add("models[].drift.params.<kind>")
    assert {f.name for f in msgspec.structs.fields(Estimation)} == {"window", "reference_size", "refit_every"}
    assert {f.name for f in msgspec.structs.fields(Config)} == {"kafka", "topics", "engine", "metrics", "models",
                                                                "source"}
    return keys - NOT_USER_KEYS


def test_the_configuration_reference_names_every_key():
    documented = {k for k in documented_keys() if not k.startswith("[kafka]")}
    missing = config_keys() - documented
    assert not missing, f"config keys the README's reference does not list: {sorted(missing)}"
    unknown = {k for k in documented if "." in k} - config_keys()
    assert not unknown, f"keys the README's reference lists that the config does not have: {sorted(unknown)}"
