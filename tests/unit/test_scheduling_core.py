"""The scheduler's pure core: weight budget, planning, page splitting, task leases."""

import calendar
import datetime as dt

from kl_actors import intervals, planner
from kl_actors.budget import WeightBudget, best_page_limit, weight_for_limit
from kl_actors.messages import DownloadTask
from kl_actors.tasks import TaskBook, TaskState

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
    assert b.try_spend(2, ms(2026, 1, 1, 0, 1, 0))  # new minute


def test_budget_corrected_by_exchange_header_and_blocked_by_retry_after():
    b = WeightBudget(100, usable_fraction=1.0)
    t = ms(2026, 1, 1, 0, 0, 10)
    b.try_spend(5, t)
    b.observe(80, t)  # someone else on our IP used weight too
    assert b.available(t) == 20
    b.observe(10, t)  # a stale, lower report never lowers our count
    assert b.available(t) == 20
    b.block(30, t)
    assert not b.try_spend(1, t + 29_000)
    assert b.try_spend(1, ms(2026, 1, 1, 0, 1, 0) + 1)


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
