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
    as_csv: Annotated[
        bool, typer.Option("--csv", help="CSV, one row per recipient: who, basis, when.")
    ] = False,
) -> None:
    """Counts by status, basis and skip reason; per recipient with --json or --csv."""
    settings = _settings()
    with _engine(settings) as engine:
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


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    cron: Annotated[
        str | None, typer.Option(help='Cron expression in scheduler.timezone, e.g. "0 9 * * MON".')
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="One run at this ISO time, e.g. 2026-12-01T09:00:00.")
    ] = None,
) -> None:
    """Schedule campaign NAME (replaces an earlier schedule of it)."""
    from mailer.scheduler import add_schedule

    settings = _settings()
    with _engine(settings) as engine:
        entry = add_schedule(engine, settings, name, cron=cron, at=at)
    when = f"{entry.next_run:%Y-%m-%d %H:%M %Z}" if entry.next_run else "never"
    output.line(f'Scheduled "{name}": {entry.trigger}; next run {when}.')


@schedule_app.command("list")
def schedule_list() -> None:
    """Schedules and their next run times."""
    from mailer.scheduler import list_schedules

    settings = _settings()
    with _engine(settings):
        entries = list_schedules(settings)
    if not entries:
        output.line("No schedules.")
    for entry in entries:
        when = f"{entry.next_run:%Y-%m-%d %H:%M %Z}" if entry.next_run else "paused"
        output.line(f"{entry.campaign}\t{entry.trigger}\tnext run {when}")


