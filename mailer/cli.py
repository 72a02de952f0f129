"""The `mailer` command: parses, calls one engine function, prints. Exit codes in one place."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from mailer import output
from mailer.campaign import create_campaign, get_campaign, iter_recipient_rows, report
from mailer.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from mailer.db import create_schema, make_engine
from mailer.errors import InputError, MailerError
from mailer.importer import import_contacts, import_customers
from mailer.planning import plan_counts

__all__ = ["app", "exit_code_for", "main"]

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


def _settings() -> Settings:
    path = _state["config"] or Path(os.environ.get("MAILER_CONFIG", DEFAULT_CONFIG_PATH))
    return load_settings(path)


@contextmanager
def _engine(settings: Settings, *, require_schema: bool = True) -> Iterator[Engine]:
    engine = make_engine(settings.database.url, source=settings.source)
    try:
        if require_schema and not inspect(engine).has_table("campaign"):
            raise MailerError(
                f"The database {engine.url.render_as_string(hide_password=True)} has no tables "
                "yet. Run `mailer init` first."
            )
        yield engine
    except SQLAlchemyError as exc:
        raise MailerError(f"The database failed: {exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


@app.command()
def init() -> None:
    """Create or upgrade the database. Safe to run again."""
    settings = _settings()
    with _engine(settings, require_schema=False) as engine:
        created = create_schema(engine)
        where = engine.url.render_as_string(hide_password=True)
    if created:
        output.line(f"Database {where}: created tables {', '.join(sorted(created))}.")
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
    settings = _settings()
    with _engine(settings) as engine:
        result = function(engine, settings, file, now=_now())
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
    settings = _settings()
    with _engine(settings) as engine:
        campaign = create_campaign(
            engine,
            settings,
            name=name,
            list_name=list_name,
            subject=subject,
            template=template,
            category=category,
            now=_now(),
        )
    output.line(f'Campaign "{campaign.name}" created for list "{campaign.list_name}".')


@campaign_app.command("plan")
def campaign_plan(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Who would be mailed on which basis, who skipped and why. Sends nothing."""
    settings = _settings()
    with _engine(settings) as engine:
        summary = plan_counts(engine, settings, get_campaign(engine, name), _now())
    output.plan_table(summary, title=f"Audience of {name}")


@campaign_app.command("send")
def campaign_send(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Plan and send; resumable, never mails anyone twice. Exit 1 if any delivery failed."""
    from mailer.sending import run_campaign

    settings = _settings()
    with _engine(settings) as engine:
        campaign = get_campaign(engine, name)
        with output.SendProgress() as progress:
            summary = asyncio.run(
                run_campaign(
                    engine,
                    settings,
                    campaign,
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
) -> None:
    """Counts by status, basis and skip reason; per recipient with --json."""
    settings = _settings()
    with _engine(settings) as engine:
        campaign = get_campaign(engine, name)
        summary = report(engine, campaign)
        if not as_json:
            output.report_table(summary)
            return
        output.json_document(summary.as_dict(), "recipients", iter_recipient_rows(engine, campaign))


@app.command()
def serve() -> None:
    """Serve the web endpoints (signup, confirm, unsubscribe) on web.host:web.port."""
    import uvicorn

    from double_optin.app import create_app

    settings = _settings()
    settings.require_secret_keys()  # fail now, not on the first request
    with _engine(settings) as engine:
        web = settings.web
        output.line(f"Serving {web.base_url} on http://{web.host}:{web.port} (Ctrl+C stops).")
        # proxy_headers: behind a reverse proxy on loopback, the client IP (stored as consent
        # evidence and rate-limited) comes from X-Forwarded-For; uvicorn trusts it from
        # 127.0.0.1 only (--forwarded-allow-ips / FORWARDED_ALLOW_IPS to widen).
        uvicorn.run(
            create_app(settings, engine),
            host=web.host,
            port=web.port,
            proxy_headers=True,
            server_header=False,
            # The access log would record every unsubscribe token and IP address in plain text.
            access_log=False,
            log_level="info",
        )


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
