"""Helpers for the campaign-run tests: facts, running a campaign, reading the ledger."""

from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.core.policy import ConsentFact
from mailer.delivery.sending import RunSummary, run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.models import Campaign, ConsentEvent, ConsentOrigin, Contact, Delivery
from tests.factories import new_campaign

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
WEB, IMPORT = ConsentOrigin.WEB, ConsentOrigin.IMPORT
REQ, CONF, WD = ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED, ConsentEvent.WITHDRAWN


def subscribed(list_name: str = "newsletter", days_ago: int = 30) -> list[ConsentFact]:
    return [ConsentFact(list_name, REQ, WEB, NOW - days_ago * DAY),
            ConsentFact(list_name, CONF, WEB, NOW - (days_ago - 1) * DAY)]  # fmt: skip


def run(engine: Engine, settings: Settings, campaign: Campaign, **kwargs: object) -> RunSummary:
    return asyncio.run(run_campaign(engine, settings, campaign, clock=lambda: NOW, **kwargs))  # type: ignore[arg-type]


def send(engine: Engine, settings: Settings, name: str, **kwargs: object) -> Campaign:
    campaign = new_campaign(engine, settings, name, at=NOW)
    run(engine, settings, campaign, **kwargs)
    return campaign


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def received(sink: SmtpSink) -> list[str]:
    return sorted(r for m in sink.messages for r in m.recipients)


Row = tuple[str, str, str | None, str | None, int]


def ledger(engine: Engine, campaign: Campaign) -> dict[str, Row]:
    """email -> (email, status, basis, skip_reason, attempts) for one campaign."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Contact.email, Delivery.status, Delivery.basis, Delivery.skip_reason,
                   Delivery.attempts)
            .join(Contact, Contact.id == Delivery.contact_id)  # type: ignore[arg-type]
            .where(Delivery.campaign_id == campaign.id)
        ).all()  # fmt: skip
    result = {row[0]: tuple(row) for row in rows}
    assert len(result) == len(rows)
    return result  # type: ignore[return-value]


def status_of(engine: Engine, campaign: Campaign) -> dict[str, str]:
    return {email: row[1] for email, row in ledger(engine, campaign).items()}
