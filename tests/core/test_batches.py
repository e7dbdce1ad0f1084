"""What the writer lets into the database (`core/batches.py`): the batch checks, the hole checks
and which of two REST answers wins. The writer as a process is tested in tests/actors/test_writer.py."""

from __future__ import annotations

import msgspec
import pytest
from harness import candle

from kl_actors.core import batches, intervals
from kl_actors.core.batches import (FUTURE_TOLERANCE_MS, RECENT_MS, REMEMBER_MS, RequestMemory,
                                    accept_batch, check_batch, check_hole)
from kl_actors.core.klines import MAX_TIME_MS, PageError, check_candle
from kl_actors.core.symbols import SymbolError

MIN = 60_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MIN


def minutes(first: int, count: int) -> list:
    return [candle(T0 + (first + i) * MIN) for i in range(count)]


def rows(candles) -> list[tuple]:
    return [msgspec.structs.astuple(c) for c in candles]


# -- the candles of a batch ---------------------------------------------------------------------

@pytest.mark.parametrize("interval", ["1m", "1h", "3d", "1w", "1M"])
def test_check_batch_agrees_with_check_candle(interval):
    start = intervals.align(interval, T0)
    good = [candle(intervals.step(interval, start, i), interval) for i in range(5)]
    assert check_batch(interval, good) == rows(good)
    variants = [
        {"open_time_ms": good[2].open_time_ms + 60_000},
        {"close_time_ms": good[2].close_time_ms + 1},
        {"low": "101.5"},
        {"high": "100.2"},
        {"open": "-1"},
        {"volume": "1\n2"},
        {"close": "١٠٠.5"},  # Unicode digits: whatever check_candle says, check_batch says too
        {"trades": -1},
        {"high": "101.0000000000000000001", "open": "101.0000000000000000002"},
    ]
    for change in variants:
        bad = list(good)
        bad[2] = msgspec.structs.replace(good[2], **change)
        try:
            check_candle(interval, bad[2])
            expected = None
        except PageError as exc:
            expected = str(exc)
        if expected is None:
            check_batch(interval, bad)
        else:
            with pytest.raises(PageError) as info:
                check_batch(interval, bad)
            assert str(info.value) == expected


def test_check_batch_refuses_values_sqlite_cannot_hold():
    good = candle(T0)
    assert len(check_batch("1m", [good])) == 1
    for bad in (msgspec.structs.replace(good, trades=2**64 - 1), msgspec.structs.replace(good, trades=2**63),
                msgspec.structs.replace(good, open="١٢", high="١٢")):
        with pytest.raises(PageError):
            check_batch("1m", [good, bad])


def test_check_batch_of_nothing_is_nothing():
    assert check_batch("1m", []) == []
    assert accept_batch("BTCUSDT", "1m", [], server_now_ms=0) == []


# -- a batch as the writer accepts it -----------------------------------------------------------

def test_accept_batch_needs_a_table_for_its_symbol_and_interval():
    good = minutes(0, 2)
    assert accept_batch("BTCUSDT", "1m", good, None) == rows(good)
    with pytest.raises(SymbolError, match="invalid symbol"):
        accept_batch("BTC'); DROP TABLE x; --", "1m", good, None)
    with pytest.raises(SymbolError, match="unknown interval"):
        accept_batch("ETHUSDT", "7m", good, None)


def test_accept_batch_refuses_a_candle_closing_past_the_exchanges_now():
    batch = minutes(0, 3)
    last_close = batch[-1].close_time_ms
    # The limit is now + FUTURE_TOLERANCE_MS: a close at the limit is in the future, one below it is not.
    at_limit = last_close - FUTURE_TOLERANCE_MS
    with pytest.raises(PageError, match=f"candle closing at {last_close} is in the future "
                                        f"\\(server now {at_limit}\\)"):
        accept_batch("BTCUSDT", "1m", batch, server_now_ms=at_limit)
    assert accept_batch("BTCUSDT", "1m", batch, server_now_ms=at_limit + 1) == rows(batch)
    # One future candle refuses the whole batch, wherever it sits.
    with pytest.raises(PageError):
        accept_batch("BTCUSDT", "1m", [batch[2], batch[0]], server_now_ms=at_limit)
    # Until the exchange's clock is known nothing is refused as future.
    assert accept_batch("BTCUSDT", "1m", batch, server_now_ms=None) == rows(batch)


