"""Server time from local time (pure): the last `ClockSync` the time-sync actor published.

Until the first measurement arrives the offset is 0, and `synced` is False so callers that must
not guess (the boundary fetch) can wait.
"""

from __future__ import annotations

import time

from ..messages import ClockSync


def local_ms() -> int:
    return time.time_ns() // 1_000_000


class ServerClock:
    def __init__(self) -> None:
        self.offset_ms = 0.0
        self.rtt_ms = 0.0
        self.measured_at_ms = 0
        self.synced = False

    def update(self, sync: ClockSync) -> None:
        if sync.measured_at_ms >= self.measured_at_ms:
            self.offset_ms, self.rtt_ms, self.measured_at_ms = sync.offset_ms, sync.rtt_ms, sync.measured_at_ms
            self.synced = True

    def now_ms(self, local_now_ms: int | None = None) -> int:
        return int((local_ms() if local_now_ms is None else local_now_ms) + self.offset_ms)

    def to_local_ms(self, server_ms: int) -> int:
        return int(server_ms - self.offset_ms)


def best_sample(samples: list[tuple[int, int, int]]) -> ClockSync:
    """(local_send_ms, server_ms, local_recv_ms) samples -> the one with the lowest round trip.

    The server stamped its time somewhere inside the round trip; the midpoint is the best guess
    and the round trip bounds the error, so the fastest sample is the most exact.
    """
    if not samples:
        raise ValueError("no clock samples")
    sent, server, received = min(samples, key=lambda s: s[2] - s[0])
    return ClockSync(offset_ms=server - (sent + received) / 2, rtt_ms=float(received - sent),
                     measured_at_ms=received)
