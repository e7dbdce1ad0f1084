"""Where the exchange opens 3d, 1w and 1M candles, as its own candles show it (pure: no I/O).

Nothing here is arithmetic the exchange might not share. For 3d and 1w the phase (open time modulo
the interval's length) is read from a real candle: one stored in the database (it came from the
exchange) or the newest one the exchange answers for a probe. Until one is seen, a phase is
assumed (3d: `klines.phase_3d_days`; 1w: Monday, as the docs show) and the caller keeps asking.
1M is calendar-based (the 1st, 00:00 UTC) only once a real 1M candle confirms it; a candle that
opens anywhere else makes 1M unusable (nothing planned, nothing fetched live) until a later probe
confirms the calendar, so a month grid the exchange does not share never turns into pages that
fail validation for ever.

Owns the decision only; the scheduler reads the database and asks the exchange.
"""

from __future__ import annotations

from typing import NamedTuple

from . import intervals

# Intervals whose alignment is learned: 3d and 1w by phase, 1M by confirmation.
LEARNED = ("3d", "1w", intervals.MONTH)


class Learned(NamedTuple):
    interval: str
    source: str          # "stored" or "exchange"
    outcome: str         # "phase", "confirmed" (1M on calendar months) or "contradicted" (1M elsewhere)
    phase_ms: int        # 3d/1w: the phase; 1M: the candle's open time


def is_month_start(open_ms: int) -> bool:
    try:
        return intervals.align(intervals.MONTH, open_ms) == open_ms
    except (ValueError, OverflowError, OSError):
        return False


class Alignment:
    """The learned alignment of the configured 3d, 1w and 1M intervals."""

    def __init__(self, configured: list[str] | tuple[str, ...], phase_3d_days: int) -> None:
        self.configured = [i for i in LEARNED if i in configured]
        self.assumed = dict(intervals.DEFAULT_PHASE_MS)
        self.assumed["3d"] = phase_3d_days % 3 * intervals.DAY_MS
        self.phases: dict[str, int] = {}          # learned phases of 3d and 1w
        self.month: bool | None = None             # 1M on calendar months: confirmed / contradicted / unknown

    def unknown(self) -> list[str]:
        """Configured intervals whose alignment no real candle has shown yet (a contradicted 1M
        stays here: a later probe may confirm the calendar)."""
        return [i for i in self.configured
                if (i == intervals.MONTH and self.month is not True) or (i != intervals.MONTH and i not in self.phases)]

    def phase(self, interval: str) -> int | None:
        """The phase to use for `interval`: learned, else assumed; None for unphased intervals."""
        if interval not in intervals.PHASED_MS:
            return None
        return self.phases.get(interval, self.assumed[interval])

    def all_phases(self) -> dict[str, int]:
        return {i: self.phase(i) for i in intervals.PHASED_MS}

    def usable(self, interval: str) -> bool:
        """False only for a 1M whose real candles contradict calendar months."""
        return not (interval == intervals.MONTH and self.month is False)

    def learn(self, interval: str, open_ms: int, source: str) -> Learned:
        """A real candle of `interval` opening at `open_ms` (validated: a whole day for 3d and 1w)."""
        if interval == intervals.MONTH:
            self.month = is_month_start(open_ms)
            return Learned(interval, source, "confirmed" if self.month else "contradicted", open_ms)
        self.phases[interval] = intervals.phase_of(interval, open_ms)
        return Learned(interval, source, "phase", self.phases[interval])

    def assume(self, interval: str, phase_3d_days: int | None = None) -> int | None:
        """No real candle could be read: the phase used meanwhile (3d from config)."""
        if interval == "3d" and phase_3d_days is not None:
            self.assumed["3d"] = phase_3d_days % 3 * intervals.DAY_MS
        return self.phase(interval)
