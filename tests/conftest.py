"""Shared fixtures: real settings, a real SQLite file, a real SMTP server on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from mailer.config import Settings, parse_settings
from mailer.delivery.sink import SmtpSink
from mailer.store.db import create_schema, make_engine

SECRET = "test-secret-key-0123456789abcdef"

BASE_CONFIG: dict[str, Any] = {
    "locale": "nl",
    "sender": {
        "organization": "Bakkerij Voorbeeld B.V.",
        "from_name": "Bakkerij Voorbeeld",
        "from_address": "nieuws@bakkerij.example",
        "reply_to": "info@bakkerij.example",
        "postal_address": "Dorpsstraat 1, 1234 AB Voorbeeld",
    },
    "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none", "max_connections": 2},
    "throttle": {"messages_per_second": 0, "per_domain_per_minute": 0},
    "web": {"base_url": "https://bakkerij.example"},
    "lists": {
        "newsletter": {
            "title": "Nieuwsbrief",
            "wording": "Ja, ik wil de maandelijkse nieuwsbrief per e-mail ontvangen.",
        },
        "offers": {"title": "Aanbiedingen", "wording": "Ja, stuur mij aanbiedingen per e-mail."},
    },
}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in BASE_CONFIG.items()
    }
    data["database"] = {"url": database_url}
    for section, values in overrides.items():
        if isinstance(values, dict):
            data[section] = {**data.get(section, {}), **values}
        else:
            data[section] = values
    return parse_settings(data, source="test.toml", environ={"MAILER_SECRET_KEY": SECRET})


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test run (None when no server answers)."""
    admin = create_engine(
        PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"mailer_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        yield None
        return
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every database test runs on a SQLite file and on PostgreSQL (one schema per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailer.db'}"
        return
    database = request.getfixturevalue("postgres_database")
    if database is None:
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{database}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text("SET lock_timeout = '5s'"))
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database.url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A real aiosmtpd server on 127.0.0.1 that records every message it accepts."""
    with SmtpSink() as server:
        yield server


@pytest.fixture
def send_settings(db_url: str, sink: SmtpSink) -> Settings:
    """Settings whose [smtp] points at the `sink` fixture."""
    return make_settings(db_url, smtp={"port": sink.port})


# -- PostgreSQL (127.0.0.1:5432, trust auth): one fresh database per test session -------------

_TABLES = "contact, consent, purchase, suppression, campaign, delivery, signup_attempt, send_rate"


@pytest.fixture(scope="session")
def postgres_url(postgres_database: str | None) -> str:
    """The session's PostgreSQL database; skips the test, saying why, when it is down."""
    if postgres_database is None:
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    return postgres_database


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on the session's PostgreSQL database with the schema; emptied afterwards."""
    from sqlalchemy import text

    engine = make_engine(postgres_url)
    create_schema(engine)
    yield engine
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()
