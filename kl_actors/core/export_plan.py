"""What a Parquet export writes, and what a later export rewrites (pure: no files, no clocks).

Owns:
- the calendar months (UTC) a table's open times fall in, and `--since` parsing;
- the Hive partition of (interval, symbol, month): `interval=1m/symbol=BTCUSDT/year=2026/month=11`
  (a symbol character outside letters, digits and `._-` is percent-encoded as UTF-8; `%` is never
  in a symbol, so the encoding is reversible and a reader that decodes and one that does not both
  see plain symbols and non-ASCII ones such as `币安人生USDT` as they are);
- the Arrow type of a decimal column, chosen from the scales of its strings (`decimal_type`);
- the per-month fingerprint kept in the export's state file (`MonthStamp`, `ExportState`) and the
  rule deciding whether a month is written, checked by content, removed or left alone (`decide`).

The rule (how an in-place change is found without reading every month):
- a month is WRITTEN when it has no fingerprint, its file is gone, or its row count, first or
  last open time differ from the fingerprint (new candles, filled holes, history before the first
  one): one `count/min/max` over the primary key per month, no row decoded;
- a month whose counts agree is CHECKED by content (its rows read and hashed, written only if the
  hash differs) while it may still change in place: when at its last export or check it held a
  WebSocket candle (REST or the archive replaces those), or its newest candle had closed less
  than `SETTLE_MS` before that export (REST re-checks a just-closed candle, the final re-fetch,
  a clock-jump re-fetch: all within minutes of the close);
- every other month is KEPT without reading a row: stored REST and archive candles older than
  that are final (the writer's own rule: an answer for a candle closed over 10 minutes is final).
Never true for a hand edit of an old month that keeps its count, first and last open time; and a
re-published archive file with other values replacing settled archive rows is not seen either:
`--full` rewrites everything.

Never opens the database or a file, and never reads the clock: `now_ms` is passed in.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from enum import Enum

import msgspec

STATE_FILE = "_kl_export_state.json"
STATE_VERSION = 1
DATA_FILE = "data.parquet"
# A candle that closed this long before an export can no longer change in place (see above).
SETTLE_MS = 24 * 3600 * 1000
# decimal128 holds 38 digits; 18 or fewer fit the cheaper 64-bit readers' decimals (DuckDB).
SMALL_PRECISION = 18
MAX_PRECISION = 38
_SAFE_PARTITION_CHARS = frozenset("._-")


class ExportError(ValueError):
    """Bad export input (an unknown interval, an unreadable `--since`); one line for the user."""


# -- months -------------------------------------------------------------------------------------
def month_of(t_ms: int) -> tuple[int, int]:
    d = _dt.datetime.fromtimestamp(t_ms // 1000, tz=_dt.timezone.utc)
    return d.year, d.month


def month_start_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """[first ms, last ms] of a calendar month, both inclusive (a candle belongs to the month of
    its open time)."""
    return month_start_ms(year, month), month_start_ms(*next_month(year, month)) - 1


def months_between(first_ms: int, last_ms: int) -> list[tuple[int, int]]:
    """Every calendar month from the one holding `first_ms` to the one holding `last_ms`."""
    found, current, last = [], month_of(first_ms), month_of(last_ms)
    while current <= last:
        found.append(current)
        current = next_month(*current)
    return found


def month_key(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def parse_month_key(key: str) -> tuple[int, int]:
    year, month = key.split("-")
    return int(year), int(month)


def parse_since(text: str) -> int:
    """`--since`: Unix milliseconds, or an ISO date/time in UTC (`2026-11`, `2026-11-15`,
    `2026-11-15T08:00`); the export then starts with the month holding that time."""
    text = text.strip()
    if re.fullmatch(r"[0-9]{1,15}", text):
        return int(text)
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}", text):
        text += "-01"
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"--since {text!r}: expected Unix ms or an ISO date such as 2026-11-15") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return int(moment.timestamp() * 1000)


# -- partitions ---------------------------------------------------------------------------------
def partition_value(text: str) -> str:
    """`text` with every character but letters, digits and `._-` percent-encoded (UTF-8 bytes)."""
    return "".join(ch if ch.isalnum() or ch in _SAFE_PARTITION_CHARS
                   else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in text)


def partition_dir(interval: str, symbol: str, year: int, month: int) -> str:
    """Relative folder of one month: `interval=1m/symbol=BTCUSDT/year=2026/month=11`."""
    return (f"interval={partition_value(interval)}/symbol={partition_value(symbol)}"
            f"/year={year}/month={month}")


def case_collisions(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of partition values a case-insensitive file system would store in one folder
    (`1m` and `1M`, `BTCUSDT` and `BtcUSDT`)."""
    seen: dict[str, str] = {}
    pairs = []
    for name in sorted(set(names)):
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            pairs.append((other, name))
    return pairs


