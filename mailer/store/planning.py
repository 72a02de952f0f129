"""Audience planning: one pass over the contacts, their facts gathered per chunk, the policy asked.

Contacts are read in id order, a chunk at a time (`id > last`), with the chunk's consent events,
purchases and suppressions fetched per chunk, so memory stays flat whatever the size of the
file. `plan_counts` only counts; `materialise` writes the decisions into the ledger
(mailer.store.planwrite: a chunk at a time from a thread of its own, COPY on PostgreSQL).

What makes 1M contacts take seconds rather than minutes (docs/performance.md, "Planning and
queueing at scale"): the chunk statements are compiled once and run on the DB-API cursor, so a
row is a plain tuple (no ORM object, no SQLAlchemy result processing); a fact is built once for
all the contacts that share it (an import gives thousands of contacts the very same events),
and the policy's answer is shared the same way (`mailer.core.policy.Decider`).

Consent events are read in a fixed order, (contact, id), and the policy sorts a list's events
by time with a stable sort: two events at the same instant count in the order they were
written (by id), on every database. (Before, they were read without ORDER BY.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Integer, bindparam, select

from mailer.config import Settings
from mailer.core.policy import (
    Basis,
    CampaignFacts,
    ConsentFact,
    Decider,
    Decision,
    PolicyRules,
    PurchaseFact,
    SuppressionFact,
)
from mailer.core.tokens import address_hashes
from mailer.store.models import (
    Campaign,
    ConsentEvent,
    ConsentOrigin,
    Contact,
    Purchase,
    Suppression,
)
from mailer.store.planwrite import LedgerWriter
from mailer.store.prepared import Prepared

__all__ = [
    "ConsentFact",
    "PlanSummary",
    "iter_decisions",
    "materialise",
    "plan_counts",
    "rules_from",
]

# Contacts read and decided at a time. The peak memory of `campaign queue` is set by one
# chunk's rows and facts (the ledger rows are small): at 200k contacts 5,000 gave a peak of
# 97 MB on PostgreSQL, 2,000 gave 92 MB, at no cost in time (benchmarks/scale.py).
CHUNK = 2000
# Facts kept for sharing; past this many distinct ones (events of web signups each have their
# own instant) the cache starts again, so it never grows with the file.
_SHARED_FACTS = 20_000
_BASES = frozenset(str(b) for b in Basis)
_EVENTS = {str(e): e for e in ConsentEvent}
_ORIGINS = {str(o): o for o in ConsentOrigin}

_contact = Contact.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]

# One statement for any number of hashes, so it is prepared once: the hashes (hex, no commas)
# go in as one text value, split by the database. psycopg would dump a list value by value.
_SUPPRESSIONS = {
    "sqlite": "SELECT address_hash, reason, at, scope FROM suppression"
    " WHERE address_hash IN (SELECT value FROM json_each(?))",
    "postgresql": "SELECT address_hash, reason, at, scope FROM suppression"
    " WHERE address_hash = ANY(string_to_array(%s, ','))",
}


# A chunk's consent events, (contact id, "list<US>event<US>origin<US>time"): one text per event
# instead of four values. The four come back equal for thousands of contacts, yet the driver
# builds new objects for each row (psycopg a datetime too), and sharing the fact hashed all
# four again; one text is built by the database and hashed once.
# The order of the index (no sort): the policy replays a list's events with a stable sort by
# time, so events at the same instant keep this order, by id.
_SEP = "\x1f"
_CONSENTS = {
    "sqlite": "SELECT contact_id, list_name || char(31) || event || char(31) || origin"
    " || char(31) || at FROM consent WHERE contact_id BETWEEN ? AND ?"
    " ORDER BY contact_id, id",
    # In UTC and in a fixed form, whatever the session's TimeZone and DateStyle.
    "postgresql": "SELECT contact_id, concat_ws(chr(31), list_name, event, origin,"
    " to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')) FROM consent"
    " WHERE contact_id BETWEEN %s AND %s ORDER BY contact_id, id",
}


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


def _utc(value: Any) -> datetime:
    """A time as the driver gives it (SQLite: the text SQLAlchemy stored) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _consent_fact(text: str) -> ConsentFact:
    # From the right: the event, origin and time are of a fixed vocabulary and form.
    list_name, event, origin, at = text.rsplit(_SEP, 3)
    return ConsentFact(list_name, _EVENTS[event], _ORIGINS[origin], _utc(at))


def _purchase_fact(fields: tuple[Any, ...]) -> PurchaseFact:
    category, at, optout_offered, objected_at = fields
    objected = None if objected_at is None else _utc(objected_at)
    return PurchaseFact(category, _utc(at), bool(optout_offered), objected)


