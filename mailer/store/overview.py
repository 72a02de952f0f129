"""At a glance: every campaign with its delivery counts, and every configured list with the
consent state of its people (`mailer campaign list`, `mailer lists`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, or_, select

from mailer.config import Settings
from mailer.core.policy import ConsentFact, consent_state
from mailer.core.states import ConsentEvent, ConsentOrigin
from mailer.store.models import Campaign, Consent, Delivery, Suppression

__all__ = ["CampaignRow", "ListRow", "campaign_rows", "list_rows"]

_campaign = Campaign.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]


@dataclass
class CampaignRow:
    name: str
    list_name: str
    category: str | None
    status: str
    status_reason: str | None
    by_status: Counter[str] = field(default_factory=Counter)
    next_run: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "list": self.list_name,
            "category": self.category,
            "status": self.status,
            "status_reason": self.status_reason,
            "by_status": dict(sorted(self.by_status.items())),
            "total": sum(self.by_status.values()),
            "next_run": self.next_run.isoformat() if self.next_run else None,
        }


def campaign_rows(engine: Engine) -> list[CampaignRow]:
    """Every campaign, by name, with its ledger counted by delivery status."""
    c, d = _campaign.c, _delivery.c
    with engine.connect() as conn:
        rows = {
            r.id: CampaignRow(r.name, r.list_name, r.category, r.status, r.status_reason)
            for r in conn.execute(
                select(c.id, c.name, c.list_name, c.category, c.status, c.status_reason)
            )
        }
        for campaign_id, status, count in conn.execute(
            select(d.campaign_id, d.status, func.count()).group_by(d.campaign_id, d.status)
        ):
            rows[campaign_id].by_status[status] = int(count)
    return sorted(rows.values(), key=lambda row: row.name)


@dataclass(frozen=True, slots=True)
class ListRow:
    name: str
    title: str
    confirmed: int  # may be mailed on consent (unless suppressed)
    pending: int  # signed up, not confirmed: never mailed until they confirm
    withdrawn: int
    suppressed: int  # addresses (keyed hashes) never mailed by this list: its own or all lists

    def as_dict(self) -> dict[str, Any]:
        return {
            "list": self.name,
            "title": self.title,
            "confirmed": self.confirmed,
            "pending": self.pending,
            "withdrawn": self.withdrawn,
            "suppressed": self.suppressed,
        }


def list_rows(engine: Engine, settings: Settings) -> list[ListRow]:
    """Per configured list: people by consent state (as policy.decide reads the events), and
    the suppressed addresses that apply to it. Streams the consent events, one person at a time.
    """
    states: dict[str, Counter[str]] = {name: Counter() for name in settings.lists}
    e = _consent.c
    query = select(e.contact_id, e.list_name, e.event, e.origin, e.at).order_by(
        e.contact_id, e.at, e.id
    )

    def count(events: list[ConsentFact]) -> None:
        for list_name in {fact.list_name for fact in events} & states.keys():
            states[list_name][consent_state(events, list_name)] += 1

    with engine.connect() as conn:
        person: int | None = None
        events: list[ConsentFact] = []
        for row in conn.execution_options(yield_per=5000).execute(query):
            if row.contact_id != person:
                count(events)
                person, events = row.contact_id, []
            events.append(
                ConsentFact(row.list_name, ConsentEvent(row.event), ConsentOrigin(row.origin),
                            row.at)
            )  # fmt: skip
        count(events)
        s = _suppression.c
        suppressed = {
            name: int(
                conn.execute(
                    select(func.count(s.address_hash.distinct())).where(
                        or_(s.scope.is_(None), s.scope == name)
                    )
                ).scalar_one()
            )
            for name in settings.lists
        }
    return [
        ListRow(name, config.title, states[name]["confirmed"], states[name]["pending"],
                states[name]["withdrawn"], suppressed[name])
        for name, config in settings.lists.items()
    ]  # fmt: skip
