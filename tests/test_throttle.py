"""Throttle arithmetic with a fake clock, and one real-time lower bound."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from mailer.core.throttle import Throttle, TokenBucket, backoff_delay


def test_a_bucket_spaces_reservations_at_one_over_the_rate() -> None:
    bucket = TokenBucket(4.0)
    assert bucket.interval == 0.25
    assert bucket.reserve(10.0) == 10.0
    assert bucket.reserve(10.3) == 10.3  # later than the next free slot: no wait
    assert bucket.reserve(10.4) == pytest.approx(10.55)  # 0.25 after the previous slot


def test_reservations_made_at_the_same_instant_land_one_over_the_rate_apart() -> None:
    bucket = TokenBucket(8.0)
    slots = [bucket.reserve(100.0) for _ in range(9)]
    assert slots == pytest.approx([100.0 + n / 8 for n in range(9)])


def test_an_idle_bucket_does_not_save_up_a_burst() -> None:
    bucket = TokenBucket(4.0)
    bucket.reserve(0.0)
    assert [bucket.reserve(60.0) for _ in range(3)] == [60.0, 60.25, 60.5]


def test_a_rate_of_zero_means_no_limit() -> None:
    bucket = TokenBucket(0)
    assert bucket.interval == 0.0
    assert [bucket.reserve(1.0) for _ in range(3)] == [1.0, 1.0, 1.0]


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="a rate cannot be negative"):
        TokenBucket(-1)


def test_backoff_doubles_from_the_base() -> None:
    assert [backoff_delay(n, 30) for n in range(1, 6)] == [30, 60, 120, 240, 480]


def test_backoff_stops_at_the_cap() -> None:
    assert backoff_delay(7, 30, cap_seconds=1000) == 1000
    assert backoff_delay(200, 30) == 6 * 3600  # the default cap; no overflow for huge attempts


def test_backoff_stays_at_the_cap_for_any_number_of_attempts_with_a_float_base() -> None:
    # throttle.retry_base_seconds is a float in the settings and max_attempts has no upper
    # bound, so the run may ask for the delay of attempt 1100: that is the cap, not a crash.
    assert backoff_delay(1100, 30.0) == 6 * 3600


def test_backoff_counts_attempts_from_one() -> None:
    with pytest.raises(ValueError, match="attempts count from 1"):
        backoff_delay(0, 30)


class FakeTime:
    """A clock that only moves when the throttle sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def turns(throttle: Throttle, fake: FakeTime, domains: list[str]) -> list[tuple[str, float]]:
    """Take a turn for each domain in order; when each turn was granted (seconds from start)."""
    start = fake.now

    async def go() -> list[tuple[str, float]]:
        done = []
        for domain in domains:
            await throttle.wait_turn(domain)
            done.append((domain, round(fake.now - start, 9)))
        return done

    return asyncio.run(go())


@pytest.mark.parametrize("rate", [1, 7, 40])
def test_no_one_second_window_holds_more_than_the_rate_plus_one(rate: int) -> None:
    fake = FakeTime()
    throttle = Throttle(rate, 0, clock=fake.clock, sleep=fake.sleep)
    times = [t for _, t in turns(throttle, fake, ["a.nl"] * (3 * rate + 5))]
    for start in times:
        assert sum(1 for t in times if start <= t <= start + 1) <= rate + 1
    assert times[-1] == pytest.approx((len(times) - 1) / rate)


def test_an_unlimited_throttle_never_sleeps() -> None:
    fake = FakeTime()
    throttle = Throttle(0, 0, clock=fake.clock, sleep=fake.sleep)
    assert [t for _, t in turns(throttle, fake, ["a.nl", "a.nl", "b.nl"] * 10)] == [0.0] * 30
    assert fake.sleeps == []


