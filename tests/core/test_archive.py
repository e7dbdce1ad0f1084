"""The archive's pure core: names, checksums, zips, CSV with and without header, planning."""

from __future__ import annotations

import calendar
import hashlib
import io
import zipfile

import msgspec
import pytest

from kl_actors.core import archive, intervals
from kl_actors.core.archive import ArchiveError, ArchiveFile
from kl_actors.messages import Candle

DAY = intervals.DAY_MS
HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
          "taker_buy_volume,taker_buy_quote_volume,ignore")
NOW = calendar.timegm((2026, 12, 3, 18, 0, 0)) * 1000


def ms(*ymd: int) -> int:
    return calendar.timegm((*ymd, *([1] * (3 - len(ymd))), 0, 0, 0)[:6]) * 1000


def rows(interval: str, first_ms: int, count: int) -> list[str]:
    out = []
    t = first_ms
    for i in range(count):
        close = intervals.close_time(interval, t)
        out.append(f"{t},100.{i % 10}0,101.5,99.25,100.5,3.141,{close},314.15000,{i},1.5,150.0,0")
        t = intervals.next_open(interval, t)
    return out


def make_zip(csv_text: str, member: str = "X.csv") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, csv_text)
    return buf.getvalue()


def checksum(zip_bytes: bytes, name: str) -> bytes:
    return f"{hashlib.sha256(zip_bytes).hexdigest()}  {name}\n".encode()


# --- names ----------------------------------------------------------------------------------

def test_names_and_urls_follow_the_archive_layout():
    daily = ArchiveFile("BTCUSDT", "1m", 2023, 1, 1)
    assert daily.name == "BTCUSDT-1m-2023-01-01.zip"
    assert daily.url("http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2023-01-01.zip")
    assert daily.checksum_url("http://h") == (
        "http://h/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2023-01-01.zip.CHECKSUM")
    monthly = ArchiveFile("ETHUSDT", "1M", 2024, 2)
    assert monthly.path == "data/futures/um/monthly/klines/ETHUSDT/1mo/ETHUSDT-1mo-2024-02.zip"
    assert monthly.start_ms == ms(2024, 2, 1) and monthly.stop_ms == ms(2024, 3, 1)
    assert daily.stop_ms - daily.start_ms == DAY
    assert len(archive.days_of(monthly)) == 29  # 2024 is a leap year


# --- checksum -------------------------------------------------------------------------------

def test_checksum_verifies_and_names_the_file():
    z = make_zip("\n".join(rows("1h", ms(2023, 1, 1), 24)))
    name = "BTCUSDT-1h-2023-01-01.zip"
    assert archive.verify(z, checksum(z, name), name) == hashlib.sha256(z).hexdigest()
    assert archive.verify(z, checksum(z, "*" + name).replace(b"  *", b" *"), name)


def test_checksum_mismatch_is_refused():
    z = make_zip("\n".join(rows("1h", ms(2023, 1, 1), 24)))
    other = make_zip("\n".join(rows("1h", ms(2023, 1, 1), 23)))
    name = "BTCUSDT-1h-2023-01-01.zip"
    with pytest.raises(ArchiveError, match="does not match"):
        archive.verify(z, checksum(other, name), name)


@pytest.mark.parametrize("text", [b"", b"nothex  f.zip", b"\xff\xfe", b"a" * 64, b"a" * 63 + b"  f.zip"])
def test_malformed_checksum_files_are_refused(text):
    with pytest.raises(ArchiveError):
        archive.parse_checksum(text, "f.zip")


def test_checksum_for_another_file_is_refused():
    with pytest.raises(ArchiveError, match="another file"):
        archive.parse_checksum(b"a" * 64 + b"  g.zip", "f.zip")


# --- zip and CSV ----------------------------------------------------------------------------

