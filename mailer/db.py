"""Engine and schema from `database.url`; SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

from mailer import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from mailer.errors import ConfigError, MailerError

__all__ = ["create_schema", "make_engine", "session_scope"]


def make_engine(url: str, *, source: str = "database.url") -> Engine:
    """An engine for `url`. SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"cannot be used: {exc}", file=source, key="database.url") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL keeps readers (the web side) and the sender from blocking each other; NORMAL sync is
    # still durable against a killed process, which is what crash-safe resume needs.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_schema(engine: Engine) -> list[str]:
    """Create missing tables; idempotent. Returns the names of the tables it created."""
    try:
        with engine.begin() as conn:
            existing = set(engine.dialect.get_table_names(conn))
            SQLModel.metadata.create_all(conn)
    except OperationalError as exc:
        raise MailerError(f"The database at {engine.url!r} cannot be opened: {exc.orig}") from exc
    return [t for t in SQLModel.metadata.tables if t not in existing]


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed if the block ends normally, rolled back otherwise."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
