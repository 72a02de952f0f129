"""`mailer campaign ...`: create, plan, send, queue, check and report a campaign."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from mailer.cli import output
from mailer.cli.base import (
    campaign_app,
    open_engine,
    settings_from_options,
    utc_now,
)
from mailer.store.campaign import create_campaign, get_campaign, iter_recipient_rows, report
from mailer.store.planning import plan_counts

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
    """Plan and send; resumable, never mails anyone twice. Exit 1 if any delivery failed."""
    from mailer.delivery.sending import run_campaign

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
