"""Scheduled campaign runs: APScheduler's asyncio scheduler with its job store in our database.

A schedule is a job whose id is `campaign:NAME`. Jobs survive a restart (SQLAlchemy job store
on `database.url`). A run missed while the service was down runs once at start if it is within
`scheduler.misfire_grace_seconds` (coalesce: several missed runs become one), never twice; the
campaign's run lock (mailer.store.runlock) keeps a second process from starting it at the same time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

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
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.errors import InputError, NotFoundError
from mailer.store.campaign import get_campaign
from mailer.store.db import make_engine

__all__ = [
    "ScheduleEntry",
    "add_schedule",
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
# The settings of the serving process; scheduled jobs are stored by name, not with settings.
_service: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    campaign: str
    trigger: str
    next_run: datetime | None


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
    return ScheduleEntry(name, str(trigger), next_run)


def list_schedules(settings: Settings) -> list[ScheduleEntry]:
    with _job_store(settings) as (store, _scheduler):
        jobs = store.get_all_jobs()
    return sorted(
        (
            ScheduleEntry(job.name, str(job.trigger), job.next_run_time)
            for job in jobs
            if job.id.startswith(_PREFIX)
        ),
        key=lambda e: e.campaign,
    )


def remove_schedule(settings: Settings, name: str) -> None:
    with _job_store(settings) as (store, _scheduler):
        try:
            store.remove_job(_PREFIX + name)
        except JobLookupError:
            raise NotFoundError(f'There is no schedule for campaign "{name}".') from None


async def run_scheduled_campaign(name: str) -> None:
    """The job: send campaign NAME with the serving process's settings."""
    from mailer.delivery.sending import run_campaign
    from mailer.store.runlock import CampaignBusy

    settings: Settings = _service["settings"]
    engine = make_engine(settings.database.url)
    try:
        summary = await run_campaign(engine, settings, get_campaign(engine, name))
        log.info("scheduled run of %s: %s", name, dict(summary.outcomes))
    except CampaignBusy as busy:
        log.warning("%s", busy)
    finally:
        engine.dispose()


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
