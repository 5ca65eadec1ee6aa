"""Decode + validate cost per prediction event: msgspec (the codec driftline uses) against
orjson with the same checks written in Python (the alternative a user would reach for).

    python benchmarks/codecs.py [--events 200000] [--repeats 5]

Both decoders accept and reject the same inputs (checked before timing); they run interleaved
(A B A B …), median of ``--repeats``, on the same pre-encoded messages with 20 features.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import interleaved_medians, progress, table  # noqa: E402

from streams.core.codecs import InvalidEvent, Prediction, decode_prediction, encode_prediction, parse_timestamp  # noqa: E402


def orjson_decode(data: bytes) -> dict:
    """The contract's checks by hand on orjson's dict: what msgspec does in its C pass."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", str(exc)) from None
    if not isinstance(event, dict):
        raise InvalidEvent("not_an_object", "the event must be a JSON object")
    for field in ("prediction_id", "model_id", "timestamp", "prediction"):
        if field not in event:
            raise InvalidEvent("missing_field", f"Object missing required field `{field}`")
    for field in ("prediction_id", "model_id"):
        if not isinstance(event[field], str):
            raise InvalidEvent("wrong_type", f"{field}: expected a string")
        if not event[field] or event[field].isspace():
            raise InvalidEvent("empty_id", f"{field} must be a non-empty string")
    stamp = event["timestamp"]
    if not isinstance(stamp, (int, str)) or isinstance(stamp, bool):
        raise InvalidEvent("wrong_type", "timestamp: expected int or str")
    event["timestamp"] = parse_timestamp(stamp)
    prediction = event["prediction"]
    if not isinstance(prediction, (int, float, str)) or isinstance(prediction, bool):
        raise InvalidEvent("wrong_type", "prediction: expected int, float or str")
    features = event.get("features", {})
    if not isinstance(features, dict):
        raise InvalidEvent("wrong_type", "features: expected an object")
    for name, value in features.items():
        if value is not None and not isinstance(value, (int, float, str, bool)):
            raise InvalidEvent("wrong_type", f"features.{name}: expected a scalar")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEvent("non_finite", f"features.{name}")
    score = event.get("score")
    if score is not None:
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise InvalidEvent("wrong_type", "score: expected a number")
        if not 0 <= score <= 1:
            raise InvalidEvent("out_of_range", "score")
    for field in ("model_version",):
        if field in event and event[field] is not None and not isinstance(event[field], str):
            raise InvalidEvent("wrong_type", f"{field}: expected a string")
    return event


def messages(n: int) -> list[bytes]:
    return [encode_prediction(Prediction(
        prediction_id=f"{i:016x}", model_id="churn", model_version="2026-11-01",
        timestamp="2026-11-23T10:15:02.120Z", prediction=i % 2, score=(i % 100) / 100,
        features={f"f{j}": (i * j) % 97 / 7 for j in range(20)}, segment={"region": "eu"})) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = messages(args.events)
    for raw in (data[0], b'{"prediction_id": "", "model_id": "m", "timestamp": 0, "prediction": 1}',
                b'{"prediction_id": "a", "model_id": "m", "timestamp": 0, "prediction": 1, "score": 2}'):
        outcomes = []
        for decode in (decode_prediction, orjson_decode):
            try:
                decode(raw)
                outcomes.append("ok")
            except InvalidEvent as exc:
                outcomes.append(exc.reason)
        assert outcomes[0] == outcomes[1], outcomes
    progress(f"decoding {args.events} events of {len(data[0])} bytes, {args.repeats} interleaved repeats")
    runs = {
        "msgspec decode + validate": lambda: [decode_prediction(m) for m in data],
        "orjson + checks in Python": lambda: [orjson_decode(m) for m in data],
    }
    medians = interleaved_medians(runs, args.repeats)
    base = medians["orjson + checks in Python"]
    rows = [[name, f"{seconds / args.events * 1e6:.2f}", f"{args.events / seconds:,.0f}", f"{base / seconds:.2f}"]
            for name, seconds in medians.items()]
    print(table(["decoder", "µs per event", "events/s", "speed vs orjson+checks"], rows))


if __name__ == "__main__":
    main()
