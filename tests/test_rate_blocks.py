"""The rate in blocks: workers book a quarter second of slots at a time, not one per message,
and the slots of all of them together still keep the rate (no second above rate * 1.1 + 1).
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import Engine

from mailer.core.throttle import BlockSlots, Throttle
from mailer.store.sharedrate import SharedRate
from tests.test_throttle import VirtualTime


class SharedBook:
    """The arithmetic of the `send_rate` upsert, in memory: one book for every worker."""

    def __init__(self, time: VirtualTime) -> None:
        self.time = time
        self.next_free: dict[str, float] = {}
        self.reservations: Counter[str] = Counter()

    def reserve(self, key: str, interval: float, count: int) -> float:
        self.reservations[key] += 1
        now = self.time.clock()
        slot = max(now, self.next_free.get(key, now))
        self.next_free[key] = slot + count * interval
        return slot - now


def _busiest_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


@pytest.mark.parametrize(("rate", "per_domain_per_minute"), [(20, 0), (50, 0), (40, 600)])
def test_three_workers_taking_slots_in_blocks_keep_the_global_and_the_domain_rate(
    rate: int, per_domain_per_minute: int
) -> None:
    fake = VirtualTime()
    book = SharedBook(fake)
    workers = [
        Throttle(rate, per_domain_per_minute, sleep=fake.sleep,
                 slots=BlockSlots(book.reserve, fake.clock))
        for _ in range(3)
    ]  # fmt: skip
    domains = ["a.nl", "b.nl", "c.nl", "d.nl"]
    sent: list[tuple[str, float]] = []

    async def connection(throttle: Throttle, count: int) -> None:
        for n in range(count):
            domain = domains[n % len(domains)]
            await throttle.wait_turn(domain)
            sent.append((domain, fake.now - fake.start))

    total = 3 * 3 * 30
    fake.run([connection(w, 30) for w in workers for _ in range(3)])
    times = sorted(t for _, t in sent)
    assert len(times) == total
    assert _busiest_second(times) <= rate * 1.1 + 1
    assert times[-1] >= (total - 1) / rate - 0.25 * 3  # at most a block of each worker unused
    if per_domain_per_minute:
        for domain in domains:
            mine = sorted(t for d, t in sent if d == domain)
            assert _busiest_second(mine) <= per_domain_per_minute / 60 * 1.1 + 1
    # Statements per block, not per message (a block is 5 to 12 slots here).
    assert book.reservations["*"] <= total / 4


def test_a_slot_that_went_by_unused_is_dropped_not_sent_late() -> None:
    fake = VirtualTime()
    book = SharedBook(fake)
    slots = BlockSlots(book.reserve, fake.clock)
    assert slots.delay("*", 0.05) == 0.0  # books 0.25 s: five slots, 50 ms apart
    fake.now += 0.205  # four slots went by; the fifth (0.20) is 5 ms late: still usable
    assert slots.delay("*", 0.05) == pytest.approx(-0.005)
    fake.now += 1.0  # the rest of the block is long gone: a new block, from now
    assert slots.delay("*", 0.05) == 0.0
    assert book.reservations["*"] == 2


def test_blocks_booked_in_the_database_never_overlap_across_workers(engine: Engine) -> None:
    now = [1000.0]
    rates = [SharedRate(engine, clock=lambda: now[0]) for _ in range(2)]
    try:
        first = rates[0].reserve("*", 0.1, 5)  # 1000.0 .. 1000.5
        second = rates[1].reserve("*", 0.1, 5)  # right after: 1000.5 .. 1001.0
        now[0] = 1000.2
        third = rates[0].reserve("*", 0.1, 1)
    finally:
        for rate in rates:
            rate.close()
    assert (first, second, third) == pytest.approx((0.0, 0.5, 0.8))
