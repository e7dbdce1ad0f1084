"""The WebSocket actor's connection slots as a pure state machine (`core/slots.py`): what it opens
and closes when, what a connection's end means, and which streams it reports as a gap. The actor
with real connections against the simulator is tested in tests/actors/test_websocket.py."""

from __future__ import annotations

import pytest

from kl_actors.core.slots import Close, Open, Slots, gap_topics
from kl_actors.core.streams import backoff_s, handover_wait_ms, stream_names

MINUTE_MS = 60_000
EVENT_MS = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS + 500  # just after a minute boundary
LIFETIME_S, RENEW_BEFORE_S, STUCK_S = 100.0, 10.0, 6.0


def make(restarted: bool = False, per_connection: int = 2) -> Slots:
    return Slots(per_connection=per_connection, lifetime_s=LIFETIME_S, renew_before_s=RENEW_BEFORE_S,
                 reconnect_initial_s=1.0, reconnect_max_s=8.0, stuck_after_s=STUCK_S, restarted=restarted)


def streams(*symbols: str) -> list[str]:
    return stream_names(list(symbols), ["1m"])


def live(slots: Slots, now: float = 0.0) -> list:
    """Connect every slot, open every connection and let each deliver its first event."""
    opened = slots.tend(now)
    assert all(isinstance(a, Open) and a.reason == "connect" for a in opened)
    for action in opened:
        slots.opened(action.conn.id, now)
        assert slots.first_event(action.conn.id, EVENT_MS, now) == ((), None)
    return [a.conn for a in opened]


def test_streams_are_spread_over_slots_and_each_slot_connects_once():
    slots = make()
    assert slots.regroup(streams("A", "B", "C")) == (2, 2)  # two changed slots, both with streams
    assert [s.wanted for s in slots.slots] == [tuple(streams("A", "B")), tuple(streams("C"))]
    actions = slots.tend(0.0)
    assert [(a.reason, a.conn.slot, a.conn.streams) for a in actions] == [
        ("connect", 0, tuple(streams("A", "B"))), ("connect", 1, tuple(streams("C")))]
    assert [a.conn.id for a in actions] == [1, 2]
    assert slots.tend(1.0) == []  # connecting: nothing more to do
    assert slots.open_count() == 0
    slots.opened(1, 1.5)
    assert slots.open_count() == 1


def test_a_connection_that_never_opens_is_closed_once_as_stuck():
    slots = make()
    slots.regroup(streams("A"))
    [conn] = [a.conn for a in slots.tend(0.0)]
    assert slots.tend(STUCK_S) == []
    assert slots.tend(STUCK_S + 0.1) == [Close(conn, "stuck")]
    assert slots.tend(STUCK_S + 5) == []  # asked once; its end follows
    ended = slots.ended(conn.id, STUCK_S + 6, jitter=0.0)
    assert (ended.outcome, ended.gap, ended.failures) == ("reconnect", (), 1)  # it never carried events


def test_renewal_hands_over_at_the_first_event_and_closes_the_old_one_after_the_grace():
    slots = make()
    slots.regroup(streams("A"))
    [old] = live(slots, now=0.0)
    due = LIFETIME_S - RENEW_BEFORE_S
    assert slots.tend(due - 0.1) == []
    [renew] = slots.tend(due)
    assert renew.reason == "renew" and renew.conn.streams == old.streams
    assert slots.tend(due + 1) == []  # one replacement at a time
    slots.opened(renew.conn.id, due + 1)
    gap, handover = slots.first_event(renew.conn.id, EVENT_MS, due + 2)
    assert gap == ()
    wait_s = handover_wait_ms(EVENT_MS) / 1000
    assert handover.old is old and handover.new is renew.conn and handover.old_closes_in_ms == 2_500
    assert slots.slots[0].active is renew.conn and slots.slots[0].renewals == 1
    assert slots.tend(due + 2 + wait_s - 0.01) == []  # the closes of the last boundary may still come
    assert slots.tend(due + 2 + wait_s) == [Close(old, "handed over")]
    ended = slots.ended(old.id, due + 3 + wait_s, jitter=0.5)
    assert (ended.outcome, ended.gap) == ("retired", ())
    assert slots.reconnects == 0 and slots.slots[0].failures == 0


def test_changed_streams_get_a_replacement_with_the_new_set():
    slots = make()
    slots.regroup(streams("A", "B"))
    [old] = live(slots)
    assert slots.regroup(streams("A", "C")) == (1, 1)
    [regroup] = slots.tend(1.0)
    assert regroup.reason == "regroup" and regroup.conn.streams == tuple(streams("A", "C"))
    slots.opened(regroup.conn.id, 1.5)
    _, handover = slots.first_event(regroup.conn.id, EVENT_MS + 30_000, 2.0)  # mid-minute: at once
    assert handover.old is old and handover.old_closes_in_ms == 0
    assert slots.tend(2.0) == [Close(old, "handed over")]


