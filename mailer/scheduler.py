"""Scheduled campaign runs: APScheduler's asyncio scheduler with its job store in our database.

A schedule is a job whose id is `campaign:NAME`. Jobs survive a restart (SQLAlchemy job store
on `database.url`). A run missed while the service was down runs once at start if it is within
`scheduler.misfire_grace_seconds` (coalesce: several missed runs become one), never twice; the
campaign's run lock (mailer.store.runlock) keeps a second process from starting it at the same time.

`mailer schedule add/remove` write the job store from another process. APScheduler 3 keeps no
copy of stored jobs, but it only looks at the store when it wakes, and it sleeps until the next
run time it knows of (the nightly purge): so `serve` wakes it every `scheduler.poll_seconds`
(`follow_job_store`), and a new, changed or removed schedule takes effect within that time.
What came of each run (ran, missed beyond the grace, busy, failed) is kept in
mailer.store.schedules for `schedule list`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.errors import InputError, NotFoundError
from mailer.store.campaign import get_campaign
from mailer.store.db import make_engine
from mailer.store.models import Campaign
from mailer.store.schedules import RunOutcome, forget_outcome, outcomes, record_outcome

__all__ = [
    "ScheduleEntry",
    "add_schedule",
    "follow_job_store",
    "list_schedules",
    "parse_trigger",
    "remove_schedule",
    "run_retention_purge",
    "run_scheduled_campaign",
    "start_scheduler",
]

log = logging.getLogger("mailer.scheduler")
JOB_TABLE = "apscheduler_jobs"
_PREFIX = "campaign:"
_campaign = Campaign.__table__  # type: ignore[attr-defined]
# The settings of the serving process; scheduled jobs are stored by name, not with settings.
_service: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    campaign: str
    trigger: str  # "" when the schedule has no further runs (a missed one-off run)
    next_run: datetime | None
    # waiting (for next_run), running, missed (next_run passed while no `serve` ran), or
    # finished (no further runs; `last` says how it ended)
    state: str = "waiting"
    last: str | None = None  # a sentence: what came of the last run


def parse_trigger(cron: str | None, at: str | None, timezone: str) -> BaseTrigger:
    """A cron expression (5 fields, local time) or one ISO time; errors name the option."""
    if (cron is None) == (at is None):
        raise InputError("give exactly one of --cron and --at")
    zone = ZoneInfo(timezone)
    if cron is not None:
        try:
            return CronTrigger.from_crontab(cron, timezone=zone)
        except ValueError as exc:
            raise InputError(
                f'--cron "{cron}" is not a cron expression like "0 9 * * MON": {exc}'
            ) from exc
    assert at is not None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError as exc:
        raise InputError(f'--at "{at}" is not a time like 2026-12-01T09:00:00+01:00') from exc
    return DateTrigger(moment if moment.tzinfo else moment.replace(tzinfo=zone))


def _job_defaults(settings: Settings) -> dict[str, Any]:
    return {
        "coalesce": True,
        "max_instances": 1,
        "misfire_grace_time": int(settings.scheduler.misfire_grace_seconds),
    }


def _store(settings: Settings) -> SQLAlchemyJobStore:
    return SQLAlchemyJobStore(url=settings.database.url, tablename=JOB_TABLE)


@contextmanager
def _job_store(settings: Settings) -> Iterator[tuple[SQLAlchemyJobStore, BaseScheduler]]:
    """The job store alone, for the command line.

    A started scheduler, even a paused one, processes due jobs when it shuts down; editing the
    store directly means `schedule list` can never run or drop a job behind the service's back.
    """
    scheduler = BackgroundScheduler(
        job_defaults=_job_defaults(settings), timezone=ZoneInfo(settings.scheduler.timezone)
    )  # never started: it only gives the jobs their defaults and time zone
    store = _store(settings)
    store.start(scheduler, "default")
    try:
        yield store, scheduler
    finally:
        store.shutdown()


def add_schedule(
    engine: Engine, settings: Settings, name: str, *, cron: str | None, at: str | None
) -> ScheduleEntry:
    get_campaign(engine, name)  # the campaign must exist
    trigger = parse_trigger(cron, at, settings.scheduler.timezone)
    now = datetime.now(ZoneInfo(settings.scheduler.timezone))
    next_run = trigger.get_next_fire_time(None, now)
    grace = settings.scheduler.misfire_grace_seconds
    if at is not None and next_run is not None and next_run < now - timedelta(seconds=grace):
        # A time just past runs at once, as a missed run would; one past the grace would only
        # ever be skipped.
        raise InputError(
            f'--at "{at}" is more than scheduler.misfire_grace_seconds ({grace:.0f} s) in the '
            f"past (it is now {now:%Y-%m-%d %H:%M:%S %Z}): it would never run"
        )
    with _job_store(settings) as (store, scheduler):
        job = Job(
            scheduler,
            id=_PREFIX + name,
            func="mailer.scheduler:run_scheduled_campaign",
            args=[name],
            kwargs={},
            name=name,
            trigger=trigger,
            executor="default",
            next_run_time=next_run,
            **_job_defaults(settings),
        )
        try:
            store.add_job(job)
        except ConflictingIdError:
            store.update_job(job)
    forget_outcome(engine, name)
    return ScheduleEntry(name, str(trigger), next_run)


def list_schedules(
    engine: Engine, settings: Settings, now: datetime | None = None
) -> list[ScheduleEntry]:
    """Every schedule with its state; and one-off runs that were missed, until removed."""
    now = now or datetime.now(UTC)
    with _job_store(settings) as (store, _scheduler):
        jobs = [job for job in store.get_all_jobs() if job.id.startswith(_PREFIX)]
    last = outcomes(engine)
    with engine.connect() as conn:
        sending = set(
            conn.execute(
                select(_campaign.c.name).where(_campaign.c.run_owner.is_not(None))
            ).scalars()
        )
    grace = timedelta(seconds=settings.scheduler.misfire_grace_seconds)
    # A run is "missed" once it is overdue by more than a serving scheduler's wake-up delay.
    overdue = timedelta(seconds=settings.scheduler.poll_seconds * 2 + 5)
    entries = []
    for job in jobs:
        outcome = last.get(job.name)
        if job.name in sending:
            state = "running"
        elif job.next_run_time is not None and job.next_run_time < now - overdue:
            state = "missed"
        else:
            state = "waiting"
        said = _said(outcome, settings) if outcome is not None else None
        if state == "missed":
            late = now - job.next_run_time
            said = (
                f"was due {_local(job.next_run_time, settings)} and `mailer serve` did not run "
                + (
                    "it; it runs once when `mailer serve` starts, if that is within "
                    f"scheduler.misfire_grace_seconds ({grace.total_seconds():.0f} s) of that time"
                    if late <= grace
                    else "it; it is later than scheduler.misfire_grace_seconds "
                    f"({grace.total_seconds():.0f} s), so that run will be skipped"
                )
            )
        entries.append(ScheduleEntry(job.name, str(job.trigger), job.next_run_time, state, said))
    listed = {job.name for job in jobs}
    for name, outcome in last.items():
        # A one-off run leaves the job store when it starts: still say that it runs or was missed.
        if name in listed:
            continue
        if outcome.outcome == RunOutcome.RUNNING and name in sending:
            entries.append(ScheduleEntry(name, "", None, "running", _said(outcome, settings)))
        elif outcome.outcome == RunOutcome.MISSED:
            entries.append(ScheduleEntry(name, "", None, "finished", _said(outcome, settings)))
    return sorted(entries, key=lambda e: e.campaign)


def _local(moment: datetime, settings: Settings) -> str:
    return f"{moment.astimezone(ZoneInfo(settings.scheduler.timezone)):%Y-%m-%d %H:%M:%S %Z}"


def _said(outcome: Any, settings: Settings) -> str:
    due = f" (due {_local(outcome.due_at, settings)})" if outcome.due_at else ""
    detail = f": {outcome.detail}" if outcome.detail else ""
    verb = "running since" if outcome.outcome == RunOutcome.RUNNING else outcome.outcome
    return f"{verb} {_local(outcome.at, settings)}{due}{detail}"


def remove_schedule(engine: Engine, settings: Settings, name: str) -> None:
    with _job_store(settings) as (store, _scheduler):
        try:
            store.remove_job(_PREFIX + name)
        except JobLookupError:
            if name not in outcomes(engine):
                raise NotFoundError(f'There is no schedule for campaign "{name}".') from None
    forget_outcome(engine, name)


async def run_scheduled_campaign(name: str) -> None:
    """The job: send campaign NAME with the serving process's settings."""
    from mailer.delivery.sending import CampaignStopped, run_campaign
    from mailer.store.runlock import CampaignBusy

    settings: Settings = _service["settings"]
    engine = make_engine(settings.database.url)
    started = datetime.now(UTC)
    try:
        record_outcome(engine, name, RunOutcome.RUNNING, at=started)
        summary = await run_campaign(engine, settings, get_campaign(engine, name))
        counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.outcomes.items()))
        record_outcome(engine, name, RunOutcome.RAN, at=datetime.now(UTC),
                       detail=f"started {_local(started, settings)}; "
                       + (counts or "nothing left to send"))  # fmt: skip
        log.info("scheduled run of %s: %s", name, dict(summary.outcomes))
    except CampaignBusy as busy:
        record_outcome(engine, name, RunOutcome.BUSY, at=started, detail=str(busy))
        log.warning("%s", busy)
    except CampaignStopped as stopped:
        record_outcome(engine, name, RunOutcome.STOPPED, at=datetime.now(UTC), detail=str(stopped))
        log.warning("%s", stopped)
    except Exception as failed:
        record_outcome(engine, name, RunOutcome.FAILED, at=datetime.now(UTC), detail=str(failed))
        raise
    finally:
        engine.dispose()


