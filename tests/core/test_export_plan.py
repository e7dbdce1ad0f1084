"""The export's pure rules: months, partition names, decimal types, fingerprints, what is rewritten."""

from __future__ import annotations

import urllib.parse

import pytest

from kl_actors.core import export_plan as plan
from kl_actors.core.export_plan import Action, MonthStamp

DAY = 86_400_000
JAN_2026 = 1767225600000  # 2026-01-01T00:00Z


def test_months_follow_open_times_across_year_and_month_edges():
    assert plan.month_start_ms(2026, 1) == JAN_2026
    dec_last_minute = JAN_2026 - 60_000
    assert plan.month_of(dec_last_minute) == (2025, 12)
    assert plan.month_of(JAN_2026) == (2026, 1)
    assert plan.month_bounds(2025, 12) == (plan.month_start_ms(2025, 12), JAN_2026 - 1)
    assert plan.months_between(dec_last_minute, JAN_2026) == [(2025, 12), (2026, 1)]
    leap_day = plan.month_start_ms(2024, 2) + 28 * DAY  # 2024-02-29
    assert plan.months_between(plan.month_start_ms(2024, 2), leap_day) == [(2024, 2)]
    assert plan.month_of(leap_day + DAY) == (2024, 3)
    assert len(plan.months_between(plan.month_start_ms(2023, 11), plan.month_start_ms(2025, 2))) == 16
    assert plan.parse_month_key(plan.month_key(2026, 3)) == (2026, 3)


def test_since_accepts_ms_and_utc_dates():
    assert plan.parse_since("1767225600000") == JAN_2026
    assert plan.parse_since("2026-01") == JAN_2026
    assert plan.parse_since("2026-01-01") == JAN_2026
    assert plan.parse_since("2026-01-01T06:00") == JAN_2026 + DAY // 4
    assert plan.parse_since("2026-01-01T06:00Z") == JAN_2026 + DAY // 4
    with pytest.raises(plan.ExportError):
        plan.parse_since("last tuesday")


@pytest.mark.parametrize("symbol", ["BTCUSDT", "1000PEPEUSDT", "币安人生USDT", "BtcUSDT", "BTC-USDT", "Pepe.USDT"])
def test_usual_and_non_ascii_symbols_stay_as_they_are(symbol):
    assert plan.partition_value(symbol) == symbol
    assert urllib.parse.unquote(plan.partition_value(symbol)) == symbol


@pytest.mark.parametrize("symbol", ["A+B=CUSDT", "X:Y*USDT", "<|>USDT", "a€+USDT"])
def test_other_characters_are_percent_encoded_and_decode_back(symbol):
    value = plan.partition_value(symbol)
    assert all(ch.isalnum() or ch in "._-%" for ch in value)
    assert "=" not in value and "+" not in value
    assert urllib.parse.unquote(value) == symbol


def test_partition_dir():
    assert plan.partition_dir("1m", "BTCUSDT", 2026, 11) == "interval=1m/symbol=BTCUSDT/year=2026/month=11"
    assert plan.partition_dir("1M", "币安人生USDT", 2026, 1) == "interval=1M/symbol=币安人生USDT/year=2026/month=1"


def test_case_collisions_name_what_a_case_insensitive_disk_merges():
    assert plan.case_collisions(["1m", "1h", "1M"]) == [("1M", "1m")]
    assert plan.case_collisions(["BTCUSDT", "BtcUSDT", "ETHUSDT"]) == [("BTCUSDT", "BtcUSDT")]
    assert plan.case_collisions(["1m", "1h"]) == []


def test_decimal_type_from_scales():
    assert plan.decimal_type(2, 2, 6) == (18, 2)
    assert plan.decimal_type(0, 0, 1) == (18, 0)
    assert plan.decimal_type(8, 8, 10) == (18, 8)
    assert plan.decimal_type(8, 8, 11) == (38, 8)          # 19 digits
    assert plan.decimal_type(20, 20, 18) == (38, 20)
    assert plan.decimal_type(20, 20, 19) is None           # 39 digits: strings
    assert plan.decimal_type(1, 2, 3) == (18, 2)           # mixed scales: the larger, exact
    assert plan.decimal_type(0, 20, 19) is None


def stamp(**changes) -> MonthStamp:
    base = dict(rows=100, first_open_ms=JAN_2026, last_open_ms=JAN_2026 + 99 * 60_000, ws_rows=0,
                newest_close_ms=JAN_2026 + 100 * 60_000 - 1, checked_at_ms=JAN_2026 + 40 * DAY,
                file_bytes=1234, digest="")
    base.update(changes)
    return MonthStamp(**base)


