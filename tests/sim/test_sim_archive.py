"""The simulator's public archive (data.binance.vision layout) on its own port: files, checksums,
header by date, monthly-only intervals, the publication lag, the S3 bucket listing, the faults,
the stats and the on-disk cache. One simulator per module; a symbol listed at run time 40 days
back keeps every range small."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import xml.etree.ElementTree as ET
import zipfile

import pytest
import requests

from kl_actors.sim import archive as ar

# One worker runs this module: its module-scoped fixture (a simulator rendering archive files)
# is built once, not once per xdist worker (scripts/test.sh uses --dist loadgroup).
pytestmark = pytest.mark.xdist_group("sim_archive")

DAY = 86_400_000
S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
SYM = "ARCHUSDT"
HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
          "taker_buy_quote_volume,ignore").split(",")


def _label(ms: int, daily: bool = True) -> str:
    d = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return d.strftime("%Y-%m-%d" if daily else "%Y-%m")


def _month_start(ms: int) -> int:
    d = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return int(dt.datetime(d.year, d.month, 1, tzinfo=dt.timezone.utc).timestamp()) * 1000


def _next_month(ms: int) -> int:
    return _month_start(ms + 32 * DAY)


def _url(sim, kind: str, symbol: str, iname: str, label: str, checksum: bool = False) -> str:
    name = f"{symbol}-{iname}-{label}.zip"
    return (f"{sim.archive_url}/data/futures/um/{kind}/klines/{symbol}/{iname}/{name}"
            + (".CHECKSUM" if checksum else ""))


def _get(url: str) -> requests.Response:
    return requests.get(url, timeout=60)


def _csv_rows(data: bytes, name: str) -> tuple[bool, list[list[str]]]:
    """(has header, rows) of a zip that must hold exactly the one CSV `name`."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [name]
        text = zf.read(name).decode()
    rows = list(csv.reader(io.StringIO(text)))
    if rows and rows[0] == HEADER:
        return True, rows[1:]
    return False, rows


def _truth(sim, symbol, interval, start, end) -> list[list[str]]:
    return [[str(x) for x in row] for row in sim.truth(symbol, interval, start, end)]


def _fetch_verified(sim, kind, symbol, iname, label) -> bytes:
    """The zip, after checking its CHECKSUM names it and matches (sha256sum format)."""
    z = _get(_url(sim, kind, symbol, iname, label))
    c = _get(_url(sim, kind, symbol, iname, label, checksum=True))
    assert z.status_code == 200 and c.status_code == 200
    name = f"{symbol}-{iname}-{label}.zip"
    assert c.content == f"{hashlib.sha256(z.content).hexdigest()}  {name}\n".encode()
    return z.content


@pytest.fixture(scope="module")
def asim(tmp_path_factory):
    from kl_actors.sim.process import SimProcess
    cache = tmp_path_factory.mktemp("archive-cache")
    info = {}
    with SimProcess(symbols=3, seed=7, archive_cache=str(cache)) as sim:
        now = sim.info()["server_time_ms"]
        today = now - now % DAY
        onboard = today - 40 * DAY + 7 * 3_600_000 + 123_456  # mid-day: a partial first day
        sim.list_symbol(SYM, onboard)
        info.update(now=now, today=today, onboard=onboard, cache=cache)
        sim.meta = info
        yield sim


def test_third_stdout_line_is_the_archive_root(asim):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", asim.archive_url)
    assert asim.archive_url != asim.rest_url
    missing = _get(asim.archive_url + "/data/futures/um/daily/klines/NOPEUSDT/1m/"
                   "NOPEUSDT-1m-2024-01-01.zip")
    assert missing.status_code == 404 and b"<Code>NoSuchKey</Code>" in missing.content