def _on_missed(event: JobExecutionEvent) -> None:
    """Say that a run was skipped: in the log and in the outcome `schedule list` shows."""
    if not event.job_id.startswith(_PREFIX):
        return
    settings: Settings = _service["settings"]
    name = event.job_id.removeprefix(_PREFIX)
    now = datetime.now(UTC)
    late = now - event.scheduled_run_time
    detail = (
        f"{late.total_seconds():.0f} s late, more than scheduler.misfire_grace_seconds "
        f"({settings.scheduler.misfire_grace_seconds:.0f} s): not sent"
    )
    log.warning('scheduled run of "%s" due %s skipped: %s', name, event.scheduled_run_time, detail)
    engine = make_engine(settings.database.url)
    try:
        record_outcome(engine, name, RunOutcome.MISSED, at=now,
                       due_at=event.scheduled_run_time, detail=detail)  # fmt: skip
    finally:
        engine.dispose()


async def follow_job_store(scheduler: AsyncIOScheduler, seconds: float) -> None:
    """Wake the scheduler every `seconds`, so it reads the job store again (module docstring)."""
    while True:
        await asyncio.sleep(seconds)
        scheduler.wakeup()


def start_scheduler(settings: Settings) -> AsyncIOScheduler:
    """Start the asyncio scheduler in the running loop (for `mailer serve`)."""
    _service["settings"] = settings
    scheduler = AsyncIOScheduler(
        jobstores={"default": _store(settings), "memory": MemoryJobStore()},
        job_defaults=_job_defaults(settings),
        timezone=ZoneInfo(settings.scheduler.timezone),
    )
    bounces = settings.bounces
    if bounces.interval_minutes and (bounces.maildir or bounces.imap_host):
        # A plain (not stored) job: it follows the settings file, not an earlier configuration.
        scheduler.add_job(
            process_bounces,
            "interval",
            minutes=bounces.interval_minutes,
            id="bounces",
            jobstore="memory",
            replace_existing=True,
        )
    # Retention (DESIGN rule 6) every night, at a quiet hour in scheduler.timezone; a missed
    # night runs at the next start within the misfire grace, and running it twice is harmless.
    scheduler.add_job(
        run_retention_purge,
        "cron",
        hour=3,
        minute=30,
        id="retention",
        jobstore="memory",
        replace_existing=True,
    )
    scheduler.add_listener(_on_missed, EVENT_JOB_MISSED)
    scheduler.start()
    return scheduler


async def run_retention_purge() -> None:
    """The daily job: `mailer privacy purge`. Logs counts only, never addresses."""
    import asyncio

    from mailer.privacy.person import purge

    settings: Settings = _service["settings"]
    engine = make_engine(settings.database.url)
    try:
        report = await asyncio.to_thread(
            purge, engine, settings, now=datetime.now(ZoneInfo("UTC")), dry_run=False
        )
        log.info("retention purge: %s", " ".join(report.lines()))
    finally:
        engine.dispose()


async def process_bounces() -> None:
    """The periodic job: the bounce mailbox, as `mailer bounces process` does it."""
    import asyncio

    from mailer.delivery.bounces import process_mailbox

    settings: Settings = _service["settings"]
    engine = make_engine(settings.database.url)
    try:
        report = await asyncio.to_thread(
            process_mailbox, engine, settings, now=datetime.now(ZoneInfo("UTC"))
        )
        log.info("bounce mailbox: %s", report.line())
    finally:
        engine.dispose()
