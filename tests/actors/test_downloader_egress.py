"""A downloader of one egress group: its group's tasks socket, its group's source address, results
tagged with the group (a real downloader process against the simulator)."""

from __future__ import annotations

import time

from harness import DownloaderProcess

MIN = 60_000
HISTORY = (time.time_ns() // 1_000_000) // MIN * MIN - 6 * 3_600_000

GROUPS = [{"name": "lo2", "source_address": "127.0.0.2", "downloaders": 2},
          {"name": "lo3", "source_address": "127.0.0.3", "downloaders": 2}]


def test_downloader_of_the_second_group_goes_out_from_its_address_and_tags_results(sim_factory, workdir):
    sim = sim_factory(symbols=2)
    # downloader-3: the first of the second group (numbered across groups in order).
    d = DownloaderProcess(workdir, sim.rest_url, egress=GROUPS, name="downloader-3")
    try:
        result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
        assert result.status == "ok" and result.candles == 10 and batch is not None
        assert result.egress == "lo3"
        # The simulator saw the request from 127.0.0.3 and from nowhere else; its header counts
        # only that IP's weight.
        by_ip = sim.stats()["by_ip"]
        assert set(by_ip) == {"127.0.0.3"} and by_ip["127.0.0.3"]["requests"] == 1, by_ip
        assert result.weight_used_1m == by_ip["127.0.0.3"]["weight"]
        # A refused answer is tagged too, so the scheduler pauses the right group.
        sim.set_faults(throttle_klines=1)
        result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
        assert result.status == "rate_limited" and result.egress == "lo3" and batch is None
        assert "actor=downloader-3@lo3 " in d.stderr(None)
    finally:
        d.close()


class _ForwardProxy:
    """A plain HTTP forward proxy on loopback whose own connections leave from `exit_ip`: the
    exchange (the simulator) sees the proxy's exit address, not the downloader's."""

    def __init__(self, exit_ip: str) -> None:
        import http.client
        import http.server
        import threading
        import urllib.parse

        seen = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                url = urllib.parse.urlsplit(self.path)  # a proxy is asked with the absolute URL
                seen.append(self.path)
                upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=10,
                                                      source_address=(exit_ip, 0))
                upstream.request("GET", url.path + ("?" + url.query if url.query else ""))
                answer = upstream.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_downloader_of_a_proxy_group_goes_out_through_the_proxy(sim_factory, workdir):
    sim = sim_factory(symbols=2)
    proxy = _ForwardProxy("127.0.0.4")
    groups = [{"name": "lo2", "source_address": "127.0.0.2", "downloaders": 1},
              {"name": "px", "proxy": proxy.url, "downloaders": 1}]
    d = DownloaderProcess(workdir, sim.rest_url, egress=groups, name="downloader-2")
    try:
        result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
        assert result.status == "ok" and result.candles == 10 and result.egress == "px"
        assert len(proxy.requests) == 1 and "/fapi/v1/klines?" in proxy.requests[0]
        by_ip = sim.stats()["by_ip"]
        assert set(by_ip) == {"127.0.0.4"}, by_ip  # the proxy's exit, never the downloader's own
    finally:
        d.close()
        proxy.close()
