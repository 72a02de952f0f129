"""What every `mailer` command shares: the Typer app and its groups, settings, the database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from mailer.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from mailer.errors import MailerError
from mailer.store.db import make_engine, schema_gaps

__all__ = [
    "app",
    "campaign_app",
    "contacts_app",
    "customers_app",
    "open_engine",
    "schedule_app",
    "settings_from_options",
    "utc_now",
]

app = typer.Typer(
    help="A campaign mailer that only mails people it may mail (AVG/GDPR, Telecommunicatiewet).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
contacts_app = typer.Typer(help="Contacts and their consent evidence.", no_args_is_help=True)
customers_app = typer.Typer(help="Customers and their purchases.", no_args_is_help=True)
campaign_app = typer.Typer(help="Create, plan, send and report campaigns.", no_args_is_help=True)
app.add_typer(contacts_app, name="contacts")
app.add_typer(customers_app, name="customers")
app.add_typer(campaign_app, name="campaign")
schedule_app = typer.Typer(
    help="Scheduled campaign runs (run by `mailer serve`).", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"Settings file (default: $MAILER_CONFIG or ./{DEFAULT_CONFIG_PATH}).",
        show_default=False,
    ),
]
_state: dict[str, Path | None] = {"config": None}


@app.callback()
def _root(config: ConfigOption = None) -> None:
    _state["config"] = config


def settings_from_options() -> Settings:
    """The settings file named by --config, $MAILER_CONFIG or ./mailer.toml."""
    path = _state["config"] or Path(os.environ.get("MAILER_CONFIG", DEFAULT_CONFIG_PATH))
    return load_settings(path)


@contextmanager
def open_engine(settings: Settings, *, require_schema: bool = True) -> Iterator[Engine]:
    engine = make_engine(settings.database.url, source=settings.source)
    _require_hash_keys(engine, settings)
    try:
        if require_schema:
            _check_schema(engine)
        yield engine
    except SQLAlchemyError as exc:
        raise MailerError(f"The database failed: {exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()


def _check_schema(engine: Engine) -> None:
    where = engine.url.render_as_string(hide_password=True)
    gaps = schema_gaps(engine)
    if "campaign" in gaps:
        raise MailerError(f"The database {where} has no tables yet. Run `mailer init` first.")
    if gaps:
        raise MailerError(
            f"The database {where} was made by an older version (it lacks {', '.join(gaps)}). "
            "Run `mailer init` to upgrade it."
        )


def utc_now() -> datetime:
    return datetime.now(UTC)


def _require_hash_keys(engine: Engine, settings: Settings) -> None:
    """Every command refuses to run without a key that hashed stored suppressions: without it
    they would silently stop matching (issue 14, row 1). Disposes `engine` when it refuses."""
    from mailer.store.suppression import check_hash_keys

    if not settings.secret_keys:
        return  # a command that signs nothing (it fails on its own when it needs a key)
    try:
        with engine.begin() as conn:
            check_hash_keys(conn, settings.require_hash_keys(), utc_now())
    except SQLAlchemyError as exc:
        engine.dispose()
        raise MailerError(f"The database failed: {exc.__class__.__name__}: {exc}") from exc
    except BaseException:
        engine.dispose()
        raise
