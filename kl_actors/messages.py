"""Every message that crosses a socket: the single source of truth for the wire.

Messages are msgspec Structs in one tagged union, MessagePack-encoded. Units are in field names
(`_ms`, `_s`). Every receive decodes with `decode()`, which returns a `DecodeError` value for
anything malformed instead of raising, so one bad frame can never kill an actor; a float field
holding NaN or an infinity counts as malformed.

Candles keep the exchange's decimal strings untouched: a value is stored and published exactly
as the exchange sent it. `Candle` is array-like so that one candle is the exchange's own 12-element
row, both in REST JSON and on our wire.

Feed messages (`FeedKline`) go to outside consumers as two frames: the topic
`kline.<SYMBOL>.<interval>` in UTF-8 (ASCII for every plain symbol; the exchange lists some
outside ASCII), then the MessagePack body; see README "Consumer feed".
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Union

import msgspec
import msgspec.inspect


class Candle(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One kline, in the exchange's REST array order (ints and strings only: no GC tracking needed)."""

    open_time_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time_ms: int
    quote_volume: str
    trades: int
    taker_buy_volume: str
    taker_buy_quote_volume: str
    ignore: str = "0"


Source = Literal["rest", "ws", "archive"]


class _Msg(msgspec.Struct, tag=True, tag_field="kind", forbid_unknown_fields=True):
    pass


class KlineBatch(_Msg, tag="batch"):
    """Candles of one symbol and interval for the writer. `task_id` is empty for WebSocket candles.

    `live` marks candles at the live edge (WebSocket closes, boundary fetches): once stored they
    are published on the feed. Backfill pages are history and are not published.
    `requested_at_ms` is the server time the REST request was sent (0: unknown, WebSocket): of
    two REST answers for a recent candle the writer keeps the later-requested one.
    """

    symbol: str
    interval: str
    source: Source
    candles: list[Candle]
    task_id: str = ""
    live: bool = False
    requested_at_ms: int = 0


class CandleColumns(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Candles as columns: one list per field of `Candle` (the exchange's `ignore` left out,
    it is never stored), all of one length. Ints and strings only (no GC tracking needed).

    An archive file's candles travel this way (`ArchiveBatch`): 11 lists are read and written at
    C speed where 10,000 structs cost a Python object each, and the writer checks them a column
    at a time anyway. Equal lengths are the receiver's to check (`batches.accept_columns`).
    """

    open_time_ms: list[int]
    open: list[str]
    high: list[str]
    low: list[str]
    close: list[str]
    volume: list[str]
    close_time_ms: list[int]
    quote_volume: list[str]
    trades: list[int]
    taker_buy_volume: list[str]
    taker_buy_quote_volume: list[str]

    def __len__(self) -> int:
        return len(self.open_time_ms)

    def lists(self) -> tuple[list, ...]:
        """The 11 columns in `Candle` order."""
        return msgspec.structs.astuple(self)

    def candles(self) -> list[Candle]:
        return list(map(Candle, *self.lists()))


def columns_of(candles: list[Candle]) -> CandleColumns:
    """Candles -> columns (`ignore` dropped)."""
    transposed = list(zip(*map(msgspec.structs.astuple, candles)))[:11] or [()] * 11
    return CandleColumns(*map(list, transposed))


class ArchiveBatch(_Msg, tag="archive_batch"):
    """The candles of (part of) one verified archive file for the writer, as columns: a
    `KlineBatch` of `source = "archive"`, never live. `task_id` only on a file's last batch."""

    symbol: str
    interval: str
    columns: CandleColumns
    task_id: str = ""

    source: ClassVar[str] = "archive"
    live: ClassVar[bool] = False
    requested_at_ms: ClassVar[int] = 0


class TableCommit(msgspec.Struct, array_like=True, frozen=True):
    symbol: str
    interval: str
    rows: int
    first_open_ms: int
    last_open_ms: int


class Committed(_Msg, tag="committed"):
    """Announced by the writer after COMMIT, before anything reaches the feed. With both lists
    empty it is the writer's beacon: nothing is waiting in it (sent about once a second while
    idle), so a silent writer is a stalled or dead one."""

    task_ids: list[str]
    tables: list[TableCommit]
    committed_at_ms: int
    writer_started_ms: int = 0  # which run of the writer: a new value means it was restarted


class WriteFailed(_Msg, tag="write_failed"):
    """The writer rolled a transaction back; none of these tasks' rows are stored."""

    task_ids: list[str]
    error: str


class Progress(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """The scheduler's backfill figures, carried in its heartbeat; the supervisor keeps the
    latest in `status.json` ("progress") and draws them on a terminal. eta_s < 0: unknown."""

    at_ms: int
    tasks_done: int = 0
    tasks_total: int = 0
    candles: int = 0
    candles_per_s: float = 0.0
    eta_s: float = -1.0
    weight_used: int = 0
    weight_limit: int = 0
    failed: int = 0
    archive_files_done: int = 0
    archive_files_total: int = 0
    archive_mb_per_s: float = 0.0
    archive_candles_per_s: float = 0.0
    archive_eta_s: float = -1.0


# Bounds on what one heartbeat's metrics may hold (core/metrics.py keeps within them).
MAX_METRIC_SERIES = 256
MAX_LABEL_CHARS = 64
_Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_CHARS)]


