"""The retention purge (AVG art. 5(1)(e), DESIGN rule 6): what is no longer needed goes.

- A contact whose relationship ended more than `policy.retention_days` ago is erased, as
  `privacy erase` does, and stays suppressed through the keyed hash. Not when the person still
  subscribes to a list: that confirmed subscription is a relationship of its own, and erasing it
  would both destroy the evidence and block the mail the person asked for (they are counted).
- A signup never confirmed within 30 days never will be: a contact that is nothing but such
  requests is removed (no suppression: they never consented, so there is nothing to honour), and
  such a request of a contact kept for other reasons loses its evidence (IP, user agent).
- A delivery row older than `policy.delivery_retention_days` keeps campaign, basis and status and
  loses the person, the Message-ID and the SMTP reply.

Work is done in batches, each its own short transaction, so a first purge of a large file does
not hold the SQLite write lock for minutes against the web side and a running campaign; running
it again (or after a crash half-way) simply continues. The rows are chosen again in every batch,
inside its transaction, so a contact who subscribed a moment ago is not erased on stale facts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Select,
    Table,
    delete,
    exists,
    func,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.sql.expression import Exists

from mailer.config import Settings
from mailer.privacy.erasure import erase_contacts, secure_connection
from mailer.store.models import (
    Campaign,
    CampaignStatus,
    Consent,
    ConsentEvent,
    Contact,
    Delivery,
    DeliveryStatus,
    Purchase,
)

__all__ = ["UNCONFIRMED_SIGNUP_DAYS", "PurgeReport", "purge"]

# A signup not confirmed within this many days never will be (the confirm link expired long
# before: web.confirm_ttl_hours is 48 by default; a longer TTL lengthens this window).
UNCONFIRMED_SIGNUP_DAYS = 30
# Contacts erased per transaction, and ledger rows stripped per transaction (a cheap UPDATE).
_BATCH = 500
_LEDGER_BATCH = 5000

_contact = Contact.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]

# Rows of a run that is still going are left alone; everything else may lose its person.
_IN_PROGRESS = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED, DeliveryStatus.SENDING)

_Change = Callable[[list[int]], Executable]


@dataclass
class PurgeReport:
    dry_run: bool
    signup_days: int = UNCONFIRMED_SIGNUP_DAYS
    # Addresses only on a dry run (for review); after a real run they are gone, and a daily
    # log of who was erased would be a list of the very people who were erased.
    ended: list[str] = field(default_factory=list)
    ended_count: int = 0
    still_subscribed: int = 0  # relationship ended, but a subscription is in force: kept
    unconfirmed: list[str] = field(default_factory=list)
    unconfirmed_count: int = 0
    stale_requests: int = 0  # unconfirmed requests of contacts kept for other reasons
    deliveries: int = 0
    wal_truncated: bool = True

    def lines(self) -> list[str]:
        verb = "would be" if self.dry_run else "were"
        lines = [
            f"{self.ended_count} contacts whose relationship ended more than the retention "
            f"period ago {verb} erased.",
            f"{self.unconfirmed_count} signups never confirmed within {self.signup_days} days "
            f"{verb} removed, and {self.stale_requests} unconfirmed requests of other contacts.",
            f"{self.deliveries} delivery records older than the delivery retention {verb} "
            "stripped of the person.",
        ]
        if self.still_subscribed:
            lines.append(
                f"{self.still_subscribed} contacts whose relationship ended still subscribe to "
                "a list and are kept; they leave when they unsubscribe."
            )
        return lines


@dataclass(frozen=True, slots=True)
class _Cutoffs:
    ended: datetime
    signup: datetime
    delivery: datetime


def _in_force() -> Exists:
    """SQL: the contact has a confirmation not withdrawn since, on some list."""
    confirmed, withdrawn = _consent.alias("confirmed"), _consent.alias("withdrawn")
    return exists().where(
        confirmed.c.contact_id == _contact.c.id,
        confirmed.c.event == ConsentEvent.CONFIRMED,
        ~exists().where(
            withdrawn.c.contact_id == confirmed.c.contact_id,
            withdrawn.c.list_name == confirmed.c.list_name,
            withdrawn.c.event == ConsentEvent.WITHDRAWN,
            withdrawn.c.at >= confirmed.c.at,
        ),
    )


def _ended(cut: _Cutoffs, *, subscribed: bool = False) -> Select[int, str]:
    in_force = _in_force()
    return (
        select(_contact.c.id, _contact.c.email)
        .where(_contact.c.relationship_ended_at < cut.ended)
        .where(in_force if subscribed else ~in_force)
        .order_by(_contact.c.id)
    )


def _unconfirmed(cut: _Cutoffs) -> Select[int, str]:
    """Contacts that are nothing but requests older than the window: no other event, no
    purchase, and not a former relation (those are erased with a suppression above)."""
    other = exists().where(
        _consent.c.contact_id == _contact.c.id,
        or_(_consent.c.event != ConsentEvent.REQUESTED, _consent.c.at >= cut.signup),
    )
    requested = exists().where(_consent.c.contact_id == _contact.c.id)
    bought = exists().where(_purchase.c.contact_id == _contact.c.id)
    ended = _contact.c.relationship_ended_at < cut.ended
    return (
        select(_contact.c.id, _contact.c.email)
        .where(requested, ~other, ~bought, or_(_contact.c.relationship_ended_at.is_(None), ~ended))
        .order_by(_contact.c.id)
    )


def _stale_requests(cut: _Cutoffs) -> Select[int]:
    """Request events older than the window that no confirmation on their list followed."""
    later = _consent.alias("later")
    return select(_consent.c.id).where(
        _consent.c.event == ConsentEvent.REQUESTED,
        _consent.c.at < cut.signup,
        ~exists().where(
            later.c.contact_id == _consent.c.contact_id,
            later.c.list_name == _consent.c.list_name,
            later.c.event == ConsentEvent.CONFIRMED,
            later.c.at >= _consent.c.at,
        ),
    )


def _old_deliveries(cut: _Cutoffs) -> Select[int]:
    """Ledger rows older than the delivery retention that still say something about someone."""
    # Skipped rows have no sent_at: their age is the campaign's.
    sent = func.coalesce(_delivery.c.sent_at, _campaign.c.created_at)
    return (
        select(_delivery.c.id)
        .join(_campaign, _campaign.c.id == _delivery.c.campaign_id)
        .where(
            sent < cut.delivery,
            _delivery.c.status.not_in(_IN_PROGRESS),
            or_(
                _delivery.c.contact_id.is_not(None),
                _delivery.c.message_id.is_not(None),
                _delivery.c.smtp_reply.is_not(None),
            ),
        )
    )


def _count(conn: Connection, query: Select[int] | Select[int, str]) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _dry_run(conn: Connection, cut: _Cutoffs, report: PurgeReport) -> PurgeReport:
    report.ended = [row.email for row in conn.execute(_ended(cut))]
    report.ended_count = len(report.ended)
    report.still_subscribed = _count(conn, _ended(cut, subscribed=True))
    report.unconfirmed = [row.email for row in conn.execute(_unconfirmed(cut))]
    report.unconfirmed_count = len(report.unconfirmed)
    # Requests of the contacts above go with them; count only those of contacts that stay.
    leaving = union(
        *(
            q.with_only_columns(_contact.c.id).order_by(None)
            for q in (_ended(cut), _unconfirmed(cut))
        )
    )
    report.stale_requests = _count(
        conn, _stale_requests(cut).where(_consent.c.contact_id.not_in(leaving))
    )
    report.deliveries = _count(
        conn,
        _old_deliveries(cut).where(
            or_(_delivery.c.contact_id.is_(None), _delivery.c.contact_id.not_in(leaving))
        ),
    )
    return report


def purge(engine: Engine, settings: Settings, *, now: datetime, dry_run: bool) -> PurgeReport:
    """Apply retention: erase former relations, drop stale signups, strip old ledger rows.

    The plain function the scheduler runs daily; `mailer privacy purge` prints its report.
    """
    keys = settings.require_hash_keys()
    signup_days = max(UNCONFIRMED_SIGNUP_DAYS, math.ceil(settings.web.confirm_ttl_hours / 24))
    cut = _Cutoffs(
        ended=now - timedelta(days=settings.policy.retention_days),
        signup=now - timedelta(days=signup_days),
        delivery=now - timedelta(days=settings.policy.delivery_retention_days),
    )
    report = PurgeReport(dry_run, signup_days)
    if dry_run:
        with engine.connect() as conn:
            return _dry_run(conn, cut, report)
    with secure_connection(engine) as (conn, checkpoint):
        for query, suppress in ((_ended(cut), True), (_unconfirmed(cut), False)):
            last = 0
            while batch := [
                (r.id, r.email)
                for r in conn.execute(query.where(_contact.c.id > last).limit(_BATCH))
            ]:
                # A former relation stays suppressed through the keyed hash; a signup that was
                # never confirmed never consented, so there is only something to forget.
                erase_contacts(conn, keys, batch, now, suppress=suppress)
                conn.commit()
                last = batch[-1][0]
                if suppress:
                    report.ended_count += len(batch)
                else:
                    report.unconfirmed_count += len(batch)
        report.still_subscribed = _count(conn, _ended(cut, subscribed=True))
        conn.commit()
        report.stale_requests = _in_batches(
            conn, _consent, _stale_requests(cut), _drop_requests, _BATCH
        )
        # Without its people the ledger no longer protects anyone (the unique (campaign,
        # contact) row): a campaign sent again would mail everyone twice, so it is archived.
        stripped = select(_delivery.c.campaign_id).where(_delivery.c.id.in_(_old_deliveries(cut)))
        conn.execute(
            update(_campaign)
            .where(_campaign.c.id.in_(stripped))
            .values(status=CampaignStatus.ARCHIVED)
        )
        conn.commit()
        report.deliveries = _in_batches(
            conn, _delivery, _old_deliveries(cut), _strip_deliveries, _LEDGER_BATCH
        )
        report.wal_truncated = checkpoint()
    return report


def _in_batches(conn: Connection, table: Table, ids: Select[int], change: _Change,
                size: int) -> int:  # fmt: skip
    """Apply `change` to the rows of `table` that `ids` selects, a batch per transaction, in
    id order; returns how many. Walking the ids (id > the last one) keeps each batch a short
    index range instead of a scan past every row already done."""
    done, last = 0, 0
    while batch := [
        row[0]
        for row in conn.execute(ids.where(table.c.id > last).order_by(table.c.id).limit(size))
    ]:
        done += int(conn.execute(change(batch)).rowcount)
        conn.commit()
        last = batch[-1]
    return done


def _drop_requests(ids: list[int]) -> Executable:
    return delete(_consent).where(_consent.c.id.in_(ids))


def _strip_deliveries(ids: list[int]) -> Executable:
    return (
        update(_delivery)
        .where(_delivery.c.id.in_(ids))
        .values(contact_id=None, message_id=None, smtp_reply=None)
    )