def test_a_slot_whose_streams_all_left_is_retired_without_reconnecting():
    slots = make()
    slots.regroup(streams("A", "B", "C"))
    first, second = live(slots)
    assert slots.regroup(streams("A", "B")) == (1, 1)  # slot 1 is empty now, and keeps its index
    assert slots.tend(1.0) == [Close(second, "no streams left")]
    assert slots.tend(2.0) == []
    ended = slots.ended(second.id, 3.0, jitter=0.0)
    assert (ended.outcome, ended.gap) == ("retired", ())
    # Later only slot 0 is ever tended (its renewal); the empty slot never connects again.
    assert [(a.reason, a.conn.slot) for a in slots.tend(LIFETIME_S)] == [("renew", 0)]
    assert slots.reconnects == 0


def test_a_lost_connection_reconnects_after_backoff_and_its_streams_are_a_gap():
    slots = make()
    slots.regroup(streams("A"))
    [conn] = live(slots)
    ended = slots.ended(conn.id, 10.0, jitter=0.5)
    assert (ended.outcome, ended.gap, ended.failures) == ("reconnect", conn.streams, 1)
    assert ended.delay_s == pytest.approx(backoff_s(1, 1.0, 8.0, 0.5))
    assert slots.tend(10.0 + ended.delay_s - 0.01) == []
    [again] = slots.tend(10.0 + ended.delay_s)
    assert again.reason == "connect"
    # Failing again before any event: the backoff doubles, and nothing new was lost.
    ended = slots.ended(again.conn.id, 20.0, jitter=0.999)
    assert (ended.failures, ended.gap) == (2, ())
    assert ended.delay_s == pytest.approx(backoff_s(2, 1.0, 8.0, 0.999))
    [third] = slots.tend(20.0 + ended.delay_s)
    slots.opened(third.conn.id, 30.0)
    slots.first_event(third.conn.id, EVENT_MS, 30.0)
    assert slots.slots[0].failures == 0  # the first event resets the backoff
    assert slots.reconnects == 2


def test_an_active_connection_ending_hands_over_to_its_replacement():
    slots = make()
    slots.regroup(streams("A"))
    [old] = live(slots)
    [renew] = slots.tend(LIFETIME_S - RENEW_BEFORE_S)
    slots.opened(renew.conn.id, 91.0)
    ended = slots.ended(old.id, 92.0, jitter=0.0)  # the old one dies before the new one's first event
    assert (ended.outcome, ended.successor, ended.gap) == ("taken over", renew.conn, ())
    assert slots.slots[0].active is renew.conn and slots.slots[0].replacement is None
    # Had the replacement not opened yet, the events until it does are lost.
    slots2 = make()
    slots2.regroup(streams("A"))
    [old2] = live(slots2)
    [renew2] = slots2.tend(LIFETIME_S - RENEW_BEFORE_S)
    ended = slots2.ended(old2.id, 91.0, jitter=0.0)
    assert (ended.outcome, ended.gap) == ("taken over", old2.streams)
    assert slots.reconnects == slots2.reconnects == 0


def test_a_failed_replacement_loses_nothing_and_is_tried_again():
    slots = make()
    slots.regroup(streams("A"))
    [active] = live(slots)
    [renew] = slots.tend(LIFETIME_S - RENEW_BEFORE_S)
    ended = slots.ended(renew.conn.id, 91.0, jitter=0.0)
    assert (ended.outcome, ended.gap, ended.failures) == ("reconnect", (), 1)
    assert slots.slots[0].active is active and slots.slots[0].replacement is None
    assert slots.tend(91.0 + ended.delay_s - 0.01) == []
    [retry] = slots.tend(91.0 + ended.delay_s)
    assert retry.reason == "renew"


def test_the_first_event_after_a_restart_is_a_gap_for_every_stream_once():
    slots = make(restarted=True)
    slots.regroup(streams("A", "B", "C"))
    first, second = (a.conn for a in slots.tend(0.0))
    gap, handover = slots.first_event(second.id, EVENT_MS, 1.0)
    assert gap == tuple(streams("A", "B", "C")) and handover is None
    assert slots.first_event(first.id, EVENT_MS, 1.0) == ((), None)
    assert make(restarted=False).first_event(1, EVENT_MS, 0.0) == ((), None)  # unknown id: nothing


def test_unknown_connections_change_nothing():
    slots = make()
    slots.regroup(streams("A"))
    assert slots.opened(99, 0.0) is None
    assert slots.ended(99, 0.0, jitter=0.0) is None
    [conn] = live(slots)
    slots.ended(conn.id, 1.0, jitter=0.0)
    assert slots.ended(conn.id, 1.0, jitter=0.0) is None  # one end per connection


def test_gap_topics_name_the_symbol_as_listed():
    symbols = ["BtcUSDT", "ETHUSDT"]
    lost = stream_names(symbols, ["1m", "1h"])
    assert gap_topics(lost, symbols, ["1m", "1h"]) == [
        "kline.BtcUSDT.1m", "kline.BtcUSDT.1h", "kline.ETHUSDT.1m", "kline.ETHUSDT.1h"]
    # A stream no longer listed: the stream name's own (upper-case) guess.
    assert gap_topics(["solusdt@kline_5m"], symbols, ["1m"]) == ["kline.SOLUSDT.5m"]
    cont = stream_names(["BTCUSDT"], ["1m"], "continuousKline")
    assert gap_topics(cont, ["BTCUSDT"], ["1m"], "continuousKline") == ["kline.BTCUSDT.1m"]
