"""Group commit on PostgreSQL, on the event loop: the lane statements of a worker's SMTP
connections (mailer.store.lane) in one transaction and one round trip.

The group goes out in libpq's pipeline mode, BEGIN, the first query of every lane and COMMIT
in one write, and the replies are read as the socket has them. The connection is opened by
psycopg, then driven through its libpq object (`pgconn`) alone: psycopg's cursors, adapters
and pipeline generators took a fifth of the sending loop's time for a handful of UPDATEs a
group (py-spy, one worker, smtp-sink). Here a statement is prepared on the server once, its
parameters go as text, and the loop wakes when the socket has data; no thread, and no wait for
the interpreter lock (a group in a thread took about 1.7 ms for two lanes, of which the
server's part was under half).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from sqlalchemy import Engine

from mailer.store.lane import Query, Steps

__all__ = ["PipelinedLanes"]

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_INTEGERS = {20, 21, 23}  # int8, int2, int4: what the lane statements return
_TEXTS = {25, 1043}  # text, varchar
_BEGIN, _COMMIT, _ROLLBACK = b"BEGIN", b"COMMIT", b"ROLLBACK"
_NAME = "mailer lanes"


class PipelinedLanes:
    """A worker's group commits on one autocommit connection, opened at first use."""

    def __init__(self, engine: Engine) -> None:
        # The engine's own connect arguments: the same server, database and options.
        self._args, self._kwargs = engine.dialect.create_connect_args(engine.url)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._wire: _Wire | None = None

    async def together(self, calls: Sequence[Callable[[], Steps[T]]]) -> list[T]:
        """Run `calls` in one transaction, in order; if one fails, none is written."""
        wire = await self._connected()
        steps = [call() for call in calls]
        first = [next(each) for each in steps]
        # One lane: its statement is its own transaction.
        replies = await wire.exchange(first, transaction=len(first) > 1)
        # A follow-up query (a row found suppressed or paused since its claim) runs on its
        # own, after the commit, as for a lane alone.
        return [await _drive(each, reply, wire) for each, reply in zip(steps, replies, strict=True)]

    async def _connected(self) -> _Wire:
        if self._wire is None:
            # Named, so pg_stat_activity says what this session is.
            self._conn = await psycopg.AsyncConnection.connect(
                *self._args, **{**self._kwargs, "application_name": _NAME}, autocommit=True
            )
            self._wire = _Wire(self._conn.pgconn)
        return self._wire

    async def close(self) -> None:
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class _Wire:
    """One libpq connection in pipeline mode, read by the event loop."""

    def __init__(self, pgconn: pq.abc.PGconn) -> None:
        self._pg = pgconn
        pgconn.nonblocking = 1
        pgconn.enter_pipeline_mode()
        self._loop = asyncio.get_running_loop()
        self._socket = pgconn.socket
        self._waiting: asyncio.Future[None] | None = None
        self._loop.add_reader(self._socket, self._readable)
        # Each statement's server-side name and parameter order, once it is known prepared.
        self._statements: dict[str, tuple[bytes, list[str]]] = {}
        self._count = 0
        self._busy = False  # GroupCommit sends one group at a time; this says it holds

    def close(self) -> None:
        self._loop.remove_reader(self._socket)

    async def exchange(self, queries: Sequence[Query], *, transaction: bool) -> list[Any]:
        """Run `queries` (in one transaction if `transaction`) and return each one's answer."""
        assert not self._busy, "one exchange at a time"
        self._busy = True
        try:
            return await self._exchange(queries, transaction)
        finally:
            self._busy = False

    async def _exchange(self, queries: Sequence[Query], transaction: bool) -> list[Any]:
        pg = self._pg
        # Every parameter in its text form before anything is sent: a value that cannot be
        # (a bug) must not leave half a group in the pipeline.
        new: dict[str, tuple[bytes, list[str], str]] = {}  # to prepare: name, order, text
        planned = []
        for query in queries:
            known = self._statements.get(query.sql)
            if known is None:
                if query.sql not in new:
                    new[query.sql] = self._named(query.sql)
                known = new[query.sql][:2]
            name, order = known
            planned.append((name, [_text(query.params[key]) for key in order]))
        sent: list[int | None] = []  # per command sent, the query it answers (None: other)
        for name, _, text in new.values():  # prepared ahead of the group, in the same write
            pg.send_prepare(name, text.encode("utf-8"))
            sent.append(None)
        if transaction:
            pg.send_query_params(_BEGIN, None)
            sent.append(None)
        for index, (name, values) in enumerate(planned):
            pg.send_query_prepared(name, values)
            sent.append(index)
        if transaction:
            pg.send_query_params(_COMMIT, None)
            sent.append(None)
        pg.pipeline_sync()
        await self._flush()
        results = await self._results()
        failure = next((r for r in results if r.status == pq.ExecStatus.FATAL_ERROR), None)
        if failure is not None or len(results) != len(sent):
            # The server skipped the rest up to the sync, COMMIT too: nothing was written.
            if pg.transaction_status != pq.TransactionStatus.IDLE:
                pg.send_query_params(_ROLLBACK, None)
                pg.pipeline_sync()
                await self._flush()
                await self._results()
            if failure is None:
                raise psycopg.InterfaceError(f"{len(results)} replies to {len(sent)} commands")
            raise _error(failure)
        # Known prepared once the group went through.
        self._statements.update({sql: (name, order) for sql, (name, order, _) in new.items()})
        return [
            _answer(result, queries[index])
            for result, index in zip(results, sent, strict=True)
            if index is not None
        ]

    def _named(self, sql: str) -> tuple[bytes, list[str], str]:
        """A new server-side name for `sql`, the order of its parameters, and its text with
        $n placeholders."""
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%"
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        text = _PLACEHOLDER.sub(number, sql)
        self._count += 1
        return f"mailer_lane_{self._count}".encode("ascii"), order, text

    async def _flush(self) -> None:
        while self._pg.flush() == 1:  # the socket's buffer is full: wait until it drains
            writable = self._loop.create_future()
            self._loop.add_writer(self._socket, writable.set_result, None)
            try:
                await writable
            finally:
                self._loop.remove_writer(self._socket)

    async def _results(self) -> list[pq.abc.PGresult]:
        """Every query's result, in order, up to the pipeline's sync."""
        results: list[pq.abc.PGresult] = []
        pending: pq.abc.PGresult | None = None
        while True:
            self._pg.consume_input()
            while not self._pg.is_busy():
                result = self._pg.get_result()
                if result is None:  # the end of one query's results
                    if pending is not None:
                        results.append(pending)
                        pending = None
                    continue
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    return results
                pending = result
            await self._readable_soon()

    def _readable(self) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)
            return
        # Nobody waits (a notice between groups, a reply while a write waits): read it, or
        # epoll keeps waking the loop for it.
        try:
            self._pg.consume_input()
        except psycopg.Error:  # the connection is gone: the next exchange says so
            self._loop.remove_reader(self._socket)

    async def _readable_soon(self) -> None:
        self._waiting = self._loop.create_future()
        try:
            await self._waiting
        finally:
            self._waiting = None


