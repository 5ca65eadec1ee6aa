"""The exporter's batch-fed histogram exports what prometheus_client's Histogram would."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import BatchHistogram

BUCKETS = (1, 5, 15, 60, 300)


def samples(registry: CollectorRegistry) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}


@given(batches=st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.0001, 5.0, 14.9, 15.0, 60.0, 299.0, 300.0,
                                                  301.0, 1e6]), max_size=30), max_size=5))
def test_same_buckets_count_and_sum_as_a_histogram_observed_one_by_one(batches):
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("lag_seconds", "doc", ["model"], buckets=BUCKETS, registry=one_by_one)
    histogram = BatchHistogram("lag_seconds", "doc", "model", buckets=BUCKETS, registry=batched)
    reference.labels("m")
    for batch in batches:
        for value in batch:
            reference.labels("m").observe(value)
        histogram.observe_many("m", batch)
    histogram.observe_many("m", [])
    want, got = samples(one_by_one), samples(batched)
    assert want.keys() == got.keys()
    for key, value in want.items():  # counts exactly; the sum up to float rounding
        assert got[key] == (pytest.approx(value, rel=1e-12) if key[0].endswith("_sum") else value), key
