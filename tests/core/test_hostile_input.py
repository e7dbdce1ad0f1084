"""Hostile values from the exchange and on our own wire (issue 9): headers, digits, floats, logs."""

from __future__ import annotations

import io
import json
import math

import msgspec
import pytest

from kl_actors.core import budget, answers, intervals, klines
from kl_actors import messages
from kl_actors.core.budget import MAX_BAN_S, UNTIL_NEXT_WINDOW, WeightBudget, hold_until_ms
from kl_actors.log import Logger, RateLimit
from kl_actors.messages import DownloadTask

T0 = 1_789_478_160_000  # a minute boundary
MIN = 60_000
LATER = T0 + 3600 * 1000
HOSTILE_RETRY_AFTER = ["inf", "-inf", "1e308", "nan", "NaN", "-1", "abc", "²", "١٢", "", " ", "0x10",
                       "1_0", "12e2", "Infinity", "\x00\x01", "9" * 400]


def task(limit=499) -> DownloadTask:
    return DownloadTask(task_id="t-1", symbol="BTCUSDT", interval="1m", start_ms=T0, end_ms=T0 + 9 * MIN,
                        limit=limit)


def row(open_ms: int, **over) -> list:
    r = [open_ms, "100.10", "101.50", "99.90", "100.20", "20.680", intervals.close_time("1m", open_ms),
         "1591436.27140", 878, "15.190", "1168938.63310", "0"]
    for index, value in over.items():
        r[int(index[1:])] = value
    return r


# -- Retry-After -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", HOSTILE_RETRY_AFTER)
@pytest.mark.parametrize("status", [429, 418])
def test_unusable_retry_after_means_next_window(raw, status):
    assert answers.retry_after_s({"Retry-After": raw}, status) == UNTIL_NEXT_WINDOW
    result, page = answers.classify(task(), status, {"Retry-After": raw}, b'{"code":-1003,"msg":"x"}', LATER)
    assert page is None and result.retry_after_s == UNTIL_NEXT_WINDOW
    # The raw value is carried for the log line, printable and short.
    assert result.detail.startswith("retry_after_header=") and len(result.detail) <= 300
    assert result.detail.isprintable() and result.detail.isascii()


def test_retry_after_absent_and_bounds():
    assert answers.retry_after_s({}, 429) == UNTIL_NEXT_WINDOW
    assert answers.retry_after_s({}, 418) == UNTIL_NEXT_WINDOW
    assert answers.retry_after_s({"Retry-After": "0"}, 429) == 0.0
    assert answers.retry_after_s({"Retry-After": "600"}, 429) == 600.0
    assert answers.retry_after_s({"Retry-After": "2.5"}, 429) == 2.5
    assert answers.retry_after_s({"Retry-After": "601"}, 429) == UNTIL_NEXT_WINDOW
    assert answers.retry_after_s({"Retry-After": "99999999"}, 429) == UNTIL_NEXT_WINDOW
    # A ban is believed up to 3 days.
    assert answers.retry_after_s({"Retry-After": "7200"}, 418) == 7200.0
    assert answers.retry_after_s({"Retry-After": "99999999"}, 418) == MAX_BAN_S == 259_200.0


def test_printable_raw_header():
    assert answers.printable("inf") == "inf"
    assert answers.printable("²\x00x") == "??x"
    assert answers.printable("9" * 100) == "9" * 40 + "..."


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308, -1e308, 99999999.0, -1.0,
                                   UNTIL_NEXT_WINDOW, 0.0, 1e-300, 5e-324, 2.0**63])
def test_block_never_raises_and_is_bounded(value):
    b = WeightBudget(100, usable_fraction=1.0)
    now = T0 + 10_000
    until = b.block(value, now)
    assert now < until <= now + MAX_BAN_S * 1000
    assert b.available(until - 1) == 0 and b.available(until) > 0
    if not math.isfinite(value) or value < 0:
        assert until == T0 + MIN  # the next minute window
    assert b.next_release_ms(now) == until


def test_hold_until_ms_cases():
    now = T0 + 59_999
    assert hold_until_ms(UNTIL_NEXT_WINDOW, now) == T0 + MIN
    assert hold_until_ms(0.0, now) == now + 1000  # at least a second
    assert hold_until_ms(30.0, now) == now + 30_000
    assert hold_until_ms(1e12, now) == now + int(MAX_BAN_S * 1000)
    assert hold_until_ms(math.nan, T0) == T0 + MIN


