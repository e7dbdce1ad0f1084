"""kl-actors: a multiprocess actor service keeping Binance USDT-M perpetual klines in SQLite.

The tree, by kind (docs/ARCHITECTURE.md has the whole map):
- `core/`      the pure core: no sockets, files or clocks (`now` is passed in), unit-tested:
               `intervals`, `symbols` (table names), `klines` (page and event checks), `batches`
               (what the writer lets in), `answers` (what an HTTP answer means), `planner` +
               `backlog` (what to fetch), `boundaries` (live-edge order), `budget` (request
               weight), `tasks` (queue, leases), `restarts`, `clock`, `discovery` (exchangeInfo),
               `streams` (WebSocket stream names), `slots` (WebSocket connections' state machine),
               `archive` + `archive_queue` (bulk-archive files), `export_plan` (Parquet export rules)
- `actors/`    one module per actor (`broker`, `writer`, `scheduler`, `downloader`, `websocket`,
               `timesync`), split by idea into `<actor>_*.py` parts where it grew (`scheduler_*`,
               `writer_*`, `websocket_link`), the shell they share (`base`) and the registry of
               kinds (`registry`)
- `messages`   every message on the wire; `config` the config tree and its checks; `store` the
               SQL; `log` the log line format; `locks` the start-up locks
- `commands`, `supervisor`, `run`, `cli`  the entry point (start checks, `--sim`, the other
               commands), the process that starts and watches the actors, the launcher of one
               actor, the command line's options; `status` (+ `status_render`) the operator's view,
               `export` the Parquet export, `display` the terminal progress, `metrics_http` /metrics
- `sim/`       the exchange simulator: a second, independent implementation of the exchange
"""

__version__ = "0.1.0"
