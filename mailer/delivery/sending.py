"""Running a campaign: plan it into the ledger, then have it sent by workers until it is done.

Each row is claimed by a worker and marked `sending` just before its message is handed to the
server; the reply is recorded in the same commit that starts the connection's next row. A
run that is killed therefore leaves at most one row in doubt per connection; the next run
marks those `unknown` instead of re-sending them, and sends everything still queued. The
unique (campaign, contact) ledger row makes a second run send nothing twice.

The workers are this process (`campaign send`), or N processes it starts (`--workers N`), or
`mailer worker` processes already running anywhere (`campaign queue`).

A paused or cancelled campaign (mailer.store.control) is not started; one paused or cancelled
while it runs ends the run with `CampaignStopped`, saying how to go on. So does a stop asked
for by the caller (SIGTERM or Ctrl-C of `campaign send`), after giving back what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select, update

from mailer.config import Settings
from mailer.delivery.worker import Clock, Connection, ServerUnreachable, run_worker, utc_now
from mailer.errors import MailerError
from mailer.store.control import CampaignStopped, control_state
from mailer.store.ledger import Ledger
from mailer.store.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from mailer.store.planning import PlanSummary, materialise
from mailer.store.runlock import RunLock

__all__ = [
    "CampaignStopped",
    "Clock",
    "Connection",
    "RunSummary",
    "ServerUnreachable",
    "queue_campaign",
    "run_campaign",
]

ProgressCallback = Callable[[str], None]

_delivery = Delivery.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]
_SETTLED = (
    DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED, DeliveryStatus.UNKNOWN,
)  # fmt: skip


@dataclass
class RunSummary:
    plan: PlanSummary
    outcomes: Counter[str] = field(default_factory=Counter)
    in_doubt: int = 0


def _set_status(
    engine: Engine, campaign: Campaign, status: CampaignStatus, *, unless: tuple[str, ...]
) -> bool:
    """Set the status unless it is one of `unless` (a pause or cancel is never overwritten)."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(_campaign)
            .where(_campaign.c.id == campaign.id, _campaign.c.status.notin_(unless))
            .values(status=status)
        ).rowcount
    return bool(changed)


_STOPPED = (CampaignStatus.PAUSED, CampaignStatus.CANCELLED, CampaignStatus.ARCHIVED)


def _refuse_stopped(engine: Engine, campaign: Campaign, *, during_run: bool = False) -> None:
    """Raise CampaignStopped for a paused or cancelled campaign, saying how to go on."""
    refusal = control_state(engine, campaign).refusal(during_run=during_run)
    if refusal is not None:
        raise refusal


def _refuse_archived(engine: Engine, campaign: Campaign) -> None:
    with engine.connect() as conn:
        status = conn.execute(
            select(_campaign.c.status).where(_campaign.c.id == campaign.id)
        ).scalar()
    if status == CampaignStatus.ARCHIVED:
        raise MailerError(
            f'Campaign "{campaign.name}" is archived: the retention purge removed the people '
            "from its ledger, so it can no longer tell who was mailed. Create a new campaign."
        )


def _prepare(
    engine: Engine, settings: Settings, campaign: Campaign, clock: Clock
) -> tuple[PlanSummary, int]:
    """Plan, give back what stopped runs left held, and mark the campaign running."""
    plan = materialise(engine, settings, campaign, clock())
    with Ledger.open(engine, settings, clock) as ledger:
        taken = ledger.take_over(campaign.id)
    if not _set_status(engine, campaign, CampaignStatus.RUNNING, unless=_STOPPED):
        _refuse_stopped(engine, campaign)  # paused or cancelled while it was being planned
    return plan, taken.in_doubt


def queue_campaign(
    engine: Engine, settings: Settings, campaign: Campaign, *, clock: Clock = utc_now
) -> RunSummary:
    """Plan the campaign and leave the sending to `mailer worker` processes."""
    _refuse_archived(engine, campaign)
    _refuse_stopped(engine, campaign)
    lock = RunLock(engine, campaign, clock=clock)
    lock.acquire()
    try:
        plan, in_doubt = _prepare(engine, settings, campaign, clock)
    finally:
        lock.release()
    return RunSummary(plan, Counter(), in_doubt)