def _text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text form (every bind in the SQL carries its own cast)."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, datetime.datetime):
        return value.isoformat().encode("ascii")
    if isinstance(value, int | str):
        return str(value).encode("utf-8")
    raise TypeError(f"a lane statement parameter of type {type(value).__name__}")


def _answer(result: pq.abc.PGresult, query: Query) -> Any:
    if not query.rows:
        return int(result.command_tuples or 0)
    decoders = [_decoder(result.ftype(column)) for column in range(result.nfields)]
    return [
        tuple(
            None if (raw := result.get_value(row, column)) is None else decode(raw)
            for column, decode in enumerate(decoders)
        )
        for row in range(result.ntuples)
    ]


def _decoder(oid: int) -> Callable[[bytes], Any]:
    if oid in _INTEGERS:
        return int
    if oid in _TEXTS:
        return lambda raw: raw.decode("utf-8")
    raise TypeError(f"a lane statement returned a column of type oid {oid}")


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    """The error psycopg would have raised for this result."""
    message = (result.error_message or b"").decode("utf-8", "replace").strip()
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    try:
        kind = psycopg.errors.lookup(sqlstate.decode("ascii")) if sqlstate else psycopg.Error
    except KeyError:
        kind = psycopg.DatabaseError
    return kind(message)


async def _drive(steps: Steps[T], reply: Any, wire: _Wire) -> T:
    """Send `steps` the reply to its last query, then run each query it asks next, on its
    own, until it returns (what mailer.store.lane.run_steps does on a DB-API cursor)."""
    try:
        while True:
            (reply,) = await wire.exchange([steps.send(reply)], transaction=False)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
