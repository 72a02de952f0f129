"""A statement run through `Prepared` stores values exactly as SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, Table, insert, select, text

from mailer.store.prepared import Prepared

_metadata = MetaData()
_event = Table(
    "prepared_probe",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True)),
)


def test_a_time_written_by_a_prepared_statement_is_stored_and_sorted_like_sqlalchemys(
    engine: Engine,
) -> None:
    _metadata.create_all(engine)
    try:
        _check_stored_alike(engine)
    finally:
        _metadata.drop_all(engine)


def _check_stored_alike(engine: Engine) -> None:
    on_the_second = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
    later = datetime(2026, 3, 1, 9, 0, 0, 1, tzinfo=UTC)
    prepared = Prepared(insert(_event), engine.dialect)
    with engine.begin() as conn:
        conn.execute(insert(_event), [{"id": 1, "at": on_the_second}, {"id": 3, "at": later}])
        prepared.run(conn, {"id": 2, "at": on_the_second})
        prepared.run(conn, {"id": 4, "at": later})
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT id, CAST(at AS TEXT) FROM prepared_probe")).all())
        in_order = conn.execute(select(_event.c.id).order_by(_event.c.at, _event.c.id)).all()
        read = dict(conn.execute(select(_event.c.id, _event.c.at)).all())
    assert stored[2] == stored[1] and stored[4] == stored[3]
    assert [row.id for row in in_order] == [1, 2, 3, 4]
    assert read[2].replace(tzinfo=UTC) == on_the_second