async def run_campaign(
    engine: Engine,
    settings: Settings,
    campaign: Campaign,
    *,
    workers: int = 0,
    config_file: str | None = None,
    connect: Callable[[], Connection] | None = None,
    clock: Clock = utc_now,
    on_plan: Callable[[PlanSummary], None] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> RunSummary:
    """Plan the audience into the ledger, then send every queued row once.

    With `workers` = 0 this process sends; with N > 0 it starts N `mailer worker` processes
    (reading `config_file`) and follows their progress. Raises `CampaignBusy` when another
    run (this or another process or host) holds the campaign, `CampaignStopped` when it is
    paused or cancelled (before or during the run) or `stop` was set (what is in flight is
    recorded first; what was claimed is given back).
    """
    stop = stop or asyncio.Event()
    _refuse_archived(engine, campaign)
    _refuse_stopped(engine, campaign)
    lock = RunLock(engine, campaign, clock=clock)
    lock.acquire()
    keep_alive = asyncio.create_task(lock.keep_alive())
    try:
        plan, in_doubt = _prepare(engine, settings, campaign, clock)
        if on_plan is not None:
            on_plan(plan)
        if workers:
            outcomes = await _run_processes(
                engine, settings, campaign, workers, config_file, on_progress, stop
            )
        else:
            summary = await run_worker(
                engine,
                settings,
                campaign_id=campaign.id,
                until_done=True,
                connect=connect,
                clock=clock,
                on_progress=on_progress,
                stop=stop,
            )
            outcomes, in_doubt = summary.outcomes, in_doubt + summary.taken_over.in_doubt
        _refuse_stopped(engine, campaign, during_run=True)
        left = control_state(engine, campaign).unsent if stop.is_set() else 0
        if left:  # stopped with work left (a stop after the last message changes nothing)
            raise CampaignStopped(
                f'Sending of "{campaign.name}" was stopped; what this run had claimed was given '
                f"back, {left} deliveries stay queued. To continue: `mailer campaign send "
                f"{campaign.name}` (nobody is mailed twice)."
            )
        _set_status(engine, campaign, CampaignStatus.DONE, unless=_STOPPED)
    finally:
        keep_alive.cancel()
        lock.release()
    return RunSummary(plan, outcomes, in_doubt)


def _settled(engine: Engine, campaign: Campaign, since: Counter[str]) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(_delivery.c.status, func.count())
            .where(_delivery.c.campaign_id == campaign.id, _delivery.c.status.in_(_SETTLED))
            .group_by(_delivery.c.status)
        )
        now = Counter({status: int(count) for status, count in rows})
    return now - since


async def _run_processes(
    engine: Engine,
    settings: Settings,
    campaign: Campaign,
    count: int,
    config_file: str | None,
    on_progress: ProgressCallback | None,
    stop: asyncio.Event,
) -> Counter[str]:
    """Start `count` worker processes on this campaign; report progress from the ledger."""
    if config_file is None:
        raise MailerError("--workers needs the settings in a file (--config or $MAILER_CONFIG).")
    command = [sys.executable, "-m", "mailer", "--config", config_file, "worker",
               "--campaign", campaign.name, "--until-done"]  # fmt: skip
    before = _settled(engine, campaign, Counter())
    processes = [
        await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, env=dict(os.environ)
        )
        for _ in range(count)
    ]
    reported: Counter[str] = Counter()
    waiting = [asyncio.ensure_future(p.wait()) for p in processes]
    while True:
        done, _pending = await asyncio.wait(waiting, timeout=0.5)
        if stop.is_set():
            for process in processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                        process.terminate()  # `mailer worker` stops cleanly on SIGTERM
        settled = _settled(engine, campaign, before)
        if on_progress is not None:
            for status, n in (settled - reported).items():
                for _ in range(n):
                    on_progress(status)
        reported = settled
        if len(done) == len(waiting):
            break
    failed = [p.returncode for p in processes if p.returncode != 0]
    with Ledger.open(engine, settings, utc_now) as ledger:
        ledger.take_over(campaign.id)
        left = ledger.pending(campaign.id)
        if stop.is_set() or not ledger.is_running(campaign.id):
            return reported  # the caller says why the run ended
    if failed or left:
        raise MailerError(
            f"{len(failed)} of {count} worker processes failed (exit codes "
            f"{', '.join(map(str, failed)) or 'none'}); deliveries not yet sent stay queued: "
            "run the campaign again."
        )
    return reported
