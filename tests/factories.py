"""Seeding a real database directly, for tests that need precise facts.

The facts are the policy's own value types (`ConsentFact`, `PurchaseFact`, `SuppressionFact`), so
a test can seed a contact and hand the very same facts to `mailer.core.policy.decide` to know what
the mailer should do, without reading anything back from the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Engine

from mailer.config import Settings
from mailer.core.policy import ConsentFact, PurchaseFact, SuppressionFact
from mailer.store.campaign import create_campaign
from mailer.store.models import (
    Campaign,
    Consent,
    ConsentEvent,
    ConsentOrigin,
    Contact,
    Purchase,
    SuppressionReason,
)
from mailer.store.suppression import add_suppression

__all__ = ["add_consent", "add_contact", "new_campaign", "seed_consenting_contacts", "suppress"]

_contact = Contact.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]


def _consent_row(contact_id: int, fact: ConsentFact) -> dict[str, object]:
    return {
        "contact_id": contact_id, "list_name": fact.list_name, "event": str(fact.event),
        "origin": str(fact.origin), "wording": "Ja, ik wil de nieuwsbrief.",
        "source": "https://bakkerij.example/subscribe" if fact.origin == "web" else "test.csv",
        "at": fact.at,
    }  # fmt: skip


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
    suppressions: Iterable[SuppressionFact] = (),
) -> int:
    """Insert a contact with its consent events, purchases and suppressions; returns its id."""
    with engine.begin() as conn:
        contact_id = int(
            conn.execute(
                _contact.insert().values(email=email, first_name=first_name, locale=locale,
                                         created_at=at)
            ).inserted_primary_key[0]
        )  # fmt: skip
        for c in consents:
            conn.execute(_consent.insert().values(_consent_row(contact_id, c)))
        for p in purchases:
            conn.execute(
                _purchase.insert().values(
                    contact_id=contact_id, category=p.category, at=p.at,
                    optout_offered=p.optout_offered, objected_at=p.objected_at,
                )
            )  # fmt: skip
        for s in suppressions:
            add_suppression(
                conn, settings.require_secret_keys(), email, SuppressionReason(s.reason), s.at,
                s.scope,
            )  # fmt: skip
    return contact_id


def add_consent(engine: Engine, contact_id: int, fact: ConsentFact) -> None:
    """Append one consent event (e.g. the confirmation of a pending signup)."""
    with engine.begin() as conn:
        conn.execute(_consent.insert().values(_consent_row(contact_id, fact)))


def suppress(
    engine: Engine,
    settings: Settings,
    email: str,
    reason: SuppressionReason,
    at: datetime,
    scope: str | None = None,
) -> None:
    with engine.begin() as conn:
        add_suppression(conn, settings.require_secret_keys(), email, reason, at, scope)


def new_campaign(
    engine: Engine,
    settings: Settings,
    name: str,
    *,
    at: datetime,
    list_name: str = "newsletter",
    category: str | None = "brood",
) -> Campaign:
    return create_campaign(
        engine, settings, name=name, list_name=list_name, subject=f"Nieuws: {name}",
        template="newsletter", category=category, now=at,
    )  # fmt: skip


def seed_consenting_contacts(engine: Engine, count: int, list_name: str = "newsletter") -> None:
    """`count` contacts with a confirmed (web) subscription to `list_name`, in bulk."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    step = 5000
    with engine.begin() as conn:
        for start in range(0, count, step):
            ids = range(start + 1, min(count, start + step) + 1)
            conn.execute(
                _contact.insert(),
                [
                    {"id": i, "email": f"person{i}@d{i % 50}.example", "first_name": f"P{i}",
                     "locale": "nl", "created_at": at}
                    for i in ids
                ],
            )  # fmt: skip
            conn.execute(
                _consent.insert(),
                [
                    {"contact_id": i, "list_name": list_name, "event": event, "origin": origin,
                     "wording": "Ja.", "source": "bench", "at": at}
                    for i in ids
                    for event, origin in ((ConsentEvent.CONFIRMED, ConsentOrigin.WEB),)
                ],
            )  # fmt: skip
