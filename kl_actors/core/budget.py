"""The shared request-weight budget (pure: every call is told the server time).

The exchange counts weight per IP per calendar minute and answers 429 over the limit, then 418 (a
ban) to clients that keep going. All downloaders behind one egress IP share this one budget, kept
by the scheduler: a task is released only if its weight fits in what is left of the current
minute. The picture is corrected from the `X-MBX-USED-WEIGHT-1M` value each response reports
(the exchange's own count, which also includes requests we did not make: other programs on the
same IP). After a 429/418 nothing is released until its `Retry-After` has passed.
"""

from __future__ import annotations

import math

MINUTE_MS = 60_000
# `retry_after_s` value meaning "until the next minute window" (the exchange's weight counter
# resets then): what a 429 with no usable Retry-After gets.
UNTIL_NEXT_WINDOW = -1.0
# A 418 ban longer than this is not believed (the exchange's bans grow from 2 minutes to 3 days).
MAX_BAN_S = 259_200.0
# How long into a minute a request may still count in the previous one: our clock error (half the
# best round trip, a few ms to the real exchange) with a wide margin for a loaded machine.
GUARD_MS = 500
STALE_IN_FLIGHT_MS = 10 * MINUTE_MS
# Releases remembered for a clock correction, in minutes before the current one.
RELEASE_LOG_MINUTES = 2