def test_csv_without_and_with_header_give_the_same_candles():
    f = ArchiveFile("BTCUSDT", "1h", 2023, 1, 1)
    body = rows("1h", f.start_ms, 24)
    plain = make_zip("\n".join(body) + "\n")
    headed = make_zip(HEADER + "\n" + "\r\n".join(body))
    a = archive.decode_file(f, plain, checksum(plain, f.name), NOW)
    b = archive.decode_file(f, headed, checksum(headed, f.name), NOW)
    assert a == b and len(a) == 24
    # Values are the file's strings, untouched.
    assert a[0] == Candle(f.start_ms, "100.00", "101.5", "99.25", "100.5", "3.141",
                          f.start_ms + 3_599_999, "314.15000", 0, "1.5", "150.0", "0")


def test_real_sample_row_parses():
    row = "1672531200000,16537.50,16538.00,16534.30,16538.00,170.576,1672531259999,2820697.45580,946,103.782,1716164.80590,0"
    (c,) = archive.parse_csv(row.encode(), "x")
    assert c.open == "16537.50" and c.trades == 946 and c.close_time_ms == 1672531259999


def test_truncated_zip_is_refused():
    f = ArchiveFile("BTCUSDT", "1m", 2023, 1, 1)
    z = make_zip("\n".join(rows("1m", f.start_ms, 1440)))[:-200]
    with pytest.raises(ArchiveError, match="broken zip"):
        archive.decode_file(f, z, checksum(z, f.name), NOW)


def test_zip_with_two_members_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.csv", "1")
        zf.writestr("b.csv", "2")
    with pytest.raises(ArchiveError, match="found 2"):
        archive.unzip_single(buf.getvalue(), "f.zip")


def test_corrupted_member_fails_its_crc():
    z = bytearray(make_zip("\n".join(rows("1h", ms(2023, 1, 1), 24)), ))
    # Flip a byte inside the compressed data (after the 30-byte local header + name).
    z[40] ^= 0xFF
    with pytest.raises(ArchiveError):
        archive.unzip_single(bytes(z), "f.zip")


@pytest.mark.parametrize("bad", [
    "1672531200000,1,1,1,1,1,1672531259999,1,1,1,1",          # 11 fields
    "1672531200000,1,1,1,1,1,1672531259999,1,x,1,1,0",        # count not an integer
    "1672531200000,1,1,1,1,1,1672531259999,1,-1,1,1,0",       # negative count
    "1672531200000,1,1,1,1,-1,1672531259999,1,1,1,1,0",       # negative volume
    "1672531200000,1,2,1,1,1,1672531259999,1,1,1,1,0",        # high above... fine; low above open below:
    "1672531200000,1,0.5,1,1,1,1672531259999,1,1,1,1,0",      # high below open
    "1672531200001,1,1,1,1,1,1672531260000,1,1,1,1,0",        # not aligned
    "1672531200000,1,1,1,1,1,1672531259998,1,1,1,1,0",        # wrong close time
    "1672617600000,1,1,1,1,1,1672617659999,1,1,1,1,0",        # next day: outside the file
])
def test_bad_rows_reject_the_whole_file(bad):
    f = ArchiveFile("BTCUSDT", "1m", 2023, 1, 1)
    good = rows("1m", f.start_ms + 60_000, 3)
    z = make_zip("\n".join([bad, *good]))
    if bad.split(",")[2] == "2":  # high 2 bounds open/close 1: a valid row, the control case
        assert len(archive.decode_file(f, z, checksum(z, f.name), NOW)) == 4
        return
    with pytest.raises(ArchiveError):
        archive.decode_file(f, z, checksum(z, f.name), NOW)


def test_duplicate_rows_reject_the_file():
    f = ArchiveFile("BTCUSDT", "1h", 2023, 1, 1)
    body = rows("1h", f.start_ms, 3)
    z = make_zip("\n".join([*body, body[1]]))
    with pytest.raises(ArchiveError, match="duplicate"):
        archive.decode_file(f, z, checksum(z, f.name), NOW)


def test_unexpected_header_is_refused():
    with pytest.raises(ArchiveError, match="header"):
        archive.parse_csv(b"time,o,h\n1,2,3", "f.zip")


