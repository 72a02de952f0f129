"""The rate limits of all workers together, kept in the database they share.

Each bucket is one `send_rate` row holding its next free slot. Booking slots is one atomic
upsert: `next_free = max(next_free, now) + count * interval`, returning the first slot booked
and the time it was booked at. A worker books a block of slots at a time (a quarter of a
second's worth, `mailer.core.throttle.BlockSlots`) and hands them out from memory, so the
rate costs one statement per block, not per message. PostgreSQL locks the row for the
statement, SQLite the whole database, so two workers never book the same slot, and any window
of one second holds at most rate + 1 slots however many workers there are. The arithmetic is
`TokenBucket.reserve`, in SQL.

"now" is the database server's clock, not the worker's: workers on hosts whose clocks differ
then still space their messages correctly (each waits `slot - now`, measured on one clock).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, text

from mailer.core.throttle import SlotBook
from mailer.errors import MailerError

__all__ = ["SharedRate"]

_NOW = {
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}

_BOOK = """
INSERT INTO send_rate (key, next_free) VALUES (:key, {now} + :span)
ON CONFLICT (key) DO UPDATE
SET next_free = CASE WHEN send_rate.next_free > {now} THEN send_rate.next_free ELSE {now} END
    + :span
RETURNING next_free - :span, {now}
"""


class SharedRate(SlotBook):
    """A `SlotBook` in the `send_rate` table. `clock` replaces the server's clock in tests."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] | None = None) -> None:
        self._engine = engine
        self._clock = clock
        now = ":now" if clock is not None else _NOW.get(engine.dialect.name)
        if now is None:
            raise MailerError(
                f"Sending needs SQLite or PostgreSQL; database.url names {engine.dialect.name}."
            )
        self._book = text(_BOOK.format(now=now))
        self._conn = engine.connect()

    def delay(self, key: str, interval: float) -> float:
        return self.reserve(key, interval, 1)

    def reserve(self, key: str, interval: float, count: int) -> float:
        """Book the next `count` slots of `key`, `interval` s apart; seconds until the first."""
        params: dict[str, object] = {"key": key, "span": interval * count}
        if self._clock is not None:
            params["now"] = self._clock()
        with self._conn.begin():
            slot, now = self._conn.execute(self._book, params).one()
        return float(slot) - float(now)

    def close(self) -> None:
        self._conn.close()
