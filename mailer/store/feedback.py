"""What the world said about a delivery after the send, in the ledger: find the delivery a
report is about, mark it, and count a campaign's bounces and complaints.

A report (DSN, ARF complaint, relay webhook) acts only on mail we sent: it is matched by the
signed VERP delivery id or by the Message-ID it quotes, and the address suppressed is the one
we mailed (the delivery's contact), never one the report names (issue 14 row 3: a forged DSN
naming anyone must not suppress them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, case, func, select, update
from sqlalchemy.sql import ColumnElement

from mailer.core.states import DeliveryStatus, Feedback, SuppressionReason
from mailer.core.tokens import address_hashes
from mailer.store.models import Contact, Delivery, Suppression, WebhookEvent
from mailer.store.suppression import add_suppression

__all__ = [
    "FeedbackCounts",
    "MatchedDelivery",
    "feedback_counts",
    "find_delivery",
    "mark_delivery",
    "remember_event",
    "suppress_for",
]

_delivery = Delivery.__table__  # type: ignore[attr-defined]
_contact = Contact.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_event = WebhookEvent.__table__  # type: ignore[attr-defined]

# Relays retry for hours (Postmark, SNS) to a day; an event key is kept for a month.
_EVENT_DAYS = 30


@dataclass(frozen=True, slots=True)
class MatchedDelivery:
    delivery_id: int
    campaign_id: int
    email: str | None  # None once the person was erased (a hashed suppression covers them)
    status: str
    feedback: str | None


def _bare(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


def find_delivery(
    conn: Connection,
    *,
    delivery_id: int | None = None,
    message_ids: Iterable[str] = (),
    address: str | None = None,
) -> MatchedDelivery | None:
    """The delivery with this (VERP) id, else the one that sent one of these Message-IDs, else
    (only for a report an authenticated relay made) the latest one handed over to `address`."""
    d = _delivery.c
    query = select(d.id, d.campaign_id, _contact.c.email, d.status, d.feedback).select_from(
        _delivery.outerjoin(_contact, _contact.c.id == d.contact_id)
    )
    wanted = {f"<{bare}>" for m in message_ids if (bare := _bare(m))}
    # Only what was handed to a server can bounce or be complained about.
    handed = _delivery.c.message_id.is_not(None) & (_delivery.c.message_id != "")
    row = None
    if delivery_id is not None:
        row = conn.execute(query.where(_delivery.c.id == delivery_id, handed)).first()
    if row is None and wanted:
        row = conn.execute(
            query.where(_delivery.c.message_id.in_(bindparam("ids", expanding=True))).limit(1),
            {"ids": sorted(wanted)},
        ).first()
    if row is None and address:
        row = conn.execute(
            query.where(_contact.c.email == address.strip().lower(), handed)
            .order_by(d.id.desc())
            .limit(1)
        ).first()  # fmt: skip
    if row is None:
        return None
    return MatchedDelivery(int(row[0]), int(row[1]), row[2], str(row[3]), row[4])


def mark_delivery(
    conn: Connection,
    found: MatchedDelivery,
    feedback: Feedback | None,
    *,
    note: str,
    now: datetime,
) -> bool:
    """Record `feedback` on the delivery (None: a permanent refusal of our content); a
    delivery keeps the weightiest feedback it was given. True when something changed."""
    values: dict[str, object] = {}
    if feedback is not None and (
        found.feedback is None or Feedback(found.feedback).rank < feedback.rank
    ):
        values.update(feedback=feedback, feedback_at=now)
    if feedback in (Feedback.HARD_BOUNCE, None) and found.status != DeliveryStatus.FAILED:
        values["status"] = DeliveryStatus.FAILED
    if not values:
        return False
    values["smtp_reply"] = note[:1000]
    conn.execute(update(_delivery).where(_delivery.c.id == found.delivery_id).values(values))
    return True


def suppress_for(
    conn: Connection, keys: Sequence[str], email: str, reason: SuppressionReason, now: datetime
) -> bool:
    """Suppress `email` on every list for `reason`, unless it already is; True if added."""
    present = conn.execute(
        select(_suppression.c.id)
        .where(
            _suppression.c.address_hash.in_(bindparam("hashes", expanding=True)),
            _suppression.c.scope.is_(None),
            _suppression.c.reason == reason,
        )
        .limit(1),
        {"hashes": address_hashes(email, keys)},
    ).first()
    if present is not None:
        return False
    add_suppression(conn, keys, email, reason, now)
    return True


def remember_event(conn: Connection, provider: str, key: str, now: datetime) -> bool:
    """Note a webhook event as handled; False if it was handled before (a retry or replay).

    Call it first in the transaction that records the event, so both commit or neither."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    seen = conn.execute(
        select(_event.c.id).where(_event.c.provider == provider, _event.c.event_key == digest)
    ).first()
    if seen is not None:
        return False
    conn.execute(_event.delete().where(_event.c.at < now - timedelta(days=_EVENT_DAYS)))
    conn.execute(_event.insert().values(provider=provider, event_key=digest, at=now))
    return True


@dataclass(frozen=True, slots=True)
class FeedbackCounts:
    attempts: int = 0  # deliveries handed to a server at least once
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0
    last_attempted: int | None = None  # the highest delivery id attempted

    def rate(self, count: int) -> float:
        return count / self.attempts if self.attempts else 0.0


def feedback_counts(
    conn: Connection, campaign_id: int, *, after_delivery_id: int | None = None
) -> FeedbackCounts:
    """A campaign's attempts, bounces and complaints (the guard's and the report's numbers);
    only of the deliveries after `after_delivery_id` when given."""
    d = _delivery.c
    scope = [d.campaign_id == campaign_id]
    if after_delivery_id is not None:
        scope.append(d.id > after_delivery_id)

    def count(kind: Feedback) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((d.feedback == kind, 1), else_=0)), 0)

    row = conn.execute(
        select(
            func.coalesce(func.sum(case((d.attempts > 0, 1), else_=0)), 0),
            count(Feedback.HARD_BOUNCE),
            count(Feedback.SOFT_BOUNCE),
            count(Feedback.COMPLAINT),
            func.max(case((d.attempts > 0, d.id), else_=None)),
        ).where(*scope)
    ).one()
    return FeedbackCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]), row[4])
