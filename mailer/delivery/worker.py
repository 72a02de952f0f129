"""A sending worker: claims due deliveries in batches, sends each, records each.

The same loop serves `mailer campaign send` (one campaign, until it is finished) and
`mailer worker` (every running campaign, until stopped). Several workers, in one process or
on several hosts, share the queue through the ledger (mailer.store.ledger) and one rate through the
database (mailer.store.sharedrate).

Inside a worker: one task claims batches into a queue, `smtp.max_connections` tasks each own
one SMTP connection and send from it, and one task renews the lease on what is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from mailer.config import Settings
from mailer.core.breaker import Breaker, BreakerState
from mailer.core.render import MessageFactory, make_environment
from mailer.core.throttle import BlockSlots, Throttle, backoff_delay
from mailer.core.tokens import TokenSigner, address_hashes, message_ref
from mailer.core.verp import verp_address
from mailer.delivery.dkimkeys import load_signing_keys
from mailer.delivery.feedback import CampaignGuard
from mailer.delivery.transport import Outcome, Reply, SmtpConnection, classify
from mailer.errors import InputError, MailerError, NotFoundError, TransportError
from mailer.store.campaign import content_of
from mailer.store.lane import STOPPED, DueDelivery, Lane
from mailer.store.lane import Outcome as StoredOutcome
from mailer.store.ledger import Ledger, TakeOver
from mailer.store.models import Campaign, DeliveryStatus
from mailer.store.sharedrate import SharedRate

__all__ = [
    "Clock",
    "Connection",
    "ServerUnreachable",
    "WorkSummary",
    "run_worker",
]

Clock = Callable[[], datetime]
ProgressCallback = Callable[[str], None]
T = TypeVar("T")


class ServerUnreachable(TransportError):
    """The server stayed down for longer than `throttle.max_pause_seconds`."""


class Connection(Protocol):
    async def send(self, sender: str, recipient: str, message: bytes) -> Reply: ...
    async def probe(self) -> bool: ...
    async def close(self) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def _monotonic() -> float:
    return asyncio.get_running_loop().time()


@dataclass
class WorkSummary:
    outcomes: Counter[str] = field(default_factory=Counter)
    taken_over: TakeOver = TakeOver()


class _Sender:
    """Per-message work: start the row, render, send, classify the reply, record it."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.on_progress = on_progress
        self.keys = settings.require_secret_keys()
        self.signer = TokenSigner(self.keys)
        self.hash_keys = settings.require_hash_keys()  # suppressions: never rotated away
        self.env = make_environment(settings)
        self.dkim = load_signing_keys(settings)  # read, parsed and checked once, up front
        # cryptography lets go of the GIL while it signs RSA (about 0.35 ms a message): in a
        # thread, the signature runs on another core while this loop talks SMTP.
        self.sign_in_thread = any(k.algorithm == "rsa-sha256" for k in self.dkim)
        self.campaigns: dict[int, tuple[Campaign, MessageFactory]] = {}
        t = settings.throttle
        self.rate = SharedRate(engine)
        # Slots come from blocks booked in the database (one statement per block): a worker
        # cannot know it stays alone, as a `mailer worker` elsewhere may join at any time.
        self.throttle = Throttle(
            t.messages_per_second,
            t.per_domain_per_minute,
            slots=BlockSlots(self.rate.reserve, _monotonic),
        )
        self.breaker = Breaker()
        self.offload = engine.dialect.name != "sqlite"
        self.outcomes: Counter[str] = Counter()
        # Campaigns found paused or cancelled at a row's start: their other rows held here go
        # back to the queue without waiting for a throttle turn. The database stays the judge
        # (Lane.start checks every row); this only saves the waits.
        self.stopped: set[int] = set()
        self.guard = CampaignGuard(engine, settings)  # issue 16: pauses a campaign that hurts

    async def in_lane(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a lane's statement: in a thread on a server database, whose commits wait for
        its disk while the other connections could talk SMTP (PostgreSQL: 357 -> 441 msg/s
        for one worker); inline on SQLite, whose commits are quick and where the thread hop
        cost more than it saved (1104 -> 636 msg/s), both by benchmarks/ in one session."""
        if self.offload:
            return await asyncio.to_thread(call, *args, **kwargs)
        return call(*args, **kwargs)

    def campaign(self, campaign_id: int) -> tuple[Campaign, MessageFactory]:
        known = self.campaigns.get(campaign_id)
        if known is None:
            with Session(self.engine) as session:
                campaign = session.get(Campaign, campaign_id)
            if campaign is None:
                raise NotFoundError(f"campaign {campaign_id} disappeared while being sent")
            factory = MessageFactory(
                self.env,
                self.settings,
                content_of(campaign),
                self.signer.unsubscribe_token,
                self.dkim,
            )
            known = self.campaigns[campaign_id] = (campaign, factory)
        return known

    def progress(self, status: str) -> None:
        self.outcomes[status] += 1
        if self.on_progress is not None:
            self.on_progress(status)

    def record(
        self, job: DueDelivery, attempts: int, reply: Reply, message_id: str
    ) -> tuple[StoredOutcome, str | None]:
        """What a reply means for the row: its outcome, and the address hash on a hard bounce."""
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
            bounce_hash = address_hashes(job.recipient.email, self.hash_keys)[0]
        self.breaker.record(outcome is Outcome.RETRY, _monotonic())
        stored = StoredOutcome(
            job.delivery_id, status, str(reply), message_id, now, next_attempt_at
        )
        return stored, bounce_hash

    async def write(
        self, lane: Lane, outcome: StoredOutcome, bounce_hash: str | None = None
    ) -> None:
        """Write an outcome on its own (when no next message can carry it)."""
        await self.in_lane(
            lane.record,
            outcome.delivery_id,
            status=outcome.status,
            smtp_reply=outcome.smtp_reply,
            message_id=outcome.message_id,
            at=outcome.at,
            next_attempt_at=outcome.next_attempt_at,
            hard_bounce_hash=bounce_hash,
        )
        self.progress(outcome.status)

    async def judge(self, job: DueDelivery, outcome: StoredOutcome, hard: bool) -> None:
        """The guard (issue 16) counts the outcome, marks a hard bounce and may pause the
        campaign; it touches the database only for a hard bounce or a re-read of the counts
        every few seconds."""
        facts = (job.campaign_id, job.delivery_id, hard, outcome.smtp_reply, outcome.at)
        if self.guard.needs_io(job.campaign_id, hard):
            await self.in_lane(self.guard.recorded, *facts)
        else:
            self.guard.recorded(*facts)

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

    async def deliver(
        self,
        job: DueDelivery,
        connection: Connection,
        lane: Lane,
        previous: StoredOutcome | None = None,
    ) -> StoredOutcome | None:
        """Send one message; return its outcome still to be written, or None if written.

        `previous` is the unwritten outcome of this connection's last message: it is written
        in the one commit that marks this row `sending` (at most one commit per message, and
        still at most one row of this connection in doubt after a crash).
        """
        if job.campaign_id in self.stopped:
            if previous is not None:
                await self.write(lane, previous)
            await self.in_lane(lane.give_back, job)
            return None
        if previous is not None and self.breaker.state is not BreakerState.CLOSED:
            await self.write(lane, previous)  # the wait may be long: do not hold it meanwhile
            previous = None
        await self.through_breaker(connection)
        await self.throttle.wait_turn(job.recipient.email.rsplit("@", 1)[1])
        campaign, factory = self.campaign(job.campaign_id)
        hashes = address_hashes(job.recipient.email, self.hash_keys)
        attempts = await self.in_lane(
            lane.start, job, campaign.list_name, hashes, previous=previous
        )
        if previous is not None:
            self.progress(previous.status)
        if attempts == DeliveryStatus.SUPPRESSED:  # rule 3: suppressed since it was planned
            self.progress(DeliveryStatus.SUPPRESSED)
            return None
        if attempts == STOPPED:  # `mailer campaign pause` since the claim: back in the queue
            self.stopped.add(job.campaign_id)
            return None
        if not isinstance(attempts, int):
            return None  # the lease was lost: the row is another worker's now
        render = functools.partial(
            factory.render,
            job.recipient,
            basis=job.basis,
            now=self.clock(),
            # Keyed: the Message-ID shows no campaign or delivery number (issue 14).
            delivery_ref=message_ref(self.keys[-1], f"{job.campaign_id}.{job.delivery_id}"),
        )
        try:
            message = await asyncio.to_thread(render) if self.sign_in_thread else render()
        except InputError as bad:
            # One recipient's data (a name with a control character, a variable image URL
            # that is not https) fails that delivery, not the run.
            failed = StoredOutcome(
                job.delivery_id, DeliveryStatus.FAILED, f"not sent: {bad}", "", self.clock()
            )
            await self.write(lane, failed)
            return None
        envelope_from = self.settings.sender.from_address
        if self.settings.bounces.return_path:  # VERP: a bounce names its delivery
            envelope_from = verp_address(self.settings.bounces.return_path, job.delivery_id,
                                         self.keys)  # fmt: skip
        reply = await connection.send(envelope_from, job.recipient.email, message.data)
        outcome, bounce_hash = self.record(job, attempts, reply, message.message_id)
        if bounce_hash is not None:  # the suppression goes with it, in its own transaction
            await self.write(lane, outcome, bounce_hash)
            await self.judge(job, outcome, hard=True)
            return None
        await self.judge(job, outcome, hard=False)
        return outcome


class _Loop:
    def __init__(
        self,
        sender: _Sender,
        ledger: Ledger,
        *,
        campaign_id: int | None,
        until_done: bool,
        stop: asyncio.Event,
    ) -> None:
        self.sender = sender
        self.ledger = ledger
        self.campaign_id = campaign_id
        self.until_done = until_done
        self.stop = stop
        worker = sender.settings.worker
        self.batch = worker.batch_size
        self.poll = worker.poll_seconds
        self.connections = sender.settings.smtp.max_connections
        self.queue: asyncio.Queue[DueDelivery | None] = asyncio.Queue()
        self.room = asyncio.Event()
        self.taken_over = TakeOver()

    async def produce(self) -> None:
        try:
            while not self.stop.is_set():
                if self.queue.qsize() >= self.connections:
                    self.room.clear()
                    await self._until(self.room.wait())
                    continue
                jobs = self.ledger.claim(self.batch - self.queue.qsize(), self.campaign_id)
                for job in jobs:
                    self.sender.stopped.discard(job.campaign_id)  # claimed: running again
                    self.queue.put_nowait(job)
                if jobs:
                    continue
                await self.queue.join()  # what is in flight is recorded before we look again
                if await self._idle():
                    break
        finally:
            for _ in range(self.connections):
                self.queue.put_nowait(None)

    async def _idle(self) -> bool:
        """Nothing due now: take over lost rows, and say whether the loop is finished."""
        if (
            self.until_done
            and self.campaign_id is not None
            and not self.ledger.is_running(self.campaign_id)
        ):
            return True  # paused or cancelled: `campaign send` says so and how to go on
        taken = self.ledger.take_over(self.campaign_id)
        self.taken_over = TakeOver(
            self.taken_over.requeued + taken.requeued, self.taken_over.in_doubt + taken.in_doubt
        )
        if taken.requeued:
            return False
        self.ledger.finish_campaigns()
        if self.until_done and not self.ledger.pending(self.campaign_id):
            return True
        wait = self.poll
        retry_at = self.ledger.next_retry_at(self.campaign_id)
        if retry_at is not None:
            wait = min(wait, max(0.0, (retry_at - self.sender.clock()).total_seconds()))
        await self._until(asyncio.sleep(wait))
        return False

    async def _until(self, waiting: Awaitable[object]) -> None:
        """Wait for `waiting`, or less if the worker is asked to stop."""
        stopping = asyncio.ensure_future(self.stop.wait())
        waited = asyncio.ensure_future(waiting)
        await asyncio.wait({stopping, waited}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, waited):
            task.cancel()

    async def consume(self, connection: Connection) -> None:
        lane = self.ledger.lane()
        pending: StoredOutcome | None = None  # the last outcome, written with the next start
        try:
            while (job := await self.queue.get()) is not None:
                if self.queue.qsize() < self.connections:
                    self.room.set()
                try:
                    if not self.stop.is_set():  # when stopping, the rest is given back
                        pending = await self.sender.deliver(job, connection, lane, pending)
                    if pending is not None and (self.queue.empty() or self.stop.is_set()):
                        # No next message at hand: write it now, so the queue is not seen
                        # empty with an outcome still unwritten.
                        outcome, pending = pending, None
                        await self.sender.write(lane, outcome)
                finally:
                    self.queue.task_done()
            if pending is not None:
                outcome, pending = pending, None
                await self.sender.write(lane, outcome)
        finally:
            if pending is not None:  # failing or cancelled: write it if the database lets us
                with contextlib.suppress(Exception):
                    lane.record(
                        pending.delivery_id, status=pending.status, at=pending.at,
                        smtp_reply=pending.smtp_reply, message_id=pending.message_id,
                        next_attempt_at=pending.next_attempt_at,
                    )  # fmt: skip
            lane.close()
            await connection.close()

    async def keep_lease(self) -> None:
        interval = self.sender.settings.worker.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            self.ledger.renew()


async def run_worker(
    engine: Engine,
    settings: Settings,
    *,
    campaign_id: int | None = None,
    until_done: bool = False,
    connect: Callable[[], Connection] | None = None,
    clock: Clock = utc_now,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> WorkSummary:
    """Send due deliveries of running campaigns (or of one) until `stop` is set.

    With `until_done`, return once the campaign has nothing left (nothing queued, deferred, or
    held by a live worker). Whatever this worker still holds when it returns or fails is given
    back: claimed rows queued again, rows being handed over marked `unknown`.
    """
    ledger = Ledger.open(engine, settings, clock)
    sender = _Sender(engine, settings, clock, on_progress)
    loop = _Loop(
        sender,
        ledger,
        campaign_id=campaign_id,
        until_done=until_done,
        stop=stop or asyncio.Event(),
    )
    make = connect or (lambda: SmtpConnection(settings.smtp, settings.smtp_password))
    try:
        async with asyncio.TaskGroup() as group:  # one failing task stops them all
            lease = group.create_task(loop.keep_lease())
            group.create_task(loop.produce())
            consumers = [group.create_task(loop.consume(make())) for _ in range(loop.connections)]
            await asyncio.wait(consumers)
            lease.cancel()
    except* MailerError as failed:
        raise failed.exceptions[0] from None
    finally:
        ledger.release()
        ledger.close()
        sender.rate.close()
    return WorkSummary(sender.outcomes, loop.taken_over)
