"""The `mailer` command: parses, calls one engine function, prints. Exit codes in one place.

The shared app and helpers are in cli_base; the operations and privacy commands in cli_ops and
cli_privacy, registered by importing them here.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mailer import cli_ops, cli_privacy, output
from mailer.campaign import create_campaign, get_campaign, iter_recipient_rows, report
from mailer.cli_base import (
    app,
    campaign_app,
    contacts_app,
    customers_app,
    open_engine,
    settings_from_options,
    utc_now,
)
from mailer.db import create_schema
from mailer.errors import InputError, MailerError
from mailer.importer import import_contacts, import_customers
from mailer.planning import plan_counts

__all__ = ["app", "exit_code_for", "main"]
_COMMAND_MODULES = (cli_ops, cli_privacy)  # importing them registers their commands


@app.command()
def init() -> None:
    """Create or upgrade the database. Safe to run again."""
    settings = settings_from_options()
    with open_engine(settings, require_schema=False) as engine:
        created = create_schema(engine)
        where = engine.url.render_as_string(hide_password=True)
    if created:
        output.line(f"Database {where}: created or upgraded {', '.join(sorted(created))}.")
    else:
        output.line(f"Database {where} is up to date.")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the captured messages (.eml).")] = Path(
        "demo-out"
    ),
) -> None:
    """The whole flow on an embedded default: temporary database, local SMTP sink, one run."""
    from mailer.demo import run_demo

    with output.SendProgress() as progress:
        result = run_demo(out, os.environ, on_plan=progress.start, on_progress=progress.advance)
    output.plan_table(result.plan, title="Audience of demo-newsletter")
    output.report_table(result.report)
    output.line(f"{len(result.eml_files)} messages written to {out}/ as .eml files.")


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


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Argument(help="Unique campaign name.")],
    list_name: Annotated[str, typer.Option("--list", help="The list it goes to.")],
    subject: Annotated[str, typer.Option(help="The subject line.")],
    template: Annotated[str, typer.Option(help="Folder under templates/campaigns/.")],
    category: Annotated[
        str | None, typer.Option(help="Product category, for existing customers.")
    ] = None,
) -> None:
    """Create a campaign (checks the list and renders the template once)."""
    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = create_campaign(
            engine,
            settings,
            name=name,
            list_name=list_name,
            subject=subject,
            template=template,
            category=category,
            now=utc_now(),
        )
    output.line(f'Campaign "{campaign.name}" created for list "{campaign.list_name}".')


@campaign_app.command("plan")
def campaign_plan(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Who would be mailed on which basis, who skipped and why. Sends nothing."""
    settings = settings_from_options()
    with open_engine(settings) as engine:
        summary = plan_counts(engine, settings, get_campaign(engine, name), utc_now())
    output.plan_table(summary, title=f"Audience of {name}")


@campaign_app.command("send")
def campaign_send(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    workers: Annotated[
        int,
        typer.Option(
            min=0, max=64, help="Send from this many worker processes (0: from this process)."
        ),
    ] = 0,
) -> None:
    """Plan and send; resumable, never mails anyone twice. Exit 1 if any delivery failed."""
    from mailer.sending import run_campaign

    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)
        with output.SendProgress() as progress:
            summary = asyncio.run(
                run_campaign(
                    engine,
                    settings,
                    campaign,
                    workers=workers,
                    config_file=settings.source,
                    on_plan=progress.start,
                    on_progress=progress.advance,
                )
            )
        final = report(engine, campaign)
    output.report_table(final)
    if summary.in_doubt:
        output.line(
            f"{summary.in_doubt} deliveries were in flight when an earlier run stopped; they are "
            "marked unknown and were not sent again (see `campaign report --json`)."
        )
    if final.by_status.get("failed"):
        raise typer.Exit(1)


@campaign_app.command("report")
def campaign_report(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON with one entry per recipient.")
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="CSV, one row per recipient: who, basis, when.")
    ] = False,
) -> None:
    """Counts by status, basis and skip reason; per recipient with --json or --csv."""
    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)
        if as_csv:
            columns = ("email", "status", "basis", "skip_reason", "attempts", "sent_at",
                       "message_id")  # fmt: skip
            output.csv_rows(columns, iter_recipient_rows(engine, campaign))
            return
        summary = report(engine, campaign)
        if not as_json:
            output.report_table(summary)
            return
        output.json_document(summary.as_dict(), "recipients", iter_recipient_rows(engine, campaign))


def exit_code_for(error: BaseException) -> int:
    """The one place that maps the error tree to exit codes (DESIGN.md, "Exit codes")."""
    return 2 if isinstance(error, InputError) else 1


def main(argv: list[str] | None = None) -> int:
    try:
        # Standalone mode: usage errors print themselves and exit 2, typer.Exit exits with its code.
        app(args=argv, prog_name="mailer")
    except MailerError as error:
        output.error(str(error))
        return exit_code_for(error)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
