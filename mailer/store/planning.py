"""Audience planning: stream every contact, gather its facts, ask the policy.

Contacts are read in id-ordered chunks with their consents, purchases and suppressions fetched
per chunk, so memory stays flat whatever the size of the file (1M contacts plan in well under
300 MB). `plan_counts` only counts; `materialise` writes the decisions into the ledger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Row, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer.config import Settings
from mailer.core.policy import (
    Basis,
    CampaignFacts,
    ConsentFact,
    ContactFacts,
    Decision,
    PolicyRules,
    PurchaseFact,
    SuppressionFact,
    decide,
)
from mailer.core.tokens import address_hashes
from mailer.store.models import (
    Campaign,
    Consent,
    ConsentEvent,
    ConsentOrigin,
    Contact,
    Delivery,
    DeliveryStatus,
    Purchase,
    Suppression,
)

__all__ = ["PlanSummary", "iter_decisions", "materialise", "plan_counts", "rules_from"]

CHUNK = 2000
T = TypeVar("T")
_BASES = frozenset(str(b) for b in Basis)

_contact = Contact.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]


@dataclass
class PlanSummary:
    by_label: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_label.values())

    @property
    def allowed(self) -> int:
        return sum(n for label, n in self.by_label.items() if label in _BASES)


def rules_from(settings: Settings) -> PolicyRules:
    p = settings.policy
    return PolicyRules(
        jurisdiction=p.jurisdiction,
        soft_optin=p.soft_optin,
        role_addresses=p.role_addresses,
        offer_addresses=frozenset(p.offer_addresses),
    )


def iter_decisions(
    conn: Connection,
    settings: Settings,
    campaign: Campaign,
    now: datetime,
    *,
    contact_id: int | None = None,
) -> Iterator[tuple[int, Decision]]:
    """(contact id, decision) for every contact (or the one given), in id order, streaming."""
    rules = rules_from(settings)
    facts = CampaignFacts(list_name=campaign.list_name, category=campaign.category)
    keys = settings.require_hash_keys()
    last_id = 0
    while True:
        chunk = select(_contact.c.id, _contact.c.email).where(_contact.c.id > last_id)
        if contact_id is not None:  # `campaign preview --email`: the same path for one person
            chunk = chunk.where(_contact.c.id == contact_id)
        rows = conn.execute(chunk.order_by(_contact.c.id).limit(CHUNK)).all()
        if not rows:
            return
        low, high = rows[0].id, rows[-1].id
        last_id = high
        consents = _by_contact(
            conn.execute(
                select(_consent.c.contact_id, _consent.c.list_name, _consent.c.event,
                       _consent.c.origin, _consent.c.at)
                .where(_consent.c.contact_id.between(low, high))
            ),
            lambda r: ConsentFact(r.list_name, ConsentEvent(r.event), ConsentOrigin(r.origin),
                                  r.at),
        )  # fmt: skip
        purchases = _by_contact(
            conn.execute(
                select(_purchase.c.contact_id, _purchase.c.category, _purchase.c.at,
                       _purchase.c.optout_offered, _purchase.c.objected_at)
                .where(_purchase.c.contact_id.between(low, high))
            ),
            lambda r: PurchaseFact(r.category, r.at, r.optout_offered, r.objected_at),
        )  # fmt: skip
        hashes = {row.id: address_hashes(row.email, keys) for row in rows}
        suppressions = suppressions_for(conn, [h for hs in hashes.values() for h in hs])
        for row in rows:
            contact = ContactFacts(
                email=row.email,
                consents=consents.get(row.id, ()),
                purchases=purchases.get(row.id, ()),
                suppressions=[s for h in hashes[row.id] for s in suppressions.get(h, ())],
            )
            yield row.id, decide(contact, facts, now, rules)


def suppressions_for(conn: Connection, hashes: Sequence[str]) -> dict[str, list[SuppressionFact]]:
    found: dict[str, list[SuppressionFact]] = {}
    if not hashes:
        return found
    query = select(
        _suppression.c.address_hash, _suppression.c.reason, _suppression.c.at, _suppression.c.scope
    ).where(_suppression.c.address_hash.in_(bindparam("hashes", expanding=True)))
    for row in conn.execute(query, {"hashes": list(hashes)}):
        found.setdefault(row.address_hash, []).append(
            SuppressionFact(row.reason, row.at, row.scope)
        )
    return found


def _by_contact(rows: Iterable[Row[Any]], make: Callable[[Row[Any]], T]) -> dict[int, list[T]]:
    grouped: dict[int, list[T]] = {}
    for row in rows:
        grouped.setdefault(row.contact_id, []).append(make(row))
    return grouped


def plan_counts(
    engine: Engine, settings: Settings, campaign: Campaign, now: datetime
) -> PlanSummary:
    """Who would be mailed on which basis, and who skipped for which reason. Writes nothing."""
    summary = PlanSummary()
    with engine.connect() as conn:
        for _contact_id, decision in iter_decisions(conn, settings, campaign, now):
            summary.by_label[decision.label] += 1
    return summary


def materialise(
    engine: Engine, settings: Settings, campaign: Campaign, now: datetime
) -> PlanSummary:
    """Write a ledger row per contact: queued with its basis, or skipped with its reason.

    Existing rows keep their state (nobody is mailed twice); only rows that were skipped are
    decided again, so a person who confirmed since the last run is included now.
    """
    summary = PlanSummary()
    with engine.connect() as read, engine.begin() as write:
        insert = sqlite.insert if write.dialect.name == "sqlite" else postgresql.insert
        batch: list[dict[str, object]] = []
        for contact_id, decision in iter_decisions(read, settings, campaign, now):
            summary.by_label[decision.label] += 1
            batch.append(
                {
                    "campaign_id": campaign.id,
                    "contact_id": contact_id,
                    "basis": decision.basis and str(decision.basis),
                    "skip_reason": decision.skip and str(decision.skip),
                    "status": DeliveryStatus.QUEUED if decision.allowed else DeliveryStatus.SKIPPED,
                    "attempts": 0,
                }
            )
            if len(batch) >= CHUNK:
                _upsert(write, insert, batch)
                batch = []
        if batch:
            _upsert(write, insert, batch)
    return summary


def _upsert(conn: Connection, insert: object, rows: list[dict[str, object]]) -> None:
    # One statement run for many parameter sets (the driver's executemany; SQLAlchemy's
    # "insertmanyvalues" batches it), compiled once and cached: a multi-row VALUES built per
    # chunk was compiled per chunk, most of the planning time (benchmarks/send_throughput.py).
    stmt = insert(_delivery)  # type: ignore[operator]
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["campaign_id", "contact_id"],
            set_={
                "basis": stmt.excluded.basis,
                "skip_reason": stmt.excluded.skip_reason,
                "status": stmt.excluded.status,
            },
            where=_delivery.c.status == DeliveryStatus.SKIPPED,
        ),
        rows,
    )
