"""`mailer` commands for privacy: export, erase, purge, and the consent trail as proof."""

from __future__ import annotations

from typing import Annotated

import typer

from mailer.cli import output
from mailer.cli.base import app, open_engine, settings_from_options, utc_now

__all__ = ["consent_app", "privacy_app"]


privacy_app = typer.Typer(help="Export, erase, and the retention purge.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
consent_app = typer.Typer(help="Consent records, as proof.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
EmailArgument = Annotated[str, typer.Argument(help="The person's e-mail address.")]


@privacy_app.command("export")
def privacy_export(email: EmailArgument) -> None:
    """Everything stored about a person, as JSON on stdout. Exit 1 if the address is unknown."""
    import json

    from mailer.privacy.person import export_person

    settings = settings_from_options()
    with open_engine(settings) as engine:
        document = export_person(engine, settings, email)
    output.json_text(json.dumps(document, ensure_ascii=False, indent=2))


@privacy_app.command("erase")
def privacy_erase(email: EmailArgument) -> None:
    """Erase a person from every table; keep only a keyed hash so they are never mailed again."""
    from mailer.privacy.person import erase_person

    settings = settings_from_options()
    with open_engine(settings) as engine:
        done = erase_person(engine, settings, email, now=utc_now())
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
    from mailer.privacy.person import purge

    settings = settings_from_options()
    with open_engine(settings) as engine:
        done = purge(engine, settings, now=utc_now(), dry_run=dry_run)
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
    from mailer.privacy.person import consent_trail
    from mailer.privacy.purchases import purchase_facts

    settings = settings_from_options()
    with open_engine(settings) as engine:
        trail = consent_trail(engine, settings, email)
        purchases = purchase_facts(engine, email)
    output.trail_table(
        f"Consent trail of {email.strip().lower()}, oldest first (times in UTC):",
        (
            (f"{e.at:%Y-%m-%d %H:%M:%S}", e.list_name or "all lists", e.event, e.origin,
             e.wording, e.source, e.ip or "", e.user_agent or "")
            for e in trail
        ),
    )  # fmt: skip
    if purchases:
        output.line("")
        output.line("Purchases (the existing-customer basis), oldest first (times in UTC):")
    for p in purchases:
        offered = "opt-out offered" if p.optout_offered else "opt-out NOT offered"
        objected = f"; objected {p.objected_at:%Y-%m-%d %H:%M:%S}" if p.objected_at else ""
        output.line(f"{p.at:%Y-%m-%d %H:%M:%S}  {p.category}  ({offered}{objected})")
