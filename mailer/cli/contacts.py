"""`mailer contacts ...`, `mailer customers ...` and `mailer suppressions ...`: imports, all rows
or none."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli import output
from mailer.cli.base import (
    app,
    contacts_app,
    customers_app,
    open_engine,
    settings_from_options,
    utc_now,
)
from mailer.store.importer import ImportResult, ImportSource, import_contacts, import_customers

__all__ = ["suppressions_app"]  # the other commands register themselves on the app

suppressions_app = typer.Typer(
    help="Addresses never to mail, kept as keyed hashes only.", no_args_is_help=True
)
app.add_typer(suppressions_app, name="suppressions")

MapOption = Annotated[
    str | None,
    typer.Option(
        "--map",
        help='Column mapping: "Source column=field,Other column=" (empty field: leave it out).',
    ),
]
DelimiterOption = Annotated[
    str | None,
    typer.Option("--delimiter", help='Column separator: ",", ";" or tab (default: detected).'),
]


def _report(file: Path, kind: str, result: ImportResult) -> None:
    output.line(
        f"{file}: {result.rows} rows imported ({kind}); {result.contacts_created} contacts new, "
        f"{result.contacts_updated} updated, {result.consent_events} consent events, "
        f"{result.purchases} purchases, {result.objections} objections recorded."
    )
    if result.ignored_columns:
        output.line(f"Columns not needed and left out: {', '.join(result.ignored_columns)}.")
    for reason, count in sorted(result.skipped.items()):
        output.line(f"{count} {'row' if count == 1 else 'rows'} left out: {reason}.")


def _import(kind: str, file: Path, run: Callable[..., ImportResult]) -> None:
    settings = settings_from_options()
    with open_engine(settings) as engine:
        with output.ImportProgress(f"importing {file.name}") as progress:
            result = run(engine, settings, file, now=utc_now(), on_progress=progress.update)
    _report(file, kind, result)


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="CSV: email, personal fields, consent evidence.")],
    file_format: Annotated[
        str, typer.Option("--format", help="generic, mailchimp (audience export) or laposta.")
    ] = "generic",
    list_name: Annotated[
        str | None, typer.Option("--list", help="The list every row signed up for.")
    ] = None,
    column_map: MapOption = None,
    delimiter: DelimiterOption = None,
) -> None:
    """Import contacts with their consent evidence; all rows or none.

    A member without a confirmation time is a pending signup: never mailed until confirmed,
    and no re-permission mail is sent (asking for consent by e-mail is itself marketing).
    """
    source = ImportSource(file_format, column_map, delimiter)
    _import("contacts", file, partial(import_contacts, source=source, list_name=list_name))


@customers_app.command("import")
def customers_import(
    file: Annotated[Path, typer.Argument(help="CSV: email, category, purchased_at, ...")],
    file_format: Annotated[
        str, typer.Option("--format", help="generic, woocommerce or shopify (order exports).")
    ] = "generic",
    column_map: MapOption = None,
    delimiter: DelimiterOption = None,
    optout_offered: Annotated[
        bool | None,
        typer.Option(
            "--optout-offered/--no-optout-offered",
            help="The shop offered an opt-out when it collected the addresses (for every row).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import customers and their purchases; all rows or none."""
    source = ImportSource(file_format, column_map, delimiter)
    run = partial(import_customers, source=source, optout_offered=optout_offered)
    _import("customers", file, run)


@suppressions_app.command("import")
def suppressions_import(
    file: Annotated[Path, typer.Argument(help="CSV with an email column (and suppressed_at).")],
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="unsubscribed, hard_bounce, complaint or objected (Mailchimp: from the export).",
        ),
    ] = None,
    list_name: Annotated[
        str | None, typer.Option("--list", help="Suppress for this list only (default: all).")
    ] = None,
    file_format: Annotated[
        str, typer.Option("--format", help="generic or mailchimp (unsubscribed/cleaned export).")
    ] = "generic",
    column_map: MapOption = None,
    delimiter: DelimiterOption = None,
) -> None:
    """Add suppressions (keyed hashes only); an import never lifts one. All rows or none."""
    from mailer.errors import InputError
    from mailer.store.models import SuppressionReason
    from mailer.store.suppression_import import IMPORTABLE_REASONS, import_suppressions

    if reason is not None and reason not in {str(r) for r in IMPORTABLE_REASONS}:
        raise InputError(f'--reason: "{reason}" is not one of: {", ".join(IMPORTABLE_REASONS)}.')
    settings = settings_from_options()
    with open_engine(settings) as engine:
        result = import_suppressions(
            engine, settings, file, now=utc_now(),
            reason=SuppressionReason(reason) if reason else None, list_name=list_name,
            source=ImportSource(file_format, column_map, delimiter),
        )  # fmt: skip
    scope = f'list "{result.scope}"' if result.scope else "all lists"
    output.line(
        f"{file}: {result.rows} rows; {result.added} suppressions added ({result.reason}, "
        f"{scope}), {result.already_suppressed} already suppressed. Only keyed hashes are kept."
    )
    if result.ignored_columns:
        output.line(f"Columns not needed and left out: {', '.join(result.ignored_columns)}.")
