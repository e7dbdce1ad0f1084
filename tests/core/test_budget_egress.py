"""One weight budget per egress group, and two groups found sharing one IP (pure)."""

from kl_actors.core.egress import SHARED_MIN_WEIGHT, EgressBudgets

MIN = 60_000
T = 1_780_000_020_000 - 1_780_000_020_000 % MIN + 10_000  # 10 s into a minute


def test_each_group_spends_its_own_budget_and_a_429_holds_only_its_group():
    b = EgressBudgets(["a", "b"], 100, usable_fraction=1.0, reserved_per_minute=10)
    # The first group keeps the reserve for time-sync and exchangeInfo (they go out through it).
    assert b.available("a", T) == 90 and b.available("b", T) == 100
    assert sum(2 for i in range(100) if b.try_spend("a", 2, T, f"a{i}")) == 90
    assert b.available("a", T) == 0 and b.available("b", T) == 100
    assert b.left_in_minute(T) == 100 and b.spent == 90 and b.limit == 200
    # An answer settles in its own group's budget, and its header corrects only that budget.
    assert b.settle("a0", T, T + 1) == "a"
    assert b.settle("nope", T, T + 1) is None
    assert b.try_spend("b", 5, T, "b0")
    b.observe("b", 40, T, T + 2, own_weight=5)
    assert b.available("b", T + 3) == 60 and b.available("a", T + 3) == 0
    until = b.block("b", 120.0, T + 3)  # a 418's ban: longer than the minute
    assert until == T + 3 + 120_000
    assert b.available("b", T + 4) == 0
    assert b.available("a", T + MIN) > 0  # the next minute: group a goes on while b waits
    assert b.available("b", T + MIN) == 0
    assert b.available("b", until) > 0
    assert not b.held_everywhere(T + 4)  # a's way is open: b's refused tasks can go there
    b.block("a", 10.0, T + 4)
    assert b.held_everywhere(T + 5) and not b.held_everywhere(T + 4 + 10_000)


def _answer(b, group, n, weight, header_of, t):
    """`n` answered requests of `weight` from `group`; the header each shows is `header_of(i)`."""
    for i in range(n):
        task = f"{group}-{t}-{i}"
        assert b.try_spend(group, weight, t, task)
        b.settle(task, t, t + 1)
        shared = b.observe(group, header_of(i), t, t + 1, own_weight=weight)
        if shared:
            return shared
    return None


def test_groups_on_two_ips_stay_apart():
    b = EgressBudgets(["a", "b", "c"], 2400, 0.95)
    # Each header counts only its own group's requests (a neighbour program adds a little on a).
    assert _answer(b, "a", 100, 2, lambda i: 2 * (i + 1) + 30, T) is None
    assert _answer(b, "b", 100, 2, lambda i: 2 * (i + 1), T) is None
    assert len(b.distinct()) == 3


def test_two_groups_whose_headers_climb_together_become_one_budget():
    b = EgressBudgets(["a", "b", "c"], 2400, 0.95)
    assert b.try_spend("c", 2, T, "c-out")  # in flight on c when the merge happens
    # a and b interleave on one IP: each header is the sum of both groups' requests so far.
    found = None
    total = 0
    for i in range(60):
        for group in ("b", "c"):
            total += 2
            task = f"{group}{i}"
            assert b.try_spend(group, 2, T, task)
            b.settle(task, T, T + 1)
            found = found or b.observe(group, total, T, T + 1, own_weight=2)
    assert found is not None
    keep, gone, evidence = found
    assert (keep, gone) == ("b", "c")  # the earlier group's budget is kept
    assert evidence["own_a"] >= SHARED_MIN_WEIGHT and evidence["own_b"] >= SHARED_MIN_WEIGHT
    assert evidence["header_a"] >= evidence["own_a"] + evidence["own_b"] // 2
    assert b.owner == {"a": "a", "b": "b", "c": "b"}
    assert [n for n, _ in b.distinct()] == ["a", "b"]
    # From now on c spends b's budget: what one spends, the other cannot.
    left = b.available("b", T + 2)
    assert b.available("c", T + 2) == left
    assert b.try_spend("c", left, T + 2, "c-last")
    assert b.available("b", T + 2) == 0 and b.available("a", T + 2) > 0
    # A task sent to c before the merge still settles (its in-flight entry moved with it).
    assert b.settle("c-out", T, T + 3) == "c"
    assert "c-out" not in b.budget("b").in_flight
    # A 429 on either holds both; the merge is never undone.
    b.block("c", 5.0, T + 4)
    assert b.available("b", T + 5) == 0 and b.available("a", T + 5) > 0
    assert _answer(b, "a", 10, 2, lambda i: 2 * (i + 1), T + MIN) is None
    assert b.owner["c"] == "b"


def test_little_traffic_is_no_evidence():
    b = EgressBudgets(["a", "b"], 2400, 0.95)
    total = 0
    for i in range(10):  # 20 weight each: below SHARED_MIN_WEIGHT
        for group in ("a", "b"):
            total += 2
            assert b.try_spend(group, 2, T, f"{group}{i}")
            assert b.observe(group, total, T, T + 1, own_weight=2) is None
    assert len(b.distinct()) == 2


def test_refused_requests_add_no_own_weight_so_a_throttled_group_is_not_taken_for_shared():
    b = EgressBudgets(["a", "b"], 2400, 0.95)
    assert _answer(b, "a", 60, 2, lambda i: 2 * (i + 1), T) is None
    # b's IP is full of someone else's use: its 429 answers show a high header but weigh nothing.
    for i in range(60):
        assert b.observe("b", 2400, T, T + 1, own_weight=0) is None
    assert len(b.distinct()) == 2


def test_a_task_goes_to_the_ready_group_with_most_room_and_the_reserve_is_kept_once():
    b = EgressBudgets(["a", "b"], 100, usable_fraction=1.0)
    assert b.try_spend("a", 30, T)
    assert b.pick(["a", "b"], 2, 0, T) == "b"  # b has 100, a 70
    assert b.pick(["a"], 2, 0, T) == "a"  # only a's downloaders are free
    assert b.pick([], 2, 0, T) is None
    # Older work leaves this minute's boundary reserve (here 120) free: a's 70 and 50 of b's.
    assert b.pick(["a", "b"], 2, 120, T) == "b"
    assert b.pick(["a"], 2, 120, T) is None
    assert b.pick(["b"], 50, 120, T) == "b" and b.pick(["b"], 51, 120, T) is None
    # A boundary fetch (no reserve) goes wherever there is room; a group held by a 429 has none.
    b.block("b", 30.0, T)
    assert b.pick(["a", "b"], 1, 0, T) == "a"
    assert b.try_spend("a", 70, T)
    assert b.pick(["a", "b"], 1, 0, T) is None
