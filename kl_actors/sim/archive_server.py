"""The archive's HTTP server: a second aiohttp application on its own loopback port.

Owns: the routes of the archive host (`GET /data/futures/um/...` zips and CHECKSUMs, `GET /`
with `prefix` = the S3 bucket listing), the on-disk cache of rendered zips, applying the archive
faults of `SimState.archive_faults` to what is served, and counting every request in the
simulator's stats (`requests_by_path`, `responses_by_status`). What exists and what a file
holds is decided by `archive.py`; never weighted (the archive costs no REST weight).

Cache: `<cache_dir>/<seed>/<symbol>-<digest>/<key>.h<0|1>.zip`, the digest covering everything
the symbol's files depend on (`Archive.cache_key`: seed, listing, delisting, holes, 3d phase), the
`h` suffix whether it carries a header row, a `g<start>-<end>` suffix per `gap` fault. A zip is
rendered once (in a worker thread, one render per file at a time), written atomically and read
back from disk afterwards, so a second simulator run with the same seed and listing serves every
file warm. Nothing is ever evicted: the directory grows with what was asked for (BTCUSDT's
monthly 1m files since 2019 take about 170 MB).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

from . import archive as ar
from .state import SimState

DEFAULT_CACHE = os.path.join(tempfile.gettempdir(), "kl-actors-sim-archive")


class ArchiveServer:
    def __init__(self, state: SimState):
        self.state = state
        self.archive: ar.Archive = state.archive
        self.cache_dir = Path(state.options.archive_cache or DEFAULT_CACHE)
        self._meta: dict[Path, tuple[str, str, int]] = {}  # path → (sha256, md5, size)
        self._rendering: dict[Path, asyncio.Future] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.listing)
        app.router.add_route("*", "/{tail:.*}", self.file)
        app.middlewares.append(self._count)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler):
        self.state.stats.by_path[request.path] += 1
        response = await handler(request)
        self.state.stats.count_status(response.status)
        return response

    # -- cache ----------------------------------------------------------------------------
    def _path(self, ref: ar.FileRef, header: bool, gaps: tuple) -> Path:
        sym_dir = f"{ref.symbol}-{self.archive.cache_key(ref.symbol)}"
        cut = "".join(f".g{lo}-{hi}" for lo, hi in gaps)
        return (self.cache_dir / str(self.archive.market.seed) / sym_dir
                / f"{ref.key}.h{int(header)}{cut}.zip")

    def _render(self, ref: ar.FileRef, header: bool, gaps: tuple,
                path: Path) -> tuple[str, str, int]:
        if path.exists():
            data = path.read_bytes()
        else:
            data = self.archive.zip_bytes(ref, header, gaps)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data)

    async def rendered(self, ref: ar.FileRef, header: bool,
                       gaps: tuple = ()) -> tuple[Path, tuple[str, str, int]]:
        """The file on disk and its (sha256, md5, size), rendering it the first time."""
        path = self._path(ref, header, gaps)
        meta = self._meta.get(path)
        if meta is not None:
            return path, meta
        pending = self._rendering.get(path)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(
                None, self._render, ref, header, gaps, path)
            self._rendering[path] = pending
            pending.add_done_callback(lambda f: self._rendered(path, f))
        # shielded: a client that hangs up must not cancel the render other requests wait for
        return path, await asyncio.shield(pending)

    def _rendered(self, path: Path, done: asyncio.Future) -> None:
        del self._rendering[path]
        if not done.cancelled() and done.exception() is None:
            self._meta[path] = done.result()

    async def served(self, ref: ar.FileRef, faults: set[str],
                     read: bool = True) -> tuple[bytes | None, str, int, bytes]:
        """(zip bytes (None unless `read`), zip md5, zip size, CHECKSUM bytes) as published
        now, faults applied."""
        header = self.archive.header_for(ref) != ("republished" in faults)
        cut = ar.gaps(self.state.archive_faults, ref) if "gap" in faults else ()
        path, (sha, md5, size) = await self.rendered(ref, header, cut)
        data = path.read_bytes() if read or "truncated" in faults else None
        if "truncated" in faults:
            data = data[: len(data) // 2]
            sha, md5, size = (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(),
                              len(data))
        if "bad_checksum" in faults:
            sha = ar.wrong_sha(sha)
        return data, md5, size, ar.checksum_text(sha, ref)

    # -- routes ---------------------------------------------------------------------------
    def _lookup(self, key: str):
        now = self.state.now_ms()
        parsed = ar.parse_key(key)
        if parsed is None:
            return None
        ref, is_checksum = parsed
        if not self.archive.exists(ref, now):
            return None
        faults = ar.active_faults(self.state.archive_faults, ref, now)
        if ar.hidden(faults):
            return None
        return ref, is_checksum, faults

    async def file(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return _s3_error(405, "MethodNotAllowed", "The specified method is not allowed.")
        found = self._lookup(request.path.lstrip("/"))
        if found is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.",
                             key=request.path.lstrip("/"))
        ref, is_checksum, faults = found
        data, _, _, checksum = await self.served(ref, faults, read=not is_checksum)
        if is_checksum:
            return web.Response(body=checksum, content_type="application/octet-stream")
        return web.Response(body=data, content_type="application/zip")

    async def listing(self, request: web.Request) -> web.Response:
        q = request.query
        prefix, delimiter, marker = q.get("prefix", ""), q.get("delimiter", ""), q.get("marker", "")
        try:
            max_keys = int(q.get("max-keys", ar.PAGE_MAX))
        except ValueError:
            return _s3_error(400, "InvalidArgument", "max-keys must be an integer")
        now = self.state.now_ms()
        rules = self.state.archive_faults
        try:
            page, truncated = ar.list_page(self.archive, prefix, delimiter, marker, max_keys,
                                           now, rules)
        except ValueError as e:
            return _s3_error(400, "InvalidArgument", str(e))
        contents, prefixes = [], []
        for key, is_prefix, ref in page:
            if is_prefix:
                prefixes.append(key)
                continue
            faults = ar.active_faults(rules, ref, now)
            _, md5, size, checksum = await self.served(ref, faults, read=False)
            if key.endswith(".CHECKSUM"):
                md5, size = hashlib.md5(checksum).hexdigest(), len(checksum)
            contents.append((key, self.archive.published_ms(ref), md5, size))
        xml = ar.listing_xml(prefix, delimiter, marker, min(max_keys, ar.PAGE_MAX), truncated,
                             contents, prefixes)
        return web.Response(body=xml, content_type="application/xml")


def _s3_error(status: int, code: str, message: str, key: str = "") -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message>"
            + (f"<Key>{escape(key)}</Key>" if key else "") + "</Error>")
    return web.Response(status=status, body=body.encode(), content_type="application/xml")
