"""Interval alignment of the simulator (its own implementation, not the service's)."""

import datetime as dt

import pytest

from kl_actors.sim import timeframes as tf


def ms(*args) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()) * 1000


def test_all_fapi_intervals_case_sensitive():
    assert len(tf.INTERVALS) == 15 and "1s" not in tf.INTERVALS
    assert tf.is_interval("1M") and tf.is_interval("1m") and not tf.is_interval("1s")
    assert not tf.is_interval("1H")


@pytest.mark.parametrize("interval,step", [("1m", 60_000), ("3m", 180_000), ("5m", 300_000),
                                           ("15m", 900_000), ("1h", 3_600_000),
                                           ("4h", 14_400_000), ("12h", 43_200_000),
                                           ("1d", 86_400_000), ("3d", 259_200_000)])
def test_fixed_intervals_epoch_aligned(interval, step):
    t = 1789478219999
    o = tf.floor_open(interval, t)
    assert o % step == 0 and o <= t < o + step
    assert tf.next_open(interval, o) == o + step
    assert tf.close_time(interval, o) == o + step - 1
    assert tf.ceil_open(interval, o) == o and tf.ceil_open(interval, o + 1) == o + step


def test_week_opens_monday():
    # the docs' weekly example: Mon 2017-07-03 → Sun 2017-07-09 23:59:59.999
    assert tf.floor_open("1w", 1499644799999) == 1499040000000
    assert tf.close_time("1w", 1499040000000) == 1499644799999
    assert tf.floor_open("1w", 1499040000000 - 1) == 1499040000000 - 7 * 86_400_000
    o = tf.floor_open("1w", ms(2026, 11, 24, 17))
    assert dt.datetime.fromtimestamp(o / 1000, dt.timezone.utc).weekday() == 0
    assert o == ms(2026, 11, 23)


def test_calendar_months():
    assert tf.floor_open("1M", ms(2024, 2, 29, 23, 59)) == ms(2024, 2, 1)
    assert tf.next_open("1M", ms(2024, 2, 1)) == ms(2024, 3, 1)
    assert tf.close_time("1M", ms(2023, 2, 1)) == ms(2023, 3, 1) - 1
    assert tf.next_open("1M", ms(2025, 12, 1)) == ms(2026, 1, 1)
    assert tf.prev_open("1M", ms(2026, 1, 1)) == ms(2025, 12, 1)
    assert tf.ceil_open("1M", ms(2026, 1, 1, 0, 0, 1)) == ms(2026, 2, 1)
    assert list(tf.opens_between("1M", ms(2025, 11, 1), ms(2026, 2, 1))) == [
        ms(2025, 11, 1), ms(2025, 12, 1), ms(2026, 1, 1), ms(2026, 2, 1)]


def test_three_day_is_epoch_anchored():
    o = tf.floor_open("3d", ms(2026, 11, 24, 12))
    assert o % (3 * 86_400_000) == 0
    assert tf.next_open("3d", o) - o == 3 * 86_400_000


def test_opens_between_fixed():
    assert list(tf.opens_between("1h", 0, 3 * 3_600_000)) == [0, 3_600_000, 7_200_000,
                                                             10_800_000]
    assert list(tf.opens_between("1h", 3_600_000, 0)) == []