def test_daily_file_checksum_and_rows_equal_truth(asim):
    m = asim.meta
    first_day = m["onboard"] - m["onboard"] % DAY
    for day in (first_day, first_day + 5 * DAY):
        data = _fetch_verified(asim, "daily", SYM, "1m", _label(day))
        header, rows = _csv_rows(data, f"{SYM}-1m-{_label(day)}.csv")
        assert header  # 2026: after the default switch date
        assert rows == _truth(asim, SYM, "1m", day, day + DAY - 1)
    first = _csv_rows(_fetch_verified(asim, "daily", SYM, "1m", _label(first_day)),
                      f"{SYM}-1m-{_label(first_day)}.csv")[1]
    assert int(first[0][0]) == m["onboard"] - m["onboard"] % 60_000  # listing honoured
    assert len(first) < 1440
    data = _fetch_verified(asim, "daily", SYM, "1h", _label(first_day + 3 * DAY))
    assert _csv_rows(data, f"{SYM}-1h-{_label(first_day + 3 * DAY)}.csv")[1] == _truth(
        asim, SYM, "1h", first_day + 3 * DAY, first_day + 4 * DAY - 1)


def test_monthly_files_checksum_and_rows_equal_truth(asim):
    m = asim.meta
    month = _month_start(m["onboard"])
    published = [t for t in (month, _next_month(month))
                 if _next_month(t) + DAY <= m["today"]]
    assert published  # onboard 40 days back: at least its first month is complete
    for t in published:
        for interval, iname in (("1m", "1m"), ("4h", "4h"), ("1w", "1w"), ("3d", "3d"),
                                ("1M", "1mo")):
            # A month's file waits for the last candle opening in it to close (1w, 3d: in
            # the next month), then one more day.
            last = requests.get(asim.rest_url + "/fapi/v1/klines", params={
                "symbol": SYM, "interval": interval, "startTime": t,
                "endTime": _next_month(t) - 1, "limit": 1500}, timeout=10).json()[-1]
            closed_day = -(-(last[6] + 1) // DAY) * DAY
            if closed_day + DAY > m["now"]:
                assert interval in ("1w", "3d")
                assert _get(_url(asim, "monthly", SYM, iname, _label(t, daily=False))
                            ).status_code == 404
                continue
            data = _fetch_verified(asim, "monthly", SYM, iname, _label(t, daily=False))
            _, rows = _csv_rows(data, f"{SYM}-{iname}-{_label(t, daily=False)}.csv")
            assert rows == _truth(asim, SYM, interval, t, _next_month(t) - 1), (interval, t)
            assert rows
    current = _get(_url(asim, "monthly", SYM, "1m", _label(m["today"], daily=False)))
    assert current.status_code == 404


def test_monthly_only_intervals_and_1mo_naming(asim):
    m = asim.meta
    day = m["onboard"] - m["onboard"] % DAY + 8 * DAY
    for iname in ("3d", "1w", "1mo", "1M"):
        assert _get(_url(asim, "daily", SYM, iname, _label(day))).status_code == 404
    month = _label(_month_start(m["onboard"]), daily=False)
    assert _get(_url(asim, "monthly", SYM, "1M", month)).status_code == 404
    assert _get(_url(asim, "monthly", SYM, "1mo", month)).status_code == 200
    assert _get(_url(asim, "daily", SYM, "1d", _label(day))).status_code == 200


def test_newest_two_days_absent(asim):
    today = asim.meta["today"]
    assert _get(_url(asim, "daily", SYM, "1m", _label(today))).status_code == 404
    assert _get(_url(asim, "daily", SYM, "1m", _label(today - DAY))).status_code == 404
    assert _get(_url(asim, "daily", SYM, "1m", _label(today - 2 * DAY),
                     checksum=True)).status_code == 200
    before = asim.meta["onboard"] - asim.meta["onboard"] % DAY - DAY  # before the listing
    assert _get(_url(asim, "daily", SYM, "1m", _label(before))).status_code == 404


def test_header_by_date_default_switch_2022_05_01(asim):
    # BTCUSDT is listed in 2019: its old files have no header, the later ones have one.
    for label, header in (("2022-04-30", False), ("2022-05-01", True), ("2021-01-15", False)):
        data = _fetch_verified(asim, "daily", "BTCUSDT", "1d", label)
        got, rows = _csv_rows(data, f"BTCUSDT-1d-{label}.csv")
        start = int(dt.datetime.strptime(label, "%Y-%m-%d").replace(
            tzinfo=dt.timezone.utc).timestamp()) * 1000
        assert got is header and rows == _truth(asim, "BTCUSDT", "1d", start, start + DAY - 1)
    data = _fetch_verified(asim, "monthly", "BTCUSDT", "1mo", "2022-04")
    assert _csv_rows(data, "BTCUSDT-1mo-2022-04.csv")[0] is False


def test_header_switch_date_is_configurable(sim_factory, tmp_path):
    sim = sim_factory(symbols=3, seed=7, archive_cache=str(tmp_path),
                      archive_header_from="2030-01-01")
    now = sim.info()["server_time_ms"]
    day = now - now % DAY - 5 * DAY
    data = _fetch_verified(sim, "daily", "BTCUSDT", "1d", _label(day))
    assert _csv_rows(data, f"BTCUSDT-1d-{_label(day)}.csv")[0] is False


def _list(sim, prefix: str, **params) -> ET.Element:
    r = requests.get(sim.archive_url + "/", params={"delimiter": "/", "prefix": prefix, **params},
                     timeout=120)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(r.content)
    assert root.tag == S3 + "ListBucketResult"
    return root


def _keys(root) -> list[str]:
    return [c.find(S3 + "Key").text for c in root.findall(S3 + "Contents")]


def _prefixes(root) -> list[str]:
    return [p.find(S3 + "Prefix").text for p in root.findall(S3 + "CommonPrefixes")]


def test_bucket_listing_parses_and_pages(asim):
    m = asim.meta
    base = f"data/futures/um/daily/klines/{SYM}/"
    root = _list(asim, base)
    assert _keys(root) == [] and root.find(S3 + "IsTruncated").text == "false"
    assert sorted(_prefixes(root)) == sorted(
        base + i + "/" for i in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h",
                                 "12h", "1d"))
    assert f"data/futures/um/daily/klines/{SYM}/" in _prefixes(
        _list(asim, "data/futures/um/daily/klines/"))
    monthly = _prefixes(_list(asim, f"data/futures/um/monthly/klines/{SYM}/"))
    assert f"data/futures/um/monthly/klines/{SYM}/1mo/" in monthly and len(monthly) == 15
    first_day = m["onboard"] - m["onboard"] % DAY
    days = range(first_day, m["today"] - DAY, DAY)  # up to today - 2 days
    expected = []
    for d in days:
        key = f"{base}1h/{SYM}-1h-{_label(d)}.zip"
        expected += [key, key + ".CHECKSUM"]
    keys, marker, pages = [], "", 0
    while True:
        root = _list(asim, base + "1h/", marker=marker, **{"max-keys": 25})
        page = _keys(root)
        pages += 1
        keys += page
        if root.find(S3 + "IsTruncated").text == "false":
            assert len(page) <= 25
            break
        assert len(page) == 25
        marker = root.find(S3 + "NextMarker").text
        assert marker == page[-1]
    assert keys == expected and pages == -(-len(expected) // 25)
    one = _list(asim, base + "1h/" + f"{SYM}-1h-{_label(first_day + DAY)}")
    sizes = {c.find(S3 + "Key").text: int(c.find(S3 + "Size").text)
             for c in one.findall(S3 + "Contents")}
    zkey = f"{base}1h/{SYM}-1h-{_label(first_day + DAY)}.zip"
    assert sizes[zkey] == len(_get(f"{asim.archive_url}/{zkey}").content)
    assert sizes[zkey + ".CHECKSUM"] == len(_get(f"{asim.archive_url}/{zkey}.CHECKSUM").content)


def test_bucket_listing_without_delimiter_is_recursive(asim):
    prefix = f"data/futures/um/monthly/klines/{SYM}/1"
    root = _list(asim, prefix, delimiter="")
    keys = _keys(root)
    assert keys == sorted(keys, key=str.encode) and _prefixes(root) == []
    assert any("/1mo/" in k for k in keys) and any("/1w/" in k for k in keys)
    assert not any("/3d/" in k for k in keys)


def test_archive_faults(asim):
    m = asim.meta
    d = m["onboard"] - m["onboard"] % DAY
    labels = {k: _label(d + i * DAY) for i, k in enumerate(
        ("missing", "late", "bad", "trunc", "repub", "later"), start=2)}
    originals = {k: _fetch_verified(asim, "daily", SYM, "5m", v) for k, v in labels.items()}
    name = lambda k: f"{SYM}-5m-{labels[k]}.zip"  # noqa: E731
    now = asim.info()["server_time_ms"]
    asim.set_faults(archive=[
        {"fault": "missing", "pattern": name("missing")},
        {"fault": "late", "pattern": f"*/{name('late')}", "until_ms": now + 3_600_000},
        {"fault": "bad_checksum", "pattern": name("bad")},
        {"fault": "truncated", "pattern": name("trunc")},
        {"fault": "republished", "pattern": name("repub")},
        {"fault": "republished", "pattern": name("later"), "at_ms": now + 3_600_000},
    ])
    try:
        assert asim.admin("faults")["archive"][0] == {"fault": "missing",
                                                      "pattern": name("missing")}
        for k in ("missing", "late"):
            assert _get(_url(asim, "daily", SYM, "5m", labels[k])).status_code == 404
            assert _get(_url(asim, "daily", SYM, "5m", labels[k], True)).status_code == 404
        listed = _keys(_list(asim, f"data/futures/um/daily/klines/{SYM}/5m/"))
        assert not any(name("missing") in k or name("late") in k for k in listed)
        assert any(name("bad") in k for k in listed)
        bad = _get(_url(asim, "daily", SYM, "5m", labels["bad"]))
        bad_sum = _get(_url(asim, "daily", SYM, "5m", labels["bad"], True)).text
        assert bad.content == originals["bad"]
        assert bad_sum.endswith(f"  {name('bad')}\n")
        assert bad_sum.split()[0] != hashlib.sha256(bad.content).hexdigest()
        trunc = _fetch_verified(asim, "daily", SYM, "5m", labels["trunc"])  # its sum matches
        assert len(trunc) == len(originals["trunc"]) // 2
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(io.BytesIO(trunc)).read(f"{SYM}-5m-{labels['trunc']}.csv")
        repub = _fetch_verified(asim, "daily", SYM, "5m", labels["repub"])
        assert repub != originals["repub"]
        csv_name = f"{SYM}-5m-{labels['repub']}.csv"
        assert _csv_rows(repub, csv_name)[0] is False and _csv_rows(
            originals["repub"], csv_name)[0] is True
        assert _csv_rows(repub, csv_name)[1] == _csv_rows(originals["repub"], csv_name)[1]
        assert _fetch_verified(asim, "daily", SYM, "5m", labels["later"]) == originals["later"]
        # The late file's time has come; the re-publication's too.
        asim.set_faults(archive=[
            {"fault": "late", "pattern": name("late"), "until_ms": now - 1},
            {"fault": "republished", "pattern": name("later"), "at_ms": now - 1}])
        assert _fetch_verified(asim, "daily", SYM, "5m", labels["late"]) == originals["late"]
        assert _fetch_verified(asim, "daily", SYM, "5m", labels["later"]) != originals["later"]
        r = requests.post(asim.rest_url + "/_sim/faults",
                          json={"archive": [{"fault": "late", "pattern": "*"}]}, timeout=5)
        assert r.status_code == 400 and "until_ms" in r.json()["error"]
        r = requests.post(asim.rest_url + "/_sim/faults",
                          json={"archive": [{"fault": "gone", "pattern": "*"}]}, timeout=5)
        assert r.status_code == 400
        r = requests.post(asim.rest_url + "/_sim/faults",
                          json={"archive": [{"fault": "gap", "pattern": "*"}]}, timeout=5)
        assert r.status_code == 400 and "start_ms" in r.json()["error"]
    finally:
        asim.set_faults(archive=[])
    assert _fetch_verified(asim, "daily", SYM, "5m", labels["missing"]) == originals["missing"]


def test_gap_fault_leaves_a_day_out_of_a_monthly_file(asim):
    m = asim.meta
    month = _month_start(m["onboard"])
    label = _label(month, daily=False)
    whole = _fetch_verified(asim, "monthly", SYM, "1h", label)
    cut = m["onboard"] - m["onboard"] % DAY + 2 * DAY
    asim.set_faults(archive=[{"fault": "gap", "pattern": f"{SYM}-1h-{label}.zip",
                              "start_ms": cut, "end_ms": cut + DAY - 1}])
    try:
        gapped = _fetch_verified(asim, "monthly", SYM, "1h", label)  # its CHECKSUM matches
        rows = _csv_rows(gapped, f"{SYM}-1h-{label}.csv")[1]
        truth = _truth(asim, SYM, "1h", month, _next_month(month) - 1)
        assert rows == [r for r in truth if not cut <= int(r[0]) < cut + DAY]
        assert len(rows) == len(truth) - 24
        assert _fetch_verified(asim, "daily", SYM, "1h", _label(cut))  # the daily file is whole
    finally:
        asim.set_faults(archive=[])
    assert _fetch_verified(asim, "monthly", SYM, "1h", label) == whole


def test_stats_count_archive_requests(asim):
    m = asim.meta
    label = _label(m["onboard"] - m["onboard"] % DAY + 3 * DAY)
    url = _url(asim, "daily", SYM, "15m", label)
    before = asim.stats()["requests_by_path"]
    for _ in range(3):
        assert _get(url).status_code == 200
    _list(asim, "data/futures/um/")
    after = asim.stats()["requests_by_path"]
    path = url[len(asim.archive_url):]
    assert after[path] - before.get(path, 0) == 3
    assert after["/"] - before.get("/", 0) == 1


def test_rendered_once_and_kept_on_disk(asim, sim_factory):
    m = asim.meta
    label = _label(m["onboard"] - m["onboard"] % DAY + 4 * DAY)
    data = _fetch_verified(asim, "daily", SYM, "30m", label)
    kept = list(m["cache"].rglob(f"{SYM}-30m-{label}.zip.h1.zip"))
    assert len(kept) == 1 and kept[0].read_bytes() == data
    # A second simulator with the same seed and listing serves the kept file, bytes unchanged.
    stamp = kept[0].stat().st_mtime_ns
    other = sim_factory(symbols=3, seed=7, archive_cache=str(m["cache"]))
    other.list_symbol(SYM, m["onboard"])
    assert _fetch_verified(other, "daily", SYM, "30m", label) == data
    assert kept[0].stat().st_mtime_ns == stamp
    # Another listing date is another cache entry.
    third = sim_factory(symbols=3, seed=7, archive_cache=str(m["cache"]))
    third.list_symbol(SYM, m["onboard"] - DAY)
    _fetch_verified(third, "daily", SYM, "30m", label)
    assert len(list(m["cache"].rglob(f"{SYM}-30m-{label}.zip.h1.zip"))) == 2


def test_concurrent_requests_of_a_cold_file_agree(sim_factory, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    sim = sim_factory(symbols=3, seed=9, archive_cache=str(tmp_path))
    now = sim.info()["server_time_ms"]
    label = _label(now - now % DAY - 3 * DAY)
    url = _url(sim, "daily", "BTCUSDT", "1m", label)
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: _get(url).content, range(8)))
    assert len(set(bodies)) == 1 and _fetch_verified(sim, "daily", "BTCUSDT", "1m",
                                                     label) == bodies[0]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"BTCUSDT-1m-{label}.zip.h1.zip"]


