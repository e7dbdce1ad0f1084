"""core/metrics.py: the recorder, the aggregate over actors and restarts, and the wire's bounds."""

from __future__ import annotations

import math

import msgspec
import pytest

from kl_actors import messages
from kl_actors.core import metrics
from kl_actors.core.metrics import FAMILIES, Aggregate, Histogram, Recorder
from kl_actors.messages import MetricSample


def summed(agg: Aggregate) -> dict[str, dict]:
    return {s.name.removeprefix(metrics.PREFIX): s.values for s in agg.series()}


def test_recorder_counts_sets_and_observes_into_samples():
    r = Recorder()
    r.inc("candles_written_total", ("1m", "rest"), 499)
    r.inc("candles_written_total", ("1m", "rest"), 1)
    r.inc("candles_written_total", ("1m", "ws"))
    r.set("weight_used", ("default",), 120)
    r.set("weight_used", ("default",), 7)
    for seconds in (0.0005, 0.003, 0.003, 99.0):
        r.observe("writer_transaction_seconds", (), seconds)
    got = {(s.family, s.labels): s for s in r.samples()}
    assert got[("candles_written_total", ("1m", "rest"))].value == 500
    assert got[("candles_written_total", ("1m", "ws"))].value == 1
    assert got[("weight_used", ("default",))].value == 7
    h = got[("writer_transaction_seconds", ())]
    bounds = FAMILIES["writer_transaction_seconds"].buckets
    assert len(h.buckets) == len(bounds) + 1
    assert h.buckets[0] == 1                          # 0.5 ms <= 1 ms
    assert h.buckets[bounds.index(0.005)] == 2        # 3 ms: in the (2.5 ms, 5 ms] bucket
    assert h.buckets[-1] == 1                         # 99 s: only +Inf
    assert h.value == pytest.approx(99.0065)


def test_recorder_refuses_our_own_mistakes_loudly():
    r = Recorder()
    with pytest.raises(ValueError, match="unknown metric family"):
        r.inc("candles_writen_total")
    with pytest.raises(ValueError, match="takes labels"):
        r.inc("candles_written_total", ("1m",))
    with pytest.raises(ValueError, match="is a gauge"):
        r.inc("weight_used", ("default",))
    with pytest.raises(ValueError, match="cannot go down"):
        r.inc("requests_total", ("ok",), -1)
    assert r.samples() == []


def test_recorder_is_bounded_in_series_and_label_length():
    r = Recorder(max_series=3)
    for outcome in ("ok", "429", "418", "invalid", "network"):
        r.inc("requests_total", (outcome,))
    assert len(r.samples()) == 3 and r.dropped_series == 2
    r.inc("requests_total", ("ok",))  # a known series still counts when full
    assert {s.labels[0]: s.value for s in r.samples()}["ok"] == 2
    long = Recorder()
    long.inc("actor_restarts_total", ("x" * 500,))
    (sample,) = long.samples()
    assert len(sample.labels[0]) == messages.MAX_LABEL_CHARS


def test_sum_over_actors():
    agg = Aggregate()
    a, b = Recorder(), Recorder()
    a.inc("requests_total", ("ok",), 10)
    b.inc("requests_total", ("ok",), 5)
    b.inc("requests_total", ("429",), 1)
    assert agg.take("downloader-1", 101, a.samples()) == 0
    assert agg.take("downloader-2", 102, b.samples()) == 0
    assert summed(agg)["requests_total"] == {("ok",): 15, ("429",): 1}
    # Totals, not differences: the same heartbeat twice counts once.
    agg.take("downloader-1", 101, a.samples())
    assert summed(agg)["requests_total"][("ok",)] == 15