class MetricSample(msgspec.Struct, array_like=True, frozen=True):
    """One series of an actor's metrics (core/metrics.py: families and labels), totals since the
    process started. Counter and gauge: `value`; histogram: `buckets` holds the count per bucket
    (not cumulative, +Inf last) and `value` their sum."""

    family: Annotated[str, msgspec.Meta(max_length=64)]
    labels: Annotated[tuple[_Label, ...], msgspec.Meta(max_length=4)]
    value: float
    buckets: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(max_length=32)] = []


class Heartbeat(_Msg, tag="heartbeat"):
    actor: str
    pid: int
    sent_at_ms: int
    handled: int = 0
    dropped_malformed: int = 0
    progress: Progress | None = None  # the scheduler's only
    metrics: Annotated[list[MetricSample], msgspec.Meta(max_length=MAX_METRIC_SERIES)] = []


class DownloadTask(_Msg, tag="task"):
    """Fetch candles with open time in [start_ms, end_ms] of one symbol and interval."""

    task_id: str
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    limit: int
    priority: Literal["boundary", "backfill"] = "backfill"
    attempt: int = 1


class ArchiveTask(_Msg, tag="archive"):
    """Download, verify and store one bulk-archive file of one symbol and interval: the monthly
    file when `day` is 0, else that day's. Costs no REST weight."""

    task_id: str
    symbol: str
    interval: str
    year: int
    month: int
    day: int = 0
    attempt: int = 1


# `absent`: the archive has no such file (404); `bad_file`: its checksum, zip or CSV failed
# (archive tasks only; nothing of the file was stored).
ResultStatus = Literal["ok", "rate_limited", "banned", "http_error", "network", "invalid", "not_final",
                       "absent", "bad_file"]


class TaskResult(_Msg, tag="result"):
    """A downloader's report on one task; `weight_used_1m` is the exchange's header value."""

    task_id: str
    status: ResultStatus
    candles: int = 0
    first_open_ms: int = 0
    last_open_ms: int = 0
    weight_used_1m: int = -1
    retry_after_s: float = 0.0
    http_status: int = 0
    detail: str = ""
    requested_at_ms: int = 0  # server time the request was sent (0: none sent); dates weight_used_1m
    # [first, last] open times an ok backfill page skipped inside the asked range: the exchange
    # has no candles there (maintenance, a closed market session).
    missing: list[tuple[int, int]] = []
    bytes_read: int = 0  # archive tasks: bytes of the zip downloaded (the progress line's MB/s)
    by: str = ""  # the downloader that did the task (its actor name)
    # The egress group whose way out the request took (its IP's header is `weight_used_1m`);
    # "" from a sender that does not say: the group the scheduler sent the task to.
    egress: str = ""


class ClockSync(_Msg, tag="clock"):
    """Server time = local time + offset_ms; measured with the round trip rtt_ms."""

    offset_ms: float
    rtt_ms: float
    measured_at_ms: int


class SymbolInfo(msgspec.Struct, array_like=True, frozen=True):
    symbol: str
    status: str
    onboard_ms: int
    # The exchange's own exchangeInfo entry for the symbol, as JSON text (bounded by discovery;
    # "" when too large): kept in `meta_symbols.info_json` for the read API's exchangeInfo.
    info_json: str = ""


