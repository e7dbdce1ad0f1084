"""The archive's two CSV readers agree: the columnar fast path (`archive.fast_candles`) answers
only for a file the row-by-row reference (`parse_csv` + `klines.validate_page`) accepts, with the
very same candles; for anything else it declines and `read_candles` gives the reference's own
verdict and message."""

from __future__ import annotations

import calendar
import random

import pytest

from kl_actors.core import archive, intervals, klines
from kl_actors.core.archive import ArchiveError, ArchiveFile
from kl_actors.messages import columns_of

HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
          "taker_buy_volume,taker_buy_quote_volume,ignore")
NOW = calendar.timegm((2026, 12, 3, 18, 0, 0)) * 1000
DAY = intervals.DAY_MS


def ms(*ymd: int) -> int:
    return calendar.timegm((*ymd, *([1] * (3 - len(ymd))), 0, 0, 0)[:6]) * 1000


def rows(interval: str, first_ms: int, count: int, step_ms: int | None = None) -> list[str]:
    out = []
    t = first_ms
    for i in range(count):
        close = t + (step_ms or intervals.nominal_ms(interval)) - 1
        out.append(f"{t},100.{i % 10}0,101.5,99.25,100.5,3.141,{close},314.15000,{i},1.5,150.0,0")
        t += step_ms or intervals.nominal_ms(interval)
    return out


def reference(f: ArchiveFile, data: bytes, now_ms: int = NOW):
    """The rules as the row-by-row path applies them: candles, or ("error", message)."""
    try:
        candles = archive.parse_csv(data, f.name)
        return klines.validate_page(f.interval, candles, f.start_ms, f.last_open_ms, now_ms)
    except ArchiveError as exc:
        return ("error", str(exc))
    except klines.PageError as exc:
        return ("error", f"{f.name}: {exc}")


def outcome(f: ArchiveFile, data: bytes, now_ms: int = NOW):
    try:
        return archive.read_candles(f, data, now_ms)
    except ArchiveError as exc:
        return ("error", str(exc))


def columns_outcome(f: ArchiveFile, data: bytes, now_ms: int = NOW):
    """`archive.read_columns`: what the downloader sends, the same answer as `read_candles`."""
    try:
        return archive.read_columns(f, data, now_ms)
    except ArchiveError as exc:
        return ("error", str(exc))


DAILY_1M = ArchiveFile("BTCUSDT", "1m", 2023, 1, 1)
MONTHLY_1H = ArchiveFile("BTCUSDT", "1h", 2023, 1)

GOOD = {
    "1m daily": (DAILY_1M, rows("1m", DAILY_1M.start_ms, 1440)),
    "1h monthly": (MONTHLY_1H, rows("1h", MONTHLY_1H.start_ms, 31 * 24)),
    "1d monthly": (ArchiveFile("BTCUSDT", "1d", 2023, 2), rows("1d", ms(2023, 2, 1), 28)),
    # 3d and 1w: any whole-day phase the exchange uses, whole steps apart.
    "3d monthly": (ArchiveFile("BTCUSDT", "3d", 2023, 1), rows("3d", ms(2023, 1, 2), 10)),
    "1w monthly": (ArchiveFile("BTCUSDT", "1w", 2023, 1), rows("1w", ms(2023, 1, 2), 5)),
    "1m with gaps": (DAILY_1M, [r for i, r in enumerate(rows("1m", DAILY_1M.start_ms, 1440))
                                if not 100 <= i < 160]),
}


@pytest.mark.parametrize("name", sorted(GOOD))
@pytest.mark.parametrize("layout", ["plain", "header", "crlf", "trailing newline", "blank lines"])
def test_fast_path_gives_the_reference_candles(name, layout):
    f, body = GOOD[name]
    text = {
        "plain": "\n".join(body),
        "header": HEADER + "\n" + "\n".join(body),
        "crlf": HEADER + "\r\n" + "\r\n".join(body) + "\r\n",
        "trailing newline": "\n".join(body) + "\n",
        "blank lines": "\n".join(body[:3]) + "\n\n" + "\n".join(body[3:]) + "\n\n",
    }[layout]
    data = text.encode()
    fast = archive.fast_candles(f, data, NOW)
    assert fast is not None, "a clean file must take the fast path"
    assert fast == reference(f, data) and len(fast) == len(body)
    assert archive.read_columns(f, data, NOW) == columns_of(fast)
    assert fast[0].open_time_ms == int(body[0].split(",")[0]) and fast[0].open == body[0].split(",")[1]


