"""The writer process sums the tables of a file made before summaries existed (`meta_tables`,
what `status` reads) in its upkeep, and keeps them with every commit after. Interleaving of the
slices with upserts is tested on the store (tests/test_store_summary.py)."""

from __future__ import annotations

import apsw

from kl_actors.config import DatabaseConfig
from kl_actors.core.symbols import table_name
from kl_actors.messages import KlineBatch
from kl_actors.store import Store
from harness import WriterProcess, candle, make_config, wait_for

MIN = 60_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MIN
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def summaries_and_truth(path) -> tuple[dict, dict]:
    store = Store.open_readonly(path=str(path))
    try:
        summaries = {t: tuple(s)[2:] for t, s in store.summaries().items()}
        truth = {table_name(s, "1m"): tuple(store.count_table(s, "1m"))[2:] for s in SYMBOLS}
        return summaries, truth
    finally:
        store.close()


def test_an_old_file_is_summed_by_the_writer_and_kept_with_each_commit(workdir):
    path = make_config(workdir).database.path
    store = Store.open_writer(DatabaseConfig(path=path))
    for k, symbol in enumerate(SYMBOLS):
        with store.transaction():
            store.upsert(symbol, "1m", "rest", [candle(T0 + i * MIN) for i in range(0, 20_000 * (k + 1), 1 + k)])
            store.upsert(symbol, "1m", "ws", [candle(T0 + i * MIN) for i in range(100_000, 100_050)])
    store.close()
    conn = apsw.Connection(path)
    conn.execute("DROP TABLE meta_tables")  # as a writer before summaries left it
    conn.close()

    writer = WriterProcess(workdir)
    try:
        for n in range(20):  # REST copies of the ws rows, and new tails
            batch = [candle(T0 + (100_000 + 5 * n + i) * MIN) for i in range(5)] + [candle(T0 + (200_000 + n) * MIN)]
            writer.send(KlineBatch(SYMBOLS[n % 3], "1m", "rest", batch, task_id=f"t{n}"))
            writer.wait_committed(f"t{n}")
        wait_for(lambda: "event=summaries_done tables=3" in writer.stderr(None), 30, what="summaries_done")
        summaries, truth = summaries_and_truth(path)
        assert {t: summaries[t] for t in truth} == truth
        assert sum(rows for rows, *_ in truth.values()) > 35_000
        writer.send(KlineBatch("BTCUSDT", "1m", "ws", [candle(T0 + 300_000 * MIN)], task_id="late", live=True))
        writer.wait_committed("late")
        summaries, truth = summaries_and_truth(path)
        assert {t: summaries[t] for t in truth} == truth
        assert "summarize_failed" not in writer.stderr()
        assert writer.proc.poll() is None
    finally:
        writer.close()
