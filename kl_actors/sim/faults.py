"""Fault switches of the simulator, set at start-up (CLI) or at run time (`POST /_sim/faults`).

Owns: the current fault settings and the seeded RNG that decides, request by request, which fault
fires. Pure: no I/O; the REST and WebSocket layers act on the decisions.

Effects (REST market-data routes only, never `/_sim/`):
- `latency_ms`: every response is delayed this long;
- `error_5xx_rate`: HTTP 503 `{"code":-1001,"msg":"Internal error; unable to process your request.
  Please try again."}`, no weight charged (binance-api.md §3.3: such a 503 does not count);
- `reset_rate`: the TCP connection is aborted without a response (weight charged);
- `malformed_rate`: HTTP 200 whose body is the real body cut in half plus `#garbled` (weight
  charged);
- `timeout_rate`: the response is held back `timeout_s` (default 30 s) then sent normally;
- `final_delay_ms`: for this long after a candle's close, REST serves a provisional version of it
  (3 % less volume, one trade fewer) instead of the final one; truth is unaffected;
- `clock_offset_ms`: server time = wall clock + offset (REST, WS, boundaries);
- `ws_close_differs`: the WebSocket `x:true` event has one trade more and 0.01 % more quote
  volume than REST's final candle;
- `ws_lifetime_s`: a WebSocket connection is closed by the server once it is this old;
- `throttle_klines`: the next N klines requests are answered 429 (no weight charged), each
  consumes one; the same for `ban_klines` with 418 (hostile-input tests);
- `retry_after_header`: on every 429/418, the `Retry-After` header sent as this raw text
  instead of the real wait (`"<absent>"`: no header at all; `""`: the real wait);
- `oversize_klines_bytes`: a 200 klines answer gets this many bytes of JSON whitespace before
  its body (a well-formed but enormous body; 0: off).
Rates are probabilities in [0, 1] checked in the order 5xx, reset, malformed, timeout.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_5xx_rate: float = 0.0
    reset_rate: float = 0.0
    malformed_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 30.0
    final_delay_ms: int = 0
    clock_offset_ms: int = 0
    ws_close_differs: bool = False
    ws_lifetime_s: float = 86400.0
    throttle_klines: int = 0
    ban_klines: int = 0
    retry_after_header: str = ""
    oversize_klines_bytes: int = 0

    def update(self, changes: dict) -> None:
        """Apply a partial update; unknown keys raise KeyError, bad types raise ValueError."""
        kinds = {f.name: f.type for f in fields(self)}
        for key, value in changes.items():
            if key not in kinds:
                raise KeyError(key)
            kind = kinds[key]
            if kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be a boolean")
            elif kind == "str":
                if not isinstance(value, str):
                    raise ValueError(f"{key} must be a string")
            elif kind == "int":
                value = int(value)
            else:
                value = float(value)
                if key.endswith("_rate") and not 0.0 <= value <= 1.0:
                    raise ValueError(f"{key} must be within [0, 1]")
            setattr(self, key, value)

    def as_dict(self) -> dict:
        return asdict(self)


class FaultDice:
    """Seeded per-request choice of at most one fault."""

    def __init__(self, faults: Faults, seed: int):
        self.faults = faults
        self.rng = random.Random(seed ^ 0x5EED)

    def pick(self) -> str | None:
        f = self.faults
        for name, rate in (("5xx", f.error_5xx_rate), ("reset", f.reset_rate),
                           ("malformed", f.malformed_rate), ("timeout", f.timeout_rate)):
            if rate > 0 and self.rng.random() < rate:
                return name
        return None