def test_decide_writes_new_grown_or_lost_months():
    first, last = JAN_2026, JAN_2026 + 99 * 60_000
    assert plan.decide(None, 100, first, last, file_ok=False) == (Action.WRITE, "new")
    assert plan.decide(stamp(), 101, first, last + 60_000, file_ok=True) == (Action.WRITE, "rows_changed")
    assert plan.decide(stamp(), 100, first - 60_000, last - 60_000, file_ok=True) == (Action.WRITE, "rows_changed")
    assert plan.decide(stamp(), 100, first, last, file_ok=False) == (Action.WRITE, "file_missing")
    assert plan.decide(stamp(), 100, first, last, file_ok=True, full=True) == (Action.WRITE, "full")
    assert plan.decide(stamp(), 0, None, None, file_ok=True) == (Action.REMOVE, "no_rows")
    assert plan.decide(None, 0, None, None, file_ok=False) == (Action.KEEP, "empty")


def test_decide_keeps_settled_months_and_checks_those_that_may_change():
    first, last = JAN_2026, JAN_2026 + 99 * 60_000
    settled = stamp()
    assert not plan.may_change(settled)
    assert plan.decide(settled, 100, first, last, file_ok=True) == (Action.KEEP, "settled")
    with_ws = stamp(ws_rows=1, digest="ab")
    assert plan.decide(with_ws, 100, first, last, file_ok=True) == (Action.CHECK, "ws_rows")
    # Exported less than SETTLE_MS after its newest candle closed: REST may still re-check it.
    recent = stamp(checked_at_ms=stamp().newest_close_ms + plan.SETTLE_MS - 1, digest="ab")
    assert plan.may_change(recent) and not plan.may_change(stamp(checked_at_ms=stamp().newest_close_ms + plan.SETTLE_MS))
    assert plan.decide(recent, 100, first, last, file_ok=True) == (Action.CHECK, "recent")
    assert plan.decide(stamp(ws_rows=1), 100, first, last, file_ok=True) == (Action.WRITE, "no_digest")


def rows(n: int, start: int = JAN_2026, source: str = "rest") -> list[tuple]:
    return [(start + i * 60_000, "1.10", "1.20", "1.00", "1.15", "5.000", start + i * 60_000 + 59_999,
             "5.75000", 7, "2.000", "2.30000", source) for i in range(n)]


def test_stamp_keeps_a_hash_only_while_the_month_may_change():
    month = rows(10)
    old = plan.stamp_for(month, ws_rows=0, file_bytes=10, now_ms=JAN_2026 + 40 * DAY)
    assert (old.rows, old.first_open_ms, old.last_open_ms) == (10, JAN_2026, JAN_2026 + 9 * 60_000)
    assert old.newest_close_ms == JAN_2026 + 10 * 60_000 - 1 and old.digest == ""
    fresh = plan.stamp_for(month, ws_rows=0, file_bytes=10, now_ms=JAN_2026 + DAY)
    assert fresh.digest == plan.content_digest(month)
    # Checked again once settled: the hash goes, the month is kept from then on.
    later = plan.checked(fresh, JAN_2026 + 3 * DAY)
    assert later.digest == "" and later.checked_at_ms == JAN_2026 + 3 * DAY
    assert plan.decide(later, 10, JAN_2026, JAN_2026 + 9 * 60_000, file_ok=True) == (Action.KEEP, "settled")
    ws = plan.stamp_for(rows(10, source="ws"), ws_rows=10, file_bytes=10, now_ms=JAN_2026 + 40 * DAY)
    assert ws.digest and plan.checked(ws, JAN_2026 + 50 * DAY).digest == ws.digest


def test_digest_sees_one_changed_value_and_a_changed_source():
    month = rows(5)
    changed = list(month)
    changed[3] = (*changed[3][:4], "1.16", *changed[3][5:])
    resourced = list(month)
    resourced[0] = (*resourced[0][:11], "ws")
    digests = {plan.content_digest(m) for m in (month, changed, resourced)}
    assert len(digests) == 3


def test_state_round_trip_and_refusals():
    state = plan.ExportState(database="/x/db.sqlite",
                             tables={plan.table_key("币安人生USDT", "1h"): {"2026-01": stamp(digest="ab")}})
    assert plan.decode_state(plan.encode_state(state)) == state
    for bad in (b"", b"{", b'{"version": 99}', b'{"version": 1, "tables": {"x": {"2026-01": {"rows": "a"}}}}'):
        with pytest.raises(plan.ExportError):
            plan.decode_state(bad)
