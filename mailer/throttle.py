"""Rate limits: a global rate, a per-domain rate, and backoff arithmetic.

The arithmetic (`TokenBucket.reserve`, `backoff_delay`) is pure: it takes the time and returns
a time. `Throttle` applies it with an injected clock and sleep, so tests can drive it without
waiting. Concurrency is capped by the number of sending connections (`smtp.max_connections`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["Throttle", "TokenBucket", "backoff_delay"]


class TokenBucket:
    """A bucket of capacity one: events are spaced at least 1/rate seconds apart.

    Capacity one means no burst ever exceeds the rate: any window of one second holds at most
    rate + 1 events. A rate of 0 means no limit.
    """

    def __init__(self, rate_per_second: float) -> None:
        if rate_per_second < 0:
            raise ValueError("a rate cannot be negative")
        self.interval = 1.0 / rate_per_second if rate_per_second else 0.0
        self._next_free = float("-inf")

    def reserve(self, now: float) -> float:
        """Book the earliest slot at or after `now` and return its time."""
        if not self.interval:
            return now
        slot = max(now, self._next_free)
        self._next_free = slot + self.interval
        return slot


def backoff_delay(attempt: int, base_seconds: float, cap_seconds: float = 6 * 3600) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... for attempts 1, 2, 3, ..., capped."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    # Capping the exponent first: 2.0 ** 1100 would overflow a float before the cap applied.
    return float(min(base_seconds * 2 ** min(attempt - 1, 64), cap_seconds))


class Throttle:
    """Waits until a message to `domain` may go out under both the domain and the global rate."""

    def __init__(
        self,
        messages_per_second: float,
        per_domain_per_minute: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._global = TokenBucket(messages_per_second)
        self._per_domain_rate = per_domain_per_minute / 60.0
        self._domains: dict[str, TokenBucket] = {}
        self._clock = clock
        self._sleep = sleep

    @property
    def unlimited(self) -> bool:
        return not self._global.interval and not self._per_domain_rate

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def wait_turn(self, domain: str) -> None:
        if self.unlimited:
            return
        if self._per_domain_rate:
            bucket = self._domains.get(domain)
            if bucket is None:
                bucket = self._domains[domain] = TokenBucket(self._per_domain_rate)
            await self._until(bucket.reserve(self._now()))
        # The global slot is booked only once the domain allows the send, so a busy domain
        # does not hold up messages to other domains.
        await self._until(self._global.reserve(self._now()))

    async def _until(self, moment: float) -> None:
        delay = moment - self._now()
        if delay > 0:
            await self._sleep(delay)
