"""Statements compiled once and run many times: the per-message SQL of a sending worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, CursorResult, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Prepared"]


class Prepared:
    """A statement compiled once for one dialect, executed without per-call compilation.

    SQLAlchemy's per-execution work (cache key, execution context, `construct_params`) cost
    more than the SQL itself on this path, measured with benchmarks/send_throughput.py. Only
    public compiler API is used: the SQL text, `bind_names`, `positiontup` and each type's
    `bind_processor`, so datetimes are converted exactly as SQLAlchemy would.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or ()) if compiled.positional else None
        # Each bind by the name it has in the SQL: those with a value in the statement (the
        # literals of .values()) are filled in once; the others come from the caller per run.
        self.fixed: dict[str, Any] = {}
        self.wanted: list[tuple[str, str]] = []  # (name in the SQL, key the caller passes)
        self.convert = {}
        for bind, name in compiled.bind_names.items():
            if bind.required or bind.callable is not None:
                self.wanted.append((name, bind.key))
            else:
                self.fixed[name] = bind.effective_value
            # The dialect's own type: on SQLite the generic DateTime has no processor, and the
            # driver's default adapter would store "09:00:00+00:00" where SQLAlchemy stores
            # "09:00:00.000000", so the two would sort apart.
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.convert[name] = processor

    def params(self, values: Mapping[str, Any]) -> Any:
        params = dict(self.fixed)
        for name, key in self.wanted:
            params[name] = values[key]
        for name, convert in self.convert.items():
            params[name] = convert(params[name])
        return tuple(params[n] for n in self.order) if self.order is not None else params

    def run(self, conn: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.params(values))

    def execute(self, cursor: Any, values: Mapping[str, Any]) -> int:
        """Run on a DB-API cursor (no SQLAlchemy per call at all); the rows changed."""
        cursor.execute(self.sql, self.params(values))
        return int(cursor.rowcount)

    def fetch(self, cursor: Any, values: Mapping[str, Any]) -> list[Any]:
        """Run on a DB-API cursor and return every row (RETURNING)."""
        cursor.execute(self.sql, self.params(values))
        return list(cursor.fetchall())
