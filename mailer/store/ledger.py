"""The delivery ledger as a work queue shared by any number of workers on any number of hosts.

A worker claims due rows of running campaigns in batches (`SELECT ... FOR UPDATE SKIP LOCKED`
on PostgreSQL; SQLite serialises writers anyway), marking them `claimed` under its name with a
lease. Just before a message is handed to the server its row becomes `sending` (re-checking
suppression, and only if the claim is still this worker's and the campaign still running: a
`mailer campaign pause` or `cancel` committed before that statement stops the message, from
any process on any host); the reply's outcome is recorded in the same statement that starts
the connection's next row (one commit per message), or on its own when there is no next row at
hand. When a worker stops, its claims go back to `queued` and its `sending` rows become
`unknown` (they may have arrived: never resent); when it dies, another worker does the same
once the lease has expired, or at once if the dead owner was a process on its own host.

Per-message statements are compiled once per worker and run on one connection it holds: this is
per-message work, and it must stay cheap next to SMTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.sql import ColumnElement

from mailer.config import Settings
from mailer.core.policy import Basis, SkipReason
from mailer.core.render import Recipient
from mailer.store.lane import STOPPED, DueDelivery, Lane, LaneConnection, Outcome, record_statement
from mailer.store.models import (
    Campaign,
    CampaignStatus,
    Consent,
    ConsentEvent,
    ConsentOrigin,
    Contact,
    Delivery,
    DeliveryStatus,
    Purchase,
    Suppression,
)
from mailer.store.prepared import Prepared
from mailer.store.reconnect import again_if_cut, limit_idle_transactions, release_idle_limit
from mailer.store.runlock import is_dead_local_process, owner_name

__all__ = ["STOPPED", "DueDelivery", "Ledger", "Outcome", "TakeOver"]

_delivery = Delivery.__table__  # type: ignore[attr-defined]
_contact = Contact.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]

_HELD = (DeliveryStatus.CLAIMED, DeliveryStatus.SENDING)
_PENDING = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED, *_HELD)


@dataclass(frozen=True, slots=True)
class TakeOver:
    """What giving back the rows of stopped or dead workers did."""

    requeued: int = 0  # claimed, never handed to the server: queued again
    in_doubt: int = 0  # were being handed over: marked unknown, never resent


class Ledger:
    """One worker's view of the shared delivery queue (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        key_count: int,
        lease_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self._conn = engine.connect()
        self.owner = owner
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        limit_idle_transactions(self._conn, self.lease)
        d = _delivery.c
        # One bind parameter per secret key: a suppression made before a key rotation holds.
        self.hash_params = [f"h{i}" for i in range(key_count)]
        # A suppression that the person lifted afterwards by confirming a new double opt-in
        # for this list on our own page (policy rule 1) no longer blocks, as in policy.decide.
        self_confirmed = (
            select(func.max(_consent.c.at))
            .where(
                _consent.c.contact_id == d.contact_id,
                _consent.c.list_name == bindparam("list_name"),
                _consent.c.event == ConsentEvent.CONFIRMED,
                _consent.c.origin == ConsentOrigin.WEB,
            )
            .correlate(_delivery)
            .scalar_subquery()
        )
        suppressed = exists().where(
            _suppression.c.address_hash.in_([bindparam(p) for p in self.hash_params]),
            or_(_suppression.c.scope.is_(None), _suppression.c.scope == bindparam("list_name")),
            or_(self_confirmed.is_(None), _suppression.c.at >= self_confirmed),
        )
        # An objection to the customer basis made while the run goes on (the unsubscribe link
        # of another customer-basis mail, issue 14 row 4) stops this mail too, like an
        # unsubscribe does (rule 3).
        objected = and_(
            d.basis == Basis.EXISTING_CUSTOMER,
            exists().where(
                _purchase.c.contact_id == d.contact_id, _purchase.c.objected_at.is_not(None)
            ),
        )
        blocked = or_(suppressed, objected)
        # Only a row this worker still holds: after a lease was lost, another worker owns it.
        mine = and_(
            d.id == bindparam("delivery_id"),
            d.status == DeliveryStatus.CLAIMED,
            d.lease_owner == bindparam("owner"),
        )
        running = d.campaign_id.in_(
            select(_campaign.c.id).where(_campaign.c.status == CampaignStatus.RUNNING)
        )
        c = _contact.c
        self._recipients = select(c.id, c.email, c.first_name, c.last_name, c.locale).where(
            c.id.in_(bindparam("ids", expanding=True))
        )
        dialect = self._conn.dialect
        start = (
            update(_delivery)
            .where(mine, running, ~blocked)
            .values(status=DeliveryStatus.SENDING, attempts=d.attempts + 1)
            .returning(d.attempts)
        )
        self.start_sql = Prepared(start, dialect)
        self.suppress = Prepared(
            update(_delivery)
            .where(mine, blocked)
            .values(
                status=DeliveryStatus.SUPPRESSED,
                skip_reason=case((suppressed, SkipReason.SUPPRESSED), else_=SkipReason.OBJECTED),
                lease_owner=None,
                lease_until=None,
            ),
            dialect,
        )
        # Paused or cancelled since the claim: back to the queue at once, for whoever resumes it
        # (a cancel has already made the row `cancelled`, so this matches only after a pause).
        self.give_back_stopped = Prepared(
            update(_delivery)
            .where(mine, ~running)
            .values(status=DeliveryStatus.QUEUED, lease_owner=None, lease_until=None),
            dialect,
        )
        self.give_back_one = Prepared(
            update(_delivery)
            .where(mine)
            .values(status=DeliveryStatus.QUEUED, lease_owner=None, lease_until=None),
            dialect,
        )
        self.record_sql = Prepared(record_statement(), dialect)
        # One durable commit per message: the outcome of a connection's last message and the
        # start of its next are one UPDATE of both rows (one statement, one transaction, on
        # SQLite and PostgreSQL alike), each column taking the value its row needs.
        last = d.id == bindparam("r_delivery_id")

        def pick(recorded: Any, started: Any) -> Any:
            return case((last, recorded), else_=started)

        self.record_then_start_sql = Prepared(
            update(_delivery)
            .where(or_(last, and_(mine, running, ~blocked)))
            .values(
                status=pick(bindparam("r_status"), DeliveryStatus.SENDING.value),
                attempts=pick(d.attempts, d.attempts + 1),
                smtp_reply=pick(bindparam("r_smtp_reply"), d.smtp_reply),
                message_id=pick(bindparam("r_message_id"), d.message_id),
                sent_at=pick(bindparam("r_sent_at", type_=d.sent_at.type), d.sent_at),
                next_attempt_at=pick(
                    bindparam("r_next_attempt_at", type_=d.next_attempt_at.type),
                    d.next_attempt_at,
                ),
                lease_owner=pick(None, d.lease_owner),
                lease_until=pick(None, d.lease_until),
            )
            .returning(d.id, d.attempts),
            dialect,
        )

    @classmethod
    def open(cls, engine: Engine, settings: Settings, clock: Callable[[], datetime]) -> Ledger:
        """A ledger for a new worker, named after this host and process."""
        return cls(
            engine,
            owner=owner_name(),
            key_count=len(settings.require_hash_keys()),
            lease_seconds=settings.worker.lease_seconds,
            clock=clock,
        )

    # -- claiming a batch ----------------------------------------------------------------------

    @again_if_cut
    def claim(self, limit: int, campaign_id: int | None = None) -> list[DueDelivery]:
        """Take up to `limit` due rows of running campaigns (of one, if given), oldest first."""
        now = self.clock()
        d = _delivery.c
        running = select(_campaign.c.id).where(_campaign.c.status == CampaignStatus.RUNNING)
        scope = [d.campaign_id.in_(running)]
        if campaign_id is not None:
            scope.append(d.campaign_id == campaign_id)
        due_now = (
            d.status == DeliveryStatus.QUEUED,
            and_(d.status == DeliveryStatus.DEFERRED, d.next_attempt_at <= now),
        )
        taken: list[Any] = []
        with self._conn.begin():
            for due in due_now:
                want = limit - len(taken)
                if want <= 0:
                    break
                # Rows another worker is claiming right now are skipped, not waited for. The
                # pick is a materialised CTE: as a plain `IN (subquery)` PostgreSQL may run it
                # again per row, each run skipping the rows the last one locked, and ignore
                # the LIMIT (found by test_ledger_queue).
                pick = (
                    select(d.id)
                    .where(due, *scope)
                    .order_by(d.id)
                    .limit(want)
                    .with_for_update(skip_locked=True)
                    .cte("pick")
                    .prefix_with("MATERIALIZED", dialect="postgresql")
                )
                taken += self._conn.execute(
                    update(_delivery)
                    .where(d.id.in_(select(pick.c.id)), due)
                    .values(
                        status=DeliveryStatus.CLAIMED,
                        lease_owner=self.owner,
                        lease_until=now + self.lease,
                    )
                    .returning(d.id, d.campaign_id, d.basis, d.contact_id)
                )
            if not taken:
                return []
            people = {
                r.id: Recipient(r.id, r.email, r.first_name, r.last_name, r.locale)
                for r in self._conn.execute(
                    self._recipients, {"ids": [row.contact_id for row in taken]}
                )
            }
        jobs = [DueDelivery(r.id, r.campaign_id, r.basis, people[r.contact_id]) for r in taken]
        jobs.sort(key=lambda job: job.delivery_id)
        return jobs

    @again_if_cut
    def renew(self) -> None:
        """Extend the lease on everything this worker holds."""
        with self._conn.begin():
            self._conn.execute(
                update(_delivery)
                .where(_delivery.c.status.in_(_HELD), _delivery.c.lease_owner == self.owner)
                .values(lease_until=self.clock() + self.lease)
            )

    @again_if_cut
    def release(self) -> TakeOver:
        """Give back what this worker holds: when it stops, or after its tasks were cancelled."""
        return self._give_back(_delivery.c.lease_owner == self.owner)

    @again_if_cut
    def take_over(self, campaign_id: int | None = None) -> TakeOver:
        """Give back the rows of workers whose lease expired or that died on this host."""
        d = _delivery.c
        now = self.clock()
        with self._conn.begin():
            owners = self._conn.execute(
                select(d.lease_owner)
                .distinct()
                .where(d.status.in_(_HELD), d.lease_owner.is_not(None), d.lease_until >= now)
            ).scalars()
            dead = [owner for owner in owners if is_dead_local_process(owner)]
        gone = or_(d.lease_owner.is_(None), d.lease_until < now, d.lease_owner.in_(dead))
        if campaign_id is not None:
            gone = and_(gone, d.campaign_id == campaign_id)
        return self._give_back(gone)

    def _give_back(self, which: ColumnElement[bool]) -> TakeOver:
        d = _delivery.c
        counts = []
        with self._conn.begin():
            for held, becomes in (
                (DeliveryStatus.CLAIMED, DeliveryStatus.QUEUED),
                (DeliveryStatus.SENDING, DeliveryStatus.UNKNOWN),
            ):
                result = self._conn.execute(
                    update(_delivery)
                    .where(d.status == held, which)
                    .values(status=becomes, lease_owner=None, lease_until=None)
                )
                counts.append(int(result.rowcount))
        return TakeOver(*counts)

    # -- what is left --------------------------------------------------------------------------

    @again_if_cut
    def pending(self, campaign_id: int | None) -> bool:
        """Whether the campaign (or any running one) has rows not finished: due, deferred, held."""
        d = _delivery.c
        if campaign_id is None:
            running = select(_campaign.c.id).where(_campaign.c.status == CampaignStatus.RUNNING)
            which = d.campaign_id.in_(running)
        else:
            which = d.campaign_id == campaign_id
        with self._conn.begin():
            query = select(exists().where(which, d.status.in_(_PENDING)))
            return bool(self._conn.execute(query).scalar())

    @again_if_cut
    def next_retry_at(self, campaign_id: int | None = None) -> datetime | None:
        d = _delivery.c
        query = select(func.min(d.next_attempt_at)).where(d.status == DeliveryStatus.DEFERRED)
        if campaign_id is not None:
            query = query.where(d.campaign_id == campaign_id)
        with self._conn.begin():
            moment: datetime | None = self._conn.execute(query).scalar()
        return moment

    @again_if_cut
    def is_running(self, campaign_id: int | None) -> bool:
        """Whether the campaign is still running (not paused, cancelled or finished)."""
        with self._conn.begin():
            status = self._conn.execute(
                select(_campaign.c.status).where(_campaign.c.id == campaign_id)
            ).scalar()
        return bool(status == CampaignStatus.RUNNING)

    @again_if_cut
    def finish_campaigns(self) -> None:
        """Mark running campaigns with nothing left `done`, unless a `campaign send` holds one."""
        c, d = _campaign.c, _delivery.c
        left = exists().where(d.campaign_id == c.id, d.status.in_(_PENDING))
        with self._conn.begin():
            self._conn.execute(
                update(_campaign)
                .where(c.status == CampaignStatus.RUNNING, c.run_owner.is_(None), ~left)
                .values(status=CampaignStatus.DONE)
            )

    # -- one message ---------------------------------------------------------------------------

    def lane(self, connection: LaneConnection | None = None) -> Lane:
        """A path for one sending connection's per-message statements (see `Lane`), on its
        own database connection or on `connection`, shared for group commit."""
        return Lane(self, connection)

    def reconnect(self) -> None:
        """After the server ended this session (see mailer.store.reconnect): a new one."""
        self._conn.rollback()  # the invalidated connection is replaced at its next use
        limit_idle_transactions(self._conn, self.lease)

    def close(self) -> None:
        release_idle_limit(self._conn)  # it goes back to the pool without this worker's limit
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
