"""Reading an HTTP answer's body with a size cap and a total deadline (I/O: a `requests` session).

Every GET to the exchange whose body we parse goes through `get_capped`, so no answer can make
an actor hold an unbounded body in memory (an oversized or endless body) or hold a worker for
good (a body that trickles in one byte per read timeout). It owns nothing else: what the answer
means is the caller's (`fetch.classify`, `discovery.parse_exchange_info`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import requests

from .core.answers import ascii_int

CHUNK_BYTES = 64 * 1024
EXCHANGE_INFO_CAP_BYTES = 32 * 1024 * 1024  # the live exchangeInfo is ~1 MiB
SMALL_BODY_CAP_BYTES = 64 * 1024            # /fapi/v1/time and the like


class BodyTooLarge(ValueError):
    """The body passed the cap; nothing of it is kept. Carries the status and headers seen."""

    def __init__(self, cap_bytes: int, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(f"body too large: over {cap_bytes} bytes")
        self.status = status
        self.headers = headers


def klines_cap_bytes(limit: int) -> int:
    """A klines page of `limit` candles is ~150-200 bytes a row: 400 a row plus 64 KiB is generous."""
    return max(1, limit) * 400 + 64 * 1024


def _chunks(response: requests.Response):
    """The body as it arrives: `read1` returns after one socket read, so a trickling body still
    lets the caller check its deadline (`iter_content` waits for a whole chunk)."""
    raw = response.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2.3
        yield from response.iter_content(CHUNK_BYTES)
        return
    while True:
        chunk = raw.read1(CHUNK_BYTES, decode_content=True)
        if not chunk:
            return
        yield chunk


def get_capped(session: requests.Session, url: str, *, cap_bytes: int, timeout_s: float,
               params: Mapping[str, object] | None = None) -> tuple[requests.Response, bytes]:
    """GET `url`; the response (body consumed) and its body, at most `cap_bytes` (decoded) bytes.

    Raises `BodyTooLarge` past the cap (a declared `Content-Length` past it is refused before
    reading), `requests.Timeout` when the body is not complete within twice `timeout_s` in all,
    and whatever `requests` raises for the connection.
    """
    started = time.monotonic()
    response = session.get(url, params=params, timeout=timeout_s, stream=True)
    try:
        declared = ascii_int(response.headers.get("Content-Length"))
        if declared > cap_bytes:
            raise BodyTooLarge(cap_bytes, response.status_code, response.headers)
        chunks: list[bytes] = []
        size = 0
        for chunk in _chunks(response):
            size += len(chunk)
            if size > cap_bytes:
                raise BodyTooLarge(cap_bytes, response.status_code, response.headers)
            if time.monotonic() - started > 2 * timeout_s:
                raise requests.Timeout(f"body not complete after {2 * timeout_s:.1f}s ({size} bytes)")
            chunks.append(chunk)
        return response, b"".join(chunks)
    finally:
        response.close()  # an unread rest is not drained: the connection is dropped instead
