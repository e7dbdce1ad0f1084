"""The live-edge policy: ordering across boundaries, one or two fetches per candle, the reserve for
a minute's own closes, and the per-interval confirmation tally."""

import calendar
import datetime as dt

from kl_actors.core import boundaries, intervals
from kl_actors.messages import DownloadTask
from kl_actors.core.tasks import TaskBook, TaskState

ALL = list(intervals.INTERVALS)


def ms(*args):
    return calendar.timegm(dt.datetime(*args).timetuple()) * 1000


def _boundary_task(symbol, interval, boundary):
    open_ms = intervals.prev_open(interval, boundary)
    task = DownloadTask(task_id=f"boundary:{symbol}:{interval}:{open_ms}", symbol=symbol, interval=interval,
                        start_ms=open_ms, end_ms=open_ms, limit=1, priority="boundary")
    return TaskState(task=task, kind="single", boundary_ms=boundary)


def test_mixed_queue_fresh_and_short_first_backfill_last():
    """The top of the day leaves a backlog of every interval; the next minutes' 1m closes go first."""
    midnight = ms(2026, 11, 25)
    book = TaskBook(lease_ms=1000, max_attempts=3)
    backfill = DownloadTask(task_id="tail:BTCUSDT:1m:0-1", symbol="BTCUSDT", interval="1m", start_ms=0, end_ms=1,
                            limit=499)
    book.add(TaskState(task=backfill, kind="tail"))
    for interval in intervals.closing_at(midnight, ALL):
        for symbol in ("ETHUSDT", "BTCUSDT"):
            book.add(_boundary_task(symbol, interval, midnight))
    for minute in (1, 2):
        for symbol in ("ETHUSDT", "BTCUSDT"):
            book.add(_boundary_task(symbol, "1m", midnight + minute * intervals.MINUTE_MS))
    order = []
    while (st := book.next_ready(midnight + 3 * intervals.MINUTE_MS)) is not None:
        order.append((st.boundary_ms, st.task.interval, st.task.symbol) if st.task.priority == "boundary"
                     else "backfill")
        book.dispatched(st.task.task_id, midnight)
    m1, m2 = midnight + intervals.MINUTE_MS, midnight + 2 * intervals.MINUTE_MS
    assert order[:4] == [(m2, "1m", "BTCUSDT"), (m2, "1m", "ETHUSDT"), (m1, "1m", "BTCUSDT"), (m1, "1m", "ETHUSDT")]
    midnight_part = order[4:-1]
    assert [i for _, i, _ in midnight_part[::2]] == intervals.closing_at(midnight, ALL)  # shortest first
    assert {b for b, _, _ in midnight_part} == {midnight}
    assert order[-1] == "backfill"
    # The example of the issue: the 1m close of 00:01 before the 1d close of 00:00.
    assert order.index((m1, "1m", "BTCUSDT")) < order.index((midnight, "1d", "BTCUSDT"))


def test_two_fetches_while_the_minute_can_pay_else_one_at_the_recheck_time():
    closing = ["1m", "5m", "15m", "1h"]
    # An ordinary minute with room: every interval fetched at close and re-checked.
    assert boundaries.plan_fetches(closing, 100, 0, 2280, 5000) == dict.fromkeys(closing, True)
    # Room for one fetch each plus the 1m re-check: the short intervals keep their early fetch.
    assert boundaries.plan_fetches(closing, 100, 0, 500, 5000) == {"1m": True, "5m": False, "15m": False,
                                                                   "1h": False}
    assert boundaries.plan_fetches(closing, 100, 0, 399, 5000) == dict.fromkeys(closing, False)
    # A backlog still queued from the top of the day: even 1m is fetched once.
    assert boundaries.plan_fetches(["1m"], 550, 4000, 2280, 5000) == {"1m": False}
    # Re-check disabled: always one fetch.
    assert boundaries.plan_fetches(["1m"], 1, 0, 2280, 0) == {"1m": False}
    assert boundaries.fetches(True, 5000) == [(boundaries.FIRST, 0), (boundaries.RECHECK, 5000)]
    assert boundaries.fetches(False, 5000) == [(boundaries.SINGLE, 5000)]
    assert boundaries.fetches(False, 0) == [(boundaries.SINGLE, 0)]


def test_top_of_day_weight_halves_with_single_fetches():
    """550 symbols x 12 intervals at 00:00 against a fresh 2280-weight minute: one fetch each, at the
    re-check time, since even one each (6600) is more than the minute has."""
    closing = intervals.closing_at(ms(2026, 11, 25), ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h",
                                                      "6h", "8h", "12h", "1d"])
    assert len(closing) == 12
    double = boundaries.plan_fetches(closing, 550, 0, 2280, 5000)
    weight = sum((2 if double[i] else 1) * 550 for i in closing)
    assert not any(double.values())
    assert weight == 550 * 12  # instead of 550 * 24


def test_reserve_keeps_the_minutes_own_closes_free():
    minute = ms(2026, 11, 25, 0, 1)
    # Not planned yet: one fetch per symbol of each interval closing at the minute's start.
    assert boundaries.reserve(minute, minute, 0, 550, ["1m", "5m"]) == 550
    assert boundaries.reserve(ms(2026, 11, 25, 0, 5), ms(2026, 11, 25, 0, 5), 0, 10, ["1m", "5m"]) == 20
    # Planned: what is still waiting to be released.
    assert boundaries.reserve(minute, minute + 60_000, 120, 550, ["1m"]) == 120
    assert boundaries.reserve(minute, minute + 60_000, 0, 550, ["1m"]) == 0


def test_reserve_counts_3d_and_1w_closes_on_the_exchanges_phase():
    day = intervals.DAY_MS
    d = 20787 * day  # 2026-11-30, a Monday, epoch day ≡ 0 (mod 3)
    configured = ["1d", "3d", "1w"]
    assert boundaries.reserve(d, d, 0, 10, configured) == 30  # defaults: multiples of 3 days, Mondays
    learned = {"3d": day, "1w": 2 * day}  # the exchange's: epoch day ≡ 1 (mod 3), weeks on Saturdays
    assert boundaries.reserve(d, d, 0, 10, configured, learned) == 10
    assert boundaries.reserve(d + day, d + day, 0, 10, configured, learned) == 20
    saturday = 20792 * day
    assert boundaries.reserve(saturday, saturday, 0, 10, configured, learned) == 20


def test_tally_reports_lags_failures_and_lateness():
    boundary = ms(2026, 11, 25)
    tally = boundaries.BoundaryTally(boundary, "1d", 3)
    assert not tally.confirmed(boundary + 5_000)
    assert not tally.is_late(boundary + 59_000, 60_000)
    assert tally.is_late(boundary + 61_000, 60_000)
    assert not tally.given_up()
    assert tally.confirmed(boundary + 9_000)
    assert tally.summary() == {"boundary_ms": boundary, "interval": "1d", "tasks": 2, "failed": 1,
                               "lag_p50_ms": 9_000, "lag_max_ms": 9_000}
    assert not tally.is_late(boundary + 61_000, 60_000)  # complete: never late
