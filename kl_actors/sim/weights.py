"""Request-weight accounting of the simulator: per-IP calendar-minute window, 429 and 418 bans.

Owns: weight per endpoint (binance-api.md §1.1) and the limiter's decisions. Pure: `now_ms` (server
time) is passed in.

Behaviours chosen where the docs are UNVERIFIED:
- the window is the calendar minute of server time (resets at :00 of every minute);
- weight is charged before parameters are validated, so 400 responses cost weight too; the
  klines weight comes from the raw `limit` (missing/unparsable → 500 → 5; < 100 incl. ≤ 0 → 1;
  > 1000 incl. > 1500 → 10);
- a rejected request (429 or 418) adds no weight;
- 429 `Retry-After` = whole seconds (rounded up) until the window resets;
- more than `abuse_after` (5) rejected requests after the first 429 in the same window → 418
  with a ban of `ban_base_s` × 2^(number of earlier bans) (120 s, 240 s, ...; capped at 3 days);
- any request during a ban → 418 with the remaining time; it does not extend the ban;
  after a ban ends the client again gets `abuse_after` + 1 429s before the next, doubled ban.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MINUTE_MS = 60_000
MAX_BAN_S = 3 * 24 * 3600


def klines_weight(raw_limit: str | None) -> int:
    try:
        limit = int(raw_limit) if raw_limit is not None else 500
    except ValueError:
        limit = 500
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass
class Decision:
    status: int  # 200 (allowed), 429 or 418
    used: int  # X-MBX-USED-WEIGHT-1M after this request
    retry_after_s: int = 0
    ban_until_ms: int = 0


@dataclass
class IpState:
    window_start_ms: int = 0
    used: int = 0
    rejected: int = 0  # 429s in this window
    ban_until_ms: int = 0
    bans: int = 0
    history: dict[int, int] = field(default_factory=dict)  # window start → weight used


class WeightLimiter:
    def __init__(self, limit: int = 2400, ban_base_s: float = 120, abuse_after: int = 5,
                 history_windows: int = 120):
        self.limit = limit
        self.ban_base_s = ban_base_s
        self.abuse_after = abuse_after
        self.history_windows = history_windows
        self.ips: dict[str, IpState] = {}

    def _state(self, ip: str, now_ms: int) -> IpState:
        st = self.ips.get(ip)
        if st is None:
            st = self.ips[ip] = IpState()
        window = now_ms // MINUTE_MS * MINUTE_MS
        if window != st.window_start_ms:
            st.window_start_ms, st.used, st.rejected = window, 0, 0
        return st

    def used(self, ip: str, now_ms: int) -> int:
        return self._state(ip, now_ms).used

    def charge(self, ip: str, weight: int, now_ms: int) -> Decision:
        st = self._state(ip, now_ms)
        if st.ban_until_ms > now_ms:
            return Decision(418, st.used, -(-(st.ban_until_ms - now_ms) // 1000), st.ban_until_ms)
        if st.used + weight > self.limit:
            st.rejected += 1
            if st.rejected > self.abuse_after + 1:
                ban_s = min(MAX_BAN_S, self.ban_base_s * 2 ** st.bans)
                st.bans += 1
                st.rejected = 0  # after the ban the client starts over with 429s
                st.ban_until_ms = now_ms + int(ban_s * 1000)
                return Decision(418, st.used, -(-int(ban_s * 1000) // 1000), st.ban_until_ms)
            reset_in = st.window_start_ms + MINUTE_MS - now_ms
            return Decision(429, st.used, max(1, -(-reset_in // 1000)))
        st.used += weight
        st.history[st.window_start_ms] = st.used
        if len(st.history) > self.history_windows:
            del st.history[min(st.history)]
        return Decision(200, st.used)

    def reset(self) -> None:
        """Forget history (stats reset); live windows and bans are kept."""
        for st in self.ips.values():
            st.history = {st.window_start_ms: st.used} if st.used else {}
