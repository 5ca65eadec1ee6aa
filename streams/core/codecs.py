"""Decode + validate the input events of the contract straight into typed records.

msgspec does the JSON parse and the type checks in one C pass; what JSON types cannot say
(timestamps with a zone, finite numbers, non-empty ids, scores in [0, 1]) is checked here.
Every rejection is an :class:`InvalidEvent` with a bounded ``reason`` (a metric label and
the DLQ reason code) and a ``detail`` naming the field and what was wrong.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import mmap
import operator
import re
import sys
from datetime import datetime
from typing import Annotated, Any, Callable, ClassVar, Iterable

import msgspec
import numpy as np

from retrain_trigger.events import TriggerEvent, decode_trigger, encode_trigger

__all__ = [
    "Prediction", "Label", "FeatureRow", "prediction_type", "unread_features", "TriggerEvent", "InvalidEvent",
    "REASONS", "DEFAULT_MAX_BYTES", "decode_prediction", "decode_label", "decode_many", "decode_buffer",
    "decode_trigger_event", "encode_prediction", "encode_label", "encode_trigger", "parse_timestamp",
    "format_timestamp",
]

DEFAULT_MAX_BYTES = 1 << 20

#: Every reason an input can be rejected for. Bounded on purpose: it is a Prometheus label.
REASONS = (
    "too_large", "invalid_utf8", "invalid_json", "not_an_object", "missing_field", "wrong_type",
    "non_finite", "bad_timestamp", "empty_id", "out_of_range", "unknown_model",
)

Scalar = int | float | str | bool | None

#: The largest integer a float can hold. JSON puts no limit on integers; statistics need floats.
LARGEST_INT = int(sys.float_info.max)


class InvalidEvent(ValueError):
    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Prediction(msgspec.Struct, omit_defaults=True):
    """One prediction. After decoding, ``timestamp`` is epoch milliseconds (int)."""

    prediction_id: str
    model_id: str
    timestamp: int | str
    prediction: int | float | str
    features: dict[str, Scalar] = {}
    model_version: str | None = None
    score: float | None = None
    probabilities: dict[str, float] | None = None
    segment: dict[str, str] | None = None


class Label(msgspec.Struct, omit_defaults=True):
    """The ground truth for one prediction. After decoding, ``timestamp`` is epoch ms."""

    prediction_id: str
    model_id: str
    label: int | float | str
    timestamp: int | str


class FeatureRow(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A prediction's ``features`` as a struct of the feature names a config watches (and those
    the events carry besides, see :func:`unread_features`), for :func:`decode_many`. A dict of
    20 features costs a decode about twice what a struct costs (each key inserted and hashed),
    and the Monitor reads them back as columns: here one ``attrgetter`` per row. Made per config
    by :func:`prediction_type`.

    An absent feature and a null read the same (None), as the Monitor reads the dict. Where
    the Monitor reads a dict it reads this the same way: ``get``.
    """

    #: feature name -> attribute (the names may be anything; the attributes are _0, _1, ...)
    attributes: ClassVar[dict[str, str]] = {}
    #: the names whose values are numbers or null, never a string or a bool
    numeric: ClassVar[frozenset[str]] = frozenset()

    def get(self, name: str) -> Scalar:
        attribute = self.attributes.get(name)
        return None if attribute is None else getattr(self, attribute)

    @classmethod
    def getter(cls, names: list[str]) -> Callable[["FeatureRow"], Any]:
        """``row -> (row.get(name) for name in names)`` as one C call (a value, not a tuple, for one name).
        All the row's names in order (one model watching its numbers, the usual config) read as
        ``astuple``, which copies the fields in one call instead of looking each name up."""
        if len(names) > 1 and list(names) == list(cls.attributes):
            return msgspec.structs.astuple
        return operator.attrgetter(*(cls.attributes[name] for name in names))


#: The last millisecond of year 9999: the latest time an ISO-8601 timestamp (and Python's datetime)
#: can say. Bounding epoch milliseconds by it keeps every timestamp printable in a trigger and
#: twice it well inside the int64 merge keys of the engine's aligner: a larger one would stop the
#: engine each time the message is read again, instead of going to the dead-letter topic.
MAX_EPOCH_MS = 253_402_300_799_999


