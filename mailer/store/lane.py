"""One sending connection's path to the ledger (mailer.store.ledger): mark a claimed row
`sending` just before its message goes out, and record the reply's outcome, with at most one
durable commit per message."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, bindparam, update

from mailer.core.render import Recipient
from mailer.store.models import Delivery, DeliveryStatus, Suppression, SuppressionReason
from mailer.store.prepared import Prepared

if TYPE_CHECKING:
    from mailer.store.ledger import Ledger

__all__ = [
    "STOPPED",
    "DueDelivery",
    "Lane",
    "LaneConnection",
    "Outcome",
    "Query",
    "Steps",
    "record_statement",
    "run_steps",
]

_delivery = Delivery.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Query:
    """One SQL statement a lane statement asks to be run: answered with its rows when
    `rows`, else with the number of rows it changed."""

    sql: str
    params: Any
    rows: bool = False


# A lane statement as a generator of the Queries it needs, each sent back its answer; it does
# no I/O itself. So one driver runs it at once on a cursor (`run_steps`), and another sends
# the first Query of every lane of a group with the commit in one round trip
# (mailer.store.lanepipe) before giving each its answer.
Steps = Generator[Query, Any, T]


def run_steps(steps: Steps[T], cursor: Any) -> T:
    """Run a lane statement's queries on a DB-API `cursor`, one after the other."""
    return _drive(steps, next(steps), lambda query: _answer(cursor, query))


def _drive(steps: Steps[T], query: Query, run: Callable[[Query], Any]) -> T:
    """Answer `query` with `run`, and each query `steps` asks next, until it returns."""
    try:
        while True:
            query = steps.send(run(query))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _answer(cursor: Any, query: Query) -> Any:
    cursor.execute(query.sql, query.params)
    return list(cursor.fetchall()) if query.rows else int(cursor.rowcount)


def _query(statement: Prepared, values: dict[str, Any], *, rows: bool = False) -> Query:
    return Query(statement.sql, statement.params(values), rows)


# What Lane.start returns for a row whose campaign was paused or cancelled since it was claimed.
STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class DueDelivery:
    delivery_id: int
    campaign_id: int
    basis: str
    recipient: Recipient


@dataclass(frozen=True, slots=True)
class Outcome:
    """A reply's outcome for one row, to be written (`Lane.record`, or with `Lane.start`)."""

    delivery_id: int
    status: DeliveryStatus
    smtp_reply: str
    message_id: str
    at: datetime
    next_attempt_at: datetime | None = None

    def params(self, prefix: str = "") -> dict[str, Any]:
        return {
            prefix + "delivery_id": self.delivery_id,
            prefix + "status": self.status,
            prefix + "smtp_reply": self.smtp_reply[:1000],
            prefix + "message_id": self.message_id,
            prefix + "sent_at": self.at if self.status is DeliveryStatus.SENT else None,
            prefix + "next_attempt_at": self.next_attempt_at,
        }


def record_statement(prefix: str = "") -> Any:
    d = _delivery.c
    return (
        update(_delivery)
        .where(d.id == bindparam(prefix + "delivery_id"))
        .values(
            status=bindparam(prefix + "status"),
            smtp_reply=bindparam(prefix + "smtp_reply"),
            message_id=bindparam(prefix + "message_id"),
            sent_at=bindparam(prefix + "sent_at", type_=d.sent_at.type),
            next_attempt_at=bindparam(prefix + "next_attempt_at", type_=d.next_attempt_at.type),
            lease_owner=None,
            lease_until=None,
        )
    )


