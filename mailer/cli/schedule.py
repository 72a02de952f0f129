"""`mailer schedule ...`: scheduled campaign runs, carried out by `mailer serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from mailer.cli import output
from mailer.cli.base import (
    open_engine,
    schedule_app,
    settings_from_options,
)

__all__: list[str] = []  # commands register themselves on the app


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
    """Schedules: next run, and whether one is running, was missed, and how the last one went."""
    from mailer.scheduler import list_schedules

    settings = settings_from_options()
    with open_engine(settings) as engine:
        entries = list_schedules(engine, settings)
    if not entries:
        output.line("No schedules.")
    for entry in entries:
        if not entry.trigger:  # a one-off run that left the job store
            now = "running now" if entry.state == "running" else "no further runs"
            output.fields([entry.campaign, now, f"last: {entry.last}"])
            continue
        when = f"{entry.next_run:%Y-%m-%d %H:%M %Z}" if entry.next_run else "paused"
        parts = [entry.campaign, entry.trigger, f"next run {when}"]
        if entry.state == "running":
            parts.append("running now")
        if entry.state == "missed":
            parts.append(f"MISSED: {entry.last}")
        elif entry.last:
            parts.append(f"last: {entry.last}")
        output.fields(parts)


@schedule_app.command("remove")
def schedule_remove(name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Remove the schedule of campaign NAME."""
    from mailer.scheduler import remove_schedule

    settings = settings_from_options()
    with open_engine(settings) as engine:
        remove_schedule(engine, settings, name)
    output.line(f'Schedule of "{name}" removed.')
