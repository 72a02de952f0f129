"""Helpers for the CSV import tests: writing files, counting and reading back the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TABLES = ("contact", "consent", "purchase", "suppression")
CONTACT_HEADER = "email,first_name,list,requested_at,confirmed_at,ip,source"
CUSTOMER_HEADER = "email,category,purchased_at,optout_offered"


def write(name: str, *lines: str) -> Path:
    path = Path(name)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(
                select(func.count()).select_from(SQLModel.metadata.tables[name])
            ).scalar_one()
            for name in TABLES
        }


def rows(engine: Engine, table: str) -> list[dict[str, object]]:
    t = SQLModel.metadata.tables[table]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.id))]


def utc(value: object) -> datetime:
    # SQLite hands back naive datetimes; they were stored as UTC.
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NOTHING = dict.fromkeys(TABLES, 0)
