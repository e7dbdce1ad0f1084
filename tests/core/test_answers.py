"""`fetch.classify`: what each kind of klines answer becomes (pure, no network)."""

from __future__ import annotations

import json

import pytest

from kl_actors.core import answers, intervals
from kl_actors.messages import DownloadTask

T0 = 1_789_478_160_000  # a minute boundary
MIN = 60_000


def row(open_ms: int, interval: str = "1m", high: str = "101.50") -> list:
    return [open_ms, "100.10", high, "99.90", "100.20", "20.680", intervals.close_time(interval, open_ms),
            "1591436.27140", 878, "15.190", "1168938.63310", "0"]


def body(rows) -> bytes:
    return json.dumps(rows).encode()


def task(start=T0, end=T0 + 9 * MIN, limit=499, interval="1m") -> DownloadTask:
    return DownloadTask(task_id="t-1", symbol="BTCUSDT", interval=interval, start_ms=start, end_ms=end,
                        limit=limit)


HDR = {"X-MBX-USED-WEIGHT-1M": "42", "Content-Type": "application/json"}
LATER = T0 + 3600 * 1000


def test_ok_page_sorted_and_counted_exactly():
    rows = [row(T0 + i * MIN) for i in range(10)]
    result, page = answers.classify(task(), 200, HDR, body(list(reversed(rows))), LATER)
    assert result.status == "ok"
    assert (result.candles, result.first_open_ms, result.last_open_ms) == (10, T0, T0 + 9 * MIN)
    assert (result.weight_used_1m, result.http_status, result.task_id) == (42, 200, "t-1")
    assert [[c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.close_time_ms, c.quote_volume,
             c.trades, c.taker_buy_volume, c.taker_buy_quote_volume, c.ignore] for c in page] == rows


def test_empty_page_is_ok_with_empty_candles():
    result, page = answers.classify(task(), 200, {}, b"[]", LATER)
    assert result.status == "ok" and page == [] and result.candles == 0
    assert result.weight_used_1m == -1  # no header


def test_header_lookup_is_case_insensitive():
    result, _ = answers.classify(task(), 200, {"x-mbx-used-weight-1m": "7"}, b"[]", LATER)
    assert result.weight_used_1m == 7


def test_open_newest_candle_is_not_final():
    rows = [row(T0 + i * MIN) for i in range(3)]
    now = T0 + 2 * MIN + 30_000  # inside the third candle
    result, page = answers.classify(task(), 200, HDR, body(rows), now)
    assert result.status == "not_final" and page is None
    # Exactly at close time the candle is still open; one ms later it is closed.
    close = intervals.close_time("1m", T0 + 2 * MIN)
    assert answers.classify(task(), 200, HDR, body(rows), close)[0].status == "not_final"
    assert answers.classify(task(), 200, HDR, body(rows), close + 1)[0].status == "ok"


def test_open_candle_plus_another_flaw_is_invalid_not_early():
    rows = [row(T0 + i * MIN) for i in range(3)]
    rows[0][2] = "1.00"  # high below open
    result, page = answers.classify(task(), 200, HDR, body(rows), T0 + 2 * MIN + 1)
    assert result.status == "invalid" and page is None
    assert "high/low" in result.detail


@pytest.mark.parametrize("rows, reason", [
    ([row(T0 - MIN)], "outside asked range"),
    ([row(T0), row(T0)], "duplicate"),
    ([row(T0 + 1)], "not aligned"),
    ([row(T0 + i * MIN) for i in range(6)], "for limit 5"),
])
def test_invalid_pages(rows, reason):
    result, page = answers.classify(task(limit=5), 200, HDR, body(rows), LATER)
    assert result.status == "invalid" and page is None
    assert reason in result.detail


def test_wrong_json_shape_is_invalid_but_garbled_body_is_network():
    result, _ = answers.classify(task(), 200, HDR, b'{"code":-1121,"msg":"x"}', LATER)
    assert result.status == "invalid"
    good = body([row(T0)])
    garbled = good[: len(good) // 2] + b"#garbled"
    result, page = answers.classify(task(), 200, HDR, garbled, LATER)
    assert result.status == "network" and page is None and result.http_status == 200
    assert result.weight_used_1m == 42


def test_429_and_418_carry_retry_after():
    err = b'{"code":-1003,"msg":"Too many requests"}'
    result, page = answers.classify(task(), 429, {**HDR, "Retry-After": "17"}, err, LATER)
    assert (result.status, result.retry_after_s, result.http_status, page) == ("rate_limited", 17.0, 429, None)
    assert result.detail == "retry_after_header='17' code -1003: Too many requests"
    result, _ = answers.classify(task(), 418, {"Retry-After": "120"}, err, LATER)
    assert (result.status, result.retry_after_s) == ("banned", 120.0)
    result, _ = answers.classify(task(), 429, {}, err, LATER)
    assert result.retry_after_s == answers.UNTIL_NEXT_WINDOW
    assert result.detail.startswith("retry_after_header='absent' ")


def test_other_statuses_are_http_errors_with_exchange_text():
    result, page = answers.classify(task(), 400, HDR, b'{"code":-1121,"msg":"Invalid symbol."}', LATER)
    assert (result.status, result.http_status, page) == ("http_error", 400, None)
    assert "code -1121: Invalid symbol." in result.detail
    result, _ = answers.classify(task(), 503, {}, b"<html>Service Unavailable</html>", LATER)
    assert result.status == "http_error" and "503" in result.detail and "Service Unavailable" in result.detail


def test_network_failure_and_held_back():
    result = answers.network_failure(task(), TimeoutError("read timed out"))
    assert (result.status, result.http_status, result.weight_used_1m) == ("network", 0, -1)
    assert "TimeoutError: read timed out" == result.detail
    held = answers.held_back(task(), 12.34567)
    assert (held.status, held.retry_after_s, held.http_status) == ("rate_limited", 12.346, 0)


def test_request_shape():
    from kl_actors import exchange
    from kl_actors.config import ExchangeConfig

    assert exchange.url(ExchangeConfig(rest_url="http://127.0.0.1:9/"), exchange.KLINES_PATH) == \
        "http://127.0.0.1:9/fapi/v1/klines"
    assert exchange.url(ExchangeConfig(rest_url="http://127.0.0.1:9"), exchange.EXCHANGE_INFO_PATH) == \
        "http://127.0.0.1:9/fapi/v1/exchangeInfo"  # one builder for every path, trailing slash or not
    session = exchange.session(ExchangeConfig(proxy="http://127.0.0.1:3128"))
    assert session.proxies == {"http": "http://127.0.0.1:3128", "https": "http://127.0.0.1:3128"}
    assert answers.klines_params(task(limit=3)) == {"symbol": "BTCUSDT", "interval": "1m", "startTime": T0,
                                                  "endTime": T0 + 9 * MIN, "limit": 3}
