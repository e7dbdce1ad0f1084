"""kl-actors: a multiprocess actor service keeping Binance USDT-M perpetual klines in SQLite."""

__version__ = "0.1.0"
