"""Structured log lines: one line per event, `key=value`, to stderr.

`ts=2026-11-24T16:40:00.123Z level=info actor=writer event=committed rows=998 tables=2`
Values with spaces or quotes are JSON-quoted so a line always splits back into its fields.
"""

from __future__ import annotations

import json
import sys
import time

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


class Logger:
    def __init__(self, actor: str, level: str = "INFO", stream=None) -> None:
        self.actor = actor
        self.threshold = _LEVELS.get(level, 20)
        self.stream = stream

    def _emit(self, level: str, event: str, fields: dict[str, object]) -> None:
        if _LEVELS[level] < self.threshold:
            return
        stream = self.stream or sys.stderr
        stream.write(format_line(level, self.actor, event, fields) + "\n")
        stream.flush()

    def debug(self, event: str, **fields: object) -> None:
        self._emit("DEBUG", event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._emit("INFO", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._emit("WARNING", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._emit("ERROR", event, fields)
