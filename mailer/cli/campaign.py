"""`mailer campaign ...`: create, plan, send, queue, check and report a campaign."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from mailer.cli import output
from mailer.cli.base import (
    campaign_app,
    open_engine,
    settings_from_options,
    utc_now,
)
from mailer.errors import MailerError
from mailer.store.campaign import create_campaign, get_campaign, iter_recipient_rows, report
from mailer.store.control import cancel_campaign, control_state, pause_campaign, resume_campaign
from mailer.store.models import Campaign
from mailer.store.planning import plan_counts

if TYPE_CHECKING:
    from mailer.delivery.sending import RunSummary

__all__: list[str] = []  # commands register themselves on the app


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Argument(help="Unique campaign name.")],
    list_name: Annotated[str, typer.Option("--list", help="The list it goes to.")],
    subject: Annotated[str, typer.Option(help="The subject line.")],
    template: Annotated[str, typer.Option(help="Folder under templates/campaigns/.")],
    category: Annotated[
        str | None, typer.Option(help="Product category, for existing customers.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Accept a category no purchase has yet.")
    ] = False,
) -> None:
    """Create a campaign (checks the list and renders the template once)."""
    from mailer.store.categories import check_campaign_category

    settings = settings_from_options()
    with open_engine(settings) as engine:
        if category and not force:
            check_campaign_category(engine, category)
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
    """Plan and send; resumable, never mails anyone twice. Exit 1 if any delivery failed, or
    the campaign was paused or cancelled; SIGTERM or Ctrl-C stop it cleanly (exit 1)."""
    from mailer.delivery.sending import CampaignStopped, run_campaign

    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)

        async def send() -> RunSummary:
            # What is in flight finishes and is recorded; what was claimed is given back.
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            signals = (signal.SIGTERM, signal.SIGINT)

            def stop_once() -> None:
                stop.set()
                for number in signals:  # a second Ctrl-C interrupts at once, as usual
                    loop.remove_signal_handler(number)

            for signal_number in signals:
                loop.add_signal_handler(signal_number, stop_once)
            return await run_campaign(
                engine,
                settings,
                campaign,
                workers=workers,
                config_file=settings.source,
                on_plan=progress.start,
                on_progress=progress.advance,
                stop=stop,
            )

        try:
            with output.SendProgress() as progress:
                summary = asyncio.run(send())
        except CampaignStopped:
            output.report_table(report(engine, campaign))
            raise
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


@campaign_app.command("check")
def campaign_check(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Render one message for a sample recipient and score it with SpamAssassin (local rules).

    Exit 1 when SpamAssassin would call it spam or is not installed.
    """
    from mailer.delivery.spamcheck import AIM, render_sample, score_message

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


@campaign_app.command("queue")
def campaign_queue(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Plan the campaign and leave the sending to running `mailer worker` processes."""
    from mailer.delivery.sending import queue_campaign

    settings = settings_from_options()
    with open_engine(settings) as engine:
        summary = queue_campaign(engine, settings, get_campaign(engine, name))
    output.plan_table(summary.plan, title=f"Audience of {name}")
    output.line(f'Campaign "{name}" is running: {summary.plan.allowed} deliveries for the workers.')


# -- control (issue 13): pause, resume, cancel, from any process on any host ---------------

ReasonOption = Annotated[
    str | None, typer.Option(help="Why, kept with the campaign (default: who and where).")
]


def _id(campaign: Campaign) -> int:
    assert campaign.id is not None  # read from the database
    return campaign.id


def _by_command(command: str, reason: str | None) -> str:
    done = {"pause": "paused", "cancel": "cancelled"}[command]
    return reason or f"{done} by `mailer campaign {command}` on {socket.gethostname()}"


@campaign_app.command("pause")
def campaign_pause(
    name: Annotated[str, typer.Argument(help="Campaign name.")], reason: ReasonOption = None
) -> None:
    """Stop sending NAME: no worker starts another of its messages; its rows stay queued."""
    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)
        paused = pause_campaign(engine, _id(campaign), _by_command("pause", reason), utc_now())
        state = control_state(engine, campaign)
    if not paused and state.status != "paused":
        raise MailerError(f'Campaign "{name}" is {state.status}: there is nothing to pause.')
    if not paused:
        output.line(f'Campaign "{name}" was already paused ({state.since}).')
        return
    output.line(
        f'Campaign "{name}" paused: no worker starts another of its messages (what is being '
        f"handed to the server now finishes); {state.unsent} deliveries stay queued. "
        f"`mailer campaign resume {name}` continues it."
    )


@campaign_app.command("resume")
def campaign_resume(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Make a paused campaign running again."""
    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)
        resumed = resume_campaign(engine, _id(campaign), utc_now())
        state = control_state(engine, campaign)
    if not resumed:
        raise MailerError(f'Campaign "{name}" is {state.status}, not paused: nothing to resume.')
    output.line(
        f'Campaign "{name}" is running again with {state.unsent} deliveries to send: running '
        f"`mailer worker`s pick it up, or run `mailer campaign send {name}`."
    )


@campaign_app.command("cancel")
def campaign_cancel(
    name: Annotated[str, typer.Argument(help="Campaign name.")], reason: ReasonOption = None
) -> None:
    """Stop NAME for good: every delivery not yet sent is marked cancelled."""
    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)
        cancelled = cancel_campaign(engine, _id(campaign), _by_command("cancel", reason), utc_now())
        state = control_state(engine, campaign)
    if cancelled is None and state.status != "cancelled":
        raise MailerError(f'Campaign "{name}" is {state.status}: there is nothing to cancel.')
    if cancelled is None:
        output.line(f'Campaign "{name}" was already cancelled ({state.since}).')
        return
    output.line(
        f'Campaign "{name}" cancelled: {cancelled} deliveries not yet sent are marked cancelled '
        "and will never be sent; messages being handed to the server now finish."
    )