class SymbolsUpdate(_Msg, tag="symbols"):
    """The scheduler's view of the exchange's symbols, for the writer's meta table."""

    symbols: list[SymbolInfo]
    seen_at_ms: int


class ExchangeHole(_Msg, tag="hole"):
    """A range the exchange confirmed has no candles (maintenance); recorded, never re-fetched."""

    symbol: str
    interval: str
    start_ms: int
    end_ms: int


class FeedKline(msgspec.Struct, array_like=False, forbid_unknown_fields=False):
    """Body of a consumer feed message; `seq` counts per topic from 1 so gaps are visible."""

    symbol: str
    interval: str
    seq: int
    closed: bool
    source: Source
    stored: bool
    candle: Candle


class FeedGap(msgspec.Struct, forbid_unknown_fields=True):
    """Internal, websocket -> broker on `feed_in` under topic `FEED_GAP_TOPIC`, never forwarded:
    these feed topics lost events (a connection dropped without an overlapping replacement). The
    broker skips one `seq` for each, so consumers see the loss as a jump instead of nothing."""

    topics: list[str]
    reason: str


FEED_GAP_TOPIC = b"gap"


Message = Union[
    KlineBatch,
    ArchiveBatch,
    Committed,
    WriteFailed,
    Heartbeat,
    DownloadTask,
    ArchiveTask,
    TaskResult,
    ClockSync,
    SymbolsUpdate,
    ExchangeHole,
]


class DecodeError(msgspec.Struct, frozen=True):
    """What `decode` returns for a frame it cannot accept."""

    reason: str
    size: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)
_feed_decoder = msgspec.msgpack.Decoder(FeedKline)
_gap_decoder = msgspec.msgpack.Decoder(FeedGap)


def subscription(cls: type) -> bytes:
    """The bytes every encoded `cls` message starts with (map size, tag key, tag value): a SUB
    filter that takes only this kind off the bus (the writer's own `Committed` stay out)."""
    config = cls.__struct_config__
    fields = len(cls.__struct_fields__) + 1
    if fields > 15:
        raise ValueError(f"{cls.__name__}: a fixmap header holds at most 15 fields")
    return bytes([0x80 | fields]) + _encoder.encode(config.tag_field) + _encoder.encode(config.tag)


def encode(message: Message | FeedKline | FeedGap) -> bytes:
    return _encoder.encode(message)


def _float_fields(cls: type) -> tuple[str, ...]:
    info = msgspec.inspect.type_info(cls)
    return tuple(f.name for f in info.fields if isinstance(f.type, msgspec.inspect.FloatType))


# Every message type with float fields, and those fields: NaN and infinities are refused at the
# door, so no receiver ever computes with them (int(inf) raises, nan compares false to all).
FLOAT_FIELDS: dict[type, tuple[str, ...]] = {
    cls: names for cls in (*Message.__args__, Progress, MetricSample) if (names := _float_fields(cls))}


def decode(frame: bytes) -> Message | DecodeError:
    try:
        message = _decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DecodeError(reason=str(exc)[:200], size=len(frame))
    parts = [message]
    if isinstance(message, Heartbeat):
        if message.progress is not None:
            parts.append(message.progress)
        parts += message.metrics
    for part in parts:
        for name in FLOAT_FIELDS.get(type(part), ()):
            value = getattr(part, name)
            if not math.isfinite(value):
                return DecodeError(reason=f"{type(part).__name__}.{name} is not finite ({value})",
                                   size=len(frame))
    return message


def decode_feed(frame: bytes) -> FeedKline | DecodeError:
    try:
        return _feed_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DecodeError(reason=str(exc)[:200], size=len(frame))


def decode_feed_gap(frame: bytes) -> FeedGap | DecodeError:
    try:
        return _gap_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DecodeError(reason=str(exc)[:200], size=len(frame))


# Messages each feed publisher (writer, WebSocket actor) and the broker's feed input may queue:
# enough to ride out a broker restart at full live rate (~1,650 events/s) for a minute.
FEED_HWM = 100_000


def feed_topic(symbol: str, interval: str) -> bytes:
    return f"kline.{symbol}.{interval}".encode("utf-8")
