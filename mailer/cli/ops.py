"""`mailer` commands for the long-running side and delivery: serve, schedule, bounces, DKIM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from mailer import output
from mailer.campaign import get_campaign
from mailer.cli_base import (
    app,
    campaign_app,
    open_engine,
    schedule_app,
    settings_from_options,
    utc_now,
)
from mailer.errors import InputError

__all__ = ["bounces_app", "dkim_app"]


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

    settings = settings_from_options()
    with open_engine(settings) as engine:
        entry = add_schedule(engine, settings, name, cron=cron, at=at)
    when = f"{entry.next_run:%Y-%m-%d %H:%M %Z}" if entry.next_run else "never"
    output.line(f'Scheduled "{name}": {entry.trigger}; next run {when}.')


@schedule_app.command("list")
def schedule_list() -> None:
    """Schedules and their next run times."""
    from mailer.scheduler import list_schedules

    settings = settings_from_options()
    with open_engine(settings):
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

    settings = settings_from_options()
    with open_engine(settings):
        remove_schedule(settings, name)
    output.line(f'Schedule of "{name}" removed.')


@app.command()
def serve() -> None:
    """Serve the web endpoints and run the scheduler, until Ctrl+C or SIGTERM."""
    import logging

    from double_optin.app import create_app
    from mailer.service import run_service

    settings = settings_from_options()
    settings.require_secret_keys()  # fail now, not on the first request
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with open_engine(settings) as engine:
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

    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)
    message = render_sample(settings, campaign, utc_now())
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

    settings = settings_from_options()
    with open_engine(settings) as engine:
        report = process_mailbox(engine, settings, now=utc_now(), maildir=maildir)
    output.line(f"Processed {sum(report.counts.values())} messages: {report.line()}.")


# -- privacy (issue 5): the person's rights, retention, consent proof -----------------------


@app.command()
def worker(
    campaign: Annotated[
        str | None, typer.Option(help="Send only this campaign (default: every running one).")
    ] = None,
    until_done: Annotated[
        bool,
        typer.Option(help="Exit once nothing is left to send, instead of waiting for more."),
    ] = False,
) -> None:
    """Send the queued deliveries of running campaigns, sharing the work and the rate with
    every other worker on any host. Stops cleanly on SIGTERM or Ctrl-C."""
    from mailer.worker import run_worker

    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign_id = get_campaign(engine, campaign).id if campaign else None

        async def work() -> dict[str, int]:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signal_number in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signal_number, stop.set)
            summary = await run_worker(
                engine, settings, campaign_id=campaign_id, until_done=until_done, stop=stop
            )
            return dict(summary.outcomes)

        outcomes = asyncio.run(work())
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())) or "nothing"
    output.line(f"Worker stopped: {counts}.")


@campaign_app.command("queue")
def campaign_queue(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Plan the campaign and leave the sending to running `mailer worker` processes."""
    from mailer.sending import queue_campaign

    settings = settings_from_options()
    with open_engine(settings) as engine:
        summary = queue_campaign(engine, settings, get_campaign(engine, name))
    output.plan_table(summary.plan, title=f"Audience of {name}")
    output.line(f'Campaign "{name}" is running: {summary.plan.allowed} deliveries for the workers.')