@schedule_app.command("remove")
def schedule_remove(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Remove the schedule of campaign NAME."""
    from mailer.scheduler import remove_schedule

    settings = _settings()
    with _engine(settings):
        remove_schedule(settings, name)
    output.line(f'Schedule of "{name}" removed.')


@app.command()
def serve() -> None:
    """Serve the web endpoints and run the scheduler, until Ctrl+C or SIGTERM."""
    import logging

    from double_optin.app import create_app
    from mailer.service import run_service

    settings = _settings()
    settings.require_secret_keys()  # fail now, not on the first request
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with _engine(settings) as engine:
        web = settings.web
        output.line(f"Serving {web.base_url} on http://{web.host}:{web.port} (Ctrl+C stops).")
        asyncio.run(run_service(settings, create_app(settings, engine)))


# -- deliverability (issue 6): DKIM keys and a spam filter's verdict -------------------------

dkim_app = typer.Typer(help="DKIM signing keys.", no_args_is_help=True)
app.add_typer(dkim_app, name="dkim")


@dkim_app.command("keygen")
def dkim_keygen(
    selector: Annotated[str, typer.Option(help="DKIM selector, e.g. mail2026.")],
    domain: Annotated[str, typer.Option(help="Signing domain: your From domain or its parent.")],
    algorithm: Annotated[
        str, typer.Option(help="rsa (2048 bits, verified everywhere) or ed25519.")
    ] = "rsa",
    out: Annotated[Path, typer.Option(help="Folder for the key and the DNS record.")] = Path(
        "dkim"
    ),
) -> None:
    """Write a DKIM key pair and print the DNS TXT record to publish."""
    from mailer.dkim import generate_key_pair

    if algorithm not in ("rsa", "ed25519"):
        raise InputError(f'--algorithm "{algorithm}" must be rsa or ed25519')
    made = generate_key_pair(selector, domain, "rsa" if algorithm == "rsa" else "ed25519", out)
    output.line(f"Private key written to {made.private_key_file} (mode 600; keep it secret).")
    output.line(f"Publish this DNS TXT record (also in {made.dns_file}):\n")
    output.raw(made.zone_record() + "\n")
    output.line("Then add to the settings file:\n")
    output.raw(
        f'[dkim]\nselector = "{selector.lower()}"\ndomain = "{domain.lower().rstrip(".")}"\n'
        f'private_key_file = "{made.private_key_file}"\nalgorithm = "{made.algorithm}"'
    )


@campaign_app.command("check")
def campaign_check(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Render one message for a sample recipient and score it with SpamAssassin (local rules).

    Exit 1 when SpamAssassin would call it spam or is not installed.
    """
    from mailer.spamcheck import AIM, render_sample, score_message

    settings = _settings()
    with _engine(settings) as engine:
        campaign = get_campaign(engine, name)
    message = render_sample(settings, campaign, _now())
    verdict = score_message(message)
    output.line(
        f"SpamAssassin score of {name}: {verdict.score:.1f} (local tests only; spam at "
        f"{verdict.required:.1f}, our aim is below {AIM:.1f})."
    )
    output.rules_table(
        "Rules that fired", ((r.name, r.points, r.description) for r in verdict.rules)
    )
    if verdict.is_spam:
        raise typer.Exit(1)


bounces_app = typer.Typer(help="Bounces and mailto unsubscribes.", no_args_is_help=True)
app.add_typer(bounces_app, name="bounces")


@bounces_app.command("process")
def bounces_process(
    maildir: Annotated[
        Path | None, typer.Option(help="A Maildir folder (default: bounces.maildir or IMAP).")
    ] = None,
) -> None:
    """Read the bounce mailbox: suppress hard bounces, note soft ones, honour unsubscribes."""
    from mailer.bounces import process_mailbox

    settings = _settings()
    with _engine(settings) as engine:
        report = process_mailbox(engine, settings, now=_now(), maildir=maildir)
    output.line(f"Processed {sum(report.counts.values())} messages: {report.line()}.")


# -- privacy (issue 5): the person's rights, retention, consent proof -----------------------

privacy_app = typer.Typer(help="Export, erase, and the retention purge.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
consent_app = typer.Typer(help="Consent records, as proof.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
EmailArgument = Annotated[str, typer.Argument(help="The person's e-mail address.")]


@privacy_app.command("export")
def privacy_export(email: EmailArgument) -> None:
    """Everything stored about a person, as JSON on stdout. Exit 1 if the address is unknown."""
    import json

    from mailer.privacy import export_person

    settings = _settings()
    with _engine(settings) as engine:
        document = export_person(engine, settings, email)
    output.raw(json.dumps(document, ensure_ascii=False, indent=2))


@privacy_app.command("erase")
def privacy_erase(email: EmailArgument) -> None:
    """Erase a person from every table; keep only a keyed hash so they are never mailed again."""
    from mailer.privacy import erase_person

    settings = _settings()
    with _engine(settings) as engine:
        done = erase_person(engine, settings, email, now=_now())
    e = done.erased
    output.line(
        f"Erased {done.email}: the contact, {e.consents} consent events, {e.purchases} "
        f"purchases and {e.signup_attempts} signup counters; {e.deliveries} delivery records "
        "keep campaign, basis and status only. A keyed hash stays on the suppression list."
    )
    if not done.wal_truncated:
        output.line(_WAL_BUSY)


_WAL_BUSY = (
    "Warning: another process was reading the database, so its write-ahead log could not be "
    "truncated; old copies of the data may remain in the -wal file until it is. Run the "
    "command again when `mailer serve` is idle."
)


@privacy_app.command("purge")
def privacy_purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would be removed.")
    ] = False,
) -> None:
    """Apply retention (policy.retention_days, policy.delivery_retention_days)."""
    from mailer.privacy import purge

    settings = _settings()
    with _engine(settings) as engine:
        done = purge(engine, settings, now=_now(), dry_run=dry_run)
    for text in done.lines():
        output.line(text)
    for label, addresses in (("erase", done.ended), ("remove", done.unconfirmed)):
        for address in addresses:
            output.line(f"  would {label}: {address}")
    if not done.wal_truncated:
        output.line(_WAL_BUSY)


@consent_app.command("show")
def consent_show(email: EmailArgument) -> None:
    """The consent trail of a person: every event with its evidence, oldest first."""
    from mailer.privacy import consent_trail

    settings = _settings()
    with _engine(settings) as engine:
        trail = consent_trail(engine, settings, email)
    output.trail_table(
        f"Consent trail of {email.strip().lower()}, oldest first (times in UTC):",
        (
            (f"{e.at:%Y-%m-%d %H:%M:%S}", e.list_name or "all lists", e.event, e.origin,
             e.wording, e.source, e.ip or "", e.user_agent or "")
            for e in trail
        ),
    )  # fmt: skip


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
