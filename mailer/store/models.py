"""The tables (DESIGN.md, "Data"). Only these fields are stored: data minimisation.

Enumerated values (basis, skip reason, status, consent event) are stored as their string values;
the enums in `mailer.core.policy` and here are the only producers of those strings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, Index, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel

from mailer.core.states import (
    CampaignStatus,
    ConsentEvent,
    ConsentOrigin,
    DeliveryStatus,
    SuppressionReason,
)

__all__ = [
    "CONTACT_PERSONAL_FIELDS",
    "Campaign",
    "CampaignStatus",
    "Consent",
    "ConsentEvent",
    "ConsentOrigin",
    "Contact",
    "Delivery",
    "DeliveryStatus",
    "Purchase",
    "ScheduleOutcome",
    "SendRate",
    "SignupAttempt",
    "Suppression",
    "SuppressionKey",
    "SuppressionReason",
    "WebhookEvent",
]


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (naive storage) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; times are aware UTC inside")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_column(*, nullable: bool = True, index: bool = False) -> Column[datetime]:
    return Column(UtcDateTime(), nullable=nullable, index=index)


class Contact(SQLModel, table=True):
    # Unsubscribe and confirm links are signed over the contact id. Without AUTOINCREMENT SQLite
    # hands the id of an erased newest contact to the next one, and the erased person's old
    # link would then act on (and show the lists of) someone else. PostgreSQL never reuses ids.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True, max_length=320)
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    initials: str | None = Field(default=None, max_length=20)
    title: str | None = Field(default=None, max_length=40)
    gender: str | None = Field(default=None, max_length=20)
    birth_date: date | None = None
    street: str | None = Field(default=None, max_length=200)
    postcode: str | None = Field(default=None, max_length=20)
    city: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=40)
    locale: str | None = Field(default=None, max_length=5)
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))
    relationship_ended_at: datetime | None = Field(default=None, sa_column=_utc_column())


CONTACT_PERSONAL_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "initials",
    "title",
    "gender",
    "birth_date",
    "street",
    "postcode",
    "city",
    "phone",
    "locale",
)


class Consent(SQLModel, table=True):
    """Append-only consent events: the evidence of rule 7."""

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    list_name: str = Field(max_length=64)
    event: str = Field(max_length=16)
    origin: str = Field(max_length=16)
    wording: str
    source: str = Field(max_length=500)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=500)
    at: datetime = Field(sa_column=_utc_column(nullable=False))


class Purchase(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    category: str = Field(max_length=64)
    at: datetime = Field(sa_column=_utc_column(nullable=False))
    optout_offered: bool
    objected_at: datetime | None = Field(default=None, sa_column=_utc_column())


class Suppression(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # HMAC of the normalised address: an erased person stays suppressed without their address.
    address_hash: str = Field(index=True, max_length=64)
    reason: str = Field(max_length=16)
    # None: all lists; otherwise the one list it applies to.
    scope: str | None = Field(default=None, max_length=64)
    at: datetime = Field(sa_column=_utc_column(nullable=False))


class SuppressionKey(SQLModel, table=True):
    """A key that has hashed suppressions, by its fingerprint (never the key itself).

    While suppressions exist, every command refuses to run without each of these keys: a
    suppression whose key is gone no longer matches, and the person would be mailed again.
    """

    __tablename__ = "suppression_key"

    fingerprint: str = Field(primary_key=True, max_length=16)
    first_used_at: datetime = Field(sa_column=_utc_column(nullable=False))


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=100)
    list_name: str = Field(max_length=64)
    category: str | None = Field(default=None, max_length=64)
    subject: str = Field(max_length=300)
    template: str = Field(max_length=100)
    status: str = Field(default=CampaignStatus.DRAFT, max_length=16)
    schedule: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))
    # The run lock: which process runs the campaign now, and when it last said so.
    run_owner: str | None = Field(default=None, max_length=200)
    run_heartbeat: datetime | None = Field(default=None, sa_column=_utc_column())
    # Why and when it was paused or cancelled (by whom: a command, or the guard with its rate).
    status_reason: str | None = Field(default=None, max_length=300)
    status_changed_at: datetime | None = Field(default=None, sa_column=_utc_column())
    # Set when the guard paused the campaign: the last delivery it had judged. After a resume
    # the guard judges only the deliveries after it (the user decided the old ones were fine).
    guard_judged_to: int | None = None


class Delivery(SQLModel, table=True):
    """The ledger: one row per (campaign, contact); the record of rule 8."""

    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_delivery_once"),
        # Workers claim queued rows in id order: an ordered index scan, however many are sent.
        Index("ix_delivery_status_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    contact_id: int | None = Field(default=None, foreign_key="contact.id", index=True)
    basis: str | None = Field(default=None, max_length=32)
    skip_reason: str | None = Field(default=None, max_length=32)
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=_utc_column())
    smtp_reply: str | None = Field(default=None, max_length=1000)
    # Indexed: a bounce or complaint is matched to its delivery by the Message-ID it quotes.
    message_id: str | None = Field(default=None, max_length=200, index=True)
    sent_at: datetime | None = Field(default=None, sa_column=_utc_column())
    # The worker that claimed the row, and until when its claim holds without a renewal.
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_until: datetime | None = Field(default=None, sa_column=_utc_column())
    # What the world said about the message after the send (mailer.delivery.feedback): a hard
    # or soft bounce or a complaint, from the SMTP reply, the bounce mailbox or a relay's webhook.
    feedback: str | None = Field(default=None, max_length=16)
    feedback_at: datetime | None = Field(default=None, sa_column=_utc_column())


class SendRate(SQLModel, table=True):
    """The next free sending slot per rate (global "*" or "@domain"), shared by all workers.

    Times are seconds since the epoch on the database server's clock, so hosts whose clocks
    differ still space their messages correctly.
    """

    __tablename__ = "send_rate"

    key: str = Field(primary_key=True, max_length=300)
    next_free: float


class SignupAttempt(SQLModel, table=True):
    """Rate-limit state of the signup form (anti subscription bombing), kept for 24 hours.

    `key_hash` is a keyed hash of the address or the IP address, never the value itself: this
    table must not become a second, unprotected list of who tried to subscribe.
    """

    __tablename__ = "signup_attempt"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # "address" (confirmation mail sent) or "ip" (form posted)
    key_hash: str = Field(max_length=64, index=True)
    at: datetime = Field(sa_column=_utc_column(nullable=False, index=True))


class ScheduleOutcome(SQLModel, table=True):
    """The last thing that happened to a campaign's schedule under `mailer serve`.

    The job store holds what is due; this says what came of it (ran, running, missed beyond
    the grace, busy, failed), so `mailer schedule list` can tell the user from any process.
    """

    __tablename__ = "schedule_outcome"

    campaign: str = Field(primary_key=True, max_length=100)
    outcome: str = Field(max_length=16)
    due_at: datetime | None = Field(default=None, sa_column=_utc_column())
    at: datetime = Field(sa_column=_utc_column(nullable=False))
    detail: str | None = Field(default=None, max_length=300)


class WebhookEvent(SQLModel, table=True):
    """Relay webhook calls already handled (mailer.delivery.feedback): a provider's retry of the
    same event, or a replayed Mailgun token, is recognised and changes nothing twice."""

    __tablename__ = "webhook_event"
    __table_args__ = (UniqueConstraint("provider", "event_key", name="uq_webhook_event_once"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=16)
    # The provider's id of the event (Postmark record id, SNS MessageId, Mailgun token), hashed:
    # 64 characters whatever the provider sends.
    event_key: str = Field(max_length=64)
    at: datetime = Field(sa_column=_utc_column(nullable=False, index=True))
