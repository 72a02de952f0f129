"""The purchase facts of one person: what the existing-customer basis (soft opt-in) rests on.

`consent show` prints them under the consent trail, so the answer to "why did you mail me?"
shows the sale, whether the opt-out was offered when the address was collected, and any
objection (AVG art. 21), not only the consent events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from mailer.core.addresses import normalise_address
from mailer.store.models import Contact, Purchase

__all__ = ["PurchaseEntry", "purchase_facts"]

_contact = Contact.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class PurchaseEntry:
    category: str
    at: datetime
    optout_offered: bool
    objected_at: datetime | None


def purchase_facts(engine: Engine, email: str) -> list[PurchaseEntry]:
    """The purchases stored for `email`, oldest first (none for an unknown address)."""
    query = (
        select(_purchase.c.category, _purchase.c.at, _purchase.c.optout_offered,
               _purchase.c.objected_at)
        .select_from(_purchase.join(_contact, _contact.c.id == _purchase.c.contact_id))
        .where(_contact.c.email == normalise_address(email))
        .order_by(_purchase.c.at, _purchase.c.id)
    )  # fmt: skip
    with engine.connect() as conn:
        return [PurchaseEntry(*row) for row in conn.execute(query)]