class LaneConnection:
    """An autocommit connection for lane statements, used through DB-API cursors.

    Each statement is its own transaction, except in `together`: the statements of several
    lanes (the connections of one worker that got to the ledger in the same loop tick) in one
    transaction, one commit for all (group commit). A lane's start carries the outcome of its
    last message, so a crash still leaves at most one row per SMTP connection in doubt: the
    group commits or rolls back as a whole, and each lane waits for it before it sends again.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None
        self.dbapi: Any = dbapi  # psycopg's or sqlite3's own connection
        self.cursor = self.dbapi.cursor()
        # IMMEDIATE: take SQLite's write lock at BEGIN, so no statement of the group has to
        # upgrade a read snapshot another writer may have made stale meanwhile.
        self._begin = "BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else "BEGIN"

    def together(self, calls: Sequence[Callable[[], Steps[T]]]) -> list[T]:
        """Run `calls` (lane statements on this connection) in one transaction, in order.

        If one fails, none of them is written, and the error is raised.
        """
        if len(calls) == 1:
            return [run_steps(calls[0](), self.cursor)]  # one lane: its own transaction
        self.cursor.execute(self._begin)
        try:
            results = [run_steps(call(), self.cursor) for call in calls]
        except BaseException:
            self.cursor.execute("ROLLBACK")
            raise
        self.cursor.execute("COMMIT")
        return results

    def close(self) -> None:
        self.cursor.close()
        self.conn.close()


class Lane:
    """One sending connection's path to the ledger: mark a row `sending`, record its outcome.

    A lane runs its statements, compiled once, on a DB-API cursor of a `LaneConnection`
    (SQLAlchemy's per-execution work cost more than the SQL): its own, or the one shared by
    the lanes of a worker for group commit (`LaneConnection.together`; on PostgreSQL,
    mailer.store.lanepipe). `start` can write the outcome of the lane's previous message in
    the same commit.

    `start`, `give_back` and `record` run at once; `starting`, `giving_back` and `recording`
    are the same statements as `Steps`, for a group.
    """

    def __init__(self, ledger: Ledger, connection: LaneConnection | None = None) -> None:
        self._ledger = ledger
        self._owns = connection is None
        self._shared = connection or LaneConnection(ledger.engine)
        self._engine = self._shared.engine
        self._cursor = self._shared.cursor

    def start(
        self,
        job: DueDelivery,
        list_name: str,
        hashes: Sequence[str],
        *,
        previous: Outcome | None = None,
    ) -> int | str | None:
        """Mark a claimed row `sending` just before its message goes out, re-checking suppression.

        With `previous` (the outcome of this connection's last message) both are written in
        one transaction: a crash leaves one row of this connection in doubt, never two.
        Returns the attempt number, `"suppressed"` if the person was suppressed meanwhile (the
        row is marked so), `STOPPED` if its campaign was paused meanwhile (the row is queued
        again), or None if the row is no longer this worker's (lease lost, or cancelled).
        """
        return run_steps(self.starting(job, list_name, hashes, previous=previous), self._cursor)

    def starting(
        self,
        job: DueDelivery,
        list_name: str,
        hashes: Sequence[str],
        *,
        previous: Outcome | None = None,
    ) -> Steps[int | str | None]:
        ledger = self._ledger
        params = {
            "delivery_id": job.delivery_id,
            "owner": ledger.owner,
            "list_name": list_name,
            **dict(zip(ledger.hash_params, hashes, strict=True)),
        }
        if previous is None:
            started = yield _query(ledger.start_sql, params, rows=True)
        else:
            both = {**params, **previous.params("r_")}
            rows = yield _query(ledger.record_then_start_sql, both, rows=True)
            started = [row[1:] for row in rows if row[0] == job.delivery_id]
        if started:
            return int(started[0][0])
        if (yield _query(ledger.suppress, params)):
            return DeliveryStatus.SUPPRESSED.value
        if (yield _query(ledger.give_back_stopped, params)):
            return STOPPED
        return None

    def give_back(self, job: DueDelivery) -> None:
        """Queue a claimed row again without trying it (its campaign is known to be stopped)."""
        run_steps(self.giving_back(job), self._cursor)

    def giving_back(self, job: DueDelivery) -> Steps[None]:
        params = {"delivery_id": job.delivery_id, "owner": self._ledger.owner}
        yield _query(self._ledger.give_back_one, params)

    def record(
        self,
        delivery_id: int,
        *,
        status: DeliveryStatus,
        smtp_reply: str,
        message_id: str,
        at: datetime,
        next_attempt_at: datetime | None = None,
        hard_bounce_hash: str | None = None,
    ) -> None:
        """Store a reply's outcome; a hard bounce also suppresses the address, atomically.

        A hard bounce goes on a connection of its own: never inside a group (`together`).
        """
        outcome = Outcome(delivery_id, status, smtp_reply, message_id, at, next_attempt_at)
        if hard_bounce_hash is None:
            run_steps(self.recording(outcome), self._cursor)
            return
        with self._engine.begin() as conn:  # rare: both or neither
            self._ledger.record_sql.run(conn, outcome.params())
            conn.execute(
                _suppression.insert().values(
                    address_hash=hard_bounce_hash,
                    reason=SuppressionReason.HARD_BOUNCE,
                    scope=None,
                    at=at,
                )
            )

    def recording(self, outcome: Outcome) -> Steps[None]:
        yield _query(self._ledger.record_sql, outcome.params())

    def record_alone(self, outcome: Outcome) -> None:
        """Store an outcome on a connection of its own: for a worker that is failing or being
        cancelled, whose shared connection may be inside a group's transaction."""
        with self._engine.begin() as conn:
            self._ledger.record_sql.run(conn, outcome.params())

    def close(self) -> None:
        if self._owns:
            self._shared.close()
