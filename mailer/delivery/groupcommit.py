"""Group commit: the ledger statements of the SMTP connections of one worker that got to the
ledger in the same event-loop tick run in one transaction, with one commit.

Each connection asks for its statement (usually: the outcome of its last message plus the
start of its next, `Lane.start`) and waits until the group is committed before it sends. So
between two commits each connection still holds one `sending` row at most, and a crash
leaves at most one delivery in doubt per connection, as without grouping: the group commits
or rolls back as a whole.

On SQLite the group runs inline, in a callback scheduled after every connection that was
woken in this tick has asked (its commits are quick). On PostgreSQL it is sent in one round
trip from the event loop (mailer.store.lanepipe), and what is asked while it is on its way
forms the next group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from mailer.store.lane import LaneConnection, Steps
from mailer.store.lanepipe import PipelinedLanes

__all__ = ["GroupCommit"]

T = TypeVar("T")


class GroupCommit:
    def __init__(self, connection: LaneConnection, *, pipelined: bool) -> None:
        self._connection = connection
        self._waiting: list[tuple[Callable[[], Steps[Any]], asyncio.Future[Any]]] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        # A server database (PostgreSQL): its groups go in one round trip from the loop.
        self._pipelined = PipelinedLanes(connection.engine) if pipelined else None
        self.groups = 0  # commits made, for the benchmarks
        self.statements = 0

    async def run(self, call: Callable[[], Steps[T]]) -> T:
        """Run `call` (a lane statement on the shared connection) in the next group."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append((call, future))
        if not self._flushing:
            self._flushing = True
            if self._pipelined is not None:
                self._task = asyncio.ensure_future(self._flush_pipelined())
            else:
                loop.call_soon(self._flush_inline)
        return await future

    def _flush_inline(self) -> None:
        batch, self._waiting = self._waiting, []
        self._flushing = False
        self._settle(batch, self._connection.together)

    async def _flush_pipelined(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                calls = [call for call, _ in batch]
                assert self._pipelined is not None  # only started for it
                try:
                    results = await self._pipelined.together(calls)
                except Exception as failed:
                    self._fail(batch, failed)
                else:
                    self._succeed(batch, results)
        finally:
            self._flushing = False

    def _settle(
        self,
        batch: list[tuple[Callable[[], Steps[Any]], asyncio.Future[Any]]],
        run: Callable[[list[Callable[[], Steps[Any]]]], list[Any]],
    ) -> None:
        try:
            results = run([call for call, _ in batch])
        except Exception as failed:
            self._fail(batch, failed)
        else:
            self._succeed(batch, results)

    def _succeed(self, batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Any]) -> None:
        self.groups += 1
        self.statements += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a connection cancelled meanwhile no longer waits
                future.set_result(result)

    def _fail(self, batch: list[tuple[Any, asyncio.Future[Any]]], failed: Exception) -> None:
        # Nothing of the group was written: every connection in it sees the error.
        for _, future in batch:
            if not future.done():
                future.set_exception(failed)

    async def finished(self) -> None:
        """Wait for a group still on its way, then close the connection it went on."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
        if self._pipelined is not None:
            await self._pipelined.close()