# -- decimal columns ----------------------------------------------------------------------------
def decimal_type(min_scale: int, max_scale: int, max_integer_digits: int) -> tuple[int, int] | None:
    """(precision, scale) of the Arrow decimal128 that holds every value of a column exactly: the
    scale of its strings (the exchange writes a fixed number of decimals per symbol). Where they
    mix scales (a tick-size change within the month, `100.1` next to `100.25`), the larger one:
    every value stays exact and the column stays a number (a string column would make DuckDB's
    `max` over many files compare text); only the shorter strings' missing zeros are not kept.
    None (strings) when the values need more than 38 digits."""
    digits = max(max_integer_digits, 1) + max_scale
    if digits <= SMALL_PRECISION:
        return SMALL_PRECISION, max_scale
    if digits <= MAX_PRECISION:
        return MAX_PRECISION, max_scale
    return None


# -- fingerprints and the rule ------------------------------------------------------------------
class MonthStamp(msgspec.Struct, forbid_unknown_fields=True):
    """What the export knows of one written month: the rows it wrote and when it last looked."""
    rows: int
    first_open_ms: int
    last_open_ms: int
    ws_rows: int             # candles with source 'ws' (REST or the archive may still replace them)
    newest_close_ms: int
    checked_at_ms: int       # when it was written or last found unchanged (local clock)
    file_bytes: int
    digest: str = ""         # content hash; kept only while the month may change in place


class ExportState(msgspec.Struct, forbid_unknown_fields=True):
    version: int = STATE_VERSION
    database: str = ""
    # "SYMBOL INTERVAL" -> "YYYY-MM" -> stamp
    tables: dict[str, dict[str, MonthStamp]] = {}


def table_key(symbol: str, interval: str) -> str:
    return f"{symbol} {interval}"


def encode_state(state: ExportState) -> bytes:
    return msgspec.json.encode(state)


def decode_state(data: bytes) -> ExportState:
    """The state file's content; raises ExportError for anything this version cannot trust."""
    try:
        state = msgspec.json.decode(data, type=ExportState)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ExportError(f"unreadable export state: {exc}") from None
    if state.version != STATE_VERSION:
        raise ExportError(f"export state version {state.version}, this program writes {STATE_VERSION}")
    return state


class Action(str, Enum):
    WRITE = "write"
    CHECK = "check"
    KEEP = "keep"
    REMOVE = "remove"


def may_change(stamp: MonthStamp) -> bool:
    """Whether the month's stored candles could still be replaced in place (see the module)."""
    return stamp.ws_rows > 0 or stamp.newest_close_ms > stamp.checked_at_ms - SETTLE_MS


def decide(stamp: MonthStamp | None, rows: int, first_open_ms: int | None, last_open_ms: int | None,
           file_ok: bool, full: bool = False) -> tuple[Action, str]:
    """What to do with one month, from its fingerprint and its counts now; (action, reason)."""
    if rows == 0:
        return (Action.REMOVE, "no_rows") if stamp is not None else (Action.KEEP, "empty")
    if stamp is None:
        return Action.WRITE, "new"
    if full:
        return Action.WRITE, "full"
    if not file_ok:
        return Action.WRITE, "file_missing"
    if (stamp.rows, stamp.first_open_ms, stamp.last_open_ms) != (rows, first_open_ms, last_open_ms):
        return Action.WRITE, "rows_changed"
    if may_change(stamp):
        return (Action.CHECK, "ws_rows" if stamp.ws_rows else "recent") if stamp.digest else (Action.WRITE, "no_digest")
    return Action.KEEP, "settled"


def content_digest(rows: Sequence[Sequence[object]]) -> str:
    """A hash of a month's stored rows, every column (`source` too: a REST copy replacing an equal
    WebSocket one changes the file's `source` column)."""
    return hashlib.blake2b(msgspec.msgpack.encode(rows), digest_size=16).hexdigest()


def stamp_for(rows: Sequence[Sequence[object]], ws_rows: int, file_bytes: int, now_ms: int,
              digest: str | None = None) -> MonthStamp:
    """The fingerprint of a month just written from `rows` (sorted by open time: the store's
    order; `close_time` is column 6). The content hash is kept only if the month may change."""
    stamp = MonthStamp(rows=len(rows), first_open_ms=rows[0][0], last_open_ms=rows[-1][0], ws_rows=ws_rows,
                       newest_close_ms=max(r[6] for r in rows), checked_at_ms=now_ms, file_bytes=file_bytes)
    if may_change(stamp):
        stamp.digest = digest or content_digest(rows)
    return stamp


def checked(stamp: MonthStamp, now_ms: int) -> MonthStamp:
    """The stamp of a month found unchanged at `now_ms`; its hash is dropped once it has settled."""
    new = msgspec.structs.replace(stamp, checked_at_ms=now_ms)
    if not may_change(new):
        new.digest = ""
    return new