def test_monthly_only_intervals_parse_from_monthly_files():
    f = ArchiveFile("BTCUSDT", "1w", 2023, 1)
    # 2023-01-02 is a Monday: the weeks opening in January.
    body = rows("1w", ms(2023, 1, 2), 5)
    z = make_zip(HEADER + "\n" + "\n".join(body))
    got = archive.decode_file(f, z, checksum(z, f.name), NOW)
    assert [c.open_time_ms for c in got] == [ms(2023, 1, 2) + i * 7 * DAY for i in range(5)]
    m = ArchiveFile("BTCUSDT", "1M", 2023, 3)
    z = make_zip("\n".join(rows("1M", ms(2023, 3, 1), 1)))
    assert archive.decode_file(m, z, checksum(z, m.name), NOW)[0].open_time_ms == ms(2023, 3, 1)


def test_republished_file_with_new_checksum_is_accepted_on_its_own_terms():
    f = ArchiveFile("BTCUSDT", "1h", 2023, 1, 1)
    first = make_zip("\n".join(rows("1h", f.start_ms, 24)))
    fixed = make_zip(HEADER + "\n" + "\n".join(rows("1h", f.start_ms, 24)).replace("3.141", "3.142"))
    # The old CHECKSUM does not fit the re-published zip; its own does.
    with pytest.raises(ArchiveError):
        archive.decode_file(f, fixed, checksum(first, f.name), NOW)
    assert archive.decode_file(f, fixed, checksum(fixed, f.name), NOW)[0].volume == "3.142"


def test_unclosed_candle_in_a_file_is_refused():
    now = ms(2023, 1, 1) + 3 * 3_600_000 + 5
    f = ArchiveFile("BTCUSDT", "1h", 2023, 1, 1)
    z = make_zip("\n".join(rows("1h", f.start_ms, 24)))
    with pytest.raises(ArchiveError, match="not closed"):
        archive.decode_file(f, z, checksum(z, f.name), now)


# --- planning -------------------------------------------------------------------------------

