"""What came of scheduled runs: one row per campaign, written by `mailer serve`, read by any
process (`mailer schedule list`). The job store (APScheduler's table) holds only what is due."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, delete, select

from mailer.store.models import ScheduleOutcome

__all__ = ["RunOutcome", "forget_outcome", "outcomes", "record_outcome"]

_outcome = ScheduleOutcome.__table__  # type: ignore[attr-defined]


class RunOutcome(StrEnum):
    RUNNING = "running"
    RAN = "ran"
    # Due while nothing ran it, and found later than scheduler.misfire_grace_seconds: skipped.
    MISSED = "missed"
    BUSY = "busy"  # another run held the campaign
    STOPPED = "stopped"  # the campaign is (or was, during the run) paused or cancelled
    FAILED = "failed"


def record_outcome(
    engine: Engine,
    campaign: str,
    outcome: RunOutcome,
    *,
    at: datetime,
    due_at: datetime | None = None,
    detail: str | None = None,
) -> None:
    values = {"outcome": outcome, "due_at": due_at, "at": at, "detail": (detail or None)}
    if detail:
        values["detail"] = detail[:300]
    with engine.begin() as conn:
        changed = conn.execute(
            _outcome.update().where(_outcome.c.campaign == campaign).values(**values)
        ).rowcount
        if not changed:
            conn.execute(_outcome.insert().values(campaign=campaign, **values))


def forget_outcome(engine: Engine, campaign: str) -> None:
    """A schedule added again or removed starts with a clean slate."""
    with engine.begin() as conn:
        conn.execute(delete(_outcome).where(_outcome.c.campaign == campaign))


def outcomes(engine: Engine) -> dict[str, ScheduleOutcome]:
    with engine.connect() as conn:
        rows = conn.execute(select(_outcome)).all()
    return {row.campaign: ScheduleOutcome.model_validate(row._mapping) for row in rows}
