"""What one klines answer means (pure: status, headers and body in; a `TaskResult` out).

Owns the mapping from an HTTP exchange to a task outcome and, for a good page, the validated
candles. It never performs the request, never sleeps and never retries: the downloader does the
I/O and the scheduler owns retries and the weight budget. No sockets, no HTTP library here.

Outcomes:
- 200 with a well-formed, valid page                       -> `ok` (+ candles, sorted);
- 200 whose only flaw is that its newest candle has not closed by the server clock
                                                           -> `not_final` (nothing stored);
- 200 with well-formed JSON that is not a valid page       -> `invalid` (reason in `detail`);
- 200 whose body is not JSON at all (cut or garbled transfer) -> `network` (transient);
- a body past the page's size cap (the downloader stops reading) -> `invalid` (`too_large`);
- 429 -> `rate_limited`, 418 -> `banned` (both with `retry_after_s` from `Retry-After`, see
  `retry_after_s`; the raw header, truncated and printable, starts `detail`);
- any other status (4xx, 5xx)                              -> `http_error` (exchange code/msg);
- no answer (reset, timeout, refused)                      -> `network` (`network_failure`).
`weight_used_1m` is the `X-MBX-USED-WEIGHT-1M` header (-1 when absent or not plain ASCII digits),
`http_status` the status.
"""

from __future__ import annotations

from collections.abc import Mapping

import re

import msgspec

from . import klines
from .budget import MAX_BAN_S, UNTIL_NEXT_WINDOW
from ..messages import Candle, DownloadTask, TaskResult

KLINES_PATH = "/fapi/v1/klines"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# A 429's Retry-After is believed only up to this; past it (or unusable) we wait for the next
# minute window, when the exchange's weight counter resets anyway.
MAX_RETRY_AFTER_429_S = 600.0
MAX_INT_DIGITS = 15  # a header count past this is not a count (and stays exact as a float)
# Retry-After as delta-seconds in ASCII (the exchange sends integers); anything else is unusable.
_SECONDS_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?", re.ASCII)
_FOREVER_MS = 2**62


class _ExchangeError(msgspec.Struct):
    code: int = 0
    msg: str = ""


def klines_params(task: DownloadTask) -> dict[str, str | int]:
    return {"symbol": task.symbol, "interval": task.interval, "startTime": task.start_ms,
            "endTime": task.end_ms, "limit": task.limit}


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive lookup that also works on a plain dict."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), "")
    return value.strip()


def ascii_int(value: str | None) -> int:
    """A non-negative count written in ASCII digits, else -1.

    `str.isdigit()` also accepts superscripts and other scripts' digits (`²`, `١٢`), which `int()`
    then rejects or reads as a number the exchange never meant: only `0-9` count here.
    """
    if not value or len(value) > MAX_INT_DIGITS or not (value.isascii() and value.isdigit()):
        return -1
    return int(value)


def weight_used(headers: Mapping[str, str]) -> int:
    return ascii_int(_header(headers, WEIGHT_HEADER))


def printable(raw: str, limit: int = 40) -> str:
    """A header value fit for one log line: printable ASCII only, cut to `limit`."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in raw[:limit])
    return text + ("..." if len(raw) > limit else "")


def retry_after_s(headers: Mapping[str, str], status: int = 429) -> float:
    """Seconds to hold after a 429 (`status` 429) or a 418 ban, or `UNTIL_NEXT_WINDOW`.

    Only plain ASCII seconds are read. A 429 outside [0, 600] s and any unreadable value (absent,
    empty, `inf`, `nan`, `1e308`, `-1`, `abc`, `²`) mean the next minute window; a 418 ban is
    believed up to `MAX_BAN_S` (3 days).
    """
    raw = _header(headers, "Retry-After")
    if not _SECONDS_RE.fullmatch(raw):
        return UNTIL_NEXT_WINDOW
    value = float(raw)
    if status == 418:
        return min(value, MAX_BAN_S)
    return value if value <= MAX_RETRY_AFTER_429_S else UNTIL_NEXT_WINDOW


def _throttle_detail(headers: Mapping[str, str], body: bytes) -> str:
    raw = _header(headers, "Retry-After")
    shown = printable(raw) if raw else "absent"
    return f"retry_after_header={shown!r} {error_text(body)}"[:300]


def error_text(body: bytes) -> str:
    """The exchange's `{"code":..,"msg":..}` as `code -1121: Invalid symbol.`, else the raw start."""
    try:
        err = msgspec.json.decode(body, type=_ExchangeError)
        return f"code {err.code}: {err.msg}"
    except (msgspec.DecodeError, msgspec.ValidationError):
        return body[:160].decode("utf-8", "replace")


