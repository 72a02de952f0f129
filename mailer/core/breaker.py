"""A circuit breaker for a run: when most recent sends fail, pause and probe (pure arithmetic).

A server that is down answers every message with a connection error or a 4xx. Sending on would
burn an attempt of every recipient in the list; instead the run pauses, probes the server with a
connection (no message) after a delay that doubles while it stays down, and resumes when a probe
succeeds.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

__all__ = ["Breaker", "BreakerState"]


class BreakerState(StrEnum):
    CLOSED = "closed"  # sending
    OPEN = "open"  # paused until the next probe
    PROBING = "probing"  # one probe in flight


class Breaker:
    def __init__(
        self,
        *,
        window: int = 20,
        threshold: float = 0.8,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        self.window = window
        self.threshold = threshold
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.state = BreakerState.CLOSED
        self._recent: deque[bool] = deque(maxlen=window)
        self._delay = first_delay
        self._probe_at = 0.0

    def record(self, failed: bool, now: float) -> None:
        """The outcome of one send (failed: a 4xx or a connection problem)."""
        if self.state is not BreakerState.CLOSED:
            return  # sends that were already under way when it opened
        self._recent.append(failed)
        if len(self._recent) == self.window and sum(self._recent) >= self.threshold * self.window:
            self.state = BreakerState.OPEN
            self._probe_at = now + self._delay

    def wait(self, now: float) -> float | None:
        """Seconds to wait before trying again; 0 = send; None = you are the prober, probe now."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN and now >= self._probe_at:
            self.state = BreakerState.PROBING
            return None
        if self.state is BreakerState.OPEN:
            return self._probe_at - now
        return min(0.1, self._delay)  # another task is probing

    def probed(self, ok: bool, now: float) -> None:
        if ok:
            self.state = BreakerState.CLOSED
            self._recent.clear()
            self._delay = self.first_delay
        else:
            self._delay = min(self._delay * 2, self.max_delay)
            self.state = BreakerState.OPEN
            self._probe_at = now + self._delay
