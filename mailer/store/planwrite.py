"""Writing a campaign's plan into the ledger: one row per contact, in bulk, in one transaction.

A row that exists keeps its state (nobody is mailed twice); only a skipped row takes the new
decision, so a person who confirmed since the last run is included now.

- SQLite: one `INSERT ... ON CONFLICT DO UPDATE` compiled once, run with the driver's
  executemany on plain tuples, a chunk at a time.
- PostgreSQL: COPY (psycopg 3 `cursor.copy`). The first plan of a campaign (no ledger rows
  yet, the campaign's run lock held) copies straight into the ledger; a later one copies into
  a temporary table and merges it with one `INSERT ... SELECT ... ON CONFLICT`.
"""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, bindparam, literal_column, select
from sqlalchemy.dialects import sqlite

from mailer.core.policy import Decision
from mailer.store.models import Delivery, DeliveryStatus
from mailer.store.prepared import Prepared

__all__ = ["LedgerWriter"]

CHUNK = 5000
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_COLUMNS = ("campaign_id", "contact_id", "basis", "skip_reason", "status", "attempts")
_MERGE_PG = (
    "INSERT INTO delivery ({columns}) SELECT {columns} FROM plan_rows"
    " ON CONFLICT (campaign_id, contact_id) DO UPDATE"
    " SET basis = excluded.basis, skip_reason = excluded.skip_reason, status = excluded.status"
    " WHERE delivery.status = 'skipped'"
)


def _sqlite_upsert() -> str:
    stmt = sqlite.insert(_delivery).values({name: bindparam(name) for name in _COLUMNS})
    stmt = stmt.on_conflict_do_update(
        index_elements=["campaign_id", "contact_id"],
        set_={
            "basis": stmt.excluded.basis,
            "skip_reason": stmt.excluded.skip_reason,
            "status": stmt.excluded.status,
        },
        # A literal, not a bind: every bind is one of the row's six values, in _COLUMNS order.
        where=_delivery.c.status == literal_column(f"'{DeliveryStatus.SKIPPED}'"),
    )
    prepared = Prepared(stmt, sqlite.dialect())
    assert prepared.order == list(_COLUMNS) and not prepared.fixed and not prepared.convert
    return prepared.sql


class LedgerWriter:
    """Takes (contact id, decision) pairs and writes them as ledger rows of one campaign."""

    def __init__(self, conn: Connection, campaign_id: int) -> None:
        self.conn = conn
        self.campaign_id = campaign_id
        self.cursor: Any = conn.connection.cursor()
        # The row values of each decision, worked out once (there are at most ten decisions).
        self.values: dict[Decision, tuple[str | None, str | None, str]] = {}

    @staticmethod
    def open(conn: Connection, campaign_id: int) -> LedgerWriter:
        if conn.dialect.name == "postgresql":
            return _CopyWriter(conn, campaign_id)
        return _ExecutemanyWriter(conn, campaign_id)

    def row(self, contact_id: int, decision: Decision) -> tuple[Any, ...]:
        values = self.values.get(decision)
        if values is None:
            status = DeliveryStatus.QUEUED if decision.allowed else DeliveryStatus.SKIPPED
            values = self.values[decision] = (
                decision.basis and str(decision.basis),
                decision.skip and str(decision.skip),
                str(status),
            )
        return (self.campaign_id, contact_id, *values, 0)

    def add(self, contact_id: int, decision: Decision) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Write what is left; the caller's transaction commits it."""

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.finish()


class _ExecutemanyWriter(LedgerWriter):
    def __init__(self, conn: Connection, campaign_id: int) -> None:
        super().__init__(conn, campaign_id)
        self.sql = _sqlite_upsert()
        self.batch: list[tuple[Any, ...]] = []

    def add(self, contact_id: int, decision: Decision) -> None:
        self.batch.append(self.row(contact_id, decision))
        if len(self.batch) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.cursor.executemany(self.sql, self.batch)
            self.batch = []

    def finish(self) -> None:
        self.flush()
        self.cursor.close()


class _CopyWriter(LedgerWriter):
    def __init__(self, conn: Connection, campaign_id: int) -> None:
        super().__init__(conn, campaign_id)
        first = conn.execute(
            select(_delivery.c.id).where(_delivery.c.campaign_id == campaign_id).limit(1)
        ).first()
        self.merge = first is not None
        target = "plan_rows" if self.merge else "delivery"
        if self.merge:
            self.cursor.execute(
                "CREATE TEMPORARY TABLE plan_rows (campaign_id integer, contact_id integer,"
                " basis varchar(32), skip_reason varchar(32), status varchar(16),"
                " attempts integer) ON COMMIT DROP"
            )
        self.stack = ExitStack()
        self.copy = self.stack.enter_context(
            self.cursor.copy(f"COPY {target} ({', '.join(_COLUMNS)}) FROM STDIN")
        )

    def add(self, contact_id: int, decision: Decision) -> None:
        self.copy.write_row(self.row(contact_id, decision))

    def finish(self) -> None:
        self.stack.close()  # ends the COPY
        if self.merge:
            self.cursor.execute(_MERGE_PG.format(columns=", ".join(_COLUMNS)))
            self.cursor.execute("DROP TABLE plan_rows")
        self.cursor.close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.finish()
        else:  # end the COPY with the error: the caller's transaction is rolled back
            self.stack.__exit__(kind, error, trace)
