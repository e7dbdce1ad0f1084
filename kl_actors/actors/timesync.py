"""The time-sync actor: measures the exchange's clock and publishes `ClockSync` on the bus.

Sockets: one PUB connected to `endpoints.bus_pub` (the broker's XSUB).
State: the latest measurement (kept when a measurement fails), when to measure next.
Loop: measure at start, then every minute at :30 server time (between boundary fetches, never
at one); publish after each measurement and re-publish the latest every 5 s, because PUB drops
messages for subscribers that joined late and a restarted scheduler must not wait a minute.

A measurement is `live.clock_samples` GETs of `/fapi/v1/time` on one keep-alive session; the
sample with the shortest round trip wins (`clock.best_sample`). A failed measurement is one log
line and a retry in a few seconds; it never stops the actor and never publishes a guess.
"""

from __future__ import annotations

import json
import time

import requests
import zmq

from .base import Actor, now_ms
from .. import config as cfg
from .. import exchange
from ..core.clock import best_sample
from ..httpcap import SMALL_BODY_CAP_BYTES, get_capped
from ..messages import ClockSync

REPUBLISH_S = 5.0
RETRY_S = 3.0
MEASURE_AT_SECOND_MS = 30_000  # :30 of every server minute


def next_measurement_ms(local_now_ms: int, offset_ms: float) -> int:
    """Local time of the next :30 of a server minute strictly after now (pure)."""
    server_now = local_now_ms + offset_ms
    due = server_now - server_now % 60_000 + MEASURE_AT_SECOND_MS
    if due <= server_now:
        due += 60_000
    return int(due - offset_ms)


class TimeSync(Actor):

    def setup(self) -> None:
        self.bus = self.socket(zmq.PUB, self.config.endpoints.bus_pub)
        # Through the first egress group, whose budget keeps the reserve for these samples.
        self.session = exchange.session(self.config.exchange, cfg.egress_groups(self.config)[0])
        self.url = exchange.url(self.config.exchange, exchange.TIME_PATH)
        self.latest: ClockSync | None = None
        self.next_measure_s = time.monotonic()  # at once
        self.next_publish_s = float("inf")
        self.failures = 0

    def tick(self, now: float) -> None:
        if now >= self.next_measure_s:
            self._measure()
            now = time.monotonic()
        if self.latest is not None and now >= self.next_publish_s:
            self._publish()

    def teardown(self) -> None:
        self.session.close()

    # -- measuring ---------------------------------------------------------------------------
    def _measure(self) -> None:
        try:
            sync = self._sample()
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            self.failures += 1
            self.next_measure_s = time.monotonic() + RETRY_S
            self.log.warning("clock_failed", url=self.url, error=str(exc)[:200], failures=self.failures,
                             action=f"keeping last offset, retry in {RETRY_S}s")
            return
        self.failures = 0
        self.latest = sync
        self.log.info("clock_measured", offset_ms=round(sync.offset_ms, 1), rtt_ms=round(sync.rtt_ms, 1),
                      samples=self.config.live.clock_samples)
        local = now_ms()
        wait_s = (next_measurement_ms(local, sync.offset_ms) - local) / 1000
        self.next_measure_s = time.monotonic() + wait_s
        self._publish()

    def _sample(self) -> ClockSync:
        samples = []
        timeout = self.config.exchange.request_timeout_s
        for _ in range(max(1, self.config.live.clock_samples)):
            sent = now_ms()
            response, body = get_capped(self.session, self.url, cap_bytes=SMALL_BODY_CAP_BYTES,
                                        timeout_s=timeout)
            received = now_ms()
            response.raise_for_status()
            server = json.loads(body)["serverTime"]
            if not isinstance(server, int):
                raise TypeError(f"serverTime is not an integer: {server!r}")
            samples.append((sent, server, received))
        return best_sample(samples)

    def _publish(self) -> None:
        assert self.latest is not None
        self.send(self.bus, self.latest, block=False)
        self.next_publish_s = time.monotonic() + REPUBLISH_S
