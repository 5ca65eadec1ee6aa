"""The model configs the engine and backtest benchmarks share.

``realistic`` is the config the speed targets are stated for: per model, PSI and KS on every
numeric feature (the default window, reference and false-alarm budget), accuracy over 1000
labelled pairs, ADWIN on the error stream, an accuracy rule and a drift rule on every feature
statistic, evaluated every 50 (the default). ``psi`` is the lighter one the engine benchmark
used before: PSI on every feature, no drift rule.
"""
from __future__ import annotations

import json

FEATURES = [f"f{i:02d}" for i in range(20)]
#: keyed by model, the partitioner (murmur2) puts these on partitions 2, 1 and 0 of three: one
#: model a partition, so ``driftline run --workers 3`` gives each worker one (``m0``, ``m1``,
#: ``m2`` would put two models on one partition and none on another)
MODELS = ["m0", "m2", "m4"]


def model_toml(model_id: str, features: list[str], kind: str = "realistic", label_ttl_seconds: float | None = None) -> str:
    """One ``[[models]]`` table: ``realistic`` or ``psi`` (see the module docstring), with the
    model's ``label_ttl_seconds`` if given (else the default)."""
    q = json.dumps
    if kind == "realistic":
        drift = '[models.drift]\nnumeric = ["psi", "ks"]\n'
        drift_rule = """
[[models.rules]]
name = "feature-drift"
cooldown_seconds = 86400
conditions = [{statistic = "feature.*", fired = true}]
"""
    elif kind == "psi":
        drift = ('[models.drift]\nnumeric = ["psi"]\ncategorical = []\nprediction = []\nwindow = 1000\n'
                 'reference_size = 1000\n')
        drift_rule = ""
    else:
        raise ValueError(f"unknown config kind {kind!r}")
    return f"""
[[models]]
id = {q(model_id)}
metrics = ["accuracy"]
{"" if label_ttl_seconds is None else f"label_ttl_seconds = {label_ttl_seconds}"}
[models.features]
numeric = {q(features)}
[models.window]
kind = "count"
size = 1000
{drift}
[[models.detectors]]
kind = "adwin"
[[models.rules]]
name = "accuracy-floor"
min_samples = 500
conditions = [{{statistic = "accuracy", op = "<", threshold = 0.8}}]
{drift_rule}"""


def models_toml(models: list[str] = MODELS, features: list[str] = FEATURES, kind: str = "realistic") -> str:
    return "".join(model_toml(m, features, kind) for m in models)
