"""Campaign control in the database: pause, resume, cancel, from any process on any host.

The campaign's status row is the switch every worker reads: workers claim rows only of running
campaigns, so a status change here is seen by all of them without any signal between processes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, update

from mailer.core.states import CampaignStatus, DeliveryStatus
from mailer.store.models import Campaign, Delivery

__all__ = ["cancel_campaign", "pause_campaign", "resume_campaign"]

_campaign = Campaign.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]

# Rows that have not been handed to a server yet: a cancel may take them back.
_UNSENT = (DeliveryStatus.QUEUED, DeliveryStatus.CLAIMED, DeliveryStatus.DEFERRED)


def pause_campaign(engine: Engine, campaign_id: int, reason: str, now: datetime) -> bool:
    """Pause a running (or draft) campaign; False when it was not in a state that can pause."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(_campaign)
            .where(_campaign.c.id == campaign_id)
            .where(_campaign.c.status.in_((CampaignStatus.RUNNING, CampaignStatus.DRAFT)))
            .values(status=CampaignStatus.PAUSED, status_reason=reason, status_changed_at=now)
        ).rowcount
    return bool(changed)


def resume_campaign(engine: Engine, campaign_id: int, now: datetime) -> bool:
    """Make a paused campaign running again; False when it was not paused."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(_campaign)
            .where(_campaign.c.id == campaign_id)
            .where(_campaign.c.status == CampaignStatus.PAUSED)
            .values(status=CampaignStatus.RUNNING, status_reason=None, status_changed_at=now)
        ).rowcount
    return bool(changed)


def cancel_campaign(engine: Engine, campaign_id: int, reason: str, now: datetime) -> int | None:
    """Cancel a campaign that is not done: every unsent row becomes cancelled, in one
    transaction with the status. Returns the rows cancelled, or None when it could not be."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(_campaign)
            .where(_campaign.c.id == campaign_id)
            .where(_campaign.c.status.notin_((CampaignStatus.DONE, CampaignStatus.ARCHIVED)))
            .values(status=CampaignStatus.CANCELLED, status_reason=reason, status_changed_at=now)
        ).rowcount
        if not changed:
            return None
        cancelled = conn.execute(
            update(_delivery)
            .where(_delivery.c.campaign_id == campaign_id)
            .where(_delivery.c.status.in_(_UNSENT))
            .values(status=DeliveryStatus.CANCELLED, lease_owner=None, lease_until=None)
        ).rowcount
    return int(cancelled)
