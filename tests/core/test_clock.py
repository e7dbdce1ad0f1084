"""clock.best_sample and ServerClock (pure)."""

import pytest

from kl_actors.core.clock import ServerClock, best_sample
from kl_actors.messages import ClockSync


def test_best_sample_takes_the_fastest_round_trip_and_its_midpoint():
    samples = [(1000, 5200, 1400), (2000, 6030, 2040), (3000, 7100, 3300)]
    sync = best_sample(samples)
    assert sync.rtt_ms == 40
    assert sync.offset_ms == 6030 - 2020
    assert sync.measured_at_ms == 2040


def test_best_sample_negative_offset_and_zero_rtt():
    sync = best_sample([(10_000, 7_000, 10_000)])
    assert sync.offset_ms == -3000 and sync.rtt_ms == 0


def test_best_sample_needs_samples():
    with pytest.raises(ValueError):
        best_sample([])


def test_server_clock_before_and_after_sync():
    clock = ServerClock()
    assert not clock.synced and clock.now_ms(1000) == 1000
    clock.update(ClockSync(offset_ms=4000.0, rtt_ms=3.0, measured_at_ms=50))
    assert clock.synced
    assert clock.now_ms(1000) == 5000
    assert clock.to_local_ms(5000) == 1000


def test_server_clock_ignores_an_older_measurement():
    clock = ServerClock()
    clock.update(ClockSync(offset_ms=10.0, rtt_ms=1.0, measured_at_ms=200))
    clock.update(ClockSync(offset_ms=99.0, rtt_ms=1.0, measured_at_ms=100))
    assert clock.offset_ms == 10.0
    clock.update(ClockSync(offset_ms=20.0, rtt_ms=1.0, measured_at_ms=300))
    assert clock.offset_ms == 20.0
