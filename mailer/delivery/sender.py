"""One message of a sending worker (mailer.delivery.worker): start its row, render it, send
it, classify the reply and record it, through the throttle, the circuit breaker and the
campaign guard (issue 16).

What is loaded once per worker or per campaign lives here too: the secret and hash keys, the
Jinja environment, the DKIM keys, each campaign's row and message factory, the rate blocks.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from mailer.config import Settings
from mailer.core.breaker import Breaker, BreakerState
from mailer.core.render import MessageFactory, RenderedMessage, make_environment
from mailer.core.throttle import BlockSlots, Throttle, backoff_delay
from mailer.core.tokens import TokenSigner, address_hashes, message_ref
from mailer.core.verp import verp_address
from mailer.delivery.dkimkeys import load_signing_keys
from mailer.delivery.feedback import CampaignGuard
from mailer.delivery.groupcommit import GroupCommit
from mailer.delivery.signing import SigningProcess
from mailer.delivery.transport import Outcome, Reply, classify
from mailer.errors import InputError, NotFoundError, SigningError, TransportError
from mailer.store.campaign import content_of
from mailer.store.lane import STOPPED, DueDelivery, Lane, LaneConnection, Steps
from mailer.store.lane import Outcome as StoredOutcome
from mailer.store.models import Campaign, DeliveryStatus
from mailer.store.sharedrate import SharedRate

__all__ = ["Clock", "Connection", "Making", "MessageSender", "ProgressCallback",
           "ServerUnreachable", "monotonic", "utc_now"]  # fmt: skip

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


def monotonic() -> float:
    return asyncio.get_running_loop().time()


class MessageSender:
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
        # Read, parsed and checked once, up front; the signing is done by a child process
        # on the other core (mailer.delivery.signing), started at the first message.
        dkim = load_signing_keys(settings)
        # With Ed25519 keys only, the child also renders (`SigningProcess.make`): its
        # signatures leave it room on the other core, and the loop keeps the ledger and SMTP
        # (send_throughput.py, smtp-sink: 0.85 -> 0.94 of unsigned). An RSA signature fills
        # that core by itself: rendering there too cost RSA 0.74 -> 0.52, so the loop renders.
        self.signing = None
        self.child_renders = False
        if dkim:
            self.child_renders = all(key.algorithm == "ed25519-sha256" for key in dkim)
            rendering = (settings, self.keys) if self.child_renders else None
            self.signing = SigningProcess(dkim, rendering)
        self.campaigns: dict[int, tuple[Campaign, MessageFactory]] = {}
        t = settings.throttle
        self.rate = SharedRate(engine)
        # Slots come from blocks booked in the database (one statement per block): a worker
        # cannot know it stays alone, as a `mailer worker` elsewhere may join at any time.
        self.throttle = Throttle(
            t.messages_per_second,
            t.per_domain_per_minute,
            slots=BlockSlots(self.rate.reserve, monotonic),
        )
        self.breaker = Breaker()
        self.offload = engine.dialect.name != "sqlite"
        # The lanes of this worker share one database connection, for group commit.
        self.lanes = LaneConnection(engine)
        self.group = GroupCommit(self.lanes, pipelined=self.offload)
        self.outcomes: Counter[str] = Counter()
        # Campaigns found paused or cancelled at a row's start: their other rows held here go
        # back to the queue without waiting for a throttle turn. The database stays the judge
        # (Lane.start checks every row); this only saves the waits.
        self.stopped: set[int] = set()
        self.guard = CampaignGuard(engine, settings)  # issue 16: pauses a campaign that hurts

    async def in_lane(self, call: Callable[..., Steps[T]], *args: Any, **kwargs: Any) -> T:
        """Run a lane's statement in the next group commit (mailer.delivery.groupcommit): the
        connections that got to the ledger in the same loop tick share one transaction."""
        return await self.group.run(functools.partial(call, *args, **kwargs))

    async def off_loop(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run database work on a connection of its own (never inside a group): in a thread on
        a server database, whose commits wait for its disk while the other connections could
        talk SMTP (PostgreSQL: 357 -> 441 msg/s for one worker); inline on SQLite, whose
        commits are quick and where the thread hop cost more than it saved (1104 -> 636
        msg/s), both by benchmarks/ in one session."""
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
        self.breaker.record(outcome is Outcome.RETRY, monotonic())
        stored = StoredOutcome(
            job.delivery_id, status, str(reply), message_id, now, next_attempt_at
        )
        return stored, bounce_hash

    async def write(
        self, lane: Lane, outcome: StoredOutcome, bounce_hash: str | None = None
    ) -> None:
        """Write an outcome on its own (when no next message can carry it); a hard bounce with
        its suppression on a connection of its own, never inside a group."""
        if bounce_hash is None:
            await self.in_lane(lane.recording, outcome)
        else:
            await self.off_loop(
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
            await self.off_loop(self.guard.recorded, *facts)
        else:
            self.guard.recorded(*facts)

    async def through_breaker(self, connection: Connection) -> None:
        """Wait while the server looks down; one task probes it with a connection, no message."""
        paused_since = None
        while (wait := self.breaker.wait(monotonic())) != 0.0:
            paused_since = paused_since or monotonic()
            if monotonic() - paused_since > self.settings.throttle.max_pause_seconds:
                raise ServerUnreachable(
                    f"The SMTP server {self.settings.smtp.host}:{self.settings.smtp.port} has "
                    f"not answered for {self.settings.throttle.max_pause_seconds:.0f} s; the run "
                    "stopped. Deliveries not yet sent stay queued: run the campaign again."
                )
            if wait is None:
                self.breaker.probed(await connection.probe(), monotonic())
            else:
                await asyncio.sleep(wait)

    async def start(
        self, job: DueDelivery, list_name: str, lane: Lane, previous: StoredOutcome | None
    ) -> int | None:
        """Mark the row `sending` (writing `previous` in the same commit); its attempt number,
        or None when it is not to be sent (suppressed meanwhile, campaign stopped, lease lost)."""
        hashes = address_hashes(job.recipient.email, self.hash_keys)
        attempts = await self.in_lane(lane.starting, job, list_name, hashes, previous=previous)
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
        return attempts

    def make(
        self, job: DueDelivery, campaign: Campaign, factory: MessageFactory, now: datetime
    ) -> Making:
        """Start making `job`'s message: rendered here and signed in the child, or both in
        the child, or rendered here alone without DKIM."""
        # Keyed: the Message-ID shows no campaign or delivery number (issue 14).
        ref = message_ref(self.keys[-1], f"{job.campaign_id}.{job.delivery_id}")
        if self.signing is not None and self.child_renders:
            return Making(made=self.signing.make(
                job.campaign_id, content_of(campaign), job.recipient, basis=job.basis, now=now,
                delivery_ref=ref,
            ))  # fmt: skip
        try:
            message = factory.render(job.recipient, basis=job.basis, now=now, delivery_ref=ref)
        except InputError as bad:
            return Making(message=bad)
        if self.signing is None:
            return Making(message=message)
        return Making(message=message, signing=self.signing.sign(message.data,
                                                                 int(now.timestamp())))  # fmt: skip

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
            await self.in_lane(lane.giving_back, job)
            return None
        if previous is not None and self.breaker.state is not BreakerState.CLOSED:
            await self.write(lane, previous)  # the wait may be long: do not hold it meanwhile
            previous = None
        await self.through_breaker(connection)
        await self.throttle.wait_turn(job.recipient.email.rsplit("@", 1)[1])
        campaign, factory = self.campaign(job.campaign_id)
        now = self.clock()
        # Made (or signed) in the child while the row's start is committed: the waits overlap.
        making = self.make(job, campaign, factory, now)
        attempts = None
        try:
            attempts = await self.start(job, campaign.list_name, lane, previous)
        finally:
            if attempts is None:
                making.drop()  # not to be sent
        if attempts is None:
            return None
        try:
            data, message_id = await making.ready()
        except InputError as bad:
            # One recipient's data (a name with a control character, a variable image URL
            # that is not https) fails that delivery, not the run; written once started.
            failed = StoredOutcome(
                job.delivery_id, DeliveryStatus.FAILED, f"not sent: {bad}", "", now
            )
            await self.write(lane, failed)
            return None
        except SigningError as broken:
            # Nothing went out: the row waits for the next run, and this run stops.
            await self.write(lane, StoredOutcome(
                job.delivery_id, DeliveryStatus.DEFERRED, f"not sent: {broken}", "", now, now,
            ))  # fmt: skip
            raise
        envelope_from = self.settings.sender.from_address
        if self.settings.bounces.return_path:  # VERP: a bounce names its delivery
            envelope_from = verp_address(self.settings.bounces.return_path, job.delivery_id,
                                         self.keys)  # fmt: skip
        reply = await connection.send(envelope_from, job.recipient.email, data)
        outcome, bounce_hash = self.record(job, attempts, reply, message_id)
        if bounce_hash is not None:  # the suppression goes with it, in its own transaction
            await self.write(lane, outcome, bounce_hash)
            await self.judge(job, outcome, hard=True)
            return None
        await self.judge(job, outcome, hard=False)
        return outcome


@dataclass(slots=True)
class Making:
    """A message on its way (`MessageSender.make`): rendered here (or why it could not be),
    with its signature to come, or made in the signing process."""

    message: RenderedMessage | InputError | None = None
    signing: asyncio.Future[bytes] | None = None
    made: asyncio.Future[tuple[bytes, str]] | None = None

    async def ready(self) -> tuple[bytes, str]:
        """Its bytes, signed where there is DKIM, and its Message-ID; InputError for what the
        recipient's data does to it, SigningError if it cannot be signed."""
        if self.made is not None:
            return await self.made
        if isinstance(self.message, InputError):
            raise self.message
        assert self.message is not None
        data = self.message.data
        if self.signing is not None:
            data = await self.signing + data
        return data, self.message.message_id

    def drop(self) -> None:
        for future in (self.made, self.signing):
            if future is not None:
                _drop(future)


def _drop(signature: asyncio.Future[Any]) -> None:
    """Give up a message or signature not awaited: cancel it, or take its error if it already
    failed (so asyncio does not report the error as never retrieved)."""
    if not signature.done():
        signature.cancel()
    elif not signature.cancelled():
        signature.exception()
