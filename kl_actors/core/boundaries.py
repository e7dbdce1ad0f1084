"""Live-edge policy (pure): which boundary fetch goes first, how often a closed candle is fetched,
how much of a minute's weight stays free for that minute's own closes, and when a boundary is late.

At every interval boundary the scheduler fetches each just-closed candle over REST (the WebSocket
close stands in until then). At the top of the day a dozen intervals close together for every
symbol: more weight than a minute has. The rules here decide who waits:

- **Order** (`rank`): the candle that closed more recently goes first, and within one boundary the
  shorter interval: the 1m candle of 00:01 goes before the 1d candle of 00:00. A fresh short candle
  is what live users read next, and it is the largest share of its own history; a day candle can
  wait a minute or two. Backfill ranks after every boundary fetch.
- **Fetches per candle** (`plan_fetches`): a boundary candle may be served with provisional values
  right after its close, so it is fetched at close + margin and again `final_recheck_ms` later. When
  the minute cannot pay for both (the weight still queued for earlier boundaries plus two fetches per
  symbol does not fit in what is left of it), an interval gets one fetch, at the re-check time: the
  same final candle for half the weight. Shortest intervals keep their early fetch first, and only
  while one fetch for every other closing interval still fits.
- **Room for the minute's own closes** (`reserve`): weight that this minute's boundary fetches will
  need (not yet released, or not yet planned) is kept free from older work, so a backlog from the
  top of the day never makes the next minute's 1m candles wait.

Never touches sockets, files or clocks: `now` and counts are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from . import intervals

BOUNDARY_RANK = 0
BACKFILL_RANK = 1
# Task kinds at the live edge: the first of two fetches, the re-check, or the one fetch.
FIRST, RECHECK, SINGLE = "boundary", "recheck", "single"
FINAL_KINDS = (RECHECK, SINGLE)


def rank(priority: str, boundary_ms: int, interval: str, symbol: str) -> tuple:
    """Heap key of a task: smaller goes first (see the module docstring)."""
    if priority == "boundary":
        return (BOUNDARY_RANK, -boundary_ms, intervals.nominal_ms(interval), symbol)
    return (BACKFILL_RANK, 0, 0, "")


class Fetch(NamedTuple):
    kind: str          # FIRST (followed by a RECHECK) or SINGLE
    delay_ms: int      # after the boundary: 0 (at close + margin) or the re-check delay


def plan_fetches(closing: list[str], symbols: int, queued_weight: int, room: int,
                 recheck_ms: int) -> dict[str, bool]:
    """interval -> True when it gets two fetches (close + margin, then the re-check), False for one.

    `closing`: the intervals closing at this boundary, shortest first; `queued_weight`: boundary
    weight still waiting to be released; `room`: weight left in the current minute. Each fetch is a
    one-candle page of weight 1.
    """
    double: dict[str, bool] = {}
    need = queued_weight + len(closing) * symbols  # one fetch each is the least this boundary costs
    for interval in closing:
        both = recheck_ms > 0 and need + symbols <= room
        double[interval] = both
        need += symbols if both else 0
    return double


def fetches(double: bool, recheck_ms: int) -> list[Fetch]:
    """The fetches of one closed candle: two, or one at the re-check time (or at once if none)."""
    if double:
        return [Fetch(FIRST, 0), Fetch(RECHECK, recheck_ms)]
    return [Fetch(SINGLE, recheck_ms)]


def reserve(window_start_ms: int, next_unplanned_ms: int, unreleased_fresh: int,
            symbols: int, configured: list[str], phases: Mapping[str, int] | None = None) -> int:
    """Weight to keep free from older work in the minute starting at `window_start_ms`.

    `unreleased_fresh` is the weight of this minute's boundary fetches not yet released; while the
    boundary at the minute's start is not planned yet (`next_unplanned_ms` is not after it), it
    will bring at least one fetch per symbol and closing interval (3d and 1w on the exchange's
    `phases`).
    """
    expected = 0
    if next_unplanned_ms <= window_start_ms:
        expected = symbols * len(intervals.closing_at(window_start_ms, configured, phases))
    return unreleased_fresh + expected


class BoundaryTally:
    """REST confirmations of one (boundary, interval): how long until every candle was final."""

    __slots__ = ("boundary_ms", "interval", "open", "lags_ms", "failed", "late_logged")

    def __init__(self, boundary_ms: int, interval: str, candles: int) -> None:
        self.boundary_ms = boundary_ms
        self.interval = interval
        self.open = candles
        self.lags_ms: list[int] = []
        self.failed = 0
        self.late_logged = False

    def confirmed(self, committed_ms: int) -> bool:
        """One candle's final fetch is committed; True when the boundary is complete."""
        self.open -= 1
        self.lags_ms.append(max(0, committed_ms - self.boundary_ms))
        return self.open <= 0

    def given_up(self) -> bool:
        self.open -= 1
        self.failed += 1
        return self.open <= 0

    def summary(self) -> dict[str, object]:
        lags = sorted(self.lags_ms)
        return {"boundary_ms": self.boundary_ms, "interval": self.interval, "tasks": len(lags),
                "failed": self.failed,
                "lag_p50_ms": lags[len(lags) // 2] if lags else -1, "lag_max_ms": lags[-1] if lags else -1}

    def is_late(self, now_ms: int, deadline_ms: int) -> bool:
        return not self.late_logged and self.open > 0 and now_ms - self.boundary_ms > deadline_ms
