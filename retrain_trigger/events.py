"""The retrain-trigger event: what driftline publishes to ``retrain-triggers``.

The wire format is the contract in ``trigger.schema.json`` (and the README). ``trigger_id`` is deterministic
(``model:rule:sequence``), so consumers de-duplicate replays and retries by it.
"""
from __future__ import annotations

from typing import Any

import msgspec

SCHEMA_VERSION = 1


class TriggerWindow(msgspec.Struct, forbid_unknown_fields=True):
    start: str
    end: str
    count: int
    # Input offsets the window covers, per "topic:partition": [first, last], so a
    # retraining job can read exactly that data back.
    offsets: dict[str, list[int]] = {}


class TriggerEvent(msgspec.Struct, forbid_unknown_fields=True):
    trigger_id: str
    model_id: str
    rule: str
    metric: str
    value: float
    threshold: float
    window: TriggerWindow
    triggered_at: str
    model_version: str | None = None
    evidence: dict[str, Any] = {}
    severity: str = "warning"
    schema_version: int = SCHEMA_VERSION


def make_trigger_id(model_id: str, rule: str, sequence: int) -> str:
    """Deterministic id: the same model, rule and episode number always give the same id."""
    return f"{model_id}:{rule}:{sequence:06d}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TriggerEvent)


def encode_trigger(event: TriggerEvent) -> bytes:
    return _encoder.encode(event)


def decode_trigger(data: bytes) -> TriggerEvent:
    """Decode and validate a trigger; raises ``msgspec.ValidationError``/``DecodeError``."""
    return _decoder.decode(data)


def load_trigger_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a trigger event, shipped as trigger.schema.json."""
    import json
    from importlib import resources

    return json.loads(resources.files(__package__).joinpath("trigger.schema.json").read_text("utf-8"))