def test_the_domain_rate_spaces_one_domain_without_holding_up_another() -> None:
    fake = FakeTime()
    throttle = Throttle(0, 60, clock=fake.clock, sleep=fake.sleep)  # one a second per domain
    done = turns(throttle, fake, ["gmail.com", "gmail.com", "ziggo.nl", "gmail.com", "kpn.nl"])
    assert done == [
        ("gmail.com", 0.0),
        ("gmail.com", 1.0),
        ("ziggo.nl", 1.0),  # not made to wait behind gmail.com
        ("gmail.com", 2.0),
        ("kpn.nl", 2.0),
    ]


def test_the_global_rate_still_applies_across_domains() -> None:
    fake = FakeTime()
    throttle = Throttle(2, 60, clock=fake.clock, sleep=fake.sleep)  # 0.5 s global, 1 s per domain
    done = turns(throttle, fake, ["a.nl", "b.nl", "c.nl", "a.nl"])
    assert done == [("a.nl", 0.0), ("b.nl", 0.5), ("c.nl", 1.0), ("a.nl", 1.5)]
    # A turn that is free right away does not sleep at all (not even sleep(0)).
    assert fake.sleeps == [0.5, 0.5, 0.5]


def test_a_throttle_refuses_a_negative_rate() -> None:
    for rates in ((-1, 60), (10, -1)):
        with pytest.raises(ValueError, match="a rate cannot be negative"):
            Throttle(*rates)


class VirtualTime:
    """A clock shared by concurrent tasks: once every task waits, time jumps to the next waker."""

    def __init__(self, start: float = 1000.0) -> None:
        self.start = self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    def run(self, coroutines: list[Coroutine[Any, Any, Any]]) -> list[Any]:
        async def drive() -> list[Any]:
            tasks = [asyncio.create_task(c) for c in coroutines]
            for _ in range(100_000):
                waiting = sum(not t.done() for t in tasks)
                if not waiting:
                    return [t.result() for t in tasks]
                if waiting == len(self._sleepers):  # every task is asleep: move time
                    wake, _, future = heapq.heappop(self._sleepers)
                    self.now = max(self.now, wake)
                    future.set_result(None)
                await asyncio.sleep(0)
            raise AssertionError("the tasks never finished")

        return asyncio.run(drive())


def test_concurrent_senders_sharing_one_throttle_keep_the_global_rate() -> None:
    fake = VirtualTime()
    throttle = Throttle(5, 0, clock=fake.clock, sleep=fake.sleep)

    async def sender(domains: list[str]) -> list[float]:
        granted = []
        for domain in domains:
            await throttle.wait_turn(domain)
            granted.append(fake.now - fake.start)
        return granted

    per_sender = fake.run([sender(["a.nl", "b.nl", "c.nl"] * 4) for _ in range(4)])
    times = sorted(t for granted in per_sender for t in granted)
    assert len(times) == 48
    for start in times:
        assert sum(1 for t in times if start <= t <= start + 1) <= 5 + 1
    assert times[-1] == pytest.approx((48 - 1) / 5)


def test_concurrent_turns_to_a_busy_domain_do_not_hold_up_another_domain() -> None:
    fake = VirtualTime()
    throttle = Throttle(2, 60, clock=fake.clock, sleep=fake.sleep)  # 0.5 s global, 1 s per domain

    async def turn(domain: str) -> tuple[str, float]:
        await throttle.wait_turn(domain)
        return domain, fake.now - fake.start

    done = fake.run([turn(d) for d in ["gmail.com", "gmail.com", "gmail.com", "ziggo.nl"]])
    assert done == [("gmail.com", 0.0), ("gmail.com", 1.0), ("gmail.com", 2.0), ("ziggo.nl", 0.5)]


def test_twenty_turns_at_forty_per_second_take_at_least_the_time_the_rate_implies() -> None:
    throttle = Throttle(40, 0)

    async def go() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(throttle.wait_turn("x.nl") for _ in range(20)))
        return loop.time() - start

    started = time.monotonic()
    assert asyncio.run(go()) >= (20 - 1) / 40 - 1e-3  # asyncio may wake a clock tick early
    assert time.monotonic() - started >= (20 - 1) / 40 - 1e-3