class _Facts:
    """Rows of one kind, (contact id, what makes the fact), in contact order, grouped by contact
    as shared fact objects (built once for all contacts whose rows are equal)."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self.make = make
        self.known: dict[Any, Any] = {}

    def by_contact(self, rows: Sequence[tuple[int, Any]]) -> dict[int, list[Any]]:
        known, grouped = self.known, dict[int, list[Any]]()
        if len(known) > _SHARED_FACTS:
            known.clear()
        last, facts = None, list[Any]()
        for contact_id, key in rows:
            fact = known.get(key)
            if fact is None:
                fact = known[key] = self.make(key)
            if contact_id != last:  # the rows of a contact are together (ORDER BY contact_id)
                last, facts = contact_id, []
                grouped[contact_id] = facts
            facts.append(fact)
        return grouped


class _ChunkReader:
    """The chunk statements, compiled once per run, run as plain tuples on the DB-API cursor."""

    def __init__(self, conn: Connection, chunk: int, contact_id: int | None) -> None:
        dialect = conn.dialect
        contacts = select(_contact.c.id, _contact.c.email).where(_contact.c.id > bindparam("after"))
        if contact_id is not None:  # `campaign preview --email`: the same path for one person
            contacts = contacts.where(_contact.c.id == contact_id)
        low, high = bindparam("low", type_=Integer), bindparam("high", type_=Integer)
        self.contacts = Prepared(contacts.order_by(_contact.c.id).limit(chunk), dialect)
        self.purchases = Prepared(
            select(_purchase.c.contact_id, _purchase.c.category, _purchase.c.at,
                   _purchase.c.optout_offered, _purchase.c.objected_at)
            .where(_purchase.c.contact_id.between(low, high))
            .order_by(_purchase.c.contact_id, _purchase.c.id),
            dialect,
        )  # fmt: skip
        self.cursor: Any = conn.connection.cursor()
        self.dialect_name = dialect.name

    def rows(self, statement: Prepared, **values: Any) -> list[Any]:
        return statement.fetch(self.cursor, values)

    def consents(self, low: int, high: int) -> list[tuple[int, str]]:
        self.cursor.execute(_CONSENTS[self.dialect_name], (low, high))
        return list(self.cursor.fetchall())

    def suppressions(self, hashes: list[str]) -> dict[str, list[SuppressionFact]]:
        found: dict[str, list[SuppressionFact]] = {}
        if self.dialect_name == "sqlite":
            self.cursor.execute(_SUPPRESSIONS["sqlite"], (json.dumps(hashes),))
        else:
            self.cursor.execute(_SUPPRESSIONS["postgresql"], (",".join(hashes),))
        for address_hash, reason, at, scope in self.cursor.fetchall():
            found.setdefault(address_hash, []).append(SuppressionFact(reason, _utc(at), scope))
        return found


def iter_decisions(
    conn: Connection,
    settings: Settings,
    campaign: Campaign,
    now: datetime,
    *,
    contact_id: int | None = None,
) -> Iterator[tuple[int, Decision]]:
    """(contact id, decision) for every contact (or the one given), in id order, streaming."""
    decider = Decider(
        CampaignFacts(list_name=campaign.list_name, category=campaign.category),
        now,
        rules_from(settings),
    )
    keys = settings.require_hash_keys()
    reader = _ChunkReader(conn, CHUNK, contact_id)
    consents, purchases = _Facts(_consent_fact), _Facts(_purchase_fact)
    last_id = 0
    while True:
        rows = reader.rows(reader.contacts, after=last_id)
        if not rows:
            return
        low, high = rows[0][0], rows[-1][0]
        last_id = high
        in_chunk = {"low": low, "high": high}
        consents_of = consents.by_contact(reader.consents(low, high))
        purchases_of = purchases.by_contact(
            [(row[0], row[1:]) for row in reader.rows(reader.purchases, **in_chunk)]
        )
        hashes = [address_hashes(email, keys) for _, email in rows]
        suppressed = reader.suppressions([h for hs in hashes for h in hs])
        for (cid, email), hs in zip(rows, hashes, strict=True):
            blocks = [s for h in hs for s in suppressed.get(h, ())] if suppressed else ()
            yield cid, decider.decide(email, consents_of.get(cid, ()),
                                      purchases_of.get(cid, ()), blocks)  # fmt: skip


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
    assert campaign.id is not None
    summary = PlanSummary()
    with engine.connect() as read, engine.begin() as write:
        with LedgerWriter.open(write, campaign.id) as ledger:
            for contact_id, decision in iter_decisions(read, settings, campaign, now):
                summary.by_label[decision.label] += 1
                ledger.add(contact_id, decision)
    return summary