def test_plan_splits_months_days_and_rest():
    # Listing 2026-09-20 10:00, now 2026-12-03 18:00, horizon 2 days -> archive up to 2026-12-01.
    first = ms(2026, 9, 20) + 10 * 3_600_000
    last = intervals.last_closed_open("1m", NOW)
    plan = archive.plan_range("S", "1m", first, last, now_ms=NOW, horizon_days=2)
    monthly = [f for f in plan.files if f.monthly]
    daily = [f for f in plan.files if not f.monthly]
    assert [(f.year, f.month) for f in monthly] == [(2026, 10), (2026, 11)]
    assert [(f.month, f.day) for f in daily] == [(9, d) for d in range(21, 31)]
    assert plan.rest == [(first, ms(2026, 9, 21) - 60_000), (ms(2026, 12, 1), last)]
    # Every open time is covered exactly once.
    covered = sum(intervals.count_between("1m", a, b) for a, b in plan.rest)
    covered += sum((f.stop_ms - f.start_ms) // 60_000 for f in plan.files)
    assert covered == intervals.count_between("1m", first, last)
    assert plan.files == monthly + daily


def test_plan_monthly_only_intervals_never_use_daily_files():
    first = ms(2026, 5, 4)  # a Monday, mid-month
    for interval in ("1w", "3d", "1M"):
        start = intervals.align(interval, first) if interval == "1M" else first
        plan = archive.plan_range("S", interval, start, NOW - 1, now_ms=NOW)
        assert all(f.monthly for f in plan.files)
        if interval == "1w":  # no week opens in May before May 4: May's file is whole
            assert [f.month for f in plan.files] == [5, 6, 7, 8, 9, 10, 11]
        if interval == "3d":  # a 3d candle may open May 1..3: May goes to REST
            assert [f.month for f in plan.files] == [6, 7, 8, 9, 10, 11]
            assert plan.rest[0] == (first, ms(2026, 6, 1) - 1)
        assert plan.rest[-1][0] == ms(2026, 12, 1)


def test_plan_inside_the_horizon_is_all_rest():
    first = ms(2026, 12, 2)
    plan = archive.plan_range("S", "1h", first, ms(2026, 12, 3, ) + 16 * 3_600_000, now_ms=NOW)
    assert plan.files == [] and plan.rest == [(first, ms(2026, 12, 3) + 16 * 3_600_000)]


def test_plan_horizon_is_configurable():
    first = ms(2026, 11, 20)
    plan = archive.plan_range("S", "1d", first, ms(2026, 12, 2), now_ms=NOW, horizon_days=5)
    assert [f.day for f in plan.files] == list(range(20, 28))  # cutoff: 12-03 minus 5 days
    assert plan.rest == [(ms(2026, 11, 28), ms(2026, 12, 2))]


def test_fallback_month_to_days_and_day_to_rest():
    month = ArchiveFile("S", "1m", 2026, 2)
    assert archive.fallback(month, now_ms=NOW).files == archive.days_of(month)
    day = ArchiveFile("S", "1m", 2026, 2, 3)
    assert archive.fallback(day, now_ms=NOW).rest == [(day.start_ms, day.last_open_ms)]
    week_month = ArchiveFile("S", "1w", 2026, 2)
    assert archive.fallback(week_month, now_ms=NOW).files == []


def test_a_file_lacking_candles_of_its_period_reports_them():
    from kl_actors.messages import ArchiveTask
    f = ArchiveFile("BTCUSDT", "1h", 2023, 1)
    # Drop Jan 10 (a day missing inside the monthly file) and the last hour of the month.
    day10 = ms(2023, 1, 10)
    body = [r for r in rows("1h", f.start_ms, 31 * 24) if not day10 <= int(r.split(",")[0]) < day10 + DAY][:-1]
    z = make_zip("\n".join(body))
    task = ArchiveTask(task_id="t", symbol="BTCUSDT", interval="1h", year=2023, month=1)
    result, candles = archive.classify(task, 200, checksum(z, f.name), 200, z, NOW)
    assert result.status == "ok" and result.candles == len(candles) == 31 * 24 - 25
    assert result.missing == [(day10, day10 + DAY - 3_600_000), (ms(2023, 2, 1) - 3_600_000, ms(2023, 2, 1) - 3_600_000)]
    # In pieces of columns (what the downloader sends): the same result, the same candles.
    in_pieces, pieces = archive.classify(task, 200, checksum(z, f.name), 200, z, NOW, piece=lambda c, last: (c, last))
    assert in_pieces == result and [last for _, last in pieces] == [True]
    assert pieces[0][0].candles() == [msgspec.structs.replace(c, ignore="0") for c in candles]
    whole = make_zip("\n".join(rows("1h", f.start_ms, 31 * 24)))
    assert archive.classify(task, 200, checksum(whole, f.name), 200, whole, NOW)[0].missing == []
    assert archive.classify(task, 200, checksum(whole, f.name), 200, whole, NOW,
                            piece=lambda c, last: None)[0].missing == []


def test_classify_404_and_http_errors():
    from kl_actors.messages import ArchiveTask
    task = ArchiveTask(task_id="t", symbol="BTCUSDT", interval="1h", year=2023, month=1, day=2)
    assert archive.classify(task, 404, b"", 0, b"", NOW)[0].status == "absent"
    r, c = archive.classify(task, 200, b"x", 503, b"", NOW)
    assert (r.status, r.http_status, c) == ("http_error", 503, None)


def test_zip_bomb_is_refused_before_it_is_inflated():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.csv", b"0" * (archive.MAX_CSV_BYTES + 1))
    assert len(buf.getvalue()) < 200_000  # compresses to almost nothing
    with pytest.raises(ArchiveError, match="exceeds"):
        archive.unzip_single(buf.getvalue(), "f.zip")
