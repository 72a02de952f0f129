"""The person's rights and retention: export (AVG art. 15), erasure (art. 17), the consent trail
as proof (art. 7(1)), and the retention purge (art. 5(1)(e), DESIGN rule 6).

Every address given here goes through `normalise_address` first: the contact and the
suppression hash are stored under the normal form, so "Anna@Example.NL " must find them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, exists, func, or_, select

from mailer.addresses import normalise_address
from mailer.config import Settings
from mailer.erasure import Erased, erase_rows, forget_delivery_people, in_secure_transaction
from mailer.errors import InputError, NotFoundError
from mailer.models import (
    Campaign,
    Consent,
    ConsentEvent,
    Contact,
    Delivery,
    DeliveryStatus,
    Purchase,
    Suppression,
    SuppressionReason,
)
from mailer.tokens import address_hashes

__all__ = [
    "UNCONFIRMED_SIGNUP_DAYS",
    "ErasureReport",
    "PurgeReport",
    "TrailEntry",
    "consent_trail",
    "erase_person",
    "export_person",
    "purge",
]

# A signup not confirmed within this many days never will be: the request is dropped with the
# contact (the confirm link expired long before; web.confirm_ttl_hours is 48 by default).
UNCONFIRMED_SIGNUP_DAYS = 30

_contact = Contact.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]

# Rows of a run that is still going are left alone; everything else may lose its person.
_IN_PROGRESS = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED, DeliveryStatus.SENDING)


def _address(raw: str) -> str:
    try:
        return normalise_address(raw)
    except ValueError as exc:
        raise InputError(f'"{raw}" is not an e-mail address: {exc}', field="EMAIL") from None


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


def _plain(row: Mapping[Any, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    return {str(k): _iso(v) for k, v in row.items() if k not in skip}


def _suppressions(conn: Connection, settings: Settings, email: str) -> list[dict[str, Any]]:
    hashes = address_hashes(email, settings.require_secret_keys())
    rows = conn.execute(
        select(_suppression.c.reason, _suppression.c.scope, _suppression.c.at)
        .where(_suppression.c.address_hash.in_(hashes))
        .order_by(_suppression.c.at, _suppression.c.id)
    )
    return [_plain(r._mapping) for r in rows]


def _contact_row(conn: Connection, settings: Settings, email: str) -> Any:
    """The contact stored under `email`, or NotFoundError saying what, if anything, is kept."""
    row = conn.execute(select(_contact).where(_contact.c.email == email)).first()
    if row is not None:
        return row
    kept = _suppressions(conn, settings, email)
    if any(s["reason"] == SuppressionReason.ERASED for s in kept):
        raise NotFoundError(
            f"No contact with the address {email} is stored: it was erased. Only a keyed hash "
            "of the address is kept, so that it is never mailed again."
        )
    if kept:
        reasons = ", ".join(sorted({s["reason"] for s in kept}))
        raise NotFoundError(
            f"No contact with the address {email} is stored; a keyed hash of it is on the "
            f"suppression list ({reasons})."
        )
    raise NotFoundError(f"No contact with the address {email} is stored.")


# -- export (art. 15) ------------------------------------------------------------------------


def export_person(engine: Engine, settings: Settings, email: str) -> dict[str, Any]:
    """Everything stored about the person at `email`, JSON-ready (ISO times)."""
    address = _address(email)
    with engine.connect() as conn:
        contact = _contact_row(conn, settings, address)
        cid = contact.id
        consents = conn.execute(
            select(
                _consent.c.list_name.label("list"), _consent.c.event, _consent.c.origin,
                _consent.c.wording, _consent.c.source, _consent.c.ip, _consent.c.user_agent,
                _consent.c.at,
            ).where(_consent.c.contact_id == cid).order_by(_consent.c.at, _consent.c.id)
        )  # fmt: skip
        purchases = conn.execute(
            select(
                _purchase.c.category, _purchase.c.at.label("purchased_at"),
                _purchase.c.optout_offered, _purchase.c.objected_at,
            ).where(_purchase.c.contact_id == cid).order_by(_purchase.c.at, _purchase.c.id)
        )  # fmt: skip
        deliveries = conn.execute(
            select(
                _campaign.c.name.label("campaign"), _campaign.c.list_name.label("list"),
                _campaign.c.subject, _delivery.c.basis, _delivery.c.skip_reason,
                _delivery.c.status, _delivery.c.attempts, _delivery.c.sent_at,
                _delivery.c.message_id,
            )
            .join(_campaign, _campaign.c.id == _delivery.c.campaign_id)
            .where(_delivery.c.contact_id == cid)
            .order_by(_delivery.c.id)
        )  # fmt: skip
        return {
            "email": contact.email,
            "contact": _plain(contact._mapping, skip=("id",)),
            "consents": [_plain(r._mapping) for r in consents],
            "purchases": [_plain(r._mapping) for r in purchases],
            "suppressions": _suppressions(conn, settings, address),
            "deliveries": [_plain(r._mapping) for r in deliveries],
        }


# -- consent trail (proof for a complaint) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrailEntry:
    """One line of the trail: a consent event or a suppression, in time order."""

    at: datetime
    list_name: str | None  # None: every list (a suppression without scope)
    event: str  # requested | confirmed | withdrawn | suppressed: <reason>
    origin: str  # web | import | suppression list
    wording: str
    source: str
    ip: str | None
    user_agent: str | None


def consent_trail(engine: Engine, settings: Settings, email: str) -> list[TrailEntry]:
    """The consent events and suppressions of `email`, oldest first."""
    address = _address(email)
    with engine.connect() as conn:
        contact = _contact_row(conn, settings, address)
        entries = [
            TrailEntry(r.at, r.list_name, r.event, r.origin, r.wording, r.source, r.ip,
                       r.user_agent)
            for r in conn.execute(
                select(_consent)
                .where(_consent.c.contact_id == contact.id)
                .order_by(_consent.c.at, _consent.c.id)
            )
        ]  # fmt: skip
        entries += [
            TrailEntry(datetime.fromisoformat(s["at"]), s["scope"], f"suppressed: {s['reason']}",
                       "suppression list", "", "", None, None)
            for s in _suppressions(conn, settings, address)
        ]  # fmt: skip
    return sorted(entries, key=lambda e: e.at)


# -- erasure (art. 17) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErasureReport:
    email: str
    erased: Erased
    wal_truncated: bool  # False: a reader held the SQLite WAL; old page images may remain


def erase_person(engine: Engine, settings: Settings, email: str, *, now: datetime) -> ErasureReport:
    """Remove the person from every table; keep only a keyed hash on the suppression list, so
    no import can make the address mailable again (only their own new double opt-in)."""
    address = _address(email)
    keys = settings.require_secret_keys()

    def work(conn: Connection) -> Erased:
        contact = _contact_row(conn, settings, address)
        return erase_rows(conn, keys, contact.id, address, now, suppress=True)

    erased, truncated = in_secure_transaction(engine, work)
    return ErasureReport(address, erased, truncated)


# -- retention purge -------------------------------------------------------------------------


@dataclass
class PurgeReport:
    dry_run: bool
    # Addresses only on a dry run (for review); after a real run they are gone, and a daily
    # log of who was erased would be a list of the very people who were erased.
    ended: list[str] = field(default_factory=list)
    ended_count: int = 0
    unconfirmed: list[str] = field(default_factory=list)
    unconfirmed_count: int = 0
    deliveries: int = 0
    wal_truncated: bool = True

    def lines(self) -> list[str]:
        verb = "would be" if self.dry_run else "were"
        return [
            f"{self.ended_count} contacts whose relationship ended more than the retention "
            f"period ago {verb} erased.",
            f"{self.unconfirmed_count} signups never confirmed within "
            f"{UNCONFIRMED_SIGNUP_DAYS} days {verb} removed.",
            f"{self.deliveries} delivery records older than the delivery retention {verb} "
            "stripped of the person.",
        ]


def _ended(conn: Connection, cutoff: datetime) -> list[tuple[int, str]]:
    query = select(_contact.c.id, _contact.c.email).where(_contact.c.relationship_ended_at < cutoff)
    return [(r.id, r.email) for r in conn.execute(query.order_by(_contact.c.id))]


def _unconfirmed(conn: Connection, cutoff: datetime) -> list[tuple[int, str]]:
    """Contacts whose every consent event is a request older than `cutoff`, with no purchase."""
    other = exists().where(
        _consent.c.contact_id == _contact.c.id,
        or_(_consent.c.event != ConsentEvent.REQUESTED, _consent.c.at >= cutoff),
    )
    requested = exists().where(_consent.c.contact_id == _contact.c.id)
    bought = exists().where(_purchase.c.contact_id == _contact.c.id)
    query = select(_contact.c.id, _contact.c.email).where(requested, ~other, ~bought)
    return [(r.id, r.email) for r in conn.execute(query.order_by(_contact.c.id))]


def _old_deliveries(conn: Connection, cutoff: datetime) -> list[tuple[int, int | None]]:
    """(delivery id, contact id) of ledger rows older than `cutoff` that still name someone."""
    # Skipped rows have no sent_at: their age is the campaign's.
    sent = func.coalesce(_delivery.c.sent_at, _campaign.c.created_at)
    query = (
        select(_delivery.c.id, _delivery.c.contact_id)
        .join(_campaign, _campaign.c.id == _delivery.c.campaign_id)
        .where(
            sent < cutoff,
            _delivery.c.status.not_in(_IN_PROGRESS),
            or_(_delivery.c.contact_id.is_not(None), _delivery.c.message_id.is_not(None)),
        )
    )
    return [(r.id, r.contact_id) for r in conn.execute(query)]


def purge(engine: Engine, settings: Settings, *, now: datetime, dry_run: bool) -> PurgeReport:
    """Apply retention: erase former relations, drop stale signups, strip old ledger rows."""
    policy = settings.policy
    keys = settings.require_secret_keys()
    ended_cutoff = now - timedelta(days=policy.retention_days)
    signup_cutoff = now - timedelta(days=UNCONFIRMED_SIGNUP_DAYS)
    delivery_cutoff = now - timedelta(days=policy.delivery_retention_days)

    def work(conn: Connection) -> PurgeReport:
        ended = _ended(conn, ended_cutoff)
        unconfirmed = [c for c in _unconfirmed(conn, signup_cutoff) if c not in set(ended)]
        report = PurgeReport(dry_run, ended_count=len(ended), unconfirmed_count=len(unconfirmed))
        if dry_run:
            report.ended = [e for _, e in ended]
            report.unconfirmed = [e for _, e in unconfirmed]
            # The old rows of the contacts above lose their person as part of the erasure.
            gone = {i for i, _ in ended + unconfirmed}
            old = _old_deliveries(conn, delivery_cutoff)
            report.deliveries = sum(1 for _, contact_id in old if contact_id not in gone)
            return report
        for contact_id, email in ended:
            # "Erased as above": a former relation stays suppressed through the keyed hash.
            erase_rows(conn, keys, contact_id, email, now, suppress=True)
        for contact_id, email in unconfirmed:
            # Never confirmed, so never consented: nothing to suppress, only to forget.
            erase_rows(conn, keys, contact_id, email, now, suppress=False)
        old = _old_deliveries(conn, delivery_cutoff)
        report.deliveries = forget_delivery_people(conn, [i for i, _ in old])
        return report

    if dry_run:
        with engine.connect() as conn:
            return work(conn)
    report, truncated = in_secure_transaction(engine, work)
    report.wal_truncated = truncated
    return report