def _edit(body: list[str], row: int, column: int, value: str) -> list[str]:
    fields = body[row].split(",")
    fields[column] = value
    return [*body[:row], ",".join(fields), *body[row + 1:]]


BODY = rows("1m", DAILY_1M.start_ms, 20)
R5 = BODY[5].split(",")

MALFORMED = {
    "11 fields": [*BODY[:5], ",".join(R5[:11]), *BODY[6:]],
    "13 fields": [*BODY[:5], BODY[5] + ",0", *BODY[6:]],
    "11 and 13 fields (right total)": [*BODY[:5], ",".join(R5[:11]), BODY[6] + ",0", *BODY[7:]],
    "non-ASCII digits in an open time": _edit(BODY, 5, 0, R5[0][:-1] + "\u0660"),
    "non-ASCII digit in a price": _edit(BODY, 5, 1, "1\u0661.5"),
    "open time not on the grid": _edit(_edit(BODY, 5, 0, str(int(R5[0]) + 30_000)), 5, 6,
                                       str(int(R5[6]) + 30_000)),
    "close time one short": _edit(BODY, 5, 6, str(int(R5[6]) - 1)),
    "close time one short in a file with a gap": [*BODY[:3], *_edit(BODY, 5, 6, str(int(R5[6]) - 1))[4:]],
    "duplicate row": [*BODY[:6], BODY[5], *BODY[6:]],
    "header row mid-file": [*BODY[:5], HEADER, *BODY[5:]],
    "empty price": _edit(BODY, 5, 2, ""),
    "empty open time": _edit(BODY, 5, 0, ""),
    "leading dot": _edit(BODY, 5, 5, ".5"),
    "trailing dot": _edit(BODY, 5, 5, "5."),
    "two dots": _edit(BODY, 5, 7, "1.2.3"),
    "exponent": _edit(BODY, 5, 5, "1e5"),
    "plus sign": _edit(BODY, 5, 5, "+5"),
    "minus sign": _edit(BODY, 5, 5, "-5"),
    "negative count": _edit(BODY, 5, 8, "-1"),
    "space": _edit(BODY, 5, 5, " 5"),
    "underscore in a count": _edit(BODY, 5, 8, "1_0"),
    "inf price": _edit(BODY, 5, 4, "inf"),
    "21 integer digits": _edit(BODY, 5, 7, "1" * 21),
    "count past SQLite's integer": _edit(BODY, 5, 8, str(2**63)),
    "high below open": _edit(BODY, 5, 2, "100.05"),
    "low above close": _edit(BODY, 5, 3, "100.51"),
    "low above close, long decimals": _edit(BODY, 5, 3, "100.500000000001"),
    "outside the file's day": [*BODY, rows("1m", DAILY_1M.stop_ms, 1)[0]],
    "before the file's day": [rows("1m", DAILY_1M.start_ms - 60_000, 1)[0], *BODY],
    "tab as a separator": [*BODY[:5], BODY[5].replace(",", "\t", 1), *BODY[6:]],
    # Valid for the reference, but unusual: the fast path declines, the reference decides.
    "rows out of order": [BODY[1], BODY[0], *BODY[2:]],
    "16-character price": _edit(BODY, 5, 2, "101.500000000000"),
    "empty ignore field": _edit(BODY, 5, 11, ""),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_fast_path_declines_what_is_not_plainly_valid_and_the_reference_decides(case):
    data = "\n".join(MALFORMED[case]).encode()
    assert archive.fast_candles(DAILY_1M, data, NOW) is None
    assert outcome(DAILY_1M, data) == reference(DAILY_1M, data)
    expected = reference(DAILY_1M, data)
    assert columns_outcome(DAILY_1M, data) == (columns_of(expected) if isinstance(expected, list) else expected)


def test_rejections_name_the_fault():
    def error(case):
        result = outcome(DAILY_1M, "\n".join(MALFORMED[case]).encode())
        assert result[0] == "error", case
        return result[1]
    assert "row 6 has 11 fields" in error("11 fields")
    assert "not ASCII" in error("non-ASCII digits in an open time")
    assert "not aligned" in error("open time not on the grid")
    assert "duplicate open time" in error("duplicate row")
    assert "row 6: times/count not integers" in error("header row mid-file")
    assert "not a non-negative decimal" in error("leading dot")
    assert "high/low do not bound" in error("low above close, long decimals")
    assert "outside asked range" in error("outside the file's day")


def test_unusual_but_valid_files_are_still_accepted():
    for case in ("rows out of order", "16-character price", "empty ignore field"):
        result = outcome(DAILY_1M, "\n".join(MALFORMED[case]).encode())
        assert isinstance(result, list) and len(result) == 20, case
    # Long volumes (up to 20 digits) are checked by length per column and stay on the fast path.
    data = "\n".join(_edit(BODY, 5, 5, "1" * 20)).encode()
    fast = archive.fast_candles(DAILY_1M, data, NOW)
    assert fast is not None and fast == reference(DAILY_1M, data) and fast[5].volume == "1" * 20


def test_unclosed_and_phased_steps_decline():
    f = ArchiveFile("BTCUSDT", "3d", 2023, 1)
    # A 3d candle one day off the others' steps (whole days, but not whole 3d steps apart).
    body = rows("3d", ms(2023, 1, 2), 3) + rows("3d", ms(2023, 1, 12), 1)
    data = "\n".join(body).encode()
    assert archive.fast_candles(f, data, NOW) is None
    assert "whole number of 3d steps" in outcome(f, data)[1]
    # Whole steps apart with a gap, but one close time a day long.
    gappy = rows("3d", ms(2023, 1, 2), 2) + rows("3d", ms(2023, 1, 11), 2)
    gappy[3] = gappy[3].replace(str(ms(2023, 1, 17) - 1), str(ms(2023, 1, 15) - 1))
    data = "\n".join(gappy).encode()
    assert archive.fast_candles(f, data, NOW) is None
    assert "does not match open" in outcome(f, data)[1]
    good = "\n".join(rows("3d", ms(2023, 1, 2), 2) + rows("3d", ms(2023, 1, 11), 2)).encode()
    assert archive.fast_candles(f, good, NOW) == reference(f, good) and len(reference(f, good)) == 4
    data = "\n".join(rows("1h", MONTHLY_1H.start_ms, 24)).encode()
    now = MONTHLY_1H.start_ms + 10 * 3_600_000
    assert archive.fast_candles(MONTHLY_1H, data, now) is None
    assert "not closed yet" in outcome(MONTHLY_1H, data, now)[1]


def test_random_damage_is_never_accepted_by_the_fast_path_alone():
    """Single-character damage anywhere in a small file: whatever the fast path accepts, the
    reference accepts with the same candles, and `read_candles` always agrees with it."""
    rng = random.Random(13)
    f = ArchiveFile("BTCUSDT", "1h", 2023, 1, 1)
    clean = (HEADER + "\n" + "\n".join(rows("1h", f.start_ms, 24)) + "\n")
    alphabet = "0123456789.,\n\r-+e x\t\u0663"
    fast_accepted = 0
    for _ in range(1500):
        text = list(clean)
        for _ in range(rng.choice((1, 1, 2))):
            i = rng.randrange(len(text))
            op = rng.random()
            if op < 0.6:
                text[i] = rng.choice(alphabet)
            elif op < 0.8:
                text.insert(i, rng.choice(alphabet))
            else:
                del text[i]
        data = "".join(text).encode()
        expected = reference(f, data)
        fast = archive.fast_candles(f, data, NOW)
        if fast is not None:
            fast_accepted += 1
            assert fast == expected, data
        assert outcome(f, data) == expected
        assert columns_outcome(f, data) == (columns_of(expected) if isinstance(expected, list) else expected)
    assert fast_accepted > 50  # harmless damage (a digit for a digit) still takes the fast path


@pytest.mark.parametrize("damage", [None, "late row", "bad value at the end"])
def test_pieces_are_the_file_in_order_and_only_of_a_valid_file(damage):
    """`read_pieces` (what the downloader sends): pieces of FAST_SLICE_ROWS candles whose columns
    put together are `read_columns`' own, the last one marked; a fault found after some pieces
    were made (a row out of order, a bad value in the last slice) gives the reference's answer
    and no piece of the fast path's."""
    f = ArchiveFile("BTCUSDT", "1m", 2023, 1)
    body = rows("1m", f.start_ms, 5 * 1440)  # 7,200 candles: four pieces
    if damage == "late row":
        body[-1], body[-2] = body[-2], body[-1]  # unusual but valid: the reference decides
    elif damage == "bad value at the end":
        body = _edit(body, len(body) - 1, 2, "1.2.3")
    data = ("\n".join(body) + "\n").encode()
    expected = reference(f, data)
    try:
        pieces, opens = archive.read_pieces(f, data, NOW, lambda c, last: (c, last))
    except ArchiveError as exc:
        assert expected == ("error", str(exc))
        return
    assert [last for _, last in pieces] == [False, False, False, True]
    assert [len(c) for c, _ in pieces] == [2000, 2000, 2000, 1200]
    glued = [candle for c, _ in pieces for candle in c.candles()]
    assert glued == expected and opens == [c.open_time_ms for c in expected]
