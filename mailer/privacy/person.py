"""The person's rights and retention: export (AVG art. 15), erasure (art. 17), the consent trail
as proof (art. 7(1)), and the retention purge (art. 5(1)(e), DESIGN rule 6; in
`mailer.privacy.retention`, re-exported here).

Every address given here goes through `normalise_address` first: the contact and the
suppression hash are stored under the normal form, so "Anna@Example.NL " must find them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from mailer.config import Settings
from mailer.core.addresses import normalise_address
from mailer.core.tokens import address_hashes
from mailer.errors import InputError, NotFoundError
from mailer.privacy.erasure import Erased, erase_rows, in_secure_transaction
from mailer.privacy.retention import UNCONFIRMED_SIGNUP_DAYS, PurgeReport, purge
from mailer.store.models import (
    Campaign,
    Consent,
    Contact,
    Delivery,
    Purchase,
    Suppression,
    SuppressionReason,
)

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

_contact = Contact.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]


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
    hashes = address_hashes(email, settings.require_hash_keys())
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
    keys = settings.require_hash_keys()

    def work(conn: Connection) -> Erased:
        contact = _contact_row(conn, settings, address)
        return erase_rows(conn, keys, contact.id, address, now, suppress=True)

    erased, truncated = in_secure_transaction(engine, work)
    return ErasureReport(address, erased, truncated)
