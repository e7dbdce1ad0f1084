"""The shared request-weight budget (pure: every call is told the server time).

The exchange counts weight per IP per calendar minute and answers 429 over the limit, then 418 (a
ban) to clients that keep going. All downloaders behind one egress IP share this one budget, kept
by the scheduler: a task is released only if its weight fits in what is left of the current
minute. The picture is corrected from the `X-MBX-USED-WEIGHT-1M` value each response reports
(the exchange's own count, which also includes requests we did not make: other programs on the
same IP). After a 429/418 nothing is released until its `Retry-After` has passed.
"""

from __future__ import annotations

MINUTE_MS = 60_000


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
    def __init__(self, limit_per_minute: int, usable_fraction: float = 0.9) -> None:
        self.set_limit(limit_per_minute, usable_fraction)
        self.window_start_ms = -1
        self.spent = 0
        self.blocked_until_ms = 0
        self.history: dict[int, int] = {}  # window start -> weight we believe was used

    def set_limit(self, limit_per_minute: int, usable_fraction: float = 0.9) -> None:
        self.limit = limit_per_minute
        self.usable = max(1, int(limit_per_minute * usable_fraction))

    def _roll(self, now_ms: int) -> None:
        window = now_ms - now_ms % MINUTE_MS
        if window != self.window_start_ms:
            self.window_start_ms = window
            self.spent = 0

    def available(self, now_ms: int) -> int:
        self._roll(now_ms)
        if now_ms < self.blocked_until_ms:
            return 0
        return max(0, self.usable - self.spent)

    def try_spend(self, weight: int, now_ms: int) -> bool:
        if self.available(now_ms) < weight:
            return False
        self.spent += weight
        self.history[self.window_start_ms] = self.spent
        return True

    def observe(self, weight_used_1m: int, now_ms: int) -> None:
        """The exchange said this IP used `weight_used_1m` in the current minute."""
        self._roll(now_ms)
        if weight_used_1m > self.spent:
            self.spent = weight_used_1m
            self.history[self.window_start_ms] = self.spent

    def block(self, retry_after_s: float, now_ms: int) -> None:
        """A 429 or 418: release nothing until Retry-After has passed (at least to the next minute)."""
        until = now_ms + int(max(retry_after_s, 1.0) * 1000)
        self.blocked_until_ms = max(self.blocked_until_ms, until)

    def next_release_ms(self, now_ms: int) -> int:
        """When spending may be possible again."""
        if now_ms < self.blocked_until_ms:
            return self.blocked_until_ms
        self._roll(now_ms)
        return self.window_start_ms + MINUTE_MS