# -- the weight header ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["²", "١٢", "1e3", "-5", "+5", "5.0", " ", "", "abc", "9" * 16, "1 2", "٣"])
def test_weight_header_only_ascii_digits_and_the_page_stays_good(raw):
    assert answers.weight_used({"X-MBX-USED-WEIGHT-1M": raw}) == -1
    result, page = answers.classify(task(), 200, {"X-MBX-USED-WEIGHT-1M": raw}, json.dumps([row(T0)]).encode(), LATER)
    assert result.status == "ok" and result.weight_used_1m == -1 and len(page) == 1


def test_weight_header_ascii_values():
    assert answers.weight_used({"X-MBX-USED-WEIGHT-1M": "0"}) == 0
    assert answers.weight_used({"x-mbx-used-weight-1m": " 2399 "}) == 2399
    assert answers.weight_used({"X-MBX-USED-WEIGHT-1M": "9" * 15}) == 10**15 - 1
    assert answers.ascii_int(None) == -1


# -- Unicode digits in decimals -------------------------------------------------------------------

@pytest.mark.parametrize("value", ["١٢", "١٢.٥", "۱۲", "१२", "12.٥", "²", "１２", "1_0", "1e3", "-1"])
def test_non_ascii_digits_are_not_decimals_in_pages(value):
    bad = row(T0, c1=value, c2=value, c3=value, c4=value) if value.isdigit() else row(T0, c5=value)
    with pytest.raises(klines.PageError):
        klines.validate_page("1m", klines.decode_page(json.dumps([bad]).encode()), T0, T0, LATER)
    result, page = answers.classify(task(), 200, {}, json.dumps([bad]).encode(), LATER)
    assert result.status == "invalid" and page is None


@pytest.mark.parametrize("field", ["o", "c", "h", "l", "v", "q", "V", "Q"])
def test_non_ascii_digits_are_not_decimals_in_ws_events(field):
    k = {"t": T0, "T": T0 + MIN - 1, "s": "BTCUSDT", "i": "1m", "o": "1.0", "c": "1.5", "h": "2.0",
         "l": "0.5", "v": "10", "n": 2, "x": True, "q": "15", "V": "5", "Q": "7.5"}
    good = klines.decode_ws_event(json.dumps({"e": "kline", "E": T0 + MIN, "s": "BTCUSDT", "k": k}))
    klines.check_candle("1m", good.candle)
    k[field] = "١٢"
    event = klines.decode_ws_event(json.dumps({"e": "kline", "E": T0 + MIN, "s": "BTCUSDT", "k": k}))
    with pytest.raises(klines.PageError):
        klines.check_candle("1m", event.candle)


@pytest.mark.parametrize("interval, open_ms, trades", [
    ("7m", T0, 1), ("", T0, 1), ("1M", 2**62, 1), ("1M", 10**20 - 1, 1), ("1m", -MIN, 1),
    ("1m", T0, 2**63), ("1m", T0, -1)])
def test_check_candle_raises_only_page_error(interval, open_ms, trades):
    candle = messages.Candle(open_ms, "1", "1", "1", "1", "1", open_ms + MIN - 1, "1", trades, "1", "1")
    with pytest.raises(klines.PageError):
        klines.check_candle(interval, candle)


# -- non-finite floats on our wire ------------------------------------------------------------------

FLOAT_CASES = [
    (messages.TaskResult, {"task_id": "t", "status": "rate_limited"}, "retry_after_s"),
    (messages.ClockSync, {"offset_ms": 1.0, "rtt_ms": 1.0, "measured_at_ms": 1}, "offset_ms"),
    (messages.ClockSync, {"offset_ms": 1.0, "rtt_ms": 1.0, "measured_at_ms": 1}, "rtt_ms"),
] + [(messages.Progress, {"at_ms": 1}, name) for name in messages.FLOAT_FIELDS[messages.Progress]] + [
    (messages.MetricSample, {"family": "requests_total", "labels": ("ok",)}, "value")]


def test_every_float_field_is_covered():
    covered = {(cls, name) for cls, _, name in FLOAT_CASES}
    assert covered == {(cls, n) for cls, names in messages.FLOAT_FIELDS.items() for n in names}


