"""Campaigns: create, look up, and report on the ledger."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from mailer.config import Settings
from mailer.core.render import CampaignContent, MessageFactory, make_environment
from mailer.core.tokens import TokenSigner
from mailer.errors import InputError, NotFoundError
from mailer.store.feedback import FeedbackCounts, feedback_counts
from mailer.store.models import Campaign, Contact, Delivery

__all__ = [
    "CampaignReport",
    "content_of",
    "create_campaign",
    "get_campaign",
    "iter_recipient_rows",
    "report",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_contact = Contact.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]


def content_of(campaign: Campaign) -> CampaignContent:
    return CampaignContent(
        name=campaign.name,
        subject=campaign.subject,
        template=campaign.template,
        list_name=campaign.list_name,
    )


def create_campaign(
    engine: Engine,
    settings: Settings,
    *,
    name: str,
    list_name: str,
    subject: str,
    template: str,
    category: str | None,
    now: datetime,
) -> Campaign:
    if not _NAME.fullmatch(name):
        raise InputError(
            f'campaign name "{name}" must be letters, digits, ".", "-" or "_"', field="NAME"
        )
    if list_name not in settings.lists:
        known = ", ".join(sorted(settings.lists))
        raise InputError(f'--list "{list_name}" is not a configured list (configured: {known})')
    campaign = Campaign(
        name=name,
        list_name=list_name,
        category=category or None,
        subject=subject,
        template=template,
        created_at=now,
    )
    # Render-check now, so a broken template fails at create time rather than mid-run.
    MessageFactory(
        make_environment(settings),
        settings,
        content_of(campaign),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
    )
    with Session(engine, expire_on_commit=False) as session:
        exists = session.scalars(select(_campaign.c.id).where(_campaign.c.name == name)).first()
        if exists is not None:
            raise InputError(f'a campaign named "{name}" already exists')
        session.add(campaign)
        session.commit()
    return campaign


def get_campaign(engine: Engine, name: str) -> Campaign:
    with Session(engine, expire_on_commit=False) as session:
        campaign = session.scalars(select(Campaign).where(_campaign.c.name == name)).first()
    if campaign is None:
        raise NotFoundError(f'There is no campaign named "{name}".')
    return campaign


@dataclass
class CampaignReport:
    campaign: str
    status: str = ""  # of the campaign: draft, running (being sent), done, archived
    by_status: Counter[str] = field(default_factory=Counter)
    by_basis: Counter[str] = field(default_factory=Counter)
    by_skip_reason: Counter[str] = field(default_factory=Counter)
    # Why it is paused or cancelled (a command, or the guard naming its rate and value).
    status_reason: str | None = None
    feedback: FeedbackCounts = FeedbackCounts()

    @property
    def rates(self) -> dict[str, float]:
        """The guard's rates: share of attempts that hard-bounced, soft-bounced, complained."""
        f = self.feedback
        return {
            "hard_bounce_rate": f.rate(f.hard_bounces),
            "soft_bounce_rate": f.rate(f.soft_bounces),
            "complaint_rate": f.rate(f.complaints),
        }

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "status": self.status,
            "total": self.total,
            "by_status": dict(sorted(self.by_status.items())),
            "by_basis": dict(sorted(self.by_basis.items())),
            "by_skip_reason": dict(sorted(self.by_skip_reason.items())),
            "status_reason": self.status_reason,
            "attempts": self.feedback.attempts,
            "feedback": {
                "hard_bounce": self.feedback.hard_bounces,
                "soft_bounce": self.feedback.soft_bounces,
                "complaint": self.feedback.complaints,
            },
            "rates": {k: round(v, 6) for k, v in self.rates.items()},
        }


def report(engine: Engine, campaign: Campaign) -> CampaignReport:
    result = CampaignReport(campaign.name)
    status_query = select(_campaign.c.status, _campaign.c.status_reason).where(
        _campaign.c.id == campaign.id
    )
    query = (
        select(_delivery.c.status, _delivery.c.basis, _delivery.c.skip_reason, func.count())
        .where(_delivery.c.campaign_id == campaign.id)
        .group_by(_delivery.c.status, _delivery.c.basis, _delivery.c.skip_reason)
    )
    with engine.connect() as conn:
        result.status, result.status_reason = conn.execute(status_query).one()
        assert campaign.id is not None
        result.feedback = feedback_counts(conn, campaign.id)
        for status, basis, skip_reason, count in conn.execute(query):
            result.by_status[status] += count
            if basis:
                result.by_basis[basis] += count
            if skip_reason:
                result.by_skip_reason[skip_reason] += count
    return result


def iter_recipient_rows(engine: Engine, campaign: Campaign) -> Iterator[dict[str, Any]]:
    """Per recipient: who, on which basis or why not, what happened. Streams in ledger order."""
    query = (
        select(
            _contact.c.email,
            _delivery.c.status,
            _delivery.c.basis,
            _delivery.c.skip_reason,
            _delivery.c.attempts,
            _delivery.c.smtp_reply,
            _delivery.c.message_id,
            _delivery.c.sent_at,
        )
        .select_from(_delivery.outerjoin(_contact, _contact.c.id == _delivery.c.contact_id))
        .where(_delivery.c.campaign_id == campaign.id)
        .order_by(_delivery.c.id)
    )
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=2000).execute(query):
            item = dict(row._mapping)
            item["sent_at"] = item["sent_at"].isoformat() if item["sent_at"] else None
            yield item