def test_holes_and_delisting_honoured(sim_factory, tmp_path):
    sim = sim_factory(symbols=3, seed=7, archive_cache=str(tmp_path))
    now = sim.info()["server_time_ms"]
    today = now - now % DAY
    onboard = today - 20 * DAY
    sim.list_symbol("HOLEUSDT", onboard)
    whole, part = today - 10 * DAY, today - 8 * DAY
    sim.add_hole("HOLEUSDT", whole, whole + DAY - 1)  # the whole day: no file at all
    sim.add_hole("HOLEUSDT", part + 3_600_000, part + 5 * 3_600_000 - 1)
    assert _get(_url(sim, "daily", "HOLEUSDT", "1m", _label(whole))).status_code == 404
    keys = _keys(_list(sim, "data/futures/um/daily/klines/HOLEUSDT/1m/"))
    assert not any(_label(whole) in k for k in keys) and any(_label(part) in k for k in keys)
    rows = _csv_rows(_fetch_verified(sim, "daily", "HOLEUSDT", "1m", _label(part)),
                     f"HOLEUSDT-1m-{_label(part)}.csv")[1]
    assert len(rows) == 1440 - 240 and rows == _truth(sim, "HOLEUSDT", "1m", part, part + DAY - 1)
    # The 1d candle of the partly open day exists, so its 1d file does too.
    assert _get(_url(sim, "daily", "HOLEUSDT", "1d", _label(part))).status_code == 200
    sim.delist("HOLEUSDT", today - 5 * DAY + 3_600_000)
    assert _get(_url(sim, "daily", "HOLEUSDT", "1m", _label(today - 4 * DAY))).status_code == 404
    last = _csv_rows(_fetch_verified(sim, "daily", "HOLEUSDT", "1m", _label(today - 5 * DAY)),
                     f"HOLEUSDT-1m-{_label(today - 5 * DAY)}.csv")[1]
    assert int(last[-1][0]) == today - 5 * DAY + 3_600_000


