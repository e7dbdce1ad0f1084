"""One klines request and what its answer means (no sockets; the HTTP session is passed in).

`classify()` turns a response into a `TaskResult` status and, for a good page, the validated
candles. Nothing here retries: the scheduler owns retries and the weight budget.
"""

from __future__ import annotations

import msgspec
import requests

from . import klines
from .messages import Candle, DownloadTask, TaskResult


class _ExchangeError(msgspec.Struct):
    code: int = 0
    msg: str = ""


def _header_int(response: requests.Response, name: str, default: int) -> int:
    value = response.headers.get(name, "")
    return int(value) if value.isdigit() else default


def _retry_after(response: requests.Response) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 60.0  # no usable header: wait out a whole window


def _error_text(body: bytes) -> str:
    try:
        err = msgspec.json.decode(body, type=_ExchangeError)
        return f"code {err.code}: {err.msg}"
    except (msgspec.DecodeError, msgspec.ValidationError):
        return body[:120].decode("utf-8", "replace")


def classify(task: DownloadTask, response: requests.Response, server_now_ms: int) -> tuple[TaskResult, list[Candle] | None]:
    """The outcome of one klines response; candles only for a page that may be stored."""
    common = dict(task_id=task.task_id, http_status=response.status_code,
                  weight_used_1m=_header_int(response, "X-MBX-USED-WEIGHT-1M", -1))
    status = response.status_code
    if status == 429:
        return TaskResult(status="rate_limited", retry_after_s=_retry_after(response),
                          detail=_error_text(response.content), **common), None
    if status == 418:
        return TaskResult(status="banned", retry_after_s=_retry_after(response),
                          detail=_error_text(response.content), **common), None
    if status >= 500:
        return TaskResult(status="http_error", detail=_error_text(response.content), **common), None
    if status != 200:
        return TaskResult(status="http_error", detail=_error_text(response.content), **common), None
    try:
        candles = klines.decode_page(response.content)
    except klines.PageError as exc:
        return TaskResult(status="invalid", detail=str(exc)[:300], **common), None
    if any(c.close_time_ms >= server_now_ms for c in candles):
        # The exchange still has it open (we came too early, or the clocks disagree): ask again.
        return TaskResult(status="not_final", detail="newest candle not closed yet", **common), None
    try:
        page = klines.validate_page(task.interval, candles, task.start_ms, task.end_ms, server_now_ms)
    except klines.PageError as exc:
        return TaskResult(status="invalid", detail=str(exc)[:300], **common), None
    first = page[0].open_time_ms if page else 0
    last = page[-1].open_time_ms if page else 0
    return TaskResult(status="ok", candles=len(page), first_open_ms=first, last_open_ms=last, **common), page


def request(session: requests.Session, rest_url: str, task: DownloadTask, timeout_s: float) -> requests.Response:
    params = {"symbol": task.symbol, "interval": task.interval, "startTime": task.start_ms,
              "endTime": task.end_ms, "limit": task.limit}
    return session.get(rest_url.rstrip("/") + "/fapi/v1/klines", params=params, timeout=timeout_s)


def network_failure(task: DownloadTask, exc: Exception) -> TaskResult:
    return TaskResult(task_id=task.task_id, status="network", detail=f"{type(exc).__name__}: {exc}"[:300])
