"""Campaign control in the database: pause, resume, cancel, from any process on any host.

The campaign's status row is the switch every worker reads: workers claim rows only of running
campaigns, so a status change here is seen by all of them without any signal between processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, update

from mailer.core.states import CampaignStatus, DeliveryStatus
from mailer.errors import MailerError
from mailer.store.models import Campaign, Delivery

__all__ = [
    "CampaignStopped",
    "ControlState",
    "cancel_campaign",
    "control_state",
    "pause_campaign",
    "resume_campaign",
]

_campaign = Campaign.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]

# Rows that have not been handed to a server yet: a cancel may take them back.
_UNSENT = (DeliveryStatus.QUEUED, DeliveryStatus.CLAIMED, DeliveryStatus.DEFERRED)


class CampaignStopped(MailerError):
    """The campaign is paused or cancelled: a run of it stops (or does not start)."""


@dataclass(frozen=True, slots=True)
class ControlState:
    name: str
    status: str
    reason: str | None
    changed_at: datetime | None
    unsent: int  # queued, claimed or deferred: what a resume would still send
    cancelled: int

    @property
    def since(self) -> str:
        reason = f"{self.reason}, " if self.reason else ""
        when = f"{self.changed_at:%Y-%m-%d %H:%M:%S} UTC" if self.changed_at else "earlier"
        return f"{reason}{when}"

    def refusal(self, *, during_run: bool) -> CampaignStopped | None:
        """The error a run of this campaign ends with (or starts with), None if it may run."""
        name = self.name
        if self.status == CampaignStatus.PAUSED:
            done = "The run stopped" if during_run else "Nothing was sent"
            return CampaignStopped(
                f'Campaign "{name}" was paused ({self.since}). {done}; {self.unsent} '
                f"deliveries stay queued. To continue: `mailer campaign resume {name}`, then "
                f"`mailer campaign send {name}` (or let running `mailer worker`s pick it up)."
            )
        if self.status == CampaignStatus.CANCELLED:
            return CampaignStopped(
                f'Campaign "{name}" was cancelled ({self.since}): {self.cancelled} deliveries '
                "were cancelled and are never sent. To send this message anyway, create a new "
                "campaign."
            )
        return None


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
            # A second cancel changes nothing: the first reason and time are the record.
            .where(
                _campaign.c.status.notin_(
                    (CampaignStatus.DONE, CampaignStatus.ARCHIVED, CampaignStatus.CANCELLED)
                )
            )
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


def control_state(engine: Engine, campaign: Campaign) -> ControlState:
    c, d = _campaign.c, _delivery.c
    with engine.connect() as conn:
        status, reason, changed_at = conn.execute(
            select(c.status, c.status_reason, c.status_changed_at).where(c.id == campaign.id)
        ).one()
        counts: dict[str, int] = {
            status: int(count)
            for status, count in conn.execute(
                select(d.status, func.count())
                .where(d.campaign_id == campaign.id)
                .where(d.status.in_((*_UNSENT, DeliveryStatus.CANCELLED)))
                .group_by(d.status)
            )
        }
    unsent = sum(counts.get(status, 0) for status in _UNSENT)
    cancelled = counts.get(DeliveryStatus.CANCELLED, 0)
    return ControlState(campaign.name, status, reason, changed_at, unsent, cancelled)
