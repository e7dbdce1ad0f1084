import calendar
import datetime as dt

import pytest

from kl_actors.core import intervals as iv


def ms(*args):
    return calendar.timegm(dt.datetime(*args).timetuple()) * 1000


def test_all_fourteen_intervals_in_exchange_order():
    assert iv.INTERVALS == ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                            "1d", "3d", "1w", "1M")


@pytest.mark.parametrize("interval,t,expected", [
    ("1m", ms(2026, 9, 15, 13, 18, 59) + 999, ms(2026, 9, 15, 13, 18)),
    ("5m", ms(2026, 9, 15, 13, 19, 0), ms(2026, 9, 15, 13, 15)),
    ("8h", ms(2026, 9, 15, 7, 59), ms(2026, 9, 15, 0, 0)),
    ("1d", ms(2026, 9, 15, 23, 59, 59), ms(2026, 9, 15)),
    # 3d candles count whole days from the epoch: 20709 days to 2026-09-13, divisible by 3.
    ("3d", ms(2026, 9, 15, 12), ms(2026, 9, 13)),
])
def test_align_fixed(interval, t, expected):
    assert iv.align(interval, t) == expected
    assert iv.is_aligned(interval, expected)


def test_week_opens_monday_utc():
    sunday_late = ms(2026, 9, 20, 23, 59, 59)
    monday = ms(2026, 9, 21)
    assert dt.datetime.utcfromtimestamp(monday / 1000).weekday() == 0
    assert iv.align("1w", sunday_late) == ms(2026, 9, 14)
    assert iv.align("1w", monday) == monday
    assert iv.next_boundary("1w", sunday_late) == monday
    assert iv.next_open("1w", ms(2026, 9, 14)) == monday
    # The first week after the epoch (a Thursday) opens Monday 1970-01-05.
    assert iv.align("1w", ms(1970, 1, 6)) == ms(1970, 1, 5)


def test_calendar_months():
    assert iv.align("1M", ms(2024, 2, 29, 23, 59)) == ms(2024, 2, 1)
    assert iv.next_open("1M", ms(2024, 1, 1)) == ms(2024, 2, 1)
    assert iv.next_open("1M", ms(2024, 2, 1)) == ms(2024, 3, 1)
    assert iv.next_open("1M", ms(2024, 12, 1)) == ms(2025, 1, 1)
    assert iv.prev_open("1M", ms(2025, 1, 1)) == ms(2024, 12, 1)
    assert iv.close_time("1M", ms(2024, 2, 1)) == ms(2024, 3, 1) - 1
    assert iv.step("1M", ms(2024, 11, 1), 3) == ms(2025, 2, 1)
    assert iv.step("1M", ms(2024, 11, 1), -11) == ms(2023, 12, 1)
    assert iv.count_between("1M", ms(2023, 11, 1), ms(2024, 2, 1)) == 4
    assert list(iv.open_times("1M", ms(2023, 12, 15), ms(2024, 2, 1))) == [ms(2024, 1, 1), ms(2024, 2, 1)]


def test_stepping_and_counting_fixed():
    start = ms(2026, 1, 1)
    times = list(iv.open_times("15m", start, start + 3_600_000))
    assert times == [start + k * 900_000 for k in range(5)]
    assert iv.count_between("15m", start, start + 3_600_000) == 5
    assert iv.count_between("15m", start, start - 1) == 0
    assert iv.step("1h", start, -2) == start - 7_200_000
    assert iv.close_time("1m", start) == start + 59_999


def test_last_closed_open():
    now = ms(2026, 9, 15, 13, 18, 30)
    assert iv.last_closed_open("1m", now) == ms(2026, 9, 15, 13, 17)
    # Exactly at a boundary the candle that just closed is the previous one.
    assert iv.last_closed_open("1m", ms(2026, 9, 15, 13, 18)) == ms(2026, 9, 15, 13, 17)
    assert iv.last_closed_open("1M", ms(2026, 3, 1)) == ms(2026, 2, 1)


def test_closing_at_boundaries():
    assert iv.closing_at(ms(2026, 9, 15, 13, 1)) == ["1m"]
    assert iv.closing_at(ms(2026, 9, 15, 13, 15)) == ["1m", "3m", "5m", "15m"]
    top_of_hour = iv.closing_at(ms(2026, 9, 15, 12, 0))
    assert top_of_hour == ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h"]
    midnight_monday_first = iv.closing_at(ms(2026, 6, 1))  # a Monday and the 1st
    assert "1w" in midnight_monday_first and "1M" in midnight_monday_first and "1d" in midnight_monday_first
    assert iv.closing_at(ms(2026, 9, 15, 12, 0), ["1h", "1m"]) == ["1m", "1h"]


def test_unknown_interval():
    with pytest.raises(iv.IntervalError):
        iv.align("1s", 0)
