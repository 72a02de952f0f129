"""Group commit for the web side's writes: many requests, one transaction, each answer after it.

After a large campaign, one-click unsubscribes arrive in bursts. With one transaction per request
in a thread each, SQLite's single write lock made the threads take turns through its busy
handler, which sleeps in growing steps (up to 100 ms) while it waits: that, not the work, set the
latency (docs/performance.md, "Web side under a burst").

Here the writes of all requests that arrive while a batch is being written wait for the next
batch. A batch runs in a worker thread on one connection, in one transaction (on SQLite taken
with BEGIN IMMEDIATE, so the write lock is held from the first statement on). The jobs run one
after the other without savepoints, which cost as much as a job's own statements; if any job
raises (RateLimited, a database error), the whole batch is rolled back and written again with
each job in a savepoint of its own, so the failing job is rolled back alone and its caller gets
its exception. A job only touches the database, so running it a second time is safe.

Every caller is answered only after the commit: an answered unsubscribe is on disk, as the rule
"honour every unsubscribe at once" asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

__all__ = ["GroupWriter"]

T = TypeVar("T")
Job = Callable[[Connection], Any]

# A bound on one transaction: long enough to carry a burst, short enough that the first caller
# of a batch is not kept waiting for hundreds of others.
MAX_BATCH = 64


class GroupWriter:
    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self._max_batch = max_batch
        self._pending: list[tuple[Job, asyncio.Future[Any]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def run(self, job: Callable[[Connection], T]) -> T:
        """Run `job(conn)` in the next batch; its result (or exception) once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                outcomes = await asyncio.to_thread(self._write, [job for job, _ in batch])
            except BaseException as exc:  # the commit failed: nothing of the batch is stored
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # the caller went away (cancelled); its write still stands
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _write(self, jobs: list[Job]) -> list[tuple[bool, Any]]:
        try:
            return self._transaction(jobs, savepoints=False)
        except _JobFailed:  # rolled back: again, each job on its own savepoint
            return self._transaction(jobs, savepoints=True)

    def _transaction(self, jobs: list[Job], *, savepoints: bool) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.engine.connect() as conn, conn.begin():
            if conn.dialect.name == "sqlite":
                # pysqlite begins lazily and not before a SAVEPOINT (which would then commit on
                # its RELEASE): begin here, and take the write lock now rather than mid-batch.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            for job in jobs:
                if not savepoints:
                    try:
                        outcomes.append((True, job(conn)))
                    except Exception as exc:
                        raise _JobFailed from exc  # leaves the with: the batch is rolled back
                    continue
                try:
                    with conn.begin_nested():
                        outcomes.append((True, job(conn)))
                except Exception as exc:  # this job alone is rolled back; its caller is told
                    outcomes.append((False, exc))
        return outcomes


class _JobFailed(Exception):
    """A job raised in a batch without savepoints: roll it all back and write it again."""