def test_restart_keeps_counters_monotonic_and_drops_gauges():
    agg = Aggregate()
    old = Recorder()
    old.inc("candles_written_total", ("1h", "rest"), 900)
    old.set("websocket_connections", (), 3)
    old.observe("writer_transaction_seconds", (), 0.002)
    agg.take("writer", 200, old.samples())
    before = summed(agg)
    assert before["candles_written_total"][("1h", "rest")] == 900

    # A new process (new pid) starts from zero: its counts go on top of the old ones.
    new = Recorder()
    agg.take("writer", 201, new.samples())
    after = summed(agg)
    assert after["candles_written_total"][("1h", "rest")] == 900
    assert after["websocket_connections"] == {}  # the dead process's gauge is gone
    assert after["writer_transaction_seconds"][()].count == 1
    new.inc("candles_written_total", ("1h", "rest"), 40)
    new.observe("writer_transaction_seconds", (), 0.2)
    agg.take("writer", 201, new.samples())
    again = summed(agg)
    assert again["candles_written_total"][("1h", "rest")] == 940
    assert again["writer_transaction_seconds"][()].count == 2

    # The supervisor saw it exit before any heartbeat of its successor: the same, once.
    agg.exited("writer")
    agg.exited("writer")
    agg.take("writer", 202, [])
    assert summed(agg)["candles_written_total"][("1h", "rest")] == 940


def test_a_lower_total_from_the_same_process_never_lowers_the_sum():
    agg = Aggregate()
    agg.take("broker", 5, [MetricSample("feed_gaps_total", (), 12.0)])
    agg.take("broker", 5, [MetricSample("feed_gaps_total", (), 3.0)])  # out of order or wrong
    assert summed(agg)["feed_gaps_total"][()] == 12
    h_big = MetricSample("boundary_lag_seconds", ("1m",), 9.0, [0, 0, 3] + [0] * 10)
    h_small = MetricSample("boundary_lag_seconds", ("1m",), 1.0, [0, 1] + [0] * 11)
    agg.take("scheduler", 6, [h_big])
    agg.take("scheduler", 6, [h_small])
    assert summed(agg)["boundary_lag_seconds"][("1m",)].count == 3


def test_histograms_merge_across_actors_and_restarts_into_cumulative_buckets():
    agg = Aggregate()
    bounds = FAMILIES["boundary_lag_seconds"].buckets
    one, two = Recorder(), Recorder()
    for lag in (0.4, 1.5, 1.5):
        one.observe("boundary_lag_seconds", ("1m",), lag)
    two.observe("boundary_lag_seconds", ("1m",), 7.0)
    two.observe("boundary_lag_seconds", ("1m",), 5000.0)
    agg.take("scheduler", 1, one.samples())
    agg.take("scheduler", 2, two.samples())  # restarted: both processes' observations count
    h = summed(agg)["boundary_lag_seconds"][("1m",)]
    assert isinstance(h, Histogram)
    assert h.count == 5 and h.sum == pytest.approx(0.4 + 3.0 + 7.0 + 5000.0)
    cumulative = dict(h.cumulative(bounds))
    assert cumulative["0.5"] == 1 and cumulative["2.0"] == 3 and cumulative["10.0"] == 4
    assert cumulative["900.0"] == 4 and cumulative["+Inf"] == 5
    assert list(cumulative)[-1] == "+Inf" and len(cumulative) == len(bounds) + 1


BAD_SAMPLES = [
    (MetricSample("no_such_family", (), 1.0), "unknown family"),
    (MetricSample("requests_total", (), 1.0), "labels"),
    (MetricSample("requests_total", ("ok", "extra"), 1.0), "labels"),
    (MetricSample("requests_total", ("ok",), -1.0), "negative count"),
    (MetricSample("requests_total", ("ok",), 1.0, [1]), "no buckets"),
    (MetricSample("writer_transaction_seconds", (), 1.0, [1, 2]), "buckets"),
    (MetricSample("writer_transaction_seconds", (), -1.0, [0] * 13), "negative sum"),
]


@pytest.mark.parametrize("sample, why", BAD_SAMPLES, ids=[w for _, w in BAD_SAMPLES])
def test_a_bad_sample_is_refused_and_the_rest_of_the_beat_is_kept(sample, why):
    agg = Aggregate()
    good = MetricSample("websocket_events_total", (), 4.0)
    assert agg.take("websocket", 9, [sample, good]) == 1
    assert why in agg.last_refusal and agg.refused == 1
    values = summed(agg)
    assert values["websocket_events_total"] == {(): 4.0}
    assert values["feed_gaps_total"] == {(): 0.0}  # an unlabelled counter nobody reported: 0
    others = {name: v for name, v in values.items() if name not in ("websocket_events_total", "feed_gaps_total")}
    assert all(not v for v in others.values()), others


