"""Exchange simulator of kl-actors: Binance USDT-M futures market data (REST + WebSocket) and the
public kline archive (data.binance.vision layout, on its own port).

An independent second implementation of the exchange's rules: imports only the stdlib,
aiohttp and msgspec, never the rest of `kl_actors`. Modules, by idea:
- `timeframes`  interval alignment (pure)
- `universe`    symbols and their exchangeInfo entries (pure)
- `market`      prices, candle values, which candles exist: the ground truth (pure)
- `pages`       fast JSON rendering of kline pages with a row cache (pure)
- `weights`     per-IP minute window, 429/418 bans (pure)
- `faults`      fault switches and their seeded dice (pure)
- `archive`     the public archive: which zips exist when, their bytes and CHECKSUMs, the
                bucket listing (S3 XML), archive fault rules (pure)
- `state`       one process's run-time state
- `rest`, `admin`, `ws`, `app`, `__main__`  the aiohttp server and its CLI
- `archive_server`  the archive host's aiohttp app and its on-disk cache of rendered zips
- `process`     `SimProcess`, the simulator as a managed subprocess
"""

from .market import Market

__all__ = ["Market"]
