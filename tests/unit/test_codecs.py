"""Every codec rule: what is accepted, what is rejected, and the reason given."""
from __future__ import annotations

import json

import pytest
from hypothesis import example, given, strategies as st

from streams.core.codecs import (
    REASONS, InvalidEvent, Prediction, decode_buffer, decode_label, decode_many, decode_prediction, decode_trigger_event,
    encode_label, encode_prediction, encode_trigger, format_timestamp, parse_timestamp,
)
from retrain_trigger.events import TriggerEvent, TriggerWindow, make_trigger_id

PREDICTION = {
    "prediction_id": "7f9c", "model_id": "churn", "model_version": "2024-06-01",
    "timestamp": "2026-11-23T10:15:02.120Z",
    "features": {"age": 41, "plan": "pro", "tenure_days": 381.5},
    "prediction": 1, "score": 0.83, "segment": {"region": "eu"},
}
LABEL = {"prediction_id": "7f9c", "model_id": "churn", "label": 0, "timestamp": 1795428902120}


def raw(obj) -> bytes:
    return json.dumps(obj).encode()


def with_(base: dict, **changes) -> bytes:
    event = {**base, **changes}
    return raw({k: v for k, v in event.items() if v is not ...})


def reason_of(fn, data: bytes) -> str:
    with pytest.raises(InvalidEvent) as info:
        fn(data)
    assert info.value.detail
    return info.value.reason


def test_contract_prediction_decodes_with_every_field():
    p = decode_prediction(raw(PREDICTION))
    assert p.prediction_id == "7f9c" and p.model_id == "churn" and p.model_version == "2024-06-01"
    assert p.timestamp == 1795428902120
    assert p.features == {"age": 41, "plan": "pro", "tenure_days": 381.5}
    assert p.prediction == 1 and p.score == 0.83 and p.segment == {"region": "eu"}


def test_contract_label_decodes():
    label = decode_label(raw(LABEL))
    assert (label.prediction_id, label.model_id, label.label, label.timestamp) == ("7f9c", "churn", 0, 1795428902120)


def test_minimal_prediction_needs_only_ids_time_and_prediction():
    p = decode_prediction(raw({"prediction_id": "a", "model_id": "m", "timestamp": 0, "prediction": "cat"}))
    assert p.features == {} and p.score is None and p.probabilities is None


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert decode_prediction(with_(PREDICTION, added_later={"x": 1})).prediction_id == "7f9c"


def test_probabilities_map_is_accepted():
    p = decode_prediction(with_(PREDICTION, score=..., probabilities={"a": 0.2, "b": 0.8}))
    assert p.probabilities == {"a": 0.2, "b": 0.8}


@pytest.mark.parametrize("stamp, expected", [
    ("2026-11-23T10:15:02.120Z", 1795428902120),
    ("2026-11-23T11:15:02.120+01:00", 1795428902120),
    ("2026-11-23T10:15:02Z", 1795428902000),
    (1795428902120, 1795428902120),
    (0, 0),
])
def test_timestamps_iso_with_zone_or_epoch_ms(stamp, expected):
    assert parse_timestamp(stamp) == expected


@pytest.mark.parametrize("stamp", ["2026-11-23T10:15:02", "yesterday", "", -5, 253_402_300_800_000, 1 << 62, 1 << 64,
                                   "9999-12-31T23:59:59.999-05:00", "1969-12-31T23:59:59Z"])
def test_bad_timestamps_are_rejected(stamp):
    assert reason_of(decode_prediction, with_(PREDICTION, timestamp=stamp)) == "bad_timestamp"


def test_the_latest_epoch_ms_accepted_is_printable_and_a_batch_rejects_past_it_line_by_line():
    latest = with_(PREDICTION, timestamp=253_402_300_799_999)
    assert format_timestamp(decode_prediction(latest).timestamp) == "9999-12-31T23:59:59.999Z"
    got = decode_many([latest, with_(PREDICTION, timestamp=1 << 62)])
    assert got[0].timestamp == 253_402_300_799_999 and got[1].reason == "bad_timestamp"


def test_format_timestamp_round_trips():
    assert format_timestamp(1795428902120) == "2026-11-23T10:15:02.120Z"
    assert parse_timestamp(format_timestamp(1795428902120)) == 1795428902120


