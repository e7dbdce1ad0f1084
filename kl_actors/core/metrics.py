"""Metrics: the catalog of families, an actor's own recorder, and the sum over every actor.

Each actor counts into a `Recorder` (`Actor.metrics`: `inc`, `set`, `observe`, `total`) and its
heartbeat carries the recorder's full totals (`Heartbeat.metrics`, a list of `MetricSample`), not
differences: a lost heartbeat loses nothing, the next one carries the same totals and more.
The supervisor feeds every accepted heartbeat to one `Aggregate`, which sums over actors and
keeps counters monotonic across restarts: when an actor's pid changes (or the supervisor sees it
exit) its last totals become a base that the new process's counts are added to; its gauges go
with it. Prometheus rate() then sees no reset.

Only families named in `FAMILIES` exist; a sample naming another family, with the wrong number
of labels, a negative count or the wrong number of buckets is refused (and counted), never
raised on: the heartbeat that carries it is still a heartbeat. Sizes are bounded: at most
`MAX_SERIES` series per actor (enforced again at decode, messages.Heartbeat) and label values
of at most `MAX_LABEL_CHARS`.

Pure: no sockets, files or clocks (a histogram is given its observed value; the serving module
and the supervisor do the I/O).
"""

from __future__ import annotations

from typing import NamedTuple

from ..messages import MAX_LABEL_CHARS, MAX_METRIC_SERIES, MetricSample

PREFIX = "klactors_"
MAX_SERIES = MAX_METRIC_SERIES

# Seconds: a boundary candle's REST copy usually lands a second or two after the close, a
# late one within the minute (live.boundary_deadline_s), a top-of-day backlog within minutes.
LAG_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0)
# Seconds: a writer transaction of a few rows takes ~1 ms, a full one (50,000 rows) ~0.3 s.
TXN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Family(NamedTuple):
    kind: str                        # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histograms: upper bounds; +Inf is implied


FAMILIES: dict[str, Family] = {
    "candles_written_total": Family(
        "counter", "Candles written to the database (rows inserted or replaced), by the writer",
        ("interval", "source")),
    "weight_used": Family("gauge", "Request weight spent in the current minute, per egress group", ("egress",)),
    "weight_limit": Family("gauge", "Request weight limit per minute, per egress group", ("egress",)),
    "requests_total": Family(
        "counter", "REST kline requests sent by the downloaders, by outcome "
                   "(ok, 429, 418, invalid, network, http_error, not_final)", ("outcome",)),
    "backfill_tasks_remaining": Family("gauge", "Backfill pages planned and not yet committed"),
    "boundary_lag_seconds": Family(
        "histogram", "From a candle's close to its final REST copy committed (boundary fetches)",
        ("interval",), LAG_BUCKETS),
    "websocket_connections": Family("gauge", "Open WebSocket connections to the exchange"),
    "websocket_events_total": Family("counter", "Kline events received over WebSocket (duplicates left out)"),
    "feed_messages_total": Family("counter", "Messages published on the consumer feed, by candle source",
                                  ("source",)),
    "feed_gaps_total": Family("counter", "Sequence numbers skipped on feed topics (events known lost)"),
    "writer_transaction_seconds": Family("histogram", "Duration of the writer's committed transactions",
                                         (), TXN_BUCKETS),
    "actor_restarts_total": Family("counter", "Restarts of each actor by the supervisor", ("actor",)),
    "database_bytes": Family("gauge", "Size of the database file and its WAL file"),
}

# A downloader's TaskResult.status -> the `outcome` label of requests_total.
REQUEST_OUTCOMES = {"ok": "ok", "rate_limited": "429", "banned": "418", "invalid": "invalid",
                    "network": "network", "http_error": "http_error", "not_final": "not_final"}

Key = tuple[str, tuple[str, ...]]