def test_accept_batch_checks_candles_before_the_clock():
    bad = minutes(0, 2)
    bad[1] = msgspec.structs.replace(bad[1], volume="1e5")
    with pytest.raises(PageError, match="'1e5' is not a non-negative decimal"):
        accept_batch("BTCUSDT", "1m", bad, server_now_ms=T0 + 10 * MIN)


# -- an exchange hole ---------------------------------------------------------------------------

def test_a_hole_needs_a_table_and_an_ordered_range_of_open_times():
    check_hole("BTCUSDT", "1m", T0, T0 + MIN, None)
    with pytest.raises(SymbolError):
        check_hole("BTC'); DROP TABLE x; --", "1m", T0, T0, None)
    with pytest.raises(ValueError, match="before start"):
        check_hole("BTCUSDT", "1m", T0 + MIN, T0, None)
    with pytest.raises(ValueError, match="out of range"):
        check_hole("BTCUSDT", "1m", -MIN, T0, None)
    with pytest.raises(ValueError, match="out of range"):
        check_hole("BTCUSDT", "1m", T0, MAX_TIME_MS + 1, None)


def test_a_hole_cannot_end_in_the_future():
    last_open = T0 + 5 * MIN
    close = intervals.close_time("1m", last_open)
    with pytest.raises(ValueError, match=f"ends in the future: last open {last_open}"):
        check_hole("BTCUSDT", "1m", T0, last_open, server_now_ms=close - FUTURE_TOLERANCE_MS)
    check_hole("BTCUSDT", "1m", T0, last_open, server_now_ms=close - FUTURE_TOLERANCE_MS + 1)
    # A month that opened in the past but closes in the future: refused by its close.
    month = intervals.align("1M", T0)
    with pytest.raises(ValueError, match="ends in the future"):
        check_hole("BTCUSDT", "1M", month, month, server_now_ms=month + 86_400_000)
    # An absurd end is refused as an open time, without calendar arithmetic on it.
    with pytest.raises(ValueError, match="ends in the future"):
        check_hole("BTCUSDT", "1M", month, MAX_TIME_MS, server_now_ms=T0)
    check_hole("BTCUSDT", "1M", month, MAX_TIME_MS, server_now_ms=None)


# -- of two REST answers, the later-requested one wins ---------------------------------------------

def test_a_later_request_wins_over_a_later_commit():
    memory = RequestMemory()
    c = minutes(0, 1)[0]
    sent = c.close_time_ms + 1
    final, provisional = rows([msgspec.structs.replace(c, close="100.2")]), rows([c])
    staged: dict = {}
    kept, refused, _ = memory.newer_only("BTCUSDT", "1m", sent + 5000, final, staged)
    assert kept == final and refused == []
    assert staged == {("BTCUSDT", "1m", c.open_time_ms): sent + 5000}
    memory.remember(staged)  # that transaction committed
    staged = {}
    kept, refused, newest = memory.newer_only("BTCUSDT", "1m", sent, provisional, staged)
    assert kept == [] and refused == [c.open_time_ms] and newest == sent + 5000
    assert staged == {}
    # Another symbol or interval is another candle.
    assert memory.newer_only("ETHUSDT", "1m", sent, provisional, {})[0] == provisional


def test_within_one_transaction_the_staged_request_counts():
    memory = RequestMemory()
    c = minutes(0, 1)[0]
    sent = c.close_time_ms + 1
    staged: dict = {}
    memory.newer_only("BTCUSDT", "1m", sent + 9000, rows([c]), staged)
    kept, refused, newest = memory.newer_only("BTCUSDT", "1m", sent + 5000, rows([c]), staged)
    assert (kept, refused, newest) == ([], [c.open_time_ms], sent + 9000)
    assert len(memory) == 0  # nothing is remembered before its transaction commits
    memory.remember(staged)
    assert memory.requested_at == {("BTCUSDT", "1m", c.open_time_ms): sent + 9000}


def test_candles_old_when_asked_skip_the_memory():
    memory = RequestMemory()
    old = minutes(0, 3)
    asked_at = old[-1].close_time_ms + RECENT_MS + 1  # every candle closed more than RECENT_MS before
    staged: dict = {}
    assert memory.newer_only("BTCUSDT", "1m", asked_at, rows(old), staged) == (rows(old), [], 0)
    assert staged == {}
    # A batch mixing old and recent candles: only the recent ones are remembered.
    recent_from = asked_at - RECENT_MS
    mixed = old + [candle(o) for o in range(recent_from - recent_from % MIN, recent_from + 2 * MIN, MIN)]
    memory.newer_only("BTCUSDT", "1m", asked_at, rows(mixed), staged)
    assert sorted(k[2] for k in staged) == [c.open_time_ms for c in mixed if c.close_time_ms >= recent_from]


