"""What `schedule list` says about each schedule, read from the job store and the outcomes
`serve` records; on SQLite and PostgreSQL, with the time given instead of waited for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.errors import NotFoundError
from mailer.scheduler import add_schedule, list_schedules, remove_schedule
from mailer.store.schedules import RunOutcome, record_outcome
from tests.conftest import make_settings
from tests.factories import new_campaign

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


@pytest.fixture
def scheduled(engine: Engine, db_url: str) -> tuple[Engine, Settings, datetime]:
    settings = make_settings(db_url, scheduler={"misfire_grace_seconds": 600})
    new_campaign(engine, settings, "weekly", at=NOW)
    entry = add_schedule(engine, settings, "weekly", cron="0 9 * * MON", at=None)
    assert entry.next_run is not None
    return engine, settings, entry.next_run


def test_a_waiting_schedule_shows_its_next_run(
    scheduled: tuple[Engine, Settings, datetime],
) -> None:
    engine, settings, next_run = scheduled
    [entry] = list_schedules(engine, settings, now=next_run - timedelta(hours=1))
    assert (entry.campaign, entry.state, entry.next_run, entry.last) == (
        "weekly", "waiting", next_run, None
    )  # fmt: skip


def test_an_overdue_run_is_missed_and_says_whether_a_start_of_serve_still_runs_it(
    scheduled: tuple[Engine, Settings, datetime],
) -> None:
    engine, settings, next_run = scheduled
    [within] = list_schedules(engine, settings, now=next_run + timedelta(minutes=5))
    assert within.state == "missed"
    assert within.last is not None
    assert "it runs once when `mailer serve` starts, if that is within " in within.last
    [beyond] = list_schedules(engine, settings, now=next_run + timedelta(minutes=11))
    assert beyond.last is not None
    assert "later than scheduler.misfire_grace_seconds (600 s), so that run will be skipped" in (
        beyond.last
    )
    # A run a few seconds late is the serving scheduler's wake-up delay, not a miss.
    [late] = list_schedules(engine, settings, now=next_run + timedelta(seconds=3))
    assert late.state == "waiting"


def test_the_last_outcome_is_shown_and_a_new_schedule_starts_clean(
    scheduled: tuple[Engine, Settings, datetime],
) -> None:
    engine, settings, next_run = scheduled
    record_outcome(engine, "weekly", RunOutcome.STOPPED, at=NOW,
                   detail='Campaign "weekly" was paused')  # fmt: skip
    [entry] = list_schedules(engine, settings, now=next_run - timedelta(hours=1))
    assert entry.last == 'stopped 2026-11-01 13:00:00 CET: Campaign "weekly" was paused'
    add_schedule(engine, settings, "weekly", cron="0 10 * * MON", at=None)
    [entry] = list_schedules(engine, settings, now=next_run - timedelta(hours=1))
    assert entry.last is None and "hour='10'" in entry.trigger


def test_a_missed_one_off_run_stays_listed_until_removed(
    scheduled: tuple[Engine, Settings, datetime],
) -> None:
    engine, settings, _next_run = scheduled
    remove_schedule(engine, settings, "weekly")
    skipped = "7200 s late, more than scheduler.misfire_grace_seconds (600 s): not sent"
    record_outcome(
        engine, "weekly", RunOutcome.MISSED, at=NOW, due_at=NOW - timedelta(hours=2), detail=skipped
    )
    [entry] = list_schedules(engine, settings, now=NOW)
    assert (entry.state, entry.trigger) == ("finished", "")
    assert entry.last == (
        "missed 2026-11-01 13:00:00 CET (due 2026-11-01 11:00:00 CET): 7200 s late, more than "
        "scheduler.misfire_grace_seconds (600 s): not sent"
    )
    remove_schedule(engine, settings, "weekly")
    assert list_schedules(engine, settings, now=NOW) == []
    with pytest.raises(NotFoundError, match='There is no schedule for campaign "weekly".'):
        remove_schedule(engine, settings, "weekly")
