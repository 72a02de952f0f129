"""Seeding a real database directly, for tests that need precise facts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Engine

from mailer.campaign import create_campaign
from mailer.config import Settings
from mailer.models import Campaign, Consent, Contact, Purchase
from mailer.policy import ConsentFact, PurchaseFact, SuppressionFact
from mailer.suppression import add_suppression

_contact = Contact.__table__
_consent = Consent.__table__
_purchase = Purchase.__table__


def add_contact(
    engine: Engine,
    settings: Settings,
    email: str,
    *,
    at: datetime,
    first_name: str | None = None,
    locale: str | None = None,
    consents: Iterable[ConsentFact] = (),
    purchases: Iterable[PurchaseFact] = (),
    suppressions: Sequence[SuppressionFact] = (),
) -> int:
    with engine.begin() as conn:
        contact_id = conn.execute(
            _contact.insert().values(email=email, first_name=first_name, locale=locale,
                                     created_at=at)
        ).inserted_primary_key[0]  # fmt: skip
        for c in consents:
            conn.execute(
                _consent.insert().values(
                    contact_id=contact_id, list_name=c.list_name, event=c.event,
                    origin=c.origin, wording="Ja.", source="test", at=c.at,
                )
            )  # fmt: skip
        for p in purchases:
            conn.execute(
                _purchase.insert().values(
                    contact_id=contact_id, category=p.category, at=p.at,
                    optout_offered=p.optout_offered, objected_at=p.objected_at,
                )
            )  # fmt: skip
        for s in suppressions:
            add_suppression(conn, settings.require_secret_keys(), email, s.reason, s.at, s.scope)
    return int(contact_id)


def new_campaign(
    engine: Engine, settings: Settings, name: str, *, at: datetime,
    list_name: str = "newsletter", category: str | None = "brood",
) -> Campaign:  # fmt: skip
    return create_campaign(
        engine, settings, name=name, list_name=list_name, subject=f"Nieuws: {name}",
        template="newsletter", category=category, now=at,
    )  # fmt: skip
