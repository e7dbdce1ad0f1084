"""Serving the aggregated metrics over HTTP, in the supervisor process (`[metrics] listen`).

The official `prometheus_client` serves `/metrics` from its own thread with a registry of our
own (never the library's global one, so no process or platform collectors of the library slip
in), holding one custom collector that turns `core.metrics.Aggregate` into Counter, Gauge and
Histogram families at scrape time. The supervisor's loop feeds heartbeats in; a lock keeps the
scrape thread from reading a half-applied heartbeat. Everything else (what a family is, how
restarts are summed, what is refused) is core/metrics.py.

It never binds an address the config did not allow (config.py: loopback unless
`allow_public_metrics`), and never serves anything but the exposition.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .config import metrics_address
from .core.metrics import Aggregate, Histogram, Recorder
from .messages import MetricSample


class MetricsServer:
    """The aggregate of every actor's heartbeats, and the HTTP endpoint that shows it."""

    def __init__(self, listen: str) -> None:
        self.host, self.port = metrics_address(listen)
        self.aggregate = Aggregate()
        self.own = Recorder()  # the supervisor's own figures (restarts, database size)
        self.lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._server = None
        self._thread = None

    def start(self) -> tuple[str, int]:
        """Bind and serve; the bound (host, port). Raises OSError if the address cannot be bound."""
        self._server, self._thread = start_http_server(self.port, self.host, registry=self.registry)
        host, port = self._server.server_address[:2]
        return host, port

    def take(self, actor: str, pid: int, samples: list[MetricSample]) -> int:
        """One heartbeat's metrics; how many of its samples were refused."""
        with self.lock:
            return self.aggregate.take(actor, pid, samples)

    def exited(self, actor: str) -> None:
        with self.lock:
            self.aggregate.exited(actor)

    def own_figures(self, pid: int) -> None:
        """The supervisor's own recorder joins the aggregate as one more actor."""
        with self.lock:
            self.aggregate.take("supervisor", pid, self.own.samples())

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None


class _Collector:
    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self):
        with self.server.lock:
            families = self.server.aggregate.series()
        for series in families:
            family = series.family
            labels = list(family.labels)
            if family.kind == "counter":
                out = CounterMetricFamily(series.name, family.help, labels=labels)
            elif family.kind == "gauge":
                out = GaugeMetricFamily(series.name, family.help, labels=labels)
            else:
                out = HistogramMetricFamily(series.name, family.help, labels=labels)
            for values, value in sorted(series.values.items()):
                if isinstance(value, Histogram):
                    out.add_metric(list(values), value.cumulative(family.buckets), value.sum)
                else:
                    out.add_metric(list(values), value)
            yield out
