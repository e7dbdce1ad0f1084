from kl_actors.core.restarts import RestartPolicy


def test_backoff_doubles_up_to_max():
    p = RestartPolicy(initial_s=0.1, max_s=0.5, max_restarts=10, window_s=60)
    delays = [p.record_exit(now=float(i), uptime_s=0.5) for i in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


def test_intensity_exceeded_within_window_only():
    p = RestartPolicy(initial_s=0.1, max_s=1, max_restarts=2, window_s=10)
    assert p.record_exit(0.0, 1) is not None
    assert p.record_exit(1.0, 1) is not None
    assert p.record_exit(2.0, 1) is None  # third within 10 s
    q = RestartPolicy(initial_s=0.1, max_s=1, max_restarts=2, window_s=10)
    assert q.record_exit(0.0, 1) is not None
    assert q.record_exit(5.0, 1) is not None
    assert q.record_exit(10.5, 1) is not None  # the first fell out of the window


def test_long_uptime_resets_backoff():
    p = RestartPolicy(initial_s=0.1, max_s=5, max_restarts=100, window_s=30)
    for i in range(4):
        p.record_exit(float(i), 1)
    assert p.record_exit(100.0, uptime_s=60) == 0.1