# -- the batch decoder's types -------------------------------------------------------------------
# decode_many parses a chunk with these: the contract's checks that JSON types cannot say, said
# as msgspec constraints wherever one is no looser than the one-line check, so the parse makes
# them in C. A chunk they reject is decoded line by line, which gives each line its reason.
_Id = Annotated[str, msgspec.Meta(min_length=1)]  # all whitespace: checked after the parse
_EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]  # an ISO-8601 string goes line by line
_Int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]  # beyond: line by line
_Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class _CheckedPrediction(Prediction):
    prediction_id: _Id
    model_id: _Id
    timestamp: _EpochMs
    prediction: _Int64 | float | str
    score: _Probability | None = None
    probabilities: dict[str, _Probability] | None = None


class _CheckedLabel(Label):
    prediction_id: _Id
    model_id: _Id
    label: _Int64 | float | str
    timestamp: _EpochMs


#: The types a decoded label has; ``type(event) in LABEL_TYPES`` is the quick form of
#: ``isinstance(event, Label)`` (which walks the class's bases for the subclass).
LABEL_TYPES = frozenset({Label, _CheckedLabel})


def prediction_type(numeric: Iterable[str], other: Iterable[str]) -> type[Prediction]:
    """A :class:`Prediction` whose ``features`` is a :class:`FeatureRow` of these names: numbers
    (or null) for ``numeric``, any scalar for ``other``. A features object with another name,
    or a non-number for a numeric one, fails to decode with it; :func:`decode_many` then
    decodes the lines as plain :class:`Prediction` (so rejections are always the same)."""
    other = list(dict.fromkeys(other))
    names = list(dict.fromkeys([*numeric, *other]))
    numbers = frozenset(names) - frozenset(other)
    attributes = {name: f"_{i}" for i, name in enumerate(names)}
    fields = [(attributes[name], (int | float | None) if name in numbers else Scalar, None) for name in names]
    row = msgspec.defstruct("WatchedFeatures", fields, bases=(FeatureRow,),
                            rename={attribute: name for name, attribute in attributes.items()})
    row.attributes, row.numeric = attributes, numbers
    prediction = msgspec.defstruct("WatchedPrediction", [("features", row, msgspec.field(default_factory=row))],
                                   bases=(_CheckedPrediction,))
    prediction.row = row
    return prediction


class _FeaturesOnly(msgspec.Struct):
    features: dict[str, Scalar] = {}


_features_decoder = msgspec.json.Decoder(_FeaturesOnly)


def unread_features(kind: type[Prediction], line: bytes) -> list[str]:
    """The names in this line's ``features`` that ``kind`` (from :func:`prediction_type`) has no
    field for: ``prediction_type(numeric, [*other, *names])`` decodes such lines into a struct
    too. [] when it has them all, or when the line has no valid features to learn from."""
    try:
        features = _features_decoder.decode(line).features
    except (msgspec.ValidationError, msgspec.DecodeError):
        return []
    return [name for name in features if name not in kind.row.attributes]


_prediction_decoder = msgspec.json.Decoder(Prediction)
_label_decoder = msgspec.json.Decoder(Label)
_encoder = msgspec.json.Encoder()