def test_the_memory_forgets_requests_far_behind_the_newest(monkeypatch):
    memory = RequestMemory()
    memory.remember({("BTCUSDT", "1m", T0): T0, ("BTCUSDT", "1m", T0 + MIN): T0 + REMEMBER_MS,
                     ("BTCUSDT", "1m", T0 + 2 * MIN): T0 + REMEMBER_MS + 1})
    memory.forget_old()
    assert memory.requested_at == {("BTCUSDT", "1m", T0 + MIN): T0 + REMEMBER_MS,
                                   ("BTCUSDT", "1m", T0 + 2 * MIN): T0 + REMEMBER_MS + 1}
    # Past REMEMBER_MAX within the window (a burst of recent candles): the newest half is kept.
    monkeypatch.setattr(batches, "REMEMBER_MAX", 10)
    memory = RequestMemory()
    memory.remember({("BTCUSDT", "1m", T0 + i * MIN): T0 + i for i in range(11)})
    assert sorted(memory.requested_at.values()) == [T0 + i for i in range(6, 11)]


# -- candles sent as columns (ArchiveBatch) -----------------------------------------------------

_DAMAGE = ["", ".", "1.", ".5", "1..2", "1.2.3", "0.0.0", "10.20.30", "1.23.4", "12345678901234567", "1234567890.12345",
           "123456789012345678901", "1e5", "+1", "-1", " 1", "1_0", "١٢", "1\n2", "1,2", "nan", "00.10",
           "7", "99999999999999.9", "1.23456789012345", "0.000000000000000001"]


@pytest.mark.parametrize("seed", range(6))
def test_columns_and_rows_are_refused_exactly_when_check_candle_refuses(seed):
    """Random damage to decimals, prices and counts: `check_columns` (and `check_batch`) raise
    exactly when `check_candle` refuses a candle, with its message for the first bad one; the
    fast path says yes only when every candle passes (nothing wrong ever slips through)."""
    import random

    from kl_actors.messages import columns_of

    rng = random.Random(seed)
    fields = ["open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume",
              "taker_buy_quote_volume"]
    fast_yes = 0
    for _ in range(300):
        batch = minutes(0, rng.randrange(1, 30))
        for _ in range(rng.choice([0, 0, 1, 2])):
            k = rng.randrange(len(batch))
            change = {rng.choice(fields): rng.choice(_DAMAGE)}
            if rng.random() < 0.1:
                change = {"trades": rng.choice([-1, 2**63, 0])}
            batch[k] = msgspec.structs.replace(batch[k], **change)
        expected = None
        for c in batch:
            try:
                check_candle("1m", c)
            except PageError as exc:
                expected = str(exc)
                break
        columns = columns_of(batch)
        if expected is None:
            batches.check_columns("1m", columns)
            assert check_batch("1m", batch) == rows(batch)
        else:
            for check in (lambda: batches.check_columns("1m", columns), lambda: check_batch("1m", batch)):
                with pytest.raises(PageError) as info:
                    check()
                assert str(info.value) == expected
        if batches._fast_ok("1m", columns.lists()):
            assert expected is None
            fast_yes += 1
    assert fast_yes > 100  # the fast path does answer for clean batches


def test_columns_of_unequal_lengths_are_refused():
    from kl_actors.messages import CandleColumns, columns_of

    lists = list(columns_of(minutes(0, 3)).lists())
    lists[4] = lists[4][:2]
    with pytest.raises(PageError, match="unequal lengths"):
        batches.accept_columns("BTCUSDT", "1m", CandleColumns(*lists), None)


def test_accept_columns_checks_table_clock_and_candles():
    from kl_actors.messages import columns_of

    batch = minutes(0, 3)
    last_close = batch[-1].close_time_ms
    batches.accept_columns("BTCUSDT", "1m", columns_of(batch), last_close - FUTURE_TOLERANCE_MS + 1)
    with pytest.raises(PageError, match="in the future"):
        batches.accept_columns("BTCUSDT", "1m", columns_of(batch), last_close - FUTURE_TOLERANCE_MS)
    with pytest.raises(SymbolError):
        batches.accept_columns("BTC'); --", "1m", columns_of(batch), None)
    batches.accept_columns("BTCUSDT", "1m", columns_of([]), 0)  # nothing is nothing
