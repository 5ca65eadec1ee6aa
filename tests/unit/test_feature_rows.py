"""Features decoded into a struct of the watched names (``FeatureRow``, by ``decode_many``) give
exactly what the dict of the one-line decoder gives: the same rejections, the same values, and
through the Monitor the same statistics and triggers."""
from __future__ import annotations

import json
from unittest import mock

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streams.core import codecs
from streams.core.codecs import FeatureRow, InvalidEvent, Prediction, decode_many, decode_prediction, prediction_type
from streams.core.config import parse_config
from streams.core.monitor import InputDecoder, Monitor, Source
from streams.core.statistics import _feature_column, _numeric_matrix, _present, _row_kind

NUMERIC, CATEGORICAL = ["x", "y"], ["plan"]
WATCHED = NUMERIC + CATEGORICAL
HUGE = 10**400  # valid JSON, beyond any float

values = st.one_of(
    st.floats(-5, 5), st.floats(-5, 5), st.integers(-3, 3), st.none(), st.booleans(), st.sampled_from(["a", "b"]),
    st.just(HUGE), st.just([1]), st.just({"k": 1}),
)
features = st.dictionaries(st.sampled_from(WATCHED + ["unwatched", "prediction_id"]), values, max_size=4)


def _line(i: int, feats: dict | None) -> bytes:
    event = {"prediction_id": f"p{i}", "model_id": "m", "timestamp": 1_700_000_000_000 + i, "prediction": i % 2,
             "score": 0.5}
    if feats is not None:
        event["features"] = feats
    return json.dumps(event).encode()


def _one_by_one(lines: list[bytes]) -> list:
    out = []
    for line in lines:
        try:
            out.append(decode_prediction(line))
        except InvalidEvent as exc:
            out.append(exc)
    return out


def _outcome(item) -> tuple:
    """A rejection, or an event with its watched features read as the Monitor reads them."""
    if isinstance(item, InvalidEvent):
        return ("invalid", item.reason, item.detail)
    rest = {f: getattr(item, f) for f in Prediction.__struct_fields__ if f != "features"}
    return ("event", sorted(rest.items(), key=str), [repr(item.features.get(name)) for name in WATCHED])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), features), max_size=14), st.integers(1, 5))
def test_a_batch_decodes_as_each_line_does(feats, chunk):
    lines = [_line(i, f) for i, f in enumerate(feats)]
    with mock.patch.object(codecs, "DECODE_CHUNK", chunk):
        got = decode_many(lines, predictions=prediction_type(NUMERIC, CATEGORICAL))
    expected = _one_by_one(lines)
    assert [_outcome(e) for e in got] == [_outcome(e) for e in expected]
    for event, plain in zip(got, expected):
        if isinstance(event, Prediction) and isinstance(event.features, FeatureRow):
            assert set(plain.features) <= set(WATCHED)  # a struct never drops a feature


def test_the_usual_batch_decodes_into_structs_and_reads_back_as_columns():
    lines = [_line(i, {"x": i / 2, "y": i, "plan": "pro"}) for i in range(10)]
    events = decode_many(lines, predictions=prediction_type(NUMERIC, CATEGORICAL))
    rows = [e.features for e in events]
    assert all(isinstance(r, FeatureRow) for r in rows)
    kind = _row_kind(rows)
    np.testing.assert_array_equal(_numeric_matrix(rows, ["y", "x"], kind), [[i, i / 2] for i in range(10)])
    assert _feature_column(rows, "plan", kind) == ["pro"] * 10
    assert _feature_column(rows, "unwatched", kind) == [None] * 10


@pytest.mark.parametrize("names", [["x"], ["y"], ["y", "x"], ["x", "y"]])
@pytest.mark.parametrize("odd", [None, {"y": None}, {"y": HUGE}, {"y": -(2**53 + 1)}])
def test_a_struct_matrix_is_each_value_as_a_float_or_none_for_a_value_that_is_not(names, odd):
    """The matrix read off structs: every value converted as ``float`` converts it, one column
    or many; None (then the batch is read column by column) for a None or an int beyond floats."""
    feats = [{"x": i / 3, "y": i * 7} for i in range(5)] + [{"x": 0.25, "y": 1, **(odd or {})}]
    rows = [e.features for e in decode_many([_line(i, f) for i, f in enumerate(feats)],
                                            predictions=prediction_type(NUMERIC, []))]
    kind = _row_kind(rows)
    assert kind is not None
    values = [[row.get(name) for name in names] for row in rows]
    finite = all(isinstance(v, (int, float)) and abs(v) < 1e308 for line in values for v in line)
    got = _numeric_matrix(rows, names, kind)
    if finite:
        assert got.tolist() == [[float(v) for v in line] for line in values]
    else:
        assert got is None


def test_all_the_rows_names_in_order_read_as_each_name_does():
    """The getter of every name in order (``astuple``) reads what the getter of each name reads."""
    lines = [_line(i, {"x": i / 2, "y": None if i == 3 else i}) for i in range(6)]
    rows = [e.features for e in decode_many(lines, predictions=prediction_type(NUMERIC, []))]
    kind = _row_kind(rows)
    assert kind.getter(NUMERIC) is msgspec.structs.astuple  # the path under test
    assert list(map(kind.getter(NUMERIC), rows)) == [(r.get("x"), r.get("y")) for r in rows]
    assert list(map(kind.getter(NUMERIC[::-1]), rows)) == [(r.get("y"), r.get("x")) for r in rows]


