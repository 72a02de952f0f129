"""Rate limits: a global rate, a per-domain rate, and backoff arithmetic.

The arithmetic (`TokenBucket.reserve`, `backoff_delay`) is pure: it takes the time and returns
a time. `Throttle` books its slots in a `SlotBook`: `LocalSlots` keeps the buckets in memory
with an injected clock, so tests can drive it without waiting; `BlockSlots` hands out slots
from blocks it reserves in a shared book (`mailer.store.sharedrate.SharedRate`, in the
database), so all workers on all hosts share one rate while a worker makes one round trip per
block instead of one per message. Concurrency is capped by the number of sending connections
(`smtp.max_connections`) per worker.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = [
    "GLOBAL_KEY",
    "BlockSlots",
    "LocalSlots",
    "SlotBook",
    "Throttle",
    "TokenBucket",
    "backoff_delay",
]

GLOBAL_KEY = "*"  # the bucket of the global rate; a domain's bucket is keyed "@domain"


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


class SlotBook(Protocol):
    def delay(self, key: str, interval: float) -> float:
        """Book the next slot of the bucket `key` (events `interval` s apart); seconds to wait."""
        ...


class LocalSlots:
    """Token buckets in this process's memory, on an injected clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def delay(self, key: str, interval: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(1.0 / interval)
        now = self._clock()
        return bucket.reserve(now) - now


# reserve(key, interval, count) books `count` consecutive slots `interval` s apart and returns
# the seconds from now until the first (SharedRate.reserve).
Reserve = Callable[[str, float, int], float]


class BlockSlots:
    """Slots taken from blocks reserved in a shared book: one reservation per block.

    A block holds the slots of `block_seconds` (at least one), consecutive and `interval`
    apart, and nobody else books inside it; so the slots of all workers together are still
    spaced `interval` apart. A slot that went by more than `late` seconds ago unused is
    dropped (another worker's slot may come right after it): a message sent at most `late`
    after its slot keeps any one-second window under rate * (1 + late) + 1 messages. At 50
    ms, three workers at 30/s bunched to 34 in one second (tests/test_workers.py allows 33).
    """

    def __init__(
        self,
        reserve: Reserve,
        clock: Callable[[], float],
        *,
        block_seconds: float = 0.25,
        late: float = 0.01,
        most: int = 500,
    ) -> None:
        self._reserve = reserve
        self._clock = clock
        self._block_seconds = block_seconds
        self._late = late
        self._most = most
        self._blocks: dict[str, tuple[float, int]] = {}  # key -> (next slot, slots left)

    def delay(self, key: str, interval: float) -> float:
        now = self._clock()
        slot, left = self._blocks.get(key, (0.0, 0))
        if left and slot < now - self._late:
            passed = math.ceil((now - self._late - slot) / interval)
            slot, left = slot + passed * interval, left - passed
        if left <= 0:
            count = min(self._most, max(1, int(self._block_seconds / interval)))
            slot, left = now + self._reserve(key, interval, count), count
        self._blocks[key] = (slot + interval, left - 1)
        return slot - now


class Throttle:
    """Waits until a message to `domain` may go out under both the domain and the global rate."""

    def __init__(
        self,
        messages_per_second: float,
        per_domain_per_minute: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        slots: SlotBook | None = None,
    ) -> None:
        if messages_per_second < 0 or per_domain_per_minute < 0:
            raise ValueError("a rate cannot be negative")
        self._global_interval = 1.0 / messages_per_second if messages_per_second else 0.0
        self._domain_interval = 60.0 / per_domain_per_minute if per_domain_per_minute else 0.0
        self._slots = slots or LocalSlots(clock or (lambda: asyncio.get_running_loop().time()))
        self._sleep = sleep

    async def wait_turn(self, domain: str) -> None:
        if self._domain_interval:
            await self._wait(self._slots.delay(f"@{domain}", self._domain_interval))
        # The global slot is booked only once the domain allows the send, so a busy domain
        # does not hold up messages to other domains.
        if self._global_interval:
            await self._wait(self._slots.delay(GLOBAL_KEY, self._global_interval))

    async def _wait(self, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)
