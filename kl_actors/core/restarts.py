"""Restart bookkeeping for one supervised actor (pure: the caller passes `now`).

Exponential backoff between restarts, reset after the actor has stayed up for a while, and a
restart intensity: more than `max_restarts` restarts within `window_s` means the actor cannot be
kept alive and the supervisor must stop the service instead of looping forever.
"""

from __future__ import annotations

from collections import deque


class RestartPolicy:
    def __init__(self, initial_s: float, max_s: float, max_restarts: int, window_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.restarts: deque[float] = deque()
        self.total_restarts = 0
        self._backoff_s = initial_s

    def record_exit(self, now: float, uptime_s: float) -> float | None:
        """Count a restart; return the delay before starting again, or None if intensity is exceeded."""
        if uptime_s >= self.window_s:
            self._backoff_s = self.initial_s  # it ran fine for a long time: start over gently
        self.restarts.append(now)
        while self.restarts and self.restarts[0] <= now - self.window_s:
            self.restarts.popleft()
        if len(self.restarts) > self.max_restarts:
            return None
        self.total_restarts += 1
        delay = self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.max_s)
        return delay

    def recent(self) -> int:
        return len(self.restarts)