# -- pure parts ----------------------------------------------------------------------------
def test_keys_round_trip_and_reject_non_canonical():
    ref = ar.FileRef("BTCUSDT", "1M", "monthly", 1704067200000)
    assert ref.key == "data/futures/um/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2024-01.zip"
    assert ar.parse_key(ref.key) == (ref, False)
    assert ar.parse_key(ref.key + ".CHECKSUM") == (ref, True)
    d = ar.FileRef("BTCUSDT", "1m", "daily", 1704153600000)
    assert d.name == "BTCUSDT-1m-2024-01-02.zip" and ar.parse_key(d.key) == (d, False)
    for bad in ("data/futures/um/daily/klines/BTCUSDT/1w/BTCUSDT-1w-2024-01-02.zip",
                "data/futures/um/monthly/klines/BTCUSDT/1M/BTCUSDT-1M-2024-01.zip",
                "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-1-02.zip",
                "data/futures/um/daily/klines/BTCUSDT/1m/ETHUSDT-1m-2024-01-02.zip",
                "data/futures/cm/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip"):
        assert ar.parse_key(bad) is None, bad


def test_publication_rule():
    from kl_actors.sim.market import Market
    archive = ar.Archive(Market(seed=1, n_symbols=2, anchor_ms=1733011200000))
    day = ar.FileRef("BTCUSDT", "1m", "daily", 1704153600000)  # 2024-01-02
    assert archive.published_ms(day) == 1704153600000 + 2 * DAY  # visible on 01-04 = T-2
    month = ar.FileRef("BTCUSDT", "1h", "monthly", 1704067200000)  # 2024-01
    assert archive.published_ms(month) == 1706745600000 + DAY  # 2024-02-02
    week = ar.FileRef("BTCUSDT", "1w", "monthly", 1704067200000)
    assert archive.published_ms(week) == 1706486400000 + 7 * DAY + DAY  # last week opens 01-29


def test_odd_symbol_names_listed_and_served(sim_factory, tmp_path):
    sim = sim_factory(symbols=2, seed=7, odd_symbols=3, archive_cache=str(tmp_path))
    names = [p.split("/")[-2] for p in _prefixes(_list(sim, "data/futures/um/monthly/klines/"))]
    assert {"币安人生USDT", "BtcUSDT", "BTC-USDT"} <= set(names)
    assert names == sorted(names, key=str.encode)  # S3 order: UTF-8 bytes
    keys = _keys(_list(sim, "data/futures/um/monthly/klines/币安人生USDT/1d/"))
    assert keys and keys[0].endswith(".zip")
    label = keys[0].rsplit("-1d-", 1)[1][:-4]
    data = _fetch_verified(sim, "monthly", "币安人生USDT", "1d", label)
    start = int(dt.datetime.strptime(label, "%Y-%m").replace(
        tzinfo=dt.timezone.utc).timestamp()) * 1000
    assert _csv_rows(data, f"币安人生USDT-1d-{label}.csv")[1] == _truth(
        sim, "币安人生USDT", "1d", start, _next_month(start) - 1)