@pytest.mark.parametrize("data, reason", [
    (b"{" * 10, "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b'{"prediction_id": "a\xc3", "model_id": "m"}', "invalid_utf8"),
    (b"[1, 2]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b"42", "not_an_object"),
    (b"null", "not_an_object"),
])
def test_malformed_bytes(data, reason):
    assert reason_of(decode_prediction, data) == reason


@pytest.mark.parametrize("field", ["prediction_id", "model_id", "timestamp", "prediction"])
def test_missing_required_prediction_field(field):
    event = dict(PREDICTION)
    del event[field]
    with pytest.raises(InvalidEvent) as info:
        decode_prediction(raw(event))
    assert info.value.reason == "missing_field" and field in info.value.detail


@pytest.mark.parametrize("field", ["prediction_id", "model_id", "label", "timestamp"])
def test_missing_required_label_field(field):
    event = dict(LABEL)
    del event[field]
    assert reason_of(decode_label, raw(event)) == "missing_field"


@pytest.mark.parametrize("changes, where", [
    ({"prediction_id": 7}, "$.prediction_id"),
    ({"model_id": ["churn"]}, "$.model_id"),
    ({"features": [1, 2]}, "$.features"),
    ({"features": {"age": {"nested": 1}}}, "$.features"),
    ({"score": "high"}, "$.score"),
    ({"segment": {"region": 3}}, "$.segment"),
    ({"prediction": None}, "$.prediction"),
])
def test_wrong_types_name_the_field(changes, where):
    with pytest.raises(InvalidEvent) as info:
        decode_prediction(with_(PREDICTION, **changes))
    assert info.value.reason == "wrong_type"
    assert where.split(".")[1] in info.value.detail


@pytest.mark.parametrize("changes, where", [
    ({"features": {"age": 3, "tags": ["a"]}}, "at `$.features.tags`"),
    ({"features": {"age": 3, "zip code": {"n": 1}}}, 'at `$.features["zip code"]`'),
    ({"probabilities": {"yes": "0.2", "no": 0.8}}, "at `$.probabilities.yes`"),
    ({"segment": {"region": "eu", "tier": 3}}, "at `$.segment.tier`"),
])
def test_a_wrong_value_in_a_table_of_free_keys_names_its_key(changes, where):
    """msgspec says only `$.features[...]`; the producer needs to know which feature."""
    with pytest.raises(InvalidEvent) as info:
        decode_prediction(with_(PREDICTION, **changes))
    assert info.value.reason == "wrong_type" and info.value.detail.endswith(where), info.value.detail


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(-1, 1), st.text(max_size=3))
_WRONG = st.one_of(st.lists(_SCALAR, max_size=2), st.dictionaries(st.text(max_size=2), _SCALAR, max_size=2))


@given(st.dictionaries(st.text(min_size=1, max_size=4), st.one_of(_SCALAR, _WRONG), min_size=1, max_size=5))
def test_the_key_named_holds_a_value_of_the_type_msgspec_got(features):
    data = with_(PREDICTION, features=features)
    try:
        decode_prediction(data)
    except InvalidEvent as exc:
        assert exc.reason == "wrong_type" and "[...]" not in exc.detail, exc.detail
        named = exc.detail.rsplit("at `$.features", 1)[1].rstrip("`")
        key = json.loads(named[1:-1]) if named.startswith("[") else named[1:]
        got = exc.detail.split("got `", 1)[1].split("`", 1)[0]
        assert {"array": list, "object": dict}[got] is type(features[key])
    else:
        assert not any(isinstance(v, (list, dict)) for v in features.values())


@pytest.mark.parametrize("data", [
    b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":1,"score":1e999}',
    b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":1e400}',
    b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":1,"features":{"x":-1e999}}',
])
def test_infinite_numbers_are_rejected(data):
    assert reason_of(decode_prediction, data) == "non_finite"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("where, template", [
    ("prediction", b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":%s}'),
    ("features.age", b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":1,"features":{"age":%s}}'),
    ("score", b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":1,"score":%s}'),
    ("extra[1]", b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":1,"extra":[0,%s]}'),
])
def test_nan_and_infinity_anywhere_are_non_finite_naming_the_field(token, where, template):
    """JSON has no NaN or Infinity, but Python's json writes them: the contract's reason is
    non_finite (not invalid_json), in any field, read or ignored, and the detail names it."""
    with pytest.raises(InvalidEvent) as info:
        decode_prediction(template % token)
    assert info.value.reason == "non_finite"
    assert info.value.detail.startswith(f"{where} is {token.decode().lstrip('-')}") or \
        info.value.detail.startswith(f"{where} is {token.decode()}")
    assert decode_many([template % token])[0].reason == "non_finite"


def test_a_non_finite_prediction_or_label_is_not_told_to_be_left_out():
    with pytest.raises(InvalidEvent, match=r"prediction is NaN; .*\(send a finite number or a class\)"):
        decode_prediction(b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":NaN}')
    with pytest.raises(InvalidEvent, match=r"label is Infinity; .*\(send a finite number or a class\)"):
        decode_label(b'{"prediction_id":"a","model_id":"m","timestamp":0,"label":Infinity}')
    with pytest.raises(InvalidEvent, match=r"score is NaN; .*\(send null, or leave it out\)"):
        decode_prediction(b'{"prediction_id":"a","model_id":"m","timestamp":0,"prediction":1,"score":NaN}')


@pytest.mark.parametrize("data", [b'{"prediction_id":"NaN","model_id":"m",', b'{"a": NaN'])
def test_nan_in_what_is_not_json_anyway_stays_invalid_json(data):
    assert reason_of(decode_prediction, data) == "invalid_json"


@pytest.mark.parametrize("field", ["prediction_id", "model_id"])
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_ids_are_rejected(field, value):
    assert reason_of(decode_prediction, with_(PREDICTION, **{field: value})) == "empty_id"
    assert reason_of(decode_label, with_(LABEL, **{field: value})) == "empty_id"


@pytest.mark.parametrize("changes", [{"score": 1.5}, {"score": -0.1}, {"probabilities": {"a": 2.0}}])
def test_probabilities_outside_unit_interval_are_rejected(changes):
    assert reason_of(decode_prediction, with_(PREDICTION, **changes)) == "out_of_range"


def test_oversized_messages_are_rejected_before_parsing():
    data = with_(PREDICTION, features={f"f{i}": i for i in range(2000)})
    assert reason_of(lambda d: decode_prediction(d, max_bytes=1024), data) == "too_large"
    assert decode_prediction(data).features["f1999"] == 1999


@pytest.mark.parametrize("decode, base, field", [(decode_prediction, PREDICTION, "prediction"),
                                                  (decode_label, LABEL, "label")])
def test_an_integer_beyond_any_float_is_rejected(decode, base, field):
    """JSON puts no limit on integers; the statistics need floats (a regression model's metrics
    once crashed on one)."""
    with pytest.raises(InvalidEvent, match=f"non_finite: {field} is an integer beyond the range of a float"):
        decode(with_(base, **{field: 10**400}))
    assert getattr(decode(with_(base, **{field: -(10**300)})), field) == -(10**300)


def test_label_with_infinite_value_is_rejected():
    assert reason_of(decode_label, b'{"prediction_id":"a","model_id":"m","timestamp":0,"label":1e999}') == "non_finite"


def test_every_reason_is_bounded_and_known():
    with pytest.raises(AssertionError):
        InvalidEvent("made_up", "x")
    assert len(REASONS) == len(set(REASONS))


def test_prediction_and_label_round_trip():
    p = decode_prediction(raw(PREDICTION))
    assert decode_prediction(encode_prediction(p)) == p
    label = decode_label(raw(LABEL))
    assert decode_label(encode_label(label)) == label


def test_trigger_round_trip_and_validation():
    event = TriggerEvent(trigger_id=make_trigger_id("churn", "accuracy-floor", 42), model_id="churn",
                         rule="accuracy-floor", metric="accuracy", value=0.71, threshold=0.8,
                         window=TriggerWindow(start="a", end="b", count=5000), triggered_at="c",
                         model_version="2024-06-01", evidence={"p_value": 1e-9})
    assert event.trigger_id == "churn:accuracy-floor:000042"
    assert decode_trigger_event(encode_trigger(event)) == event
    body = json.loads(encode_trigger(event))
    assert body["schema_version"] == 1 and body["window"]["count"] == 5000
    del body["trigger_id"]
    assert reason_of(decode_trigger_event, raw(body)) == "missing_field"
    assert reason_of(decode_trigger_event, b"{]") == "invalid_json"


finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.integers(-(2**53), 2**53), finite, st.text(max_size=20), st.booleans(), st.none())


@given(pid=st.text(min_size=1).filter(lambda s: not s.isspace()), features=st.dictionaries(st.text(), scalars),
       prediction=st.one_of(st.integers(-(2**53), 2**53), finite, st.text()),
       ts=st.integers(0, 2**45), score=st.one_of(st.none(), st.floats(0, 1)))
def test_any_valid_prediction_round_trips(pid, features, prediction, ts, score):
    p = Prediction(prediction_id=pid, model_id="m", timestamp=ts, prediction=prediction, features=features,
                   score=score)
    assert decode_prediction(encode_prediction(p)) == p


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_another_error(data):
    try:
        decode_prediction(data)
        decode_label(data)
    except InvalidEvent as exc:
        assert exc.reason in REASONS


def _outcome(item):
    """A decoded event or a rejection, comparable."""
    if isinstance(item, InvalidEvent):
        return ("invalid", item.reason, item.detail)
    return ("event", encode_prediction(item) if isinstance(item, Prediction) else encode_label(item))


LINE_VARIANTS = [
    lambda i: with_(PREDICTION, prediction_id=f"p{i}", timestamp=1795428902120 + i),
    lambda i: with_(PREDICTION, prediction_id=f"p{i}"),  # ISO timestamp: parsed one by one
    lambda i: with_(PREDICTION, prediction_id=" "),
    lambda i: with_(PREDICTION, score=1.5),
    lambda i: with_(PREDICTION, probabilities={"0": 0.2, "1": 0.8}),
    lambda i: with_(PREDICTION, probabilities={"0": 1.2}),
    lambda i: with_(PREDICTION, timestamp=-5),
    lambda i: with_(PREDICTION, model_id=""),
    lambda i: b'{"prediction_id": "p", "model_id": "m", "timestamp": 1, "prediction": 1, "x": "\xff"}',
    lambda i: b"not json",
    lambda i: b"x" * 300,
    lambda i: with_(LABEL, prediction_id=f"p{i}", timestamp=1795428902120 + i),
    lambda i: with_(LABEL, timestamp="2026-11-23T10:15:02Z"),
    lambda i: with_(LABEL, label=None),
    lambda i: with_(PREDICTION, prediction_id=f"p{i}", timestamp=1795428902120 + i, prediction=-(10**400)),
    lambda i: with_(LABEL, prediction_id=f"p{i}", timestamp=1795428902120 + i, label=10**400),
]


@given(st.lists(st.integers(0, len(LINE_VARIANTS) - 1), max_size=12), st.booleans())
def test_decoding_a_batch_gives_what_decoding_each_line_gives(variants, labels):
    """decode_many checks the usual batch in bulk; whatever the mix of good and bad lines, each
    line's outcome (the event, or the reason and detail) is the one-line decoder's."""
    lines = [LINE_VARIANTS[v](i) for i, v in enumerate(variants)]
    one = decode_label if labels else decode_prediction
    expected = []
    for line in lines:
        try:
            expected.append(one(line, max_bytes=256))
        except InvalidEvent as exc:
            expected.append(exc)
    got = decode_many(lines, labels=labels, max_bytes=256)
    assert [_outcome(e) for e in got] == [_outcome(e) for e in expected]


#: Lines that are fine one by one but defeat reading the file as one stream of JSON values.
STREAM_TRAPS = [
    b'{"prediction_id": "a", "model_id": "churn", "timestamp": 1, "prediction": 1} '
    b'{"prediction_id": "b", "model_id": "churn", "timestamp": 2, "prediction": 1}',  # two values, one line
    b'{"prediction_id": "c", "model_id": "churn", "timestamp": 3, "prediction": 1, "segment": {"r": "eu"}',
    b'}',  # ... the value above ends on this line: as a stream, the two lines are one valid value
    b"",  # a blank line
    b' {"prediction_id": "d", "model_id": "churn", "timestamp": 4, "prediction": 1}',
    b'{"prediction_id": "e", "model_id": "churn", "timestamp": 5, "prediction": 1}\r',
]


@given(st.lists(st.integers(0, len(LINE_VARIANTS) + len(STREAM_TRAPS) - 1), max_size=12), st.booleans(),
       st.booleans())
@example(variants=[0, 19], labels=False, newline_at_end=False)  # a blank last line: the file ends "...}\n"
def test_decoding_a_whole_buffer_gives_what_each_line_gives_or_declines(variants, labels, newline_at_end):
    """decode_buffer reads a file in one call when every line is a usual valid event, and
    otherwise declines (None): it never returns anything but the one-line decoder's events."""
    lines = [LINE_VARIANTS[v](i) if v < len(LINE_VARIANTS) else STREAM_TRAPS[v - len(LINE_VARIANTS)]
             for i, v in enumerate(variants)]
    data = b"\n".join(lines) + (b"\n" if newline_at_end and lines else b"")
    got = decode_buffer(data, labels=labels, max_bytes=256)
    plain = [0] if not labels else [11]  # the usual valid lines: epoch-ms times, all in range
    if variants and set(variants) <= set(plain):
        assert got is not None
    if got is not None:
        # the file's lines as a reader sees them: a blank last line joined without a newline at the
        # end leaves the same bytes as the line before it ending the file with one
        read = data.split(b"\n") if data else []
        if data.endswith(b"\n"):
            read.pop()
        expected = decode_many(read, labels=labels, max_bytes=256)
        assert [_outcome(e) for e in got] == [_outcome(e) for e in expected]
        assert not any(isinstance(e, InvalidEvent) for e in got)


@pytest.mark.parametrize("traps", [[0], [1, 2], [0, 1, 2], [3], [4], [5]])
def test_lines_that_a_stream_of_values_would_misread_send_the_file_line_by_line(traps):
    """[0, 1, 2] is three lines holding three valid values as a stream (two on the first, one
    over the other two): only the braces at the lines' ends tell it from three good lines."""
    good = with_(PREDICTION, timestamp=1)
    assert decode_buffer(b"\n".join([good, good]), max_bytes=1024) is not None
    data = b"\n".join([good, *(STREAM_TRAPS[t] for t in traps), good]) + b"\n"
    assert decode_buffer(data, max_bytes=1024) is None
