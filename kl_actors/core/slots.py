"""The WebSocket actor's connection slots (pure): which streams each connection carries, when one
is opened, renewed, regrouped, retired or reconnected, and which streams lost events (what the
actor publishes as a `FeedGap`).

No sockets, threads or clocks: `now` is the caller's monotonic time in seconds, event times are
the exchange's milliseconds, and the backoff's jitter is passed in. The actor carries out each
`Open` and `Close` that `tend` returns (threads, websocket-client) and reports back what happened
to each connection: `opened`, `first_event`, `ended`. Nothing here logs; the results say what to.

- A slot is one group of streams (`streams.plan_groups`: its index is stable, it may become
  empty). It has at most two connections: the active one and a replacement on the way.
- An empty slot with streams connects once its backoff (`not_before`) has passed. A connection
  that has not opened within `stuck_after_s` is closed. An active connection whose slot lost
  every stream is closed ("no streams left"). One whose streams differ from the slot's gets a
  replacement ("regroup"); one whose lifetime is nearly over gets one too ("renew",
  `streams.renew_due`).
- The replacement takes over at its first event. The old connection is closed
  `streams.handover_wait_ms` later, so the closes of the last minute boundary still arrive on it.
- When a connection ends: a retired one is simply gone; an active one with a replacement hands
  over (events are lost only if the replacement has not opened yet); otherwise the slot
  reconnects after `streams.backoff_s`, and an active connection that had opened lost events:
  its streams are a gap. A failed replacement lost nothing (the active one carries on).
- The first event after the actor restarted is a gap for every stream: a restarted actor cannot
  know what its predecessor missed while it was down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..messages import feed_topic
from .streams import backoff_s, handover_wait_ms, plan_groups, renew_due, stream_key, stream_names


@dataclass
class Conn:
    """What the slots know of one connection (the actor holds its thread and socket by `id`)."""

    id: int
    slot: int
    streams: tuple[str, ...]
    started_at: float
    opened_at: float | None = None
    first_event_at: float | None = None
    closing: bool = False   # asked to close; its end follows


@dataclass
class Slot:
    """One group of streams: its current connection, a replacement on the way, backoff."""

    index: int
    wanted: tuple[str, ...]
    active: Conn | None = None
    replacement: Conn | None = None
    failures: int = 0
    not_before: float = 0.0   # no new connection for this slot before this (backoff)
    renewals: int = 0


class Open(NamedTuple):
    """Open a connection for `conn.streams`; `reason`: connect, regroup or renew."""

    conn: Conn
    reason: str


class Close(NamedTuple):
    """Close this connection; `reason`: stuck (never opened), no streams left, or handed over."""

    conn: Conn
    reason: str


class Handover(NamedTuple):
    """A replacement took over its slot at its first event; the old one closes later."""

    slot: int
    old: Conn
    new: Conn
    old_closes_in_ms: int


class Ended(NamedTuple):
    """What the end of a connection means.

    `outcome`: "retired" (it was being replaced or had nothing left to carry), "taken over" (its
    replacement is now active: `successor`) or "reconnect" (after `delay_s`, failure number
    `failures`). `gap`: the streams that lost events, empty when none did.
    """

    conn: Conn
    outcome: str
    gap: tuple[str, ...]
    successor: Conn | None = None
    delay_s: float = 0.0
    failures: int = 0


class Slots:
    def __init__(self, *, per_connection: int, lifetime_s: float, renew_before_s: float,
                 reconnect_initial_s: float, reconnect_max_s: float, stuck_after_s: float,
                 restarted: bool = False) -> None:
        self.per_connection = per_connection
        self.lifetime_s = lifetime_s
        self.renew_before_s = renew_before_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.stuck_after_s = stuck_after_s
        self.slots: list[Slot] = []
        self.conns: dict[int, Conn] = {}
        self.retiring: dict[int, float] = {}   # connection id -> when to close it
        self.next_id = 1
        self.reconnects = 0
        self.restart_gap_due = restarted

    # -- what to carry --------------------------------------------------------------------------
    def regroup(self, wanted: list[str]) -> tuple[int, int]:
        """Spread `wanted` streams over the slots, keeping each surviving stream in its slot;
        (slots whose streams changed, slots with streams)."""
        groups = plan_groups([slot.wanted for slot in self.slots], wanted, self.per_connection)
        changed = 0
        for index, group in enumerate(groups):
            if index < len(self.slots):
                if self.slots[index].wanted != group:
                    self.slots[index].wanted = group
                    changed += 1
            else:
                self.slots.append(Slot(index=index, wanted=group))
                changed += 1
        return changed, sum(1 for g in groups if g)

    def streams(self) -> list[str]:
        return [s for slot in self.slots for s in slot.wanted]

    def open_count(self) -> int:
        return sum(1 for conn in self.conns.values() if conn.opened_at is not None)

    # -- what to do now -------------------------------------------------------------------------
    def tend(self, now: float) -> list[Open | Close]:
        """Connections to open and to close at `now`, in order (slot by slot, then retirements)."""
        actions: list[Open | Close] = []
        for slot in self.slots:
            action = self._tend(slot, now)
            if action is not None:
                actions.append(action)
        for conn_id, close_at in list(self.retiring.items()):
            if now >= close_at:
                del self.retiring[conn_id]
                conn = self.conns.get(conn_id)
                if conn is not None:
                    conn.closing = True
                    actions.append(Close(conn, "handed over"))
        return actions

    def _tend(self, slot: Slot, now: float) -> Open | Close | None:
        if slot.active is None and slot.replacement is None:
            if slot.wanted and now >= slot.not_before:
                slot.active = self._new(slot, now)
                return Open(slot.active, "connect")
            return None
        active = slot.active
        if active is None or slot.replacement is not None or now < slot.not_before:
            return None
        if active.opened_at is None:
            if now - active.started_at > self.stuck_after_s and not active.closing:
                active.closing = True
                return Close(active, "stuck")
            return None
        if not slot.wanted:
            if not active.closing:
                active.closing = True
                return Close(active, "no streams left")
            return None
        if active.streams != slot.wanted:
            slot.replacement = self._new(slot, now)
            return Open(slot.replacement, "regroup")
        if now >= renew_due(active.opened_at, self.lifetime_s, self.renew_before_s):
            slot.replacement = self._new(slot, now)
            return Open(slot.replacement, "renew")
        return None

    def _new(self, slot: Slot, now: float) -> Conn:
        conn = Conn(self.next_id, slot.index, slot.wanted, started_at=now)
        self.next_id += 1
        self.conns[conn.id] = conn
        return conn

    # -- what happened --------------------------------------------------------------------------
    def opened(self, conn_id: int, now: float) -> Conn | None:
        conn = self.conns.get(conn_id)
        if conn is not None:
            conn.opened_at = now
        return conn

    def first_event(self, conn_id: int, event_time_ms: int, now: float) -> tuple[tuple[str, ...], Handover | None]:
        """The first event a connection delivered: (streams that are a gap, a handover if this
        was a replacement taking over from a live connection)."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return (), None
        conn.first_event_at = now
        gap: tuple[str, ...] = ()
        if self.restart_gap_due:
            self.restart_gap_due = False
            gap = tuple(self.streams())
        slot = self.slots[conn.slot]
        if slot.active is conn:
            slot.failures = 0
            return gap, None
        if slot.replacement is not conn:
            return gap, None
        old = slot.active
        slot.active, slot.replacement = conn, None
        slot.failures = 0
        if old is None:
            return gap, None
        wait_ms = handover_wait_ms(event_time_ms) if event_time_ms else 0
        self.retiring[old.id] = now + wait_ms / 1000
        slot.renewals += 1
        return gap, Handover(slot.index, old, conn, wait_ms)

    def ended(self, conn_id: int, now: float, jitter: float) -> Ended | None:
        """A connection's thread ended (closed, failed, or never opened); `jitter` in [0, 1)."""
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return None
        self.retiring.pop(conn_id, None)
        slot = self.slots[conn.slot]
        if slot.active is not conn and slot.replacement is not conn:
            return Ended(conn, "retired", ())
        if slot.active is conn and slot.replacement is not None:
            slot.active, slot.replacement = slot.replacement, None
            # No overlap: events until the replacement opens are lost.
            gap = conn.streams if slot.active.opened_at is None else ()
            return Ended(conn, "taken over", gap, successor=slot.active)
        was_active = slot.active is conn
        if was_active:
            slot.active = None
        else:
            slot.replacement = None
        if conn.closing and not slot.wanted:
            return Ended(conn, "retired", ())
        # A failed replacement lost nothing: the active one carries on.
        gap = conn.streams if was_active and conn.opened_at is not None else ()
        slot.failures += 1
        self.reconnects += 1
        delay = backoff_s(slot.failures, self.reconnect_initial_s, self.reconnect_max_s, jitter)
        slot.not_before = now + delay
        return Ended(conn, "reconnect", gap, delay_s=delay, failures=slot.failures)


def gap_topics(streams: list[str] | tuple[str, ...], symbols: list[str], intervals: list[str],
               kind: str = "kline") -> list[str]:
    """The feed topics of these streams, for a `FeedGap`: the symbol as listed (stream names are
    lower case, so `BtcUSDT` and `BTCUSDT` share one stream), else the stream name's guess."""
    by_stream = {stream_names([symbol], [interval], kind)[0]: (symbol, interval)
                 for symbol in symbols for interval in intervals}
    return [feed_topic(*by_stream.get(s, stream_key(s))).decode() for s in streams]
