"""Throttle arithmetic with a fake clock, and one real-time lower bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailer.throttle import Throttle, TokenBucket, backoff_delay


def test_a_bucket_spaces_reservations_at_one_over_the_rate() -> None:
    bucket = TokenBucket(4.0)
    assert [bucket.reserve(10.0) for _ in range(5)] == [10.0, 10.25, 10.5, 10.75, 11.0]
    assert bucket.reserve(20.0) == 20.0  # an idle bucket does not save up a burst


def test_a_rate_of_zero_means_no_limit() -> None:
    bucket = TokenBucket(0)
    assert [bucket.reserve(1.0) for _ in range(3)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="cannot be negative"):
        TokenBucket(-1)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff_delay(n, 30) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert backoff_delay(20, 30, cap_seconds=3600) == 3600
    with pytest.raises(ValueError):
        backoff_delay(0, 30)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def turns(throttle: Throttle, fake: FakeTime, domains: list[str]) -> list[tuple[str, float]]:
    async def go() -> list[tuple[str, float]]:
        done = []
        for domain in domains:
            await throttle.wait_turn(domain)
            done.append((domain, fake.now))
        return done

    return asyncio.run(go())


def test_no_one_second_window_holds_more_than_the_rate_plus_one() -> None:
    fake = FakeTime()
    throttle = Throttle(7, 0, clock=fake.clock, sleep=fake.sleep)
    times = [t for _, t in turns(throttle, fake, ["a.nl"] * 50)]
    for start in times:
        assert sum(1 for t in times if start <= t < start + 1) <= 7 + 1
    assert times[-1] >= 49 / 7 - 1e-9


def test_the_domain_rate_spaces_one_domain_without_holding_up_another() -> None:
    fake = FakeTime()
    throttle = Throttle(0, 60, clock=fake.clock, sleep=fake.sleep)  # one a second per domain
    done = turns(throttle, fake, ["gmail.com", "gmail.com", "ziggo.nl", "gmail.com"])
    assert done == [("gmail.com", 0.0), ("gmail.com", 1.0), ("ziggo.nl", 1.0), ("gmail.com", 2.0)]


def test_twenty_turns_at_forty_per_second_take_at_least_the_time_the_rate_implies() -> None:
    throttle = Throttle(40, 0)

    async def go() -> float:
        start = time.monotonic()
        await asyncio.gather(*(throttle.wait_turn("x.nl") for _ in range(20)))
        return time.monotonic() - start

    assert asyncio.run(go()) >= 19 / 40 - 0.01
