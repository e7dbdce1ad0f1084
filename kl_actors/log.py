"""Structured log lines: one line per event, `key=value`, to stderr.

`ts=2026-11-24T16:40:00.123Z level=info actor=writer event=committed rows=998 tables=2`
Values with spaces or quotes are JSON-quoted so a line always splits back into its fields.

Warnings and errors are rate-limited per event name (`RateLimit`): a format change on the
exchange would otherwise write one line per event, ~15k lines a second. At most `burst` lines of
one event per `window_s` (lines with a `name` field, the supervisor's about each actor, count per
name); the rest are counted, and when the window has passed one line
`event=log_suppressed suppressed=<event> count=N` says how many were not written. Info and debug
lines are never limited.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


def _value(v: object) -> str:
    text = v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)
    if text == "" or any(ch in text for ch in ' "=\n'):
        return json.dumps(text)
    return text


def format_line(level: str, actor: str, event: str, fields: dict[str, object]) -> str:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    parts = [f"ts={stamp}", f"level={level.lower()}", f"actor={_value(actor)}", f"event={_value(event)}"]
    parts += [f"{k}={_value(v)}" for k, v in fields.items()]
    return " ".join(parts)


class RateLimit:
    """At most `burst` lines per event name in a window of `window_s` from its first line (pure:
    `now` in). Event names are the code's own constants, so the table stays small."""

    def __init__(self, burst: int = 5, window_s: float = 10.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self.windows: dict[str, list] = {}  # event -> [window start, lines written, suppressed]

    def allow(self, event: str, now: float) -> bool:
        window = self.windows.get(event)
        if window is None or now - window[0] >= self.window_s:
            # A passed window's count is lost unless `ended` was asked first (Logger does).
            self.windows[event] = [now, 1, 0]
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False

    def ended(self, now: float) -> list[tuple[str, int]]:
        """(event, lines suppressed) of every window that has passed with lines suppressed; those
        windows and every other passed one are forgotten."""
        done = [e for e, w in self.windows.items() if now - w[0] >= self.window_s]
        reports = [(e, self.windows[e][2]) for e in done if self.windows[e][2]]
        for event in done:
            del self.windows[event]
        return reports


class Logger:
    def __init__(self, actor: str, level: str = "INFO", stream=None, limit: RateLimit | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.actor = actor
        self.threshold = _LEVELS.get(level, 20)
        self.stream = stream
        self.limit = limit if limit is not None else RateLimit()
        self.clock = clock

    def _write(self, level: str, event: str, fields: dict[str, object]) -> None:
        stream = self.stream or sys.stderr
        stream.write(format_line(level, self.actor, event, fields) + "\n")
        stream.flush()

    def _emit(self, level: str, event: str, fields: dict[str, object]) -> None:
        if _LEVELS[level] < self.threshold:
            return
        if _LEVELS[level] >= _LEVELS["WARNING"]:
            now = self.clock()
            self.flush(now)
            # The supervisor's lines about different actors (`name=`) are different events.
            key = f"{event} name={fields['name']}" if "name" in fields else event
            if not self.limit.allow(key, now):
                return
        self._write(level, event, fields)

    def flush(self, now: float | None = None) -> None:
        """Write the `log_suppressed` line of every window that has passed (the actor loop calls
        this, so the count appears even when the flood has stopped)."""
        if not self.limit.windows:
            return
        for key, count in self.limit.ended(self.clock() if now is None else now):
            event, _, name = key.partition(" name=")
            fields: dict[str, object] = {"suppressed": event, "count": count, "window_s": self.limit.window_s}
            if name:
                fields["name"] = name
            self._write("WARNING", "log_suppressed", fields)

    def debug(self, event: str, **fields: object) -> None:
        self._emit("DEBUG", event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._emit("INFO", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._emit("WARNING", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._emit("ERROR", event, fields)
