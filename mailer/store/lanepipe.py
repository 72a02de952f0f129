"""Group commit on PostgreSQL, on the event loop: the lane statements of a worker's SMTP
connections (mailer.store.lane) in one transaction and one round trip.

psycopg's pipeline mode sends BEGIN, the first query of every lane and COMMIT together and
reads the replies after. It runs on an `AsyncConnection` of its own, so the group waits for
the server as an `await`: no thread hop, and no wait for the interpreter lock in a thread
while the loop renders and talks SMTP (a group in a thread took about 1.7 ms for two lanes,
of which the server's part was under half).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine

from mailer.store.lane import Query, Steps

__all__ = ["PipelinedLanes"]

T = TypeVar("T")


class PipelinedLanes:
    """A worker's group commits on one autocommit psycopg connection, opened at first use."""

    def __init__(self, engine: Engine) -> None:
        # The engine's own connect arguments: the same server, database and options.
        self._args, self._kwargs = engine.dialect.create_connect_args(engine.url)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._cursors: list[psycopg.AsyncCursor[Any]] = []

    async def together(self, calls: Sequence[Callable[[], Steps[T]]]) -> list[T]:
        """Run `calls` in one transaction, in order; if one fails, none is written."""
        conn = await self._connection()
        steps = [call() for call in calls]
        first = [next(each) for each in steps]
        control, *cursors = self._cursors_for(conn, 1 + len(steps))
        if len(steps) == 1:  # one lane: its statement is its own transaction
            return [await _drive(steps[0], await _run(cursors[0], first[0]), cursors[0])]
        try:
            async with conn.pipeline():
                await control.execute("BEGIN")
                for cursor, query in zip(cursors, first, strict=True):
                    await cursor.execute(query.sql, query.params)
                await control.execute("COMMIT")
            # Leaving the block sent it all and read every reply: the group is committed.
        except BaseException:
            # A failed statement makes the server skip the rest up to the sync, COMMIT too,
            # and leaves the transaction aborted: nothing of the group was written.
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
            raise
        # A follow-up query (a row found suppressed or paused since its claim) runs on its
        # own, after the commit, as for a lane alone.
        return [
            await _drive(each, await _answer(cursor, query), cursor)
            for each, query, cursor in zip(steps, first, cursors, strict=True)
        ]

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(
                *self._args, **self._kwargs, autocommit=True
            )
        return self._conn

    def _cursors_for(
        self, conn: psycopg.AsyncConnection[Any], count: int
    ) -> list[psycopg.AsyncCursor[Any]]:
        """A cursor for BEGIN and COMMIT, then one per lane: each keeps its own reply."""
        while len(self._cursors) < count:
            self._cursors.append(conn.cursor())
        return self._cursors[:count]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
            self._cursors = []


async def _answer(cursor: psycopg.AsyncCursor[Any], query: Query) -> Any:
    return list(await cursor.fetchall()) if query.rows else int(cursor.rowcount)


async def _run(cursor: psycopg.AsyncCursor[Any], query: Query) -> Any:
    await cursor.execute(query.sql, query.params)
    return await _answer(cursor, query)


async def _drive(steps: Steps[T], reply: Any, cursor: psycopg.AsyncCursor[Any]) -> T:
    """Send `steps` the reply to its last query, then run each query it asks next, until it
    returns (what mailer.store.lane.run_steps does on a DB-API cursor)."""
    try:
        while True:
            reply = await _run(cursor, steps.send(reply))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
