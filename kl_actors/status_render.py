"""The `status` command's text for people: aligned columns, UTC times, no log lines.

Draws what `status.collect` and `status.service_view` computed; decides nothing (the JSON output
carries the same numbers). Never reads files or the database.
"""

from __future__ import annotations

import datetime as dt


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == int(seconds) else f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def columns(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows padded to their column's width; numbers (columns in `right`) right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    out = []
    for row in [headers, *rows]:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells).rstrip())
    return out


def _service_lines(view: dict) -> list[str]:
    lines = []
    if view["running"]:
        head = f"running, supervisor pid {view['supervisor_pid']}"
        if view["uptime_s"] is not None:
            head += f", up {fmt_duration(view['uptime_s'])}"
    elif view["supervisor_pid"]:
        head = f"not running (last supervisor pid {view['supervisor_pid']})"
    else:
        head = "not running"
    if view.get("status_age_s") is not None:
        head += f"; status.json written {fmt_duration(view['status_age_s'])} ago"
    if view.get("note"):
        head += f"; {view['note']}"
    lines.append(f"service   {head}")
    p = view.get("progress")
    if p and view["running"]:
        done, total = p.get("tasks_done", 0), p.get("tasks_total", 0)
        share = f" ({100 * done / total:.1f}%)" if total else ""
        lines.append(f"backfill  {fmt_int(done)} / {fmt_int(total)} tasks{share}, "
                     f"{fmt_int(round(p.get('candles_per_s', 0)))} candles/s, "
                     f"ETA {fmt_duration(p.get('eta_s', -1))}, {fmt_int(p.get('failed', 0))} failed")
        lines.append(f"weight    {fmt_int(p.get('weight_used', 0))} / {fmt_int(p.get('weight_limit', 0))} this minute")
        if p.get("archive_files_total"):
            lines.append(f"archive   {fmt_int(p.get('archive_files_done', 0))} / {fmt_int(p['archive_files_total'])} "
                         f"files, {p.get('archive_mb_per_s', 0):.1f} MB/s, "
                         f"{fmt_int(round(p.get('archive_candles_per_s', 0)))} candles/s, "
                         f"ETA {fmt_duration(p.get('archive_eta_s', -1))}")
    if view["actors"]:
        rows = [[a["name"], fmt_int(a["pid"]) if a["pid"] else "-", str(a["restarts"]),
                 f"{fmt_duration(a['heartbeat_age_s'])} ago" if a["heartbeat_age_s"] is not None else "-",
                 a["last_exit"] or "-"] for a in view["actors"]]
        lines.append("")
        lines += columns(["actor", "pid", "restarts", "heartbeat", "last exit"], rows, {1, 2})
    return lines


def _interval_lines(data: dict) -> list[str]:
    rows = []
    for r in data["intervals"]:
        rows.append([r.interval, fmt_int(r.tables), fmt_int(r.candles), fmt_time(r.first_ms), fmt_time(r.last_ms),
                     fmt_duration(r.lag_ms / 1000 if r.lag_ms >= 0 else None),
                     fmt_int(r.lag_candles) if r.lag_candles >= 0 else "-", fmt_int(r.lagging),
                     fmt_int(r.holes) if r.missing else "0", fmt_int(r.missing),
                     fmt_int(r.exchange_holes), fmt_int(r.ws_rows), fmt_int(r.delisted)])
    return columns(["interval", "tables", "candles", "first", "newest", "lag", "behind", "lagging",
                    "holes", "missing", "exch.holes", "ws rows", "delisted"], rows, set(range(1, 13)) - {3, 4})


def _table_lines(data: dict) -> list[str]:
    rows = []
    for s in data["states"]:
        f = s.facts
        gaps = data["listed"].get((f.symbol, f.interval))
        state = "delisted" if f.delisted else "followed" if f.followed else "not followed"
        if f.counted:
            state += ", counted"
        rows.append([f.symbol, f.interval, fmt_int(f.rows), fmt_time(f.first_ms), fmt_time(f.last_ms),
                     fmt_duration(s.lag_ms / 1000 if s.lag_ms >= 0 else None),
                     fmt_int(s.lag_candles) if s.lag_candles >= 0 else "-", "yes" if s.lagging else "no",
                     fmt_int(len(gaps)) if gaps is not None else ("?" if s.missing else "0"),
                     fmt_int(s.missing), fmt_int(len(f.exchange_holes)), fmt_int(f.ws_rows), state])
    return columns(["symbol", "interval", "candles", "first", "newest", "lag", "behind", "lagging", "holes",
                    "missing", "exch.holes", "ws rows", "state"], rows, {2, 5, 6, 8, 9, 10, 11})


def _verdict(data: dict) -> list[str]:
    states = data["states"]
    lagging = [s for s in states if s.lagging]
    missing = sum(s.missing for s in states)
    holes = sum(len(v) for v in data["listed"].values())
    counted = sum(s.facts.counted for s in states)
    lines = []
    if counted:
        lines.append(f"note: {counted} table(s) counted directly (no summary row yet, or --exact)")
    if not states:
        return lines + ["NOT current: no kline table (matching) yet"]
    if not lagging and not missing:
        return lines + ["current: every followed table has its closed candles, no open holes"]
    parts = []
    if lagging:
        by = sorted({s.facts.interval for s in lagging}, key=lambda i: [s.facts.interval for s in states].index(i))
        parts.append(f"{len(lagging)} table(s) lag ({', '.join(by)}; more than one candle, or one for over "
                     f"{data['grace_s']:g}s)")
    if missing:
        parts.append(f"{holes if holes else '?'} open hole(s), {missing:,} candle(s) missing")
    return lines + ["NOT current: " + "; ".join(parts)]


def render_text(view: dict, db: dict, data: dict, per_table: bool) -> str:
    lines = _service_lines(view)
    lines.append("")
    lines.append(f"database  {db['path']} (schema {db.get('schema_version')}), at {fmt_time(db['now_ms'])} UTC")
    lines.append("")
    lines += _table_lines(data) if per_table else _interval_lines(data)
    lines.append("")
    lines += _verdict(data)
    return "\n".join(lines)
