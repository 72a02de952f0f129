"""Running a campaign: claim a ledger row, re-check suppression, render, send, record.

Each row is claimed (status `sending`) in its own short transaction just before its message is
handed to the server, and recorded right after the reply. A run that is killed therefore leaves
at most one row in doubt per connection; the next run marks those `unknown` instead of
re-sending them, and sends everything still queued. The unique (campaign, contact) ledger row
makes a second run send nothing twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine, select, update

from mailer.breaker import Breaker
from mailer.campaign import content_of
from mailer.config import Settings
from mailer.errors import InputError, MailerError, TransportError
from mailer.ledger import DueDelivery, Ledger
from mailer.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from mailer.planning import PlanSummary, materialise
from mailer.render import MessageFactory, make_environment
from mailer.runlock import RunLock
from mailer.throttle import Throttle, backoff_delay
from mailer.tokens import TokenSigner, address_hashes
from mailer.transport import Outcome, Reply, SmtpConnection, classify

__all__ = [
    "Clock",
    "Connection",
    "RunSummary",
    "ServerUnreachable",
    "run_campaign",
]

Clock = Callable[[], datetime]
ProgressCallback = Callable[[str], None]

_delivery = Delivery.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]
_PAGE = 500


class ServerUnreachable(TransportError):
    """The server stayed down for longer than `throttle.max_pause_seconds`."""


class Connection(Protocol):
    async def send(self, sender: str, recipient: str, message: bytes) -> Reply: ...
    async def probe(self) -> bool: ...
    async def close(self) -> None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _monotonic() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class RunSummary:
    plan: PlanSummary
    outcomes: Counter[str] = field(default_factory=Counter)
    in_doubt: int = 0


class _Run:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        campaign: Campaign,
        clock: Clock,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.campaign = campaign
        self.clock = clock
        self.on_progress = on_progress
        self.keys = settings.require_secret_keys()
        self.factory = MessageFactory(
            make_environment(settings),
            settings,
            content_of(campaign),
            TokenSigner(self.keys).unsubscribe_token,
        )
        t = settings.throttle
        self.throttle = Throttle(t.messages_per_second, t.per_domain_per_minute)
        self.outcomes: Counter[str] = Counter()
        self.ledger = Ledger(engine, campaign.id or 0, campaign.list_name, len(self.keys))
        self.breaker = Breaker()

    def claim(self, job: DueDelivery) -> int | None:
        """The attempt number if the row is ours to send now; None if not (rule 3)."""
        outcome = self.ledger.claim(job.delivery_id, address_hashes(job.recipient.email, self.keys))
        if outcome == DeliveryStatus.SUPPRESSED:
            self.progress(DeliveryStatus.SUPPRESSED)
            return None
        return outcome if isinstance(outcome, int) else None

    def record(self, job: DueDelivery, attempts: int, reply: Reply, message_id: str) -> None:
        now = self.clock()
        outcome = classify(reply)
        next_attempt_at = None
        if outcome is Outcome.SENT:
            status = DeliveryStatus.SENT
        elif outcome is Outcome.RETRY and attempts < self.settings.throttle.max_attempts:
            status = DeliveryStatus.DEFERRED
            delay = backoff_delay(attempts, self.settings.throttle.retry_base_seconds)
            next_attempt_at = now + timedelta(seconds=delay)
        else:
            status = DeliveryStatus.FAILED
        bounce_hash = None
        if outcome is Outcome.HARD_BOUNCE:
            bounce_hash = address_hashes(job.recipient.email, self.keys)[0]
        self.breaker.record(outcome is Outcome.RETRY, _monotonic())
        self.ledger.record(
            job.delivery_id,
            status=status,
            smtp_reply=str(reply),
            message_id=message_id,
            at=now,
            next_attempt_at=next_attempt_at,
            hard_bounce_hash=bounce_hash,
        )
        self.progress(status)

    def progress(self, status: str) -> None:
        self.outcomes[status] += 1
        if self.on_progress is not None:
            self.on_progress(status)

    # -- the async side ----------------------------------------------------------------------

    async def through_breaker(self, connection: Connection) -> None:
        """Wait while the server looks down; one task probes it with a connection, no message."""
        paused_since = None
        while (wait := self.breaker.wait(_monotonic())) != 0.0:
            paused_since = paused_since or _monotonic()
            if _monotonic() - paused_since > self.settings.throttle.max_pause_seconds:
                raise ServerUnreachable(
                    f"The SMTP server {self.settings.smtp.host}:{self.settings.smtp.port} has "
                    f"not answered for {self.settings.throttle.max_pause_seconds:.0f} s; the run "
                    "stopped. Deliveries not yet sent stay queued: run the campaign again."
                )
            if wait is None:
                self.breaker.probed(await connection.probe(), _monotonic())
            else:
                await asyncio.sleep(wait)

    async def produce(self, queue: asyncio.Queue[DueDelivery | None], workers: int) -> None:
        while True:
            after = 0
            while jobs := self.ledger.due(after, self.clock(), _PAGE):
                for job in jobs:
                    await queue.put(job)
                after = jobs[-1].delivery_id
            await queue.join()  # every claimed row is recorded before we look for retries
            retry_at = self.ledger.next_retry_at()
            if retry_at is None:
                break
            await asyncio.sleep(max(0.0, (retry_at - self.clock()).total_seconds()))
        for _ in range(workers):
            await queue.put(None)

    async def work(self, queue: asyncio.Queue[DueDelivery | None], connection: Connection) -> None:
        sender = self.settings.sender.from_address
        try:
            while (job := await queue.get()) is not None:
                try:
                    await self.through_breaker(connection)
                    await self.throttle.wait_turn(job.recipient.email.rsplit("@", 1)[1])
                    attempts = self.claim(job)
                    if attempts is None:
                        continue
                    try:
                        message = self.factory.render(
                            job.recipient,
                            basis=job.basis,
                            now=self.clock(),
                            delivery_ref=f"{self.campaign.id}.{job.delivery_id}",
                        )
                    except InputError as bad:
                        # One recipient's data (a name with a control character, a variable
                        # image URL that is not https) fails that delivery, not the run.
                        self.ledger.record(
                            job.delivery_id,
                            status=DeliveryStatus.FAILED,
                            smtp_reply=f"not sent: {bad}",
                            message_id="",
                            at=self.clock(),
                        )
                        self.progress(DeliveryStatus.FAILED)
                        continue
                    reply = await connection.send(sender, job.recipient.email, message.data)
                    self.record(job, attempts, reply, message.message_id)
                finally:
                    queue.task_done()
        finally:
            await connection.close()


def _mark_in_doubt(engine: Engine, campaign: Campaign) -> int:
    """Rows left `sending` by a run that stopped: they may have arrived, so never resend."""
    with engine.begin() as conn:
        result = conn.execute(
            update(_delivery)
            .where(
                _delivery.c.campaign_id == campaign.id,
                _delivery.c.status == DeliveryStatus.SENDING,
            )
            .values(status=DeliveryStatus.UNKNOWN)
        )
    return int(result.rowcount)


def _set_status(engine: Engine, campaign: Campaign, status: CampaignStatus) -> None:
    with engine.begin() as conn:
        conn.execute(update(_campaign).where(_campaign.c.id == campaign.id).values(status=status))


async def run_campaign(
    engine: Engine,
    settings: Settings,
    campaign: Campaign,
    *,
    connect: Callable[[], Connection] | None = None,
    clock: Clock = _utc_now,
    on_plan: Callable[[PlanSummary], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunSummary:
    """Plan the audience into the ledger, then send every queued row once.

    Raises `CampaignBusy` when another run (this or another process or host) holds the campaign.
    """
    with engine.connect() as conn:
        status = conn.execute(
            select(_campaign.c.status).where(_campaign.c.id == campaign.id)
        ).scalar()
    if status == CampaignStatus.ARCHIVED:
        raise MailerError(
            f'Campaign "{campaign.name}" is archived: the retention purge removed the people '
            "from its ledger, so it can no longer tell who was mailed. Create a new campaign."
        )
    lock = RunLock(engine, campaign, clock=clock)
    lock.acquire()
    keep_alive = asyncio.create_task(lock.keep_alive())
    try:
        plan = materialise(engine, settings, campaign, clock())
        if on_plan is not None:
            on_plan(plan)
        # Only the lock holder may decide that `sending` rows belong to a run that is gone.
        in_doubt = _mark_in_doubt(engine, campaign)
        run = _Run(engine, settings, campaign, clock, on_progress)
        _set_status(engine, campaign, CampaignStatus.RUNNING)
        workers = settings.smtp.max_connections
        make = connect or (lambda: SmtpConnection(settings.smtp, settings.smtp_password))
        queue: asyncio.Queue[DueDelivery | None] = asyncio.Queue(maxsize=workers * 4)
        with run.ledger:
            try:
                async with asyncio.TaskGroup() as group:  # one failing task stops them all
                    group.create_task(run.produce(queue, workers))
                    for _ in range(workers):
                        group.create_task(run.work(queue, make()))
            except* MailerError as failed:
                raise failed.exceptions[0] from None
        _set_status(engine, campaign, CampaignStatus.DONE)
    finally:
        keep_alive.cancel()
        lock.release()
    return RunSummary(plan, run.outcomes, in_doubt)
