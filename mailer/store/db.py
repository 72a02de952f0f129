"""Engine and schema from `database.url`; SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import Session, SQLModel, create_engine

from mailer.errors import ConfigError, MailerError
from mailer.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

__all__ = ["create_schema", "make_engine", "schema_gaps", "session_scope"]


def make_engine(url: str, *, source: str = "database.url") -> Engine:
    """An engine for `url`. SQLite gets WAL, foreign keys, a busy timeout and secure delete."""
    try:
        # hide_parameters: a database error must not carry the row (address, IP, user agent)
        # into a log line or onto a terminal (issue 14, row 7).
        engine = create_engine(url, hide_parameters=True)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"cannot be used: {exc}", file=source, key="database.url") from exc
    if engine.dialect.name == "sqlite":
        _create_private(engine.url.database)
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _create_private(database: str | None) -> None:
    """Create a new SQLite file readable by its owner only (0600): it holds personal data, and
    SQLite gives its -wal and -shm files the mode of the database file (issue 14, row 10)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        descriptor = os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder: SQLite's own error on connect says it better
    os.close(descriptor)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL keeps readers (the web side) and the sender from blocking each other; NORMAL sync is
    # still durable against a killed process, which is what crash-safe resume needs.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # Freed cells and pages are zeroed as they are freed, on every connection: an UPDATE or a
    # DELETE otherwise leaves the old bytes (an address, a name) readable in the file until
    # overwritten, and a later erasure could not reach them. Debian builds SQLite with this on;
    # other builds (python.org, macOS) do not.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def schema_gaps(engine: Engine) -> list[str]:
    """What `create_schema` would add: missing tables, and `table.column` for missing columns.

    Every command checks this before it works, so a database made by an older version is
    named as such ("run `mailer init`") instead of failing mid-run on a missing column.
    """
    try:
        with engine.connect() as conn:
            return [f"{t}.{c.name}" if c is not None else t for t, c in _gaps(inspect(conn))]
    except OperationalError as exc:
        raise MailerError(f"The database at {engine.url!r} cannot be opened: {exc.orig}") from exc


def _gaps(inspector: Any) -> list[tuple[str, Any]]:
    existing = set(inspector.get_table_names())
    gaps: list[tuple[str, Any]] = []
    for name, table in SQLModel.metadata.tables.items():
        if name not in existing:
            gaps.append((name, None))
            continue
        present = {c["name"] for c in inspector.get_columns(name)}
        gaps += [(name, column) for column in table.columns if column.name not in present]
    return gaps


def create_schema(engine: Engine) -> list[str]:
    """Create missing tables, add missing nullable columns and indexes; idempotent.

    Returns what it changed: table names, and `table.column` for added columns. New columns of
    later versions are always nullable, so an upgrade is an ALTER TABLE ADD COLUMN.
    """
    changed: list[str] = []
    try:
        with engine.begin() as conn:
            inspector = inspect(conn)
            gaps = _gaps(inspector)
            SQLModel.metadata.create_all(conn)
            created = {name for name, column in gaps if column is None}
            changed += sorted(created)
            for name, column in gaps:
                if column is None:
                    continue
                if not column.nullable:
                    raise MailerError(
                        f"The database table {name} lacks the required column "
                        f"{column.name}; it cannot be added to existing rows."
                    )
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE {name} ADD COLUMN "{column.name}" {kind}'))
                changed.append(f"{name}.{column.name}")
            for name in SQLModel.metadata.tables.keys() - created:  # new ones have their indexes
                present_indexes = {i["name"] for i in inspector.get_indexes(name)}
                for index in SQLModel.metadata.tables[name].indexes:
                    if index.name not in present_indexes:
                        index.create(conn)
                        changed.append(f"{name}.{index.name}")
    except OperationalError as exc:
        raise MailerError(f"The database at {engine.url!r} cannot be opened: {exc.orig}") from exc
    if engine.dialect.name == "sqlite" and _add_autoincrement(engine, "contact"):
        changed.append("contact.autoincrement")
    return changed


def _add_autoincrement(engine: Engine, name: str) -> bool:
    """Rebuild an SQLite table made before it had AUTOINCREMENT; True if it was rebuilt.

    Without AUTOINCREMENT SQLite hands the id of an erased newest contact to the next one, and
    the erased person's old link would act on them (issue 14, row 5). A column cannot be
    altered in SQLite: this is its 12-step table rebuild (sqlite.org/lang_altertable.html),
    in one transaction with foreign keys off, checked before the commit.
    """
    table = SQLModel.metadata.tables[name]
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        row = sql.fetchone()
        if row is None or "AUTOINCREMENT" in str(row[0]).upper():
            return False
        present = [r[1] for r in db.execute(f'PRAGMA table_info("{name}")')]
        columns = ", ".join(f'"{c.name}"' for c in table.columns if c.name in present)
        create = str(CreateTable(table).compile(dialect=engine.dialect)).strip()
        create = create.replace(f"CREATE TABLE {name} ", f"CREATE TABLE {name}__rebuilt ", 1)
        previous = db.isolation_level
        db.isolation_level = None  # our own BEGIN and COMMIT: the DDL is transactional too
        try:
            db.execute("PRAGMA foreign_keys=OFF")
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(create)
                db.execute(f"INSERT INTO {name}__rebuilt ({columns}) SELECT {columns} FROM {name}")
                db.execute(f"DROP TABLE {name}")
                db.execute(f"ALTER TABLE {name}__rebuilt RENAME TO {name}")
                for index in table.indexes:
                    db.execute(str(CreateIndex(index).compile(dialect=engine.dialect)))
                if db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise MailerError(
                        f"The database table {name} could not be upgraded: rows of other "
                        "tables point to contacts that do not exist. Nothing was changed."
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.execute("PRAGMA foreign_keys=ON")
        finally:
            db.isolation_level = previous
    finally:
        raw.close()
    return True


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
