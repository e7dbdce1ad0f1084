"""One weight budget per egress group, and the test that two groups share one IP (pure: `now` in).

The exchange counts weight per IP, so each way out (`[[egress]]` group: an extra local address, a
proxy, or the default route) gets its own `WeightBudget`, fed only by the weight header of that
group's answers; a 429/418 blocks only that group's budget. The first group's budget also keeps
the reserve for time-sync and exchangeInfo, which go out through it.

Two groups configured as different ways out may still reach the exchange from one IP (two proxies
with one exit, a source address NATed to the main one). Then each group's header counts the other
group's requests too: in one minute both headers climb past what the group itself spent, by about
what the other spent. `SharedIpTest` looks for exactly that; from then on the two groups use one
budget (`merge`), so they never spend the same IP's minute twice. It never decides where a task
goes (the scheduler does) and never forgets a merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .budget import GUARD_MS, MINUTE_MS, WeightBudget

# Weight each of two groups must have had answered in one minute before their headers are compared:
# below it a few requests in flight or a neighbour's program on one IP would decide.
SHARED_MIN_WEIGHT = 50
# Share of the other group's own weight that must show in a group's header, both ways.
SHARED_FRACTION = 0.5
WINDOWS_KEPT = 3


@dataclass
class SharedIpTest:
    """Per group and minute: the weight of its own answered requests and the highest header."""

    own: dict[tuple[str, int], int] = field(default_factory=dict)
    seen: dict[tuple[str, int], int] = field(default_factory=dict)

    def answer(self, group: str, weight: int, used_1m: int, requested_at_ms: int) -> None:
        window = requested_at_ms - requested_at_ms % MINUTE_MS
        key = (group, window)
        self.own[key] = self.own.get(key, 0) + weight
        self.seen[key] = max(self.seen.get(key, 0), used_1m)
        old = window - WINDOWS_KEPT * MINUTE_MS
        if len(self.own) > 64:
            self.own = {k: v for k, v in self.own.items() if k[1] > old}
            self.seen = {k: v for k, v in self.seen.items() if k[1] > old}

    def evidence(self, a: str, b: str, window: int) -> dict[str, int] | None:
        """The figures that show `a` and `b` on one IP in `window`, or None."""
        own_a, own_b = self.own.get((a, window), 0), self.own.get((b, window), 0)
        seen_a, seen_b = self.seen.get((a, window), 0), self.seen.get((b, window), 0)
        if min(own_a, own_b) < SHARED_MIN_WEIGHT:
            return None
        if seen_a >= own_a + SHARED_FRACTION * own_b and seen_b >= own_b + SHARED_FRACTION * own_a:
            return {"own_a": own_a, "own_b": own_b, "header_a": seen_a, "header_b": seen_b}
        return None


class EgressBudgets:
    """The scheduler's budgets, by group name (in configured order). A group's budget is its own
    until it is found sharing an IP with an earlier group; then both use the earlier one's."""

    def __init__(self, names: list[str], limit_per_minute: int, usable_fraction: float,
                 reserved_per_minute: int = 0, guard_ms: int = GUARD_MS) -> None:
        self.names = list(names)
        self.budgets = {n: WeightBudget(limit_per_minute, usable_fraction, guard_ms,
                                        reserved_per_minute if i == 0 else 0)
                        for i, n in enumerate(self.names)}
        self.owner = {n: n for n in self.names}  # group -> the group whose budget it spends
        self.sent: dict[str, tuple[str, int]] = {}  # task id -> (group, weight)
        self.shared = SharedIpTest()

    @property
    def first(self) -> str:
        return self.names[0]

    def budget(self, group: str) -> WeightBudget:
        return self.budgets[self.owner[group]]

    def distinct(self) -> list[tuple[str, WeightBudget]]:
        """(owner group, budget) of every budget still in use, in configured order."""
        return [(n, self.budgets[n]) for n in self.names if self.owner[n] == n]

    def set_limit(self, limit_per_minute: int, usable_fraction: float) -> None:
        for budget in self.budgets.values():
            budget.set_limit(limit_per_minute, usable_fraction)

    @property
    def limit(self) -> int:
        return sum(b.limit for _, b in self.distinct())

    @property
    def spent(self) -> int:
        return sum(b.spent for _, b in self.distinct())

    def available(self, group: str, now_ms: int) -> int:
        return self.budget(group).available(now_ms)

    def pick(self, ready: list[str], weight: int, reserve: int, now_ms: int) -> str | None:
        """The group, among `ready` (a downloader free to take a task), to send a task of `weight`
        to: the one with the most room after `reserve` (weight this minute's own boundary fetches
        need, kept from older work), or None when none has room. The reserve is kept in the
        budgets in group order, the first group's first, so it is counted once whatever the
        number of groups, and a boundary fetch goes to whichever group has room."""
        room_after: dict[str, int] = {}
        for owner, budget in self.distinct():
            room = budget.available(now_ms)
            held = min(room, reserve)
            reserve -= held
            room_after[owner] = room - held
        best, best_room = None, weight - 1
        for group in ready:
            room = room_after[self.owner[group]]
            if room > best_room:
                best, best_room = group, room
        return best

    def shift(self, delta_ms: int, now_ms: int) -> None:
        """The server clock was corrected by `delta_ms`: see `WeightBudget.shift`."""
        for _, budget in self.distinct():
            budget.shift(delta_ms, now_ms)

    def left_in_minute(self, now_ms: int) -> int:
        return sum(b.left_in_minute(now_ms) for _, b in self.distinct())

    def try_spend(self, group: str, weight: int, now_ms: int, task_id: str = "") -> bool:
        if not self.budget(group).try_spend(weight, now_ms, task_id):
            return False
        if task_id:
            self.sent[task_id] = (group, weight)
        return True

    def settle(self, task_id: str, requested_at_ms: int, now_ms: int) -> str | None:
        """A released task is over; returns the group it went to (None: not ours)."""
        entry = self.sent.pop(task_id, None)
        if entry is None:
            return None
        self.budget(entry[0]).settle(task_id, requested_at_ms, now_ms)
        return entry[0]

    def weight_of(self, task_id: str) -> int:
        entry = self.sent.get(task_id)
        return entry[1] if entry else 0

    def observe(self, group: str, used_1m: int, requested_at_ms: int, now_ms: int,
                own_weight: int = 0) -> tuple[str, str, dict[str, int]] | None:
        """`group`'s answer said its IP used `used_1m` in the minute of `requested_at_ms`; the
        request itself weighed `own_weight` (0: it was refused, or was not ours to count).
        Returns (kept group, merged group, evidence) when this answer shows two budgets are one IP:
        they are merged before returning."""
        self.budget(group).observe(used_1m, requested_at_ms, now_ms)
        self.shared.answer(group, own_weight, used_1m, requested_at_ms)
        window = requested_at_ms - requested_at_ms % MINUTE_MS
        mine = self.owner[group]
        for other in self.names:
            if other == group or self.owner[other] == mine:
                continue
            evidence = self.shared.evidence(group, other, window)
            if evidence is not None:
                keep, gone = sorted((mine, self.owner[other]), key=self.names.index)
                self.merge(keep, gone, now_ms)
                return keep, gone, evidence
        return None

    def merge(self, keep: str, gone: str, now_ms: int) -> None:
        """From now on every group that spent `gone`'s budget spends `keep`'s. The current minute
        counts both budgets' spending (their headers each showed the shared total, so this
        overestimates for at most a minute: safe)."""
        a, b = self.budgets[keep], self.budgets[gone]
        a.left_in_minute(now_ms)
        b.left_in_minute(now_ms)  # both rolled to the same minute
        a.in_flight.update(b.in_flight)
        a.released += b.released  # order does not matter: it is filtered and summed
        a.spent = min(a.usable, a.spent + b.spent)
        a.prev_spent += b.prev_spent
        a.blocked_until_ms = max(a.blocked_until_ms, b.blocked_until_ms)
        for group, owner in self.owner.items():
            if owner == gone:
                self.owner[group] = keep
        del self.budgets[gone]

    def held_everywhere(self, now_ms: int) -> bool:
        """Every budget waits out a 429/418: a throttled task has nowhere else to go."""
        return all(now_ms < b.blocked_until_ms for _, b in self.distinct())

    def block(self, group: str, retry_after_s: float, now_ms: int) -> int:
        """A 429/418 on `group`'s IP: only its budget (and any merged with it) stops."""
        return self.budget(group).block(retry_after_s, now_ms)
