"""The exchange's public kline archive as the simulator publishes it (data.binance.vision layout).

Owns: which archive files exist at a given server time, their names and paths, their bytes
(one zipped CSV each, built from the market's ground truth), their CHECKSUM text, the bucket's
"directory" tree for the S3 ListObjects listing, and the archive fault rules. Pure: no clock
(`now_ms` is passed in), no sockets, no files; `archive_server.py` serves and caches what this
module renders.

Layout (binance-api.md §6/§7), keys relative to the host root:
    data/futures/um/monthly/klines/<SYMBOL>/<iname>/<SYMBOL>-<iname>-<YYYY>-<MM>.zip
    data/futures/um/daily/klines/<SYMBOL>/<iname>/<SYMBOL>-<iname>-<YYYY>-<MM>-<DD>.zip
each with `<key>.CHECKSUM` = "<sha256 hex>  <zip file name>\\n" (sha256sum format).
- `iname` is the REST interval name, except `1M` which is `1mo` in directory and file names
  (documented for spot, assumed for futures: a case-insensitive file system could not hold both
  `1m` and `1M`). A path spelled with `1M` is a 404, as on a real bucket.
- 3d, 1w and 1mo exist as monthly files only; every other interval as daily and monthly files.
- A file holds the candles whose OPEN lies in its day / calendar month (UTC), final values, the
  same decimal strings as REST; the 12th column is "0". Lines end in "\\n".
- Header row `open_time,open,...,ignore` iff the file's period starts on/after `header_from_ms`
  (default 2022-05-01), none before (files are never regenerated).
- Publication: a file appears at 00:00 UTC `lag_days - 1` days after its last candle closed
  (`lag_days` = 2: on day T the newest daily file is T-2's; the newest 2 days and the current
  month are absent; a month's file appears on its next month's 2nd day, later for 3d/1w whose
  last candle closes in the next month).
- A period with no candle (before listing, after delisting, wholly inside a hole) has no file.
- The zip is deterministic (fixed member time = period start), so its checksum is stable.

Archive faults (a list of rules, set with `POST /_sim/faults {"archive": [...]}`), each
`{"fault": <kind>, "pattern": <glob>}` matched (fnmatch, case-sensitive) against the zip's key
or its file name, and applying to the zip and its CHECKSUM alike:
- `missing`: 404, not listed;
- `late`: 404 and not listed until server time >= `until_ms`;
- `bad_checksum`: the CHECKSUM names the file but holds the sha256 of other bytes;
- `truncated`: the zip is published cut to its first half, with a CHECKSUM that matches the cut
  bytes (the publisher's file is broken: only opening the zip shows it);
- `republished`: from server time `at_ms` (default 0: at once) the file is served re-published:
  the same candles with the header row toggled, so its bytes and checksum differ;
- `gap`: the file is published without the candles opening in [`start_ms`, `end_ms`] (REST
  still has them), with a CHECKSUM that matches: a day missing inside a monthly file.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import io
import zipfile
from dataclasses import dataclass
from xml.sax.saxutils import escape

from . import timeframes as tf

ROOT = "data/futures/um/"
KINDS = ("daily", "monthly")
MONTHLY_ONLY = ("3d", "1w", "1M")
HEADER = b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume," \
         b"taker_buy_quote_volume,ignore\n"
DEFAULT_HEADER_FROM_MS = 1651363200000  # 2022-05-01 00:00 UTC
FAULT_KINDS = ("missing", "late", "bad_checksum", "truncated", "republished", "gap")
PAGE_MAX = 1000


def iname(interval: str) -> str:
    return "1mo" if interval == "1M" else interval


def interval_of(name: str) -> str | None:
    if name == "1mo":
        return "1M"
    if name == "1M" or not tf.is_interval(name):
        return None
    return name


def intervals_for(kind: str) -> tuple[str, ...]:
    if kind == "monthly":
        return tf.INTERVALS
    return tuple(i for i in tf.INTERVALS if i not in MONTHLY_ONLY)


def _date(ms: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ms // 1000, tz=_dt.timezone.utc)


def period_label(kind: str, start_ms: int) -> str:
    d = _date(start_ms)
    return f"{d.year:04d}-{d.month:02d}" + (f"-{d.day:02d}" if kind == "daily" else "")


def period_end(kind: str, start_ms: int) -> int:
    """Exclusive end of the period (day or calendar month) opening at `start_ms`."""
    return start_ms + tf.DAY if kind == "daily" else tf.next_open("1M", start_ms)


def period_floor(kind: str, t_ms: int) -> int:
    return t_ms - t_ms % tf.DAY if kind == "daily" else tf.floor_open("1M", t_ms)


def parse_label(kind: str, label: str) -> int | None:
    """Start of the period named `label` ("YYYY-MM" / "YYYY-MM-DD"), or None if malformed."""
    fmt = "%Y-%m-%d" if kind == "daily" else "%Y-%m"
    try:
        d = _dt.datetime.strptime(label, fmt).replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None
    if period_label(kind, int(d.timestamp()) * 1000) != label:  # no "2024-1-5"
        return None
    return int(d.timestamp()) * 1000


@dataclass(frozen=True)
class FileRef:
    """One archive zip: symbol, interval (REST name), daily|monthly, period start."""
    symbol: str
    interval: str
    kind: str
    start_ms: int

    @property
    def name(self) -> str:
        i = iname(self.interval)
        return f"{self.symbol}-{i}-{period_label(self.kind, self.start_ms)}.zip"

    @property
    def csv_name(self) -> str:
        return self.name[:-4] + ".csv"

    @property
    def directory(self) -> str:
        return f"{ROOT}{self.kind}/klines/{self.symbol}/{iname(self.interval)}/"

    @property
    def key(self) -> str:
        return self.directory + self.name

    @property
    def end_ms(self) -> int:
        return period_end(self.kind, self.start_ms)


def parse_key(key: str) -> tuple[FileRef, bool] | None:
    """(file, is_checksum) for a zip or CHECKSUM key in canonical form, else None."""
    checksum = key.endswith(".zip.CHECKSUM")
    if checksum:
        key = key[: -len(".CHECKSUM")]
    parts = key.split("/")
    if len(parts) != 8 or "/".join(parts[:3]) + "/" != ROOT or parts[4] != "klines":
        return None
    kind, symbol, inm, filename = parts[3], parts[5], parts[6], parts[7]
    interval = interval_of(inm)
    if kind not in KINDS or interval is None or interval not in intervals_for(kind):
        return None
    stem = f"{symbol}-{inm}-"
    if not (filename.startswith(stem) and filename.endswith(".zip")):
        return None
    start = parse_label(kind, filename[len(stem):-4])
    if start is None:
        return None
    return FileRef(symbol, interval, kind, start), checksum


class Archive:
    """What the archive holds for a `Market` at a server time; renders file contents."""

    def __init__(self, market, *, header_from_ms: int = DEFAULT_HEADER_FROM_MS,
                 lag_days: int = 2):
        self.market = market
        self.header_from_ms = header_from_ms
        self.lag_days = lag_days
        self._memo: dict = {}

    # -- existence ------------------------------------------------------------------------
    def last_close(self, ref: FileRef) -> int:
        """Exclusive close of the last candle that can open inside the file's period."""
        last_open = tf.floor_open(ref.interval, ref.end_ms - 1)
        return tf.next_open(ref.interval, last_open)

    def published_ms(self, ref: FileRef) -> int:
        """Server time from which the file is there (00:00 UTC, lag_days - 1 days after)."""
        close = self.last_close(ref)
        day = -(-close // tf.DAY) * tf.DAY
        return day + (self.lag_days - 1) * tf.DAY

    def _has_candles(self, ref: FileRef) -> bool:
        spec = self.market.spec(ref.symbol)
        if spec is None:
            return False
        close = self.last_close(ref)
        return bool(self.market.select_opens(ref.symbol, ref.interval, ref.start_ms,
                                             ref.end_ms - 1, 1, close))

    def exists(self, ref: FileRef, now_ms: int) -> bool:
        """Published by `now_ms` and holding at least one candle (faults aside)."""
        return (ref.interval in intervals_for(ref.kind) and period_floor(ref.kind, ref.start_ms)
                == ref.start_ms and self.published_ms(ref) <= now_ms and self._has_candles(ref))

    def files(self, symbol: str, interval: str, kind: str, now_ms: int) -> list[FileRef]:
        """Every published file of one symbol, interval and kind, oldest first."""
        spec = self.market.spec(symbol)
        if spec is None or interval not in intervals_for(kind):
            return []
        today = now_ms - now_ms % tf.DAY
        memo_key = (symbol, interval, kind, today, self.market.version)
        hit = self._memo.get(memo_key)
        if hit is not None:  # files are published at 00:00 UTC: one answer per server day
            return hit
        out = []
        t = period_floor(kind, spec.onboard_ms)
        while True:
            ref = FileRef(symbol, interval, kind, t)
            if self.published_ms(ref) > now_ms:
                break
            if self._has_candles(ref):
                out.append(ref)
            t = period_end(kind, t)
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[memo_key] = out
        return out

    def any_file(self, symbol: str, interval: str, kind: str, now_ms: int) -> bool:
        return bool(self.files(symbol, interval, kind, now_ms))

    # -- contents -------------------------------------------------------------------------
    def header_for(self, ref: FileRef) -> bool:
        return ref.start_ms >= self.header_from_ms

    def rows(self, ref: FileRef, gaps: tuple = ()) -> list[list]:
        """The file's candles: final rows, exactly as `/_sim/truth` gives them, less those
        opening inside one of the (start_ms, end_ms) `gaps`."""
        rows = self.market.klines(ref.symbol, ref.interval, ref.start_ms, ref.end_ms - 1,
                                  self.last_close(ref))
        if gaps:
            rows = [r for r in rows if not any(lo <= r[0] <= hi for lo, hi in gaps)]
        return rows

    def csv_bytes(self, ref: FileRef, header: bool, gaps: tuple = ()) -> bytes:
        lines = [",".join(map(str, row)) for row in self.rows(ref, gaps)]
        body = ("\n".join(lines) + "\n").encode() if lines else b""
        return (HEADER if header else b"") + body

    def zip_bytes(self, ref: FileRef, header: bool, gaps: tuple = ()) -> bytes:
        d = _date(ref.start_ms)
        info = zipfile.ZipInfo(ref.csv_name, date_time=(d.year, d.month, d.day, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(info, self.csv_bytes(ref, header, gaps))
        return buf.getvalue()

    def cache_key(self, symbol: str) -> str:
        """Digest of everything a symbol's files depend on: seed, its listing, holes, 3d and 1w phase."""
        spec = self.market.spec(symbol)
        holes = sorted((h.start_ms, h.end_ms) for h in self.market.holes
                       if h.symbol in ("*", symbol))
        ident = repr(("v1", self.market.seed, {k: v for k, v in vars(spec).items()
                                               if k != "status"}, holes, tf.phase_3d_days(), tf.phase_1w_days(),
                                               tf.month_shift_days()))
        return hashlib.sha256(ident.encode()).hexdigest()[:20]


def checksum_text(sha_hex: str, ref: FileRef) -> bytes:
    return f"{sha_hex}  {ref.name}\n".encode()


def wrong_sha(sha_hex: str) -> str:
    """A sha256 that is not the file's (whose sha256 is `sha_hex`): a mismatching CHECKSUM."""
    return hashlib.sha256(b"not " + sha_hex.encode()).hexdigest()


# -- faults --------------------------------------------------------------------------------
def validate_faults(rules) -> list[dict]:
    """Checked copy of an archive fault list; raises ValueError on a bad rule."""
    if not isinstance(rules, list):
        raise ValueError("archive faults must be a list of rules")
    out = []
    for r in rules:
        if not isinstance(r, dict) or r.get("fault") not in FAULT_KINDS \
                or not isinstance(r.get("pattern"), str):
            raise ValueError(f"an archive fault needs fault in {FAULT_KINDS} and a pattern: {r!r}")
        rule = {"fault": r["fault"], "pattern": r["pattern"]}
        if r["fault"] == "late":
            rule["until_ms"] = int(r["until_ms"]) if "until_ms" in r else _missing("until_ms")
        if r["fault"] == "republished":
            rule["at_ms"] = int(r.get("at_ms", 0))
        if r["fault"] == "gap":
            try:
                rule["start_ms"], rule["end_ms"] = int(r["start_ms"]), int(r["end_ms"])
            except KeyError:
                raise ValueError("a gap needs start_ms and end_ms") from None
        unknown = set(r) - set(rule) - {"until_ms", "at_ms", "start_ms", "end_ms"}
        if unknown:
            raise ValueError(f"unknown archive fault field(s) {sorted(unknown)}")
        out.append(rule)
    return out


def _missing(name: str):
    raise ValueError(f"a late file needs {name}")


def active_faults(rules: list[dict], ref: FileRef, now_ms: int) -> set[str]:
    """The fault kinds that apply to this file at this server time."""
    out = set()
    for r in rules:
        if not (fnmatch.fnmatchcase(ref.key, r["pattern"])
                or fnmatch.fnmatchcase(ref.name, r["pattern"])):
            continue
        kind = r["fault"]
        if kind == "late" and now_ms >= r["until_ms"]:
            continue
        if kind == "republished" and now_ms < r["at_ms"]:
            continue
        out.add(kind)
    return out


def gaps(rules: list[dict], ref: FileRef) -> tuple[tuple[int, int], ...]:
    """The (start_ms, end_ms) ranges the `gap` rules cut out of this file, sorted."""
    return tuple(sorted({(r["start_ms"], r["end_ms"]) for r in rules if r["fault"] == "gap"
                         and (fnmatch.fnmatchcase(ref.key, r["pattern"])
                              or fnmatch.fnmatchcase(ref.name, r["pattern"]))}))


def hidden(faults: set[str]) -> bool:
    return bool(faults & {"missing", "late"})


# -- bucket tree and listing -----------------------------------------------------------------
def _utf8(name: str) -> bytes:
    return name.encode()


def children(archive: Archive, directory: str, now_ms: int, rules: list[dict]):
    """Sorted (name, is_dir, ref|None) entries of one bucket "directory" ("" is the root)."""
    parts = directory.split("/")[:-1] if directory else []
    fixed = ["data", "futures", "um"]
    n = len(parts)
    if n < 3:
        if parts != fixed[:n]:
            return []
        return [(fixed[n], True, None)]
    if parts[:3] != fixed:
        return []
    if n == 3:
        return [(k, True, None) for k in KINDS]
    kind = parts[3]
    if kind not in KINDS:
        return []
    if n == 4:
        return [("klines", True, None)]
    if parts[4] != "klines":
        return []
    market = archive.market
    if n == 5:
        # 1d first: the interval whose files a symbol has soonest after listing
        order = ("1d",) + tuple(i for i in intervals_for(kind) if i != "1d")
        names = [s.symbol for s in market.symbols()
                 if any(archive.any_file(s.symbol, i, kind, now_ms) for i in order)]
        return [(s, True, None) for s in sorted(names, key=_utf8)]
    symbol = parts[5]
    if market.spec(symbol) is None:
        return []
    if n == 6:
        names = [iname(i) for i in intervals_for(kind) if archive.any_file(symbol, i, kind, now_ms)]
        return [(x, True, None) for x in sorted(names, key=_utf8)]
    interval = interval_of(parts[6])
    if n != 7 or interval is None or interval not in intervals_for(kind):
        return []
    out = []
    for ref in archive.files(symbol, interval, kind, now_ms):
        if hidden(active_faults(rules, ref, now_ms)):
            continue
        out.append((ref.name, False, ref))
        out.append((ref.name + ".CHECKSUM", False, ref))
    return out


def _sort_name(entry) -> bytes:
    name, is_dir, _ = entry
    return _utf8(name + "/" if is_dir else name)


def walk(archive: Archive, directory: str, partial: str, now_ms: int, rules: list[dict],
         recursive: bool):
    """Yield (key, is_prefix, ref|None) in key order under `directory` whose name starts with
    `partial`; with `recursive`, descend into directories instead of yielding them."""
    for entry in sorted(children(archive, directory, now_ms, rules), key=_sort_name):
        name, is_dir, ref = entry
        if not name.startswith(partial):
            continue
        if is_dir:
            if recursive:
                yield from walk(archive, directory + name + "/", "", now_ms, rules, True)
            else:
                yield directory + name + "/", True, None
        else:
            yield directory + name, False, ref


def list_page(archive: Archive, prefix: str, delimiter: str, marker: str, max_keys: int,
              now_ms: int, rules: list[dict]) -> tuple[list, bool]:
    """One page of (key, is_prefix, ref) after `marker`, and whether more follow."""
    if delimiter not in ("", "/"):
        raise ValueError("only delimiter '/' (or none) is supported")
    cut = prefix.rfind("/") + 1
    directory, partial = prefix[:cut], prefix[cut:]
    max_keys = max(0, min(PAGE_MAX, max_keys))
    marker_b = _utf8(marker)
    page = []
    for item in walk(archive, directory, partial, now_ms, rules, recursive=delimiter == ""):
        if marker and _utf8(item[0]) <= marker_b:
            continue
        if len(page) == max_keys:
            return page, True
        page.append(item)
    return page, False


def iso_time(ms: int) -> str:
    return _date(ms).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def listing_xml(prefix: str, delimiter: str, marker: str, max_keys: int, truncated: bool,
                contents: list[tuple[str, int, str, int]], prefixes: list[str]) -> bytes:
    """S3 ListObjects (v1) answer; `contents` as (key, last_modified_ms, etag_hex, size)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n'
           '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
           "<Name>data.binance.vision</Name>", f"<Prefix>{escape(prefix)}</Prefix>",
           f"<Marker>{escape(marker)}</Marker>"]
    last = max([c[0] for c in contents] + prefixes, key=_utf8, default="")
    if truncated and last:
        out.append(f"<NextMarker>{escape(last)}</NextMarker>")
    out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        out.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
    out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    for key, modified, etag, size in contents:
        out.append(f"<Contents><Key>{escape(key)}</Key><LastModified>{iso_time(modified)}"
                   f"</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>"
                   "<StorageClass>STANDARD</StorageClass></Contents>")
    for p in prefixes:
        out.append(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>")
    out.append("</ListBucketResult>")
    return "".join(out).encode()