class Histogram:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum of observed values."""

    __slots__ = ("counts", "sum")

    def __init__(self, counts: list[int], total: float) -> None:
        self.counts = counts
        self.sum = total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: Histogram) -> Histogram:
        return Histogram([a + b for a, b in zip(self.counts, other.counts)], self.sum + other.sum)

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, observations at or below it), +Inf last."""
        out, running = [], 0
        for bound, n in zip((*(repr(float(b)) for b in bounds), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out


def _family(name: str, kind: str, labels: tuple[str, ...]) -> Family:
    """The family of a recorder call; a mistake here is in our code, so it raises."""
    family = FAMILIES.get(name)
    if family is None:
        raise ValueError(f"unknown metric family {name!r}")
    if family.kind != kind:
        raise ValueError(f"metric {name!r} is a {family.kind}, not a {kind}")
    if len(labels) != len(family.labels):
        raise ValueError(f"metric {name!r} takes labels {family.labels}, got {labels!r}")
    return family


class Recorder:
    """One process's metrics: totals since it started. `samples()` is what its heartbeat carries."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self.values: dict[Key, float] = {}
        self.histograms: dict[Key, Histogram] = {}
        self.dropped_series = 0  # new series refused because the recorder was full

    def _key(self, name: str, labels: tuple) -> Key | None:
        key = (name, tuple(str(v)[:MAX_LABEL_CHARS] for v in labels))
        if key in self.values or key in self.histograms:
            return key
        if len(self.values) + len(self.histograms) >= self.max_series:
            self.dropped_series += 1
            return None
        return key

    def inc(self, name: str, labels: tuple = (), n: float = 1.0) -> None:
        _family(name, "counter", labels)
        if n < 0:
            raise ValueError(f"counter {name!r} cannot go down (inc by {n})")
        key = self._key(name, labels)
        if key is not None:
            self.values[key] = self.values.get(key, 0.0) + n

    def total(self, name: str, labels: tuple = (), value: float = 0.0) -> None:
        """A counter whose total is kept elsewhere (the supervisor's restart counts); never lowered."""
        _family(name, "counter", labels)
        key = self._key(name, labels)
        if key is not None:
            self.values[key] = max(self.values.get(key, 0.0), float(value))

    def set(self, name: str, labels: tuple = (), value: float = 0.0) -> None:
        _family(name, "gauge", labels)
        key = self._key(name, labels)
        if key is not None:
            self.values[key] = float(value)

    def observe(self, name: str, labels: tuple = (), value: float = 0.0) -> None:
        family = _family(name, "histogram", labels)
        key = self._key(name, labels)
        if key is None:
            return
        h = self.histograms.get(key)
        if h is None:
            h = self.histograms[key] = Histogram([0] * (len(family.buckets) + 1), 0.0)
        index = next((i for i, bound in enumerate(family.buckets) if value <= bound), len(family.buckets))
        h.counts[index] += 1
        h.sum += value

    def samples(self) -> list[MetricSample]:
        out = [MetricSample(name, labels, value) for (name, labels), value in self.values.items()]
        out += [MetricSample(name, labels, h.sum, list(h.counts))
                for (name, labels), h in self.histograms.items()]
        return out


def check_sample(sample: MetricSample) -> str:
    """Why a sample from the wire cannot be used ('' if it can). Its value is finite already
    (messages.decode refuses NaN and infinities)."""
    family = FAMILIES.get(sample.family)
    if family is None:
        return f"unknown family {sample.family[:40]!r}"
    if len(sample.labels) != len(family.labels):
        return f"{sample.family}: {len(sample.labels)} labels, expected {len(family.labels)}"
    if family.kind == "histogram":
        if len(sample.buckets) != len(family.buckets) + 1:
            return f"{sample.family}: {len(sample.buckets)} buckets, expected {len(family.buckets) + 1}"
        if sample.value < 0:
            return f"{sample.family}: negative sum {sample.value}"
    elif sample.buckets:
        return f"{sample.family}: a {family.kind} has no buckets"
    elif family.kind == "counter" and sample.value < 0:
        return f"{sample.family}: negative count {sample.value}"
    return ""


class _Actor:
    """One actor name's series: its current process's totals, and what earlier processes counted."""

    __slots__ = ("pid", "current", "base")

    def __init__(self) -> None:
        self.pid = 0
        self.current: dict[Key, float | Histogram] = {}
        self.base: dict[Key, float | Histogram] = {}

    def retire(self) -> None:
        """The process is gone: its counters and histograms join the base, its gauges vanish."""
        for key, value in self.current.items():
            if FAMILIES[key[0]].kind == "gauge":
                continue
            before = self.base.get(key)
            self.base[key] = value if before is None else (
                before.add(value) if isinstance(value, Histogram) else before + value)
        self.current = {}
        self.pid = 0


class Series(NamedTuple):
    """One family's aggregated series, for the exposition: labels -> value or Histogram."""

    name: str      # with PREFIX
    family: Family
    values: dict[tuple[str, ...], float | Histogram]


class Aggregate:
    """The supervisor's sum over every actor (and every earlier process of each actor)."""

    def __init__(self, max_actors: int = 1024) -> None:
        self.actors: dict[str, _Actor] = {}
        self.max_actors = max_actors
        self.refused = 0       # samples refused, all time
        self.last_refusal = ""

    def take(self, actor: str, pid: int, samples: list[MetricSample]) -> int:
        """The totals of `actor`'s process `pid`, from one heartbeat; returns how many of its
        samples were refused."""
        entry = self.actors.get(actor)
        if entry is None:
            if len(self.actors) >= self.max_actors:
                self.refused += len(samples)
                self.last_refusal = f"more than {self.max_actors} actors"
                return len(samples)
            entry = self.actors[actor] = _Actor()
        if entry.pid != pid:
            entry.retire()  # a new process: what the old one counted stays
            entry.pid = pid
        refused = 0
        for sample in samples:
            why = check_sample(sample)
            if why:
                refused += 1
                self.last_refusal = why
                continue
            key = (sample.family, tuple(sample.labels))
            kind = FAMILIES[sample.family].kind
            before = entry.current.get(key)
            if kind == "gauge":
                entry.current[key] = sample.value
            elif kind == "counter":
                # One process's totals never go down; a lower one is out of order or wrong.
                entry.current[key] = sample.value if before is None else max(before, sample.value)
            else:
                h = Histogram(list(sample.buckets), sample.value)
                if before is None or h.count >= before.count:
                    entry.current[key] = h
        self.refused += refused
        return refused

    def exited(self, actor: str) -> None:
        """The supervisor saw `actor`'s process end: keep its counts, drop its gauges now."""
        entry = self.actors.get(actor)
        if entry is not None:
            entry.retire()

    def series(self) -> list[Series]:
        """Every family in catalog order, each summed over actors (a family nobody reported yet
        is listed without series, so a scrape always names every family)."""
        sums: dict[str, dict[tuple[str, ...], float | Histogram]] = {name: {} for name in FAMILIES}
        for entry in self.actors.values():
            for part in (entry.base, entry.current):
                for (name, labels), value in part.items():
                    into = sums[name]
                    before = into.get(labels)
                    if before is None:
                        into[labels] = value
                    elif isinstance(value, Histogram):
                        into[labels] = before.add(value)
                    else:
                        into[labels] = before + value
        for name, family in FAMILIES.items():
            if family.kind == "counter" and not family.labels and not sums[name]:
                sums[name][()] = 0.0  # nothing counted yet is a count: 0 (a gauge stays unknown)
        return [Series(PREFIX + name, FAMILIES[name], sums[name]) for name in FAMILIES]