def weight_for_limit(limit: int) -> int:
    """Weight of one klines request by its `limit` (binance-api.md §1.1)."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def best_page_limit(max_limit: int = 1500) -> int:
    """The limit with the most candles per unit of weight: 499 (249.5 candles per weight)."""
    return max(range(1, max_limit + 1), key=lambda n: (n / weight_for_limit(n), n))


class WeightBudget:
    """Weight of the current server minute, as the exchange will count it.

    Three things make the exchange's count differ from "what we released this minute", and each
    is met here rather than left to the margin:
    - our idea of server time is off by up to half a round trip, and the exchange counts a request
      when it arrives: for the first `guard_ms` of a minute a request may still land in the
      previous one, so what is released then must fit in both;
    - a task released late in a minute may be sent early in the next (it waits in a socket queue
      or for a free slot): at each new minute the weight still in flight is counted in it too,
      and taken back out when its result shows the request went out in the earlier minute;
    - time-sync and the WebSocket actor's exchangeInfo calls do not ask the budget:
      `reserved_per_minute` is kept free for them.
    - the server clock itself is corrected (the first ClockSync can come after releases planned on
      this host's clock, minutes off the exchange's): `shift` moves every release of the last
      minutes by the correction and counts again what falls in the exchange's current minute.
    A header value is dated by when its request was sent, so a slow answer from the last minute
    never inflates the new one.
    """

    def __init__(self, limit_per_minute: int, usable_fraction: float = 0.9, guard_ms: int = GUARD_MS,
                 reserved_per_minute: int = 0) -> None:
        self.reserved = reserved_per_minute
        self.set_limit(limit_per_minute, usable_fraction)
        self.guard_ms = guard_ms
        self.window_start_ms = -1
        self.spent = 0
        self.prev_spent = 0
        self.in_flight: dict[str, tuple[int, int]] = {}  # task id -> (weight, server ms released at)
        # (server ms, weight) of each release in this and the last RELEASE_LOG_MINUTES minutes:
        # what `shift` counts again when the clock is corrected. Pruned at each new minute.
        self.released: list[tuple[int, int]] = []
        self.blocked_until_ms = 0

    def set_limit(self, limit_per_minute: int, usable_fraction: float = 0.9) -> None:
        self.limit = limit_per_minute
        self.usable = max(1, min(int(limit_per_minute * usable_fraction), limit_per_minute - self.reserved))

    def _roll(self, now_ms: int) -> None:
        window = now_ms - now_ms % MINUTE_MS
        if window > self.window_start_ms:
            self.prev_spent = self.spent if window == self.window_start_ms + MINUTE_MS else 0
            self.window_start_ms = window
            # A task forgotten by the scheduler (its symbol delisted while a dead downloader held
            # it) never settles; far longer than any lease, it stops being carried.
            stale = window - STALE_IN_FLIGHT_MS
            self.in_flight = {k: v for k, v in self.in_flight.items() if v[1] >= stale}
            self.spent = min(self.usable, sum(w for w, _ in self.in_flight.values()))
            kept = window - RELEASE_LOG_MINUTES * MINUTE_MS
            self.released = [r for r in self.released if r[0] >= kept]

    def available(self, now_ms: int) -> int:
        self._roll(now_ms)
        if now_ms < self.blocked_until_ms:
            return 0
        left = self.usable - self.spent
        if now_ms - self.window_start_ms < self.guard_ms:
            left -= self.prev_spent
        return max(0, left)

    def left_in_minute(self, now_ms: int) -> int:
        """What the current minute can still pay, ignoring the edge guard and any Retry-After hold:
        for planning how much of it to ask for, not for releasing."""
        self._roll(now_ms)
        return max(0, self.usable - self.spent)

    def try_spend(self, weight: int, now_ms: int, task_id: str = "") -> bool:
        if self.available(now_ms) < weight:
            return False
        self.spent += weight
        self.released.append((now_ms, weight))
        if task_id:
            self.in_flight[task_id] = (weight, now_ms)
        return True

    def settle(self, task_id: str, requested_at_ms: int, now_ms: int) -> None:
        """A released task is over (answered, or its lease expired: `requested_at_ms` 0)."""
        self._roll(now_ms)
        entry = self.in_flight.pop(task_id, None)
        if entry is None or not requested_at_ms:
            return
        weight, released_at = entry
        if released_at < self.window_start_ms and requested_at_ms < self.window_start_ms:
            self.spent = max(0, self.spent - weight)  # carried into this minute, but it went out before

    def shift(self, delta_ms: int, now_ms: int) -> None:
        """The server clock was corrected by `delta_ms` (`now_ms` is on the new clock): each
        release and hold moves with it, and this minute and the last are counted again from the
        releases that fall in them. What a header said beyond our own releases is kept while the
        minute stays the same."""
        if delta_ms == 0:
            return
        old_window = self.window_start_ms
        others = max(0, self.spent - self._own_in(old_window))
        self.released = [(t + delta_ms, w) for t, w in self.released]
        self.in_flight = {k: (w, t + delta_ms) for k, (w, t) in self.in_flight.items()}
        if self.blocked_until_ms:
            self.blocked_until_ms += delta_ms
        window = now_ms - now_ms % MINUTE_MS
        self.window_start_ms = window
        self.spent = min(self.usable, self._own_in(window) + (others if window == old_window else 0))
        self.prev_spent = sum(w for t, w in self.released if window - MINUTE_MS <= t < window)

    def _own_in(self, window: int) -> int:
        """Our weight counted in the minute from `window`: released in it, or carried into it."""
        return (sum(w for t, w in self.released if window <= t < window + MINUTE_MS)
                + sum(w for w, t in self.in_flight.values() if t < window))

    def observe(self, weight_used_1m: int, requested_at_ms: int, now_ms: int) -> None:
        """The exchange said this IP used `weight_used_1m` in the minute of a request sent at
        `requested_at_ms` (server time); it includes other programs on our IP."""
        self._roll(now_ms)
        window = requested_at_ms - requested_at_ms % MINUTE_MS
        if window == self.window_start_ms:
            if weight_used_1m > self.spent:
                self.spent = weight_used_1m
        elif window == self.window_start_ms - MINUTE_MS:
            # Only matters while the guard still counts the previous minute.
            self.prev_spent = max(self.prev_spent, weight_used_1m)

    def block(self, retry_after_s: float, now_ms: int) -> int:
        """A 429 or 418: release nothing until Retry-After has passed; returns that time.

        Any float is accepted (a hostile header must never crash the scheduler): see `hold_until_ms`.
        """
        self.blocked_until_ms = max(self.blocked_until_ms, hold_until_ms(retry_after_s, now_ms))
        return self.blocked_until_ms

    def next_release_ms(self, now_ms: int) -> int:
        """When spending may be possible again."""
        if now_ms < self.blocked_until_ms:
            return self.blocked_until_ms
        self._roll(now_ms)
        return self.window_start_ms + MINUTE_MS


def hold_until_ms(retry_after_s: float, now_ms: int) -> int:
    """When a hold for `retry_after_s` seconds from `now_ms` ends (server time), for any float.

    `UNTIL_NEXT_WINDOW`, any other negative value, NaN and infinities mean the start of the next
    minute window; otherwise at least 1 s and at most `MAX_BAN_S`.
    """
    if not math.isfinite(retry_after_s) or retry_after_s < 0:
        return now_ms - now_ms % MINUTE_MS + MINUTE_MS
    return now_ms + int(min(max(retry_after_s, 1.0), MAX_BAN_S) * 1000)


def reserved_weight(clock_samples: int, rediscover_s: float) -> int:
    """Weight per minute the service spends outside the budget: time-sync measures at :30 and may
    retry once within the same minute (`clock_samples` GETs of weight 1 each time), and the
    WebSocket actor reads exchangeInfo (weight 1) every `rediscover_s`, plus one retry."""
    return 2 * max(1, clock_samples) + int(-(-60 // max(1.0, rediscover_s))) + 1
