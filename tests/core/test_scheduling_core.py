"""The scheduler's pure core: weight budget, planning, page splitting, task leases."""

import calendar
import datetime as dt

from kl_actors.core import intervals, planner
from kl_actors.core.budget import WeightBudget, best_page_limit, reserved_weight, weight_for_limit
from kl_actors.messages import DownloadTask
from kl_actors.core.tasks import TaskBook, TaskState

MIN = 60_000


def ms(*args):
    return calendar.timegm(dt.datetime(*args).timetuple()) * 1000


def test_weight_table_and_cheapest_page():
    assert [weight_for_limit(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [1, 1, 2, 2, 5, 5, 10, 10]
    assert best_page_limit() == 499


def test_budget_spends_within_usable_share_per_minute():
    b = WeightBudget(100, usable_fraction=0.9)
    t = ms(2026, 1, 1, 0, 0, 10)
    spent = sum(2 for _ in range(100) if b.try_spend(2, t))
    assert spent == 90 and b.available(t) == 0
    assert b.next_release_ms(t) == ms(2026, 1, 1, 0, 1)
    assert not b.try_spend(2, ms(2026, 1, 1, 0, 1, 0))  # new minute, but inside the edge guard
    assert b.try_spend(2, ms(2026, 1, 1, 0, 1, 0) + 500)  # new minute


def test_budget_corrected_by_exchange_header_and_blocked_by_retry_after():
    b = WeightBudget(100, usable_fraction=1.0)
    t = ms(2026, 1, 1, 0, 0, 10)
    b.try_spend(5, t)
    b.observe(80, t, t)  # someone else on our IP used weight too
    assert b.available(t) == 20
    b.observe(10, t, t)  # a stale, lower report never lowers our count
    assert b.available(t) == 20
    b.block(30, t)
    assert not b.try_spend(1, t + 29_000)
    assert b.try_spend(1, ms(2026, 1, 1, 0, 1, 0) + 1)


def test_budget_minute_edge_guard_and_dated_headers():
    b = WeightBudget(100, usable_fraction=1.0, guard_ms=500)
    edge = ms(2026, 1, 1, 0, 1)
    assert b.try_spend(70, edge - 1000)
    # Just after the edge our clock may be ahead: a request now may still count in the old
    # minute, so only what fits in both is released.
    assert b.available(edge + 100) == 30
    assert b.try_spend(30, edge + 100) and not b.try_spend(1, edge + 200)
    assert b.available(edge + 500) == 70  # past the guard: the new minute alone, minus those 30
    # A slow answer to a request sent in the old minute says 95: that is the old minute's count,
    # not the new one's.
    b.observe(95, edge - 50, edge + 600)
    assert b.available(edge + 600) == 70
    b.observe(40, edge + 550, edge + 700)  # dated in this minute: others used weight too
    assert b.available(edge + 700) == 60
    # An old-minute report raises the guard's picture of the old minute.
    b2 = WeightBudget(100, usable_fraction=1.0, guard_ms=500)
    b2.try_spend(10, edge - 1000)
    b2.observe(90, edge - 20, edge + 10)
    assert b2.available(edge + 20) == 10
    # After a minute with nothing spent the guard has nothing to hold back.
    assert WeightBudget(100, usable_fraction=1.0).available(edge + 10) == 100


def test_budget_counts_weight_still_in_flight_at_the_minute_edge_in_the_new_minute():
    b = WeightBudget(100, usable_fraction=1.0, guard_ms=0)
    edge = ms(2026, 1, 1, 0, 1)
    assert b.try_spend(10, edge - 2000, "a") and b.try_spend(10, edge - 1000, "b")
    b.settle("a", edge - 1900, edge - 1500)  # answered before the edge: not carried
    # "b" was released in the old minute but not yet answered: it may go out in the new one.
    assert b.available(edge + 10) == 90
    b.settle("b", edge - 900, edge + 20)  # it went out before the edge after all: taken back
    assert b.available(edge + 20) == 100
    assert b.try_spend(5, edge - 10 + 60_000, "c")  # released in the new minute ...
    b.settle("c", edge + 60_000 + 5, edge + 60_000 + 30)  # ... went out in the next: stays counted there
    assert b.available(edge + 60_000 + 30) == 95
    assert b.try_spend(7, edge + 100_000, "d")
    assert b.available(edge + 100_000) == 100 - 5 - 7
    # Still in flight at the next edge, then its lease expires, fate unknown: it stays counted.
    b.settle("d", 0, edge + 125_000)
    assert b.available(edge + 125_000) == 100 - 7
    # A release that never settles stops being carried after ten minutes.
    assert b.try_spend(9, edge + 130_000, "lost")
    assert b.available(edge + 180_000) == 100 - 9
    assert b.available(edge + 180_000 + 11 * MIN) == 100


def test_budget_counts_releases_on_a_corrected_clock_in_the_exchanges_minutes():
    # Released on this host's clock; the exchange's is 45 s ahead and says so only afterwards.
    ahead = 45_000
    local_edge = ms(2026, 1, 1, 0, 1)
    b = WeightBudget(100, usable_fraction=1.0, guard_ms=500)
    assert b.try_spend(60, local_edge - 20_000, "a")  # exchange: edge + 25 s
    assert b.try_spend(30, local_edge - 50_000, "b")  # exchange: edge - 5 s, the minute before
    b.settle("a", local_edge - 19_990, local_edge - 19_000)
    b.settle("b", local_edge - 49_990, local_edge - 49_000)
    now = local_edge - 18_000 + ahead  # exchange time once the clock is known
    b.shift(ahead, now)
    # Without the shift the budget would roll into a fresh minute holding nothing (both answered).
    assert b.available(now) == 40 and b.left_in_minute(now) == 40
    assert b.prev_spent == 30
    assert b.next_release_ms(now) == local_edge + MIN
    # The next exchange minute starts clean (nothing carried: both were answered).
    assert b.available(local_edge + MIN + 600) == 100
    # A clock that was ahead: the correction moves releases back into the minute before.
    b2 = WeightBudget(100, usable_fraction=1.0, guard_ms=0)
    assert b2.try_spend(70, local_edge + 5_000, "c")
    b2.shift(-10_000, local_edge + 6_000 - 10_000)
    assert b2.available(local_edge - 4_000) == 30  # same exchange minute as the release
    b3 = WeightBudget(100, usable_fraction=1.0, guard_ms=0)
    assert b3.try_spend(70, local_edge + 5_000, "d")
    b3.settle("d", local_edge + 5_010, local_edge + 5_100)
    b3.shift(-10_000, local_edge + 46_000)  # the release now at - 5 s, the minute before
    assert b3.available(local_edge + 46_000) == 100 and b3.prev_spent == 70
    # Small corrections inside one minute keep what a header said.
    b4 = WeightBudget(100, usable_fraction=1.0, guard_ms=0)
    b4.try_spend(10, local_edge + 1_000)
    b4.observe(50, local_edge + 1_000, local_edge + 2_000)
    b4.shift(3, local_edge + 2_003)
    assert b4.available(local_edge + 2_003) == 50
    # A Retry-After hold moves with the clock: the same wait in real time.
    b5 = WeightBudget(100)
    until = b5.block(30, local_edge)
    b5.shift(45_000, local_edge + 45_000)
    assert b5.blocked_until_ms == until + 45_000
    # The release log keeps only the minutes a correction can still reach.
    b6 = WeightBudget(10_000, usable_fraction=1.0, guard_ms=0)
    for i in range(600):
        b6.try_spend(1, local_edge + i * 1000)
    b6.available(local_edge + 600_000)
    assert len(b6.released) <= 3 * 60


def test_budget_keeps_weight_free_for_requests_outside_it():
    assert reserved_weight(clock_samples=5, rediscover_s=300) == 12  # 2 x 5 time samples + 1 + 1
    assert reserved_weight(clock_samples=5, rediscover_s=5) == 23
    assert WeightBudget(60, 0.9, reserved_per_minute=12).usable == 48  # the margin alone: 54
    assert WeightBudget(2400, 0.9, reserved_per_minute=12).usable == 2160
    b = WeightBudget(2400, 0.9, reserved_per_minute=12)
    b.set_limit(100, 0.9)
    assert b.usable == 88


def test_plan_new_symbol_depth_and_listing_clamp():
    now = ms(2026, 9, 15, 13, 18, 30)
    last_closed = ms(2026, 9, 15, 13, 17)
    [r] = planner.plan_table("BTCUSDT", "1m", now_ms=now, onboard_ms=ms(2020, 1, 1), depth=1000,
                             since_listing=False, last_stored_ms=None, holes=[])
    assert (r.first_open_ms, r.last_open_ms, r.kind) == (last_closed - 999 * MIN, last_closed, "new")
    # Listed 10 minutes and 20 seconds ago: starts at the candle containing the listing time.
    [r] = planner.plan_table("NEWUSDT", "1m", now_ms=now, onboard_ms=ms(2026, 9, 15, 13, 8, 10), depth=1000,
                             since_listing=False, last_stored_ms=None, holes=[])
    assert r.first_open_ms == ms(2026, 9, 15, 13, 8) and r.last_open_ms == last_closed
    [r] = planner.plan_table("BTCUSDT", "1d", now_ms=now, onboard_ms=ms(2026, 1, 3, 8), depth=10,
                             since_listing=True, last_stored_ms=None, holes=[])
    assert r.first_open_ms == ms(2026, 1, 3)


def test_plan_known_table_tail_and_holes():
    now = ms(2026, 9, 15, 13, 18, 30)
    ranges = planner.plan_table("BTCUSDT", "1m", now_ms=now, onboard_ms=0, depth=1000, since_listing=False,
                                last_stored_ms=ms(2026, 9, 15, 13, 10), holes=[(ms(2026, 9, 15, 12), ms(2026, 9, 15, 12, 5))])
    assert [(r.kind, r.first_open_ms, r.last_open_ms) for r in ranges] == [
        ("hole", ms(2026, 9, 15, 12), ms(2026, 9, 15, 12, 5)),
        ("tail", ms(2026, 9, 15, 13, 11), ms(2026, 9, 15, 13, 17)),
    ]
    up_to_date = planner.plan_table("BTCUSDT", "1m", now_ms=now, onboard_ms=0, depth=1000, since_listing=False,
                                    last_stored_ms=ms(2026, 9, 15, 13, 17), holes=[])
    assert up_to_date == []


def test_split_pages_covers_range_exactly_once():
    first, last = ms(2026, 1, 1), ms(2026, 1, 1) + 1234 * MIN
    pages = planner.split_pages("1m", first, last, 499)
    assert [intervals.count_between("1m", a, b) for a, b in pages] == [499, 499, 237]
    covered = [t for a, b in pages for t in intervals.open_times("1m", a, b)]
    assert covered == list(intervals.open_times("1m", first, last))
    months = planner.split_pages("1M", ms(2020, 1, 1), ms(2026, 1, 1), 12)
    assert months[0] == (ms(2020, 1, 1), ms(2020, 12, 1)) and months[-1] == (ms(2026, 1, 1), ms(2026, 1, 1))


def _task(task_id, priority="backfill", interval="1m"):
    return DownloadTask(task_id=task_id, symbol="BTCUSDT", interval=interval, start_ms=0, end_ms=0, limit=499,
                        priority=priority)


def test_book_boundary_first_shortest_interval_first_and_delays():
    book = TaskBook(lease_ms=1000, max_attempts=3)
    book.add(TaskState(task=_task("bf")))
    book.add(TaskState(task=_task("b1h", "boundary", "1h"), boundary_ms=5))
    book.add(TaskState(task=_task("b1m", "boundary", "1m"), boundary_ms=5))
    book.add(TaskState(task=_task("recheck", "boundary", "1m"), boundary_ms=5, not_before_ms=500))
    order = []
    while (st := book.next_ready(100)) is not None:
        order.append(st.task.task_id)
        book.dispatched(st.task.task_id, 100)
    assert order == ["b1m", "b1h", "bf"]
    assert book.next_ready(600).task.task_id == "recheck"


def test_book_lease_expiry_commit_and_give_up():
    book = TaskBook(lease_ms=1000, max_attempts=2)
    book.add(TaskState(task=_task("a")))
    book.dispatched("a", 0)
    assert book.expired(999) == [] and book.expired(1000) == ["a"]
    assert book.retry("a", 1000, 0, "lease expired").task.attempt == 2
    book.dispatched("a", 1000)
    book.result_ok("a", 499, 1500)
    assert book.expired(2400) == []  # the ok extended the lease while the commit comes
    assert book.committed("a").candles == 499 and book.open_count() == 0 and book.done == 1
    book.add(TaskState(task=_task("b")))
    book.dispatched("b", 0)
    book.retry("b", 0, 0, "network")
    book.dispatched("b", 0)
    assert book.retry("b", 0, 0, "network") is None
    assert "b" in book.failed and book.open_count() == 0
    assert book.committed("b") is None  # a late commit of a given-up task changes nothing


def test_plan_known_table_missing_head_after_interrupted_backfill():
    now = ms(2026, 9, 15, 13, 18, 30)
    last_closed = ms(2026, 9, 15, 13, 17)
    # Pages 2 and 3 of a new table were committed, page 1 was not (the scheduler died).
    first_stored = last_closed - 600 * MIN
    ranges = planner.plan_table("BTCUSDT", "1m", now_ms=now, onboard_ms=0, depth=1000, since_listing=False,
                                last_stored_ms=last_closed, holes=[], first_stored_ms=first_stored)
    assert [(r.kind, r.first_open_ms, r.last_open_ms) for r in ranges] == [
        ("hole", last_closed - 999 * MIN, first_stored - MIN)]
    # Once the exchange confirmed it has nothing there, the head is not asked again.
    confirmed = planner.plan_table("BTCUSDT", "1m", now_ms=now, onboard_ms=0, depth=1000, since_listing=False,
                                   last_stored_ms=last_closed, holes=[], first_stored_ms=first_stored,
                                   exchange_holes=[(last_closed - 2000 * MIN, first_stored - MIN)])
    assert confirmed == []
    # A table that already reaches back to its listing has no head to fetch.
    listed = planner.plan_table("BTCUSDT", "1m", now_ms=now, onboard_ms=first_stored + 5, depth=1000,
                                since_listing=False, last_stored_ms=last_closed, holes=[],
                                first_stored_ms=first_stored)
    assert listed == []