def parse_timestamp(value: int | str, field: str = "timestamp") -> int:
    """ISO-8601 with a zone, or epoch milliseconds, to epoch milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise InvalidEvent("bad_timestamp", f"{field}: {value!r} is not ISO-8601 or epoch milliseconds") from None
        if parsed.tzinfo is None:
            raise InvalidEvent("bad_timestamp", f"{field}: {value!r} has no time zone (add Z or +00:00)")
        ms = int(parsed.timestamp() * 1000)
    if not 0 <= ms <= MAX_EPOCH_MS:  # a zone can move a time of year 9999 past it, or one of 0001 below 0
        raise InvalidEvent("bad_timestamp", f"{field}: {value!r} is not between 1970-01-01T00:00:00Z and "
                                            f"9999-12-31T23:59:59.999Z (epoch milliseconds 0 … {MAX_EPOCH_MS})")
    return ms


def format_timestamp(ms: int) -> str:
    """Epoch milliseconds to ISO-8601 UTC with millisecond precision and a Z."""
    seconds, millis = divmod(ms, 1000)
    return datetime.utcfromtimestamp(seconds).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _decode(data: bytes, decoder: msgspec.json.Decoder, max_bytes: int):
    if len(data) > max_bytes:
        raise InvalidEvent("too_large", f"message is {len(data)} bytes; the limit is {max_bytes}")
    try:
        # msgspec skips unknown fields without checking their UTF-8; the contract says UTF-8.
        # ASCII (the usual event) is UTF-8: isascii() checks that without building a str.
        if not (type(data) is bytes and data.isascii()):
            data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("invalid_utf8", f"byte {exc.start} is not valid UTF-8") from None
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _validation_error(_name_keys(str(exc), data)) from None
    except msgspec.DecodeError as exc:
        raise _non_finite(data) or InvalidEvent("invalid_json", str(exc)) from None


def _non_finite(data: bytes) -> InvalidEvent | None:
    """``non_finite`` naming the field, when what msgspec could not parse is JSON but for a NaN or
    an infinity (Python's json writes them as ``NaN``, ``Infinity``); None when it is not. Only
    lines that failed to parse get here."""
    if b"NaN" not in data and b"Infinity" not in data:
        return None
    found: list[str] = []

    def constant(name: str) -> float:
        found.append(name)
        return float(name.lower().replace("infinity", "inf"))

    try:
        value = json.loads(bytes(data), parse_constant=constant)
    except (ValueError, RecursionError):
        return None
    if not found:
        return None
    path = _non_finite_path(value) or "a value"
    # null or leaving it out fixes an optional field, not the required prediction or label
    fix = "send a finite number or a class" if path in ("prediction", "label") else "send null, or leave it out"
    return InvalidEvent("non_finite", f"{path} is {found[0]}; JSON has no NaN or infinity ({fix})")


def _non_finite_path(value: Any, path: str = "") -> str | None:
    """Where the first NaN or infinity in a decoded JSON value is: ``features.age``, ``x[2]``."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite_path(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key)
        if found is not None:
            return found
    return None


#: msgspec's names of JSON types, as in "got `array`"
_JSON_TYPES = {"object": dict, "array": list, "str": str, "int": int, "float": float, "bool": bool, "null": type(None)}


def _name_keys(message: str, data: bytes) -> str:
    """msgspec's error with the keys it leaves out filled in: a value of the wrong type in a
    table of free keys is ``at `$.features[...]```; which feature is what the producer needs to
    know. Found in the parsed line (only lines that failed get here): the first value under that
    path whose type is the one msgspec got."""
    match = re.fullmatch(r"(Expected .*, got `(\w+)`) - at `\$(.*\[\.\.\.\].*)`", message, re.S)
    if not match or match.group(2) not in _JSON_TYPES:
        return message
    try:
        value = json.loads(bytes(data))
    except (ValueError, RecursionError):
        return message
    got = _JSON_TYPES[match.group(2)]
    path = _find_path(value, re.findall(r"\.(\w+)|\[(\d+|\.\.\.)\]", match.group(3)), got)
    return f"{match.group(1)} - at `${path}`" if path is not None else message


def _find_path(value: Any, steps: list[tuple[str, str]], got: type) -> str | None:
    """The path (``.features.age``) along ``steps`` (field, or index, or ``...`` for any key) to a
    value of type ``got``; None if there is none."""
    if not steps:
        return "" if type(value) is got else None
    (field, index), rest = steps[0], steps[1:]
    if field:
        found = _find_path(value.get(field), rest, got) if isinstance(value, dict) else None
        return None if found is None else f".{field}{found}"
    if index != "...":
        ok = isinstance(value, list) and int(index) < len(value)
        found = _find_path(value[int(index)], rest, got) if ok else None
        return None if found is None else f"[{index}]{found}"
    for key, item in value.items() if isinstance(value, dict) else ():
        found = _find_path(item, rest, got)
        if found is not None:
            return f".{key}{found}" if re.fullmatch(r"\w+", key) else f"[{json.dumps(key)}]{found}"
    return None


def _validation_error(message: str) -> InvalidEvent:
    if message.startswith("Expected `object`") and " - at `$" not in message:
        return InvalidEvent("not_an_object", f"the event must be a JSON object; {message}")
    if message.startswith("Object missing required field"):
        return InvalidEvent("missing_field", message)
    if message.startswith("Number out of range"):
        return InvalidEvent("non_finite", message)
    return InvalidEvent("wrong_type", message)


def _require_id(value: str, field: str) -> None:
    if not value or value.isspace():
        raise InvalidEvent("empty_id", f"{field} must be a non-empty string")


def _require_float_range(value: int | float | str, field: str) -> None:
    if type(value) is int and not -LARGEST_INT <= value <= LARGEST_INT:
        raise InvalidEvent("non_finite", f"{field} is an integer beyond the range of a float")


def _require_probability(value: float, field: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidEvent("out_of_range", f"{field} is {value}; a probability must be in [0, 1]")


def decode_prediction(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Prediction:
    event: Prediction = _decode(data, _prediction_decoder, max_bytes)
    _require_id(event.prediction_id, "prediction_id")
    _require_id(event.model_id, "model_id")
    event.timestamp = parse_timestamp(event.timestamp)
    _require_float_range(event.prediction, "prediction")
    # No finite checks on the numbers: JSON has no NaN or Infinity literal (a line with one fails
    # to parse and gets non_finite from _non_finite) and msgspec rejects a number that overflows
    # to inf ("Number out of range" -> non_finite), so every decoded float is finite.
    if event.score is not None:
        _require_probability(event.score, "score")
    if event.probabilities:
        for cls, p in event.probabilities.items():
            _require_probability(p, f"probabilities.{cls}")
    return event


def decode_label(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Label:
    event: Label = _decode(data, _label_decoder, max_bytes)
    _require_id(event.prediction_id, "prediction_id")
    _require_id(event.model_id, "model_id")
    event.timestamp = parse_timestamp(event.timestamp)
    _require_float_range(event.label, "label")
    return event


#: Lines :func:`decode_many` checks together: a bad line sends only its chunk down the slow path.
DECODE_CHUNK = 4096


def decode_many(lines: list[bytes], labels: bool = False, max_bytes: int = DEFAULT_MAX_BYTES,
                predictions: type[Prediction] | None = None,
                lines_checked: bool = False) -> list[Prediction | Label | InvalidEvent]:
    """``decode_prediction`` (or ``decode_label``) of every line, a rejection returned in its
    place instead of raised. The usual chunk of lines (every line valid, epoch-ms timestamps)
    is decoded with the contract's checks as msgspec constraints and a pass or two over the
    whole chunk; any doubt and each line goes through the one-line decoder, so the results are
    always the same as one by one.

    ``predictions`` (from :func:`prediction_type`) decodes a chunk's features into a
    :class:`FeatureRow` when every line's features fit it; else they are dicts, as one by one.

    ``lines_checked``: the caller has made sure that every line is ASCII ``bytes`` of at most
    ``max_bytes`` (the backtest checks a whole file's bytes at once, which is cheaper than
    checking line by line)."""
    kinds = (_CheckedLabel,) if labels else tuple(dict.fromkeys([predictions or _CheckedPrediction, _CheckedPrediction]))
    out: list[Prediction | Label | InvalidEvent] = []
    for start in range(0, len(lines), DECODE_CHUNK):
        chunk = lines[start:start + DECODE_CHUNK]
        events = _decode_valid_batch(chunk, kinds, max_bytes, lines_checked)
        if events is None:
            events = map(_decode_or_reject, chunk, itertools.repeat(labels), itertools.repeat(max_bytes))
        out.extend(events)
    return out


def _decode_or_reject(line: bytes, labels: bool, max_bytes: int) -> Prediction | Label | InvalidEvent:
    try:
        return decode_label(line, max_bytes) if labels else decode_prediction(line, max_bytes)
    except InvalidEvent as exc:
        return exc


@functools.lru_cache(maxsize=32)
def _decoder(kind: type) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(kind)


def _decode_valid_batch(lines: list[bytes], kinds: tuple[type, ...], max_bytes: int,
                        lines_checked: bool) -> list | None:
    """The events if every line passes every check of the one-line decoder, else None. Each
    kind is tried in turn while the lines' features do not fit it."""
    if not lines or not (lines_checked or _ascii_bytes_within(lines, max_bytes)):
        return None
    for kind in kinds:
        try:
            events = list(map(_decoder(kind).decode, lines))
            break
        except msgspec.ValidationError as exc:
            if "at `$.features" not in str(exc):
                return None  # the contract, not the struct: the lines go one by one
        except msgspec.DecodeError:
            return None
    else:
        return None
    return events if _ids_hold(events) else None


def _ascii_bytes_within(lines: list[bytes], max_bytes: int) -> bool:
    try:
        return all(map(bytes.isascii, lines)) and max(map(len, lines)) <= max_bytes
    except TypeError:  # not bytes (bytes.isascii takes nothing else)
        return False


def _ids_hold(events: list[Prediction | Label]) -> bool:
    """No id is all whitespace (the checked types have made sure none is empty). A batch has
    few models: their ids are checked once each."""
    model_ids = set(map(operator.attrgetter("model_id"), events))
    return not any(map(str.isspace, model_ids)) \
        and not any(map(str.isspace, map(operator.attrgetter("prediction_id"), events)))


def decode_buffer(data: bytes | mmap.mmap, labels: bool = False, max_bytes: int = DEFAULT_MAX_BYTES,
                  predictions: type[Prediction] | None = None) -> list[Prediction | Label] | None:
    """:func:`decode_many` of ``data``'s lines in one msgspec call, when the usual holds: every
    line a valid event of the batch decoder's first type, ASCII, within ``max_bytes``, written
    ``{...}`` (no blank line, no CR, no space around). Else None, and the caller splits the
    lines for :func:`decode_many`. A file decoded this way is never split into lines, and
    needs no call per line. ``data`` may be a file mapped to memory (the backtest: no copy to
    read it).

    ``decode_lines`` reads a stream of JSON values, not lines: it takes two values on one line,
    or one value over two lines. With every line starting with ``{`` and ending with ``}``,
    each newline is a boundary between values (after a closing ``}``, a ``{`` only begins the
    next value), so with as many values as lines each line holds exactly one."""
    kind = _CheckedLabel if labels else (predictions or _CheckedPrediction)
    if not len(data) or data.find(b"\r") >= 0:
        return None
    view = np.frombuffer(data, dtype=np.uint8)
    ends, highest = _newlines(view)
    if highest >= 0x80:
        return None  # not ASCII
    if view[-1] != ord("\n"):
        ends = np.append(ends, len(view))  # the last line, without a newline
    starts = np.concatenate(([0], ends[:-1] + 1))
    if (ends - starts).max() > max_bytes or not ((view[starts] == ord("{")).all()
                                                 and (view[ends - 1] == ord("}")).all()):
        return None  # a blank line ends at its start, and fails the second test
    try:
        events = _decoder(kind).decode_lines(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return events if len(events) == len(ends) and _ids_hold(events) else None


def _newlines(view: np.ndarray, step: int = 1 << 20) -> tuple[np.ndarray, int]:
    """The offsets of the newlines in these bytes, and the highest byte; a megabyte at a time
    (no file-sized temporary)."""
    found, highest = [np.empty(0, dtype=np.intp)], 0
    for start in range(0, len(view), step):
        chunk = view[start:start + step]
        found.append(np.flatnonzero(chunk == ord("\n")) + start)
        highest = max(highest, int(chunk.max()))
    return np.concatenate(found), highest


def decode_trigger_event(data: bytes) -> TriggerEvent:
    try:
        return decode_trigger(data)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent("invalid_json", str(exc)) from None


def encode_prediction(event: Prediction) -> bytes:
    return _encoder.encode(event)


def encode_label(event: Label) -> bytes:
    return _encoder.encode(event)
