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
