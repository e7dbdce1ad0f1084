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
- 429 -> `rate_limited`, 418 -> `banned` (both with `retry_after_s` from `Retry-After`);
- any other status (4xx, 5xx)                              -> `http_error` (exchange code/msg);
- no answer (reset, timeout, refused)                      -> `network` (`network_failure`).
`weight_used_1m` is the `X-MBX-USED-WEIGHT-1M` header (-1 when absent), `http_status` the status.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from . import klines
from .messages import Candle, DownloadTask, TaskResult

KLINES_PATH = "/fapi/v1/klines"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# No usable Retry-After on a 429/418: wait out a whole weight window.
DEFAULT_RETRY_AFTER_S = 60.0
_FOREVER_MS = 2**62


class _ExchangeError(msgspec.Struct):
    code: int = 0
    msg: str = ""


def klines_url(rest_url: str) -> str:
    return rest_url.rstrip("/") + KLINES_PATH


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


def weight_used(headers: Mapping[str, str]) -> int:
    value = _header(headers, WEIGHT_HEADER)
    return int(value) if value.isdigit() else -1


def retry_after_s(headers: Mapping[str, str]) -> float:
    try:
        value = float(_header(headers, "Retry-After"))
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    return value if value >= 0 else DEFAULT_RETRY_AFTER_S


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
        return TaskResult(status="rate_limited", retry_after_s=retry_after_s(headers),
                          detail=error_text(body), **common), None
    if status == 418:
        return TaskResult(status="banned", retry_after_s=retry_after_s(headers),
                          detail=error_text(body), **common), None
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


def held_back(task: DownloadTask, wait_s: float) -> TaskResult:
    """A task refused without any request while a Retry-After the downloader saw is running."""
    return TaskResult(task_id=task.task_id, status="rate_limited", retry_after_s=round(wait_s, 3),
                      detail="held back: Retry-After still running, no request sent")