@pytest.mark.parametrize("odd", [{"extra": 3}, {"x": "1.5"}, {"x": True}])
def test_a_chunk_with_features_a_struct_cannot_hold_decodes_as_dicts(odd):
    """Another name, or a non-number for a numeric feature: valid, so the chunk is decoded as
    dicts (and the Monitor reads the odd value as the dict path always did)."""
    lines = [_line(0, {"x": 1.0}), _line(1, {"x": 2.0, **odd})]
    events = decode_many(lines, predictions=prediction_type(NUMERIC, CATEGORICAL))
    assert [type(e.features) for e in events] == [dict, dict]


@pytest.mark.parametrize("rows", [[{"x": HUGE}, {"x": 1.0}], [{"x": 1.0}, {"x": -HUGE}]])
def test_an_integer_beyond_any_float_is_skipped_not_a_crash(rows):
    assert _numeric_matrix(rows, ["x"], _row_kind(rows)) is None
    np.testing.assert_array_equal(_present([r["x"] for r in rows], categorical=False), [1.0])


CONFIG = {
    "kafka": {"bootstrap.servers": "unused:9092"},
    "models": [{
        "id": "m", "window": {"size": 12}, "evaluate_every": 4,
        "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
        "drift": {"numeric": ["psi", "ks"], "categorical": ["chi2"], "window": 8, "reference_size": 8},
        "rules": [{"name": "x-drift", "min_samples": 4,
                   "conditions": [{"statistic": "feature.x.psi", "op": ">", "threshold": 0.1}]}],
    }],
}


usual_features = st.fixed_dictionaries({"x": st.floats(-5, 5), "y": st.integers(-3, 3), "plan": st.sampled_from("ab")})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(usual_features, usual_features, features), min_size=1, max_size=60),
       st.integers(1, 20), st.integers(1, 7))
def test_the_monitor_sees_the_same_statistics_and_triggers_from_either(feats, batch, chunk):
    config = parse_config(CONFIG, "<test>")
    decode = InputDecoder(config)
    lines = [_line(i, {**f, "x": f.get("x", i % 5 / 2)}) for i, f in enumerate(feats)]
    with mock.patch.object(codecs, "DECODE_CHUNK", chunk):
        as_structs = decode.many("predictions", lines)
    as_dicts = _one_by_one(lines)
    struct_monitor, dict_monitor = Monitor(config), Monitor(config)
    for start in range(0, len(lines), batch):
        def valid(events):
            return [(e, Source("predictions", 0, start + i)) for i, e in enumerate(events[start:start + batch])
                    if not isinstance(e, InvalidEvent)]
        assert struct_monitor.process(valid(as_structs)) == dict_monitor.process(valid(as_dicts))
        # repr: a statistic may be nan, which equals nothing
        assert repr({m: s.stats.values() for m, s in struct_monitor.models.items()}) \
            == repr({m: s.stats.values() for m, s in dict_monitor.models.items()})


ANY_NAMES = WATCHED + ["unwatched", "prediction_id", "other", "é"]
any_features = st.dictionaries(st.sampled_from(ANY_NAMES), values, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), any_features), min_size=1, max_size=14), st.integers(1, 5),
       st.booleans())
def test_features_no_model_watches_are_learned_and_read_as_the_dict_reads_them(feats, chunk, whole_file):
    """The decoder adds the first prediction's unwatched feature names to its struct; every
    feature, watched or not, then reads as the one-line decoder's dict has it, every rejection
    is the same, and a struct still never drops a feature."""
    decode = InputDecoder(parse_config(CONFIG, "<test>"))
    lines = [_line(i, f) for i, f in enumerate(feats)]
    with mock.patch.object(codecs, "DECODE_CHUNK", chunk):
        got = (whole_file and decode.buffer("predictions", b"\n".join(lines))) or decode.many("predictions", lines)
    expected = _one_by_one(lines)
    assert [_outcome(e) for e in got] == [_outcome(e) for e in expected]
    for event, plain in zip(got, expected):
        if isinstance(event, Prediction):
            assert [repr(event.features.get(n)) for n in ANY_NAMES] == [repr(plain.features.get(n)) for n in ANY_NAMES]
            if isinstance(event.features, FeatureRow):
                assert set(plain.features) <= set(type(event.features).attributes)


def test_a_batch_with_more_features_than_the_config_watches_decodes_into_structs():
    decode = InputDecoder(parse_config(CONFIG, "<test>"))
    lines = [_line(i, {"x": i / 2, "plan": "pro", "age": 40 + i, "country": "fr"}) for i in range(10)]
    for events in (decode.many("predictions", lines), decode.buffer("predictions", b"\n".join(lines) + b"\n")):
        assert all(isinstance(e.features, FeatureRow) for e in events)
        assert [(e.features.get("x"), e.features.get("age"), e.features.get("country")) for e in events] \
            == [(i / 2, 40 + i, "fr") for i in range(10)]


def test_learning_feature_names_stops_at_the_limit():
    decode = InputDecoder(parse_config(CONFIG, "<test>"))
    lines = [_line(i, {"x": 1.0, **{f"f{k}": k for k in range(5)}}) for i in range(4)]
    with mock.patch("streams.core.monitor.MAX_FEATURE_NAMES", len(WATCHED) + 4):
        events = decode.many("predictions", lines)
    assert [type(e.features) for e in events] == [dict] * 4
    assert [e.features for e in events] == [e.features for e in _one_by_one(lines)]