@pytest.mark.parametrize("cls, base, name", FLOAT_CASES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected_at_decode(cls, base, name, value):
    def wire(message):  # a Progress travels inside the scheduler's heartbeat
        if cls is messages.Progress:
            return messages.Heartbeat(actor="scheduler", pid=1, sent_at_ms=1, progress=message)
        if cls is messages.MetricSample:  # so do metrics, in every actor's
            return messages.Heartbeat(actor="writer", pid=1, sent_at_ms=1, metrics=[message])
        return message

    frame = messages.encode(wire(cls(**{**base, name: value})))
    decoded = messages.decode(frame)
    assert isinstance(decoded, messages.DecodeError)
    assert f"{cls.__name__}.{name}" in decoded.reason and "not finite" in decoded.reason
    fine = messages.decode(messages.encode(wire(cls(**{**base, name: 1e308}))))
    fine = fine.progress if cls is messages.Progress else fine.metrics[0] if cls is messages.MetricSample else fine
    assert getattr(fine, name) == 1e308


def test_non_finite_float_written_by_hand_is_rejected():
    # Not through our encoder: a raw MessagePack map a peer could send.
    frame = msgspec.msgpack.encode({"kind": "clock", "offset_ms": float("nan"), "rtt_ms": 0.0,
                                    "measured_at_ms": 0})
    assert isinstance(messages.decode(frame), messages.DecodeError)


# -- log rate limiting ------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_warnings_limited_per_event_then_counted():
    clock, out = FakeClock(), io.StringIO()
    log = Logger("websocket", stream=out, clock=clock, limit=RateLimit(burst=5, window_s=10.0))
    for i in range(1000):
        log.warning("malformed_event", n=i)
        log.error("other_event", n=i)
        log.info("summary", n=i)  # info is never limited
        clock.now += 0.001
    text = lines(out)
    assert sum("event=malformed_event" in ln for ln in text) == 5
    assert sum("event=other_event" in ln for ln in text) == 5
    assert sum("event=summary" in ln for ln in text) == 1000
    assert not any("log_suppressed" in ln for ln in text)
    clock.now = 109.9
    log.flush()
    assert not any("log_suppressed" in ln for ln in lines(out))
    clock.now = 110.0
    log.flush()
    summaries = [ln for ln in lines(out) if "event=log_suppressed" in ln]
    assert len(summaries) == 2
    assert any("suppressed=malformed_event count=995" in ln for ln in summaries)
    assert any("suppressed=other_event count=995" in ln for ln in summaries)
    assert all("level=warning" in ln for ln in summaries)
    log.flush()  # reported once
    assert len([ln for ln in lines(out) if "event=log_suppressed" in ln]) == 2
    log.warning("malformed_event", n=-1)  # a new window
    assert lines(out)[-1].endswith("n=-1")


def test_window_passing_is_reported_before_the_next_line():
    clock, out = FakeClock(), io.StringIO()
    log = Logger("x", stream=out, clock=clock, limit=RateLimit(burst=1, window_s=10.0))
    log.warning("a")
    log.warning("a")
    clock.now += 11
    log.warning("a")  # no flush by the loop in between: the count still comes first
    text = lines(out)
    assert len(text) == 3 and "suppressed=a count=1" in text[1] and "event=a" in text[2]


def test_no_suppression_no_summary_and_windows_forgotten():
    limit = RateLimit(burst=5, window_s=10.0)
    for i in range(5):
        assert limit.allow("e", i)
    assert limit.ended(10.0) == [] and limit.windows == {}
    assert budget.MINUTE_MS == MIN


def test_subscription_prefix_selects_exactly_one_kind():
    prefix = messages.subscription(messages.ClockSync)
    clock = messages.encode(messages.ClockSync(offset_ms=1.5, rtt_ms=2.0, measured_at_ms=3))
    assert clock.startswith(prefix)
    others = [messages.Committed(task_ids=["a"], tables=[], committed_at_ms=1),
              messages.WriteFailed(task_ids=["a"], error="x"),
              messages.TaskResult(task_id="a", status="ok"),
              messages.Heartbeat(actor="a", pid=1, sent_at_ms=1)]
    assert not any(messages.encode(m).startswith(prefix) for m in others)
    for cls in messages.Message.__args__:
        assert messages.subscription(cls).endswith(msgspec.msgpack.encode(cls.__struct_config__.tag))


def test_hostile_input_modules_stay_pure():
    import ast
    from pathlib import Path

    for module in (answers, budget, klines, messages):
        tree = ast.parse(Path(module.__file__).read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"zmq", "requests", "websocket", "apsw", "time", "socket"}, module.__name__


def test_lines_about_different_actors_are_limited_apart():
    clock, out = FakeClock(), io.StringIO()
    log = Logger("supervisor", stream=out, clock=clock, limit=RateLimit(burst=2, window_s=10.0))
    for _ in range(4):
        log.warning("actor_exited", name="writer")
        log.warning("actor_exited", name="scheduler")
    assert sum("event=actor_exited name=writer" in ln for ln in lines(out)) == 2
    assert sum("event=actor_exited name=scheduler" in ln for ln in lines(out)) == 2
    clock.now += 10
    log.flush()
    summaries = [ln for ln in lines(out) if "event=log_suppressed" in ln]
    assert sorted(s.split("name=")[1] for s in summaries) == ["scheduler", "writer"]
    assert all("suppressed=actor_exited count=2" in s for s in summaries)