def test_every_family_is_listed_even_before_anyone_reports_it():
    names = [s.name for s in Aggregate().series()]
    assert names == [metrics.PREFIX + n for n in FAMILIES]
    assert len(FAMILIES) == 13
    assert all(f.kind in ("counter", "gauge", "histogram") for f in FAMILIES.values())
    assert all(name.endswith("_total") == (f.kind == "counter") for name, f in FAMILIES.items())


def test_actors_are_bounded():
    agg = Aggregate(max_actors=2)
    sample = [MetricSample("feed_gaps_total", (), 1.0)]
    agg.take("a", 1, sample)
    agg.take("b", 1, sample)
    assert agg.take("c", 1, sample) == 1
    assert summed(agg)["feed_gaps_total"][()] == 2


# -- on the wire ----------------------------------------------------------------------------------

def _beat(samples) -> bytes:
    return msgspec.msgpack.encode({"kind": "heartbeat", "actor": "writer", "pid": 1, "sent_at_ms": 1,
                                   "metrics": samples})


def test_recorder_samples_cross_the_wire_in_a_heartbeat():
    r = Recorder()
    r.inc("candles_written_total", ("1d", "archive"), 31)
    r.observe("writer_transaction_seconds", (), 0.01)
    beat = messages.Heartbeat(actor="writer", pid=1, sent_at_ms=1, metrics=r.samples())
    decoded = messages.decode(messages.encode(beat))
    assert isinstance(decoded, messages.Heartbeat)
    assert decoded.metrics == r.samples()
    # An actor that does not send metrics (an older peer) is still a heartbeat.
    plain = messages.decode(msgspec.msgpack.encode({"kind": "heartbeat", "actor": "x", "pid": 1, "sent_at_ms": 1}))
    assert isinstance(plain, messages.Heartbeat) and plain.metrics == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused_at_decode(value):
    for sample in (["requests_total", ["ok"], value], ["boundary_lag_seconds", ["1m"], value, [0] * 13]):
        decoded = messages.decode(_beat([sample]))
        assert isinstance(decoded, messages.DecodeError)
        assert "MetricSample.value is not finite" in decoded.reason


SIZE_CASES = [
    ("series", [["requests_total", ["ok"], 1.0]] * (messages.MAX_METRIC_SERIES + 1)),
    ("label length", [["requests_total", ["x" * (messages.MAX_LABEL_CHARS + 1)], 1.0]]),
    ("labels", [["requests_total", ["a", "b", "c", "d", "e"], 1.0]]),
    ("buckets", [["boundary_lag_seconds", ["1m"], 1.0, [0] * 33]]),
    ("negative bucket", [["boundary_lag_seconds", ["1m"], 1.0, [-1] + [0] * 12]]),
    ("family length", [["f" * 65, [], 1.0]]),
]


@pytest.mark.parametrize("what, samples", SIZE_CASES, ids=[w for w, _ in SIZE_CASES])
def test_oversized_metrics_are_refused_at_decode(what, samples):
    assert isinstance(messages.decode(_beat(samples)), messages.DecodeError)


def test_the_largest_allowed_heartbeat_decodes():
    samples = [["requests_total", [str(i).rjust(messages.MAX_LABEL_CHARS, "0")], float(i)]
               for i in range(messages.MAX_METRIC_SERIES)]
    decoded = messages.decode(_beat(samples))
    assert isinstance(decoded, messages.Heartbeat) and len(decoded.metrics) == messages.MAX_METRIC_SERIES


def test_many_restarts_keep_the_aggregate_the_same_size_and_the_sum_exact():
    """Uptime and crash loops do not grow it: every process of an actor folds into one base."""
    agg = Aggregate()
    for pid in range(1, 5001):
        r = Recorder()
        r.inc("candles_written_total", ("1m", "rest"), 2)
        r.observe("writer_transaction_seconds", (), 0.01)
        r.set("websocket_connections", (), pid)
        agg.take("writer", pid, r.samples())
    entry = agg.actors["writer"]
    assert len(entry.base) == 2 and len(entry.current) == 3
    values = summed(agg)
    assert values["candles_written_total"][("1m", "rest")] == 10_000
    assert values["writer_transaction_seconds"][()].count == 5000
    assert values["websocket_connections"] == {(): 5000}  # only the live process's gauge
