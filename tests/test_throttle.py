"""Throttle arithmetic with a fake clock, and one real-time lower bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailer.throttle import Throttle, TokenBucket, backoff_delay


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
    assert [bucket.reserve(1.0) for _ in range(3)] == [1.0, 1.0, 1.0]


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="a rate cannot be negative"):
        TokenBucket(-1)


def test_backoff_doubles_from_the_base() -> None:
    assert [backoff_delay(n, 30) for n in range(1, 6)] == [30, 60, 120, 240, 480]


def test_backoff_stops_at_the_cap() -> None:
    assert backoff_delay(7, 30, cap_seconds=1000) == 1000
    assert backoff_delay(200, 30) == 6 * 3600  # the default cap; no overflow for huge attempts


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
