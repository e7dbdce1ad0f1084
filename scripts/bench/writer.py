"""Writer throughput: `python scripts/bench.py writer [--rows 200000] [--batch 1000]`: rows/s
committed through the socket path versus raw apsw upserts.

Socket path: a real writer process (the harness's `WriterProcess`: `python -m kl_actors.run
writer` with the peers' sockets, answering a probe before the clock starts), with the service's
`[writer]` defaults, batches of `batch` candles PUSHed to its inbox, timed from the first send
until `Committed` announcements on the bus cover every row. Raw: the same candles upserted with
apsw `executemany` into a fresh table of a fresh file with the same pragmas, one transaction per
batch, parameter tuples built beforehand.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import msgspec
from harness import WriterProcess

from kl_actors import config as cfg
from kl_actors import messages
from kl_actors.messages import Candle, KlineBatch
from kl_actors.store import Store, candle_rows

T0 = 1_600_000_000_000 - 1_600_000_000_000 % 60_000


def make_candles(count: int) -> list[Candle]:
    out = []
    for i in range(count):
        t = T0 + i * 60_000
        price = f"{10000 + i % 977}.{i % 100:02d}"
        out.append(Candle(t, price, f"{10100 + i % 977}.5", f"{9900 + i % 977}.25", price,
                          f"{i % 5000}.{i % 1000:03d}", t + 59_999, f"{i * 7 % 100000}.1234",
                          i % 3000, f"{i % 2500}.5", f"{i * 3 % 100000}.99"))
    return out


def bench_raw(workdir: Path, candles: list[Candle], batch: int, db_config: cfg.DatabaseConfig) -> float:
    store = Store.open_writer(db_config, path=str(workdir / "raw.sqlite"))
    chunks = [candle_rows(candles[i:i + batch]) for i in range(0, len(candles), batch)]
    with store.transaction():
        store.ensure_table("BTCUSDT", "1m")
    started = time.perf_counter()
    for rows in chunks:
        with store.transaction():
            store.upsert_rows("BTCUSDT", "1m", "rest", rows)
    elapsed = time.perf_counter() - started
    assert store.count("BTCUSDT", "1m") == len(candles)
    store.close()
    return len(candles) / elapsed


def bench_socket(workdir: Path, candles: list[Candle], batch: int,
                 writer_settings: dict | None = None) -> tuple[float, int]:
    # The harness's writer and its peers' sockets, with the service's own [writer] defaults (the
    # harness picks test values) and the probe it waits on before returning.
    settings = {**msgspec.structs.asdict(cfg.WriterConfig()), **(writer_settings or {})}
    frames = [messages.encode(KlineBatch("BTCUSDT", "1m", "rest", candles[i:i + batch], task_id=f"b{i}"))
              for i in range(0, len(candles), batch)]
    writer = WriterProcess(workdir, **settings)
    try:
        started = time.perf_counter()
        for frame in frames:
            writer.send(frame)
        rows = txns = 0
        while rows < len(candles):
            if not writer.bus.poll(30_000):
                raise RuntimeError(f"writer stalled at {rows} rows\n{writer.stderr()}")
            m = messages.decode(writer.bus.recv())
            if isinstance(m, messages.Committed):
                rows += sum(t.rows for t in m.tables)
                txns += 1
            elif isinstance(m, messages.WriteFailed):
                raise RuntimeError(f"write failed: {m.error}")
        elapsed = time.perf_counter() - started
        return len(candles) / elapsed, txns
    finally:
        writer.close()


def run(rows_total: int = 200_000, batch: int = 1000, writer_settings: dict | None = None) -> dict:
    """Both rates and their ratio; `writer_settings` overrides `[writer]` (default: the defaults)."""
    workdir = Path(tempfile.mkdtemp(prefix="klwb-", dir="/tmp"))
    try:
        candles = make_candles(rows_total)
        raw = bench_raw(workdir, candles, batch, cfg.DatabaseConfig())
        socket_rate, txns = bench_socket(workdir, candles, batch, writer_settings)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "rows_total": rows_total,
        "batch": batch,
        "raw_rows_per_s": round(raw),
        "writer_rows_per_s": round(socket_rate),
        "writer_txns": txns,
        "ratio": round(socket_rate / raw, 3),
    }
    print(f"raw apsw executemany upsert: {result['raw_rows_per_s']:>10,} rows/s")
    print(f"writer via sockets:          {result['writer_rows_per_s']:>10,} rows/s "
          f"({txns} transactions)")
    print(f"ratio writer/raw:            {result['ratio']:.3f}")
    return result
