"""`mailer contacts ...` and `mailer customers ...`: imports, all rows or none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mailer.cli import output
from mailer.cli.base import (
    contacts_app,
    customers_app,
    open_engine,
    settings_from_options,
    utc_now,
)
from mailer.store.importer import import_contacts, import_customers

__all__: list[str] = []  # commands register themselves on the app


def _import(kind: str, function: Callable[..., Any], file: Path) -> None:
    settings = settings_from_options()
    with open_engine(settings) as engine:
        with output.ImportProgress(f"importing {file.name}") as progress:
            result = function(engine, settings, file, now=utc_now(), on_progress=progress.update)
    output.line(
        f"{file}: {result.rows} rows imported ({kind}); {result.contacts_created} contacts new, "
        f"{result.contacts_updated} updated, {result.consent_events} consent events, "
        f"{result.purchases} purchases."
    )


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="CSV: email, personal fields, consent evidence.")],
) -> None:
    """Import contacts with their consent evidence; all rows or none."""
    _import("contacts", import_contacts, file)


@customers_app.command("import")
def customers_import(
    file: Annotated[Path, typer.Argument(help="CSV: email, category, purchased_at, ...")],
) -> None:
    """Import customers and their purchases; all rows or none."""
    _import("customers", import_customers, file)