def _is_json(body: bytes) -> bool:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return True


def classify(task: DownloadTask, status: int, headers: Mapping[str, str], body: bytes,
             server_now_ms: int) -> tuple[TaskResult, list[Candle] | None]:
    """The outcome of one klines answer; candles (sorted) only for a page that may be stored."""
    common = {"task_id": task.task_id, "http_status": status, "weight_used_1m": weight_used(headers)}
    if status == 429:
        return TaskResult(status="rate_limited", retry_after_s=retry_after_s(headers, 429),
                          detail=_throttle_detail(headers, body), **common), None
    if status == 418:
        return TaskResult(status="banned", retry_after_s=retry_after_s(headers, 418),
                          detail=_throttle_detail(headers, body), **common), None
    if status != 200:
        return TaskResult(status="http_error", detail=f"HTTP {status} {error_text(body)}"[:300],
                          **common), None
    try:
        candles = klines.decode_page(body)
    except klines.PageError as exc:
        if not _is_json(body):
            return TaskResult(status="network", detail=f"malformed body: {exc}"[:300], **common), None
        return TaskResult(status="invalid", detail=str(exc)[:300], **common), None
    if len(candles) > task.limit:
        return TaskResult(status="invalid", detail=f"{len(candles)} candles for limit {task.limit}",
                          **common), None
    try:
        # Everything but finality first: a page with any other flaw is invalid, not early.
        page = klines.validate_page(task.interval, candles, task.start_ms, task.end_ms, _FOREVER_MS)
    except klines.PageError as exc:
        return TaskResult(status="invalid", detail=str(exc)[:300], **common), None
    if page and page[-1].close_time_ms >= server_now_ms:
        # Sorted: if any candle is still open, the newest is. We came too
        # early or the clocks disagree; the scheduler asks again shortly.
        return TaskResult(status="not_final", detail=f"candle {page[-1].open_time_ms} closes at "
                          f"{page[-1].close_time_ms}, server now {server_now_ms}", **common), None
    first = page[0].open_time_ms if page else 0
    last = page[-1].open_time_ms if page else 0
    missing = (klines.missing_ranges(task.interval, page, task.start_ms, task.end_ms, task.limit)
               if task.priority == "backfill" else [])
    return TaskResult(status="ok", candles=len(page), first_open_ms=first, last_open_ms=last,
                      missing=missing, **common), page


def network_failure(task: DownloadTask, exc: BaseException) -> TaskResult:
    """No usable answer at all (reset, timeout, refused): transient, no weight header."""
    return TaskResult(task_id=task.task_id, status="network",
                      detail=f"{type(exc).__name__}: {exc}"[:300])


def too_large(task: DownloadTask, status: int, headers: Mapping[str, str], reason: str) -> TaskResult:
    """The body passed the page's size cap and was not read further: never a page we store."""
    return TaskResult(task_id=task.task_id, status="invalid", http_status=status,
                      weight_used_1m=weight_used(headers), detail=reason[:300])


def held_back(task: DownloadTask, wait_s: float) -> TaskResult:
    """A task refused without any request while a Retry-After the downloader saw is running."""
    return TaskResult(task_id=task.task_id, status="rate_limited", retry_after_s=round(wait_s, 3),
                      detail="held back: Retry-After still running, no request sent")
