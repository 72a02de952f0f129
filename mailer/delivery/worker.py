"""A sending worker: claims due deliveries in batches, sends each, records each.

The same loop serves `mailer campaign send` (one campaign, until it is finished) and
`mailer worker` (every running campaign, until stopped). Several workers, in one process or
on several hosts, share the queue through the ledger (mailer.store.ledger) and one rate through the
database (mailer.store.sharedrate).

Inside a worker: one task claims batches into a queue, `smtp.max_connections` tasks each own
one SMTP connection and send from it, and one task renews the lease on what is held. What
happens to one message (start, render, send, record) is mailer.delivery.sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine

from mailer.config import Settings
from mailer.delivery.sender import (
    Clock,
    Connection,
    MessageSender,
    ProgressCallback,
    ServerUnreachable,
    utc_now,
)
from mailer.delivery.transport import SmtpConnection
from mailer.errors import MailerError
from mailer.store.lane import DueDelivery
from mailer.store.lane import Outcome as StoredOutcome
from mailer.store.ledger import Ledger, TakeOver

__all__ = [
    "Clock",
    "Connection",
    "ServerUnreachable",
    "WorkSummary",
    "run_worker",
    "utc_now",
]

T = TypeVar("T")


@dataclass
class WorkSummary:
    outcomes: Counter[str] = field(default_factory=Counter)
    taken_over: TakeOver = TakeOver()


class _Loop:
    def __init__(
        self,
        sender: MessageSender,
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
        # On a server database the ledger's statements (claims, lease, the idle checks) run in
        # one thread of their own, which alone uses the ledger's connection: a claim on the
        # loop stalled every SMTP connection for its round trips (a fifth of the loop's time
        # in py-spy). On SQLite they stay inline, where the hop cost more than the statement.
        self._thread = ThreadPoolExecutor(1, "ledger") if sender.offload else None
        # A claim in a thread takes some milliseconds: ask for the next batch when the queue
        # is half empty, not when the connections are about to run dry.
        self.low = max(self.connections, self.batch // 2) if sender.offload else self.connections

    async def in_ledger(self, call: Callable[..., T], *args: Any) -> T:
        """Run a ledger statement in the ledger's thread (inline on SQLite)."""
        if self._thread is None:
            return call(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(call, *args))

    def close(self) -> None:
        """Wait for a ledger statement still running in the thread: the connection is free."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    async def produce(self) -> None:
        try:
            while not self.stop.is_set():
                if self.queue.qsize() >= self.low:
                    self.room.clear()
                    await self._until(self.room.wait())
                    continue
                want = self.batch - self.queue.qsize()
                jobs = await self.in_ledger(self.ledger.claim, want, self.campaign_id)
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
            and not await self.in_ledger(self.ledger.is_running, self.campaign_id)
        ):
            return True  # paused or cancelled: `campaign send` says so and how to go on
        taken = await self.in_ledger(self.ledger.take_over, self.campaign_id)
        self.taken_over = TakeOver(
            self.taken_over.requeued + taken.requeued, self.taken_over.in_doubt + taken.in_doubt
        )
        if taken.requeued:
            return False
        await self.in_ledger(self.ledger.finish_campaigns)
        if self.until_done and not await self.in_ledger(self.ledger.pending, self.campaign_id):
            return True
        wait = self.poll
        retry_at = await self.in_ledger(self.ledger.next_retry_at, self.campaign_id)
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
        lane = self.ledger.lane(self.sender.lanes)
        pending: StoredOutcome | None = None  # the last outcome, written with the next start
        try:
            while (job := await self.queue.get()) is not None:
                if self.queue.qsize() < self.low:
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
                    lane.record_alone(pending)
            lane.close()
            await connection.close()

    async def keep_lease(self) -> None:
        interval = self.sender.settings.worker.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            await self.in_ledger(self.ledger.renew)


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
    sender = MessageSender(engine, settings, clock, on_progress)
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
        await sender.group.finished()  # a group still on its way, then give back
        sender.lanes.close()
        loop.close()  # a claim still running in the ledger's thread, then give back
        ledger.release()
        ledger.close()
        sender.rate.close()
        if sender.signing is not None:
            await sender.signing.close()
    return WorkSummary(sender.outcomes, loop.taken_over)
