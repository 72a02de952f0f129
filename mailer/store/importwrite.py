"""Writing one batch of parsed import rows: contacts upserted, consent events and purchases added.

The batch comes from `importer`, inside the one transaction of the whole file. Each table gets
one `IN (...)` look-up per batch and no query per row; what is already stored is not added again
(same contact, list, event and time; same contact, category and time), so a re-import adds
nothing, except an objection (AVG art. 21), which is never lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update
from sqlmodel import SQLModel

from mailer.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from mailer.store.csvfile import as_utc
from mailer.store.importrows import CONTACT_FIELDS, EventIn, Parsed, PurchaseIn
from mailer.store.models import ConsentEvent, ConsentOrigin

__all__ = ["MAX_LENGTH", "ImportCounts", "write_batch"]

_CONTACT: Table = SQLModel.metadata.tables["contact"]
_CONSENT: Table = SQLModel.metadata.tables["consent"]
_PURCHASE: Table = SQLModel.metadata.tables["purchase"]
# The longest value each imported column may hold: a longer one is refused by name when read.
MAX_LENGTH: dict[str, int | None] = {
    **{c.name: getattr(c.type, "length", None) for c in _CONTACT.c},
    **{c.name: getattr(c.type, "length", None) for c in _CONSENT.c},
    "category": getattr(_PURCHASE.c.category.type, "length", None),
    "requested_ip": getattr(_CONSENT.c.ip.type, "length", None),
    "confirmed_ip": getattr(_CONSENT.c.ip.type, "length", None),
}

# Existing contacts: set only the fields the row gives, keep the rest (COALESCE with NULL).
_UPDATE_CONTACT = (
    update(_CONTACT)
    .where(_CONTACT.c.id == bindparam("_id"))
    .values(
        {
            f: func.coalesce(bindparam(f"v_{f}", type_=_CONTACT.c[f].type), _CONTACT.c[f])
            for f in CONTACT_FIELDS
        }
    )
)
_RECORD_OBJECTION = (
    update(_PURCHASE)
    .where(_PURCHASE.c.id == bindparam("_id"))
    .values(objected_at=bindparam("v_objected_at", type_=_PURCHASE.c.objected_at.type))
)


@dataclass(slots=True)
class ImportCounts:
    """What one import has done so far; `importer` turns it into the `ImportResult`."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    events: int = 0
    purchases: int = 0
    objections: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()


def write_batch(
    conn: Connection, batch: Sequence[Parsed], now: datetime, counts: ImportCounts
) -> None:
    """Write one batch into the import's transaction and add what it did to `counts`."""
    if not batch:
        return
    ids = _upsert_contacts(conn, batch, now, counts)
    events = [(ids[p.email], e) for p in batch for e in p.events]
    if events:
        counts.events += _add_events(conn, events, now)
    purchases = [(ids[p.email], purchase) for p in batch for purchase in p.purchases]
    if purchases:
        _add_purchases(conn, purchases, counts)


def _upsert_contacts(
    conn: Connection, batch: Sequence[Parsed], now: datetime, counts: ImportCounts
) -> dict[str, int]:
    """Contact ids by address; new ones inserted, given fields of known ones updated."""
    merged: dict[str, dict[str, Any]] = {}
    for parsed in batch:  # a later row's value wins, as if the rows were imported one by one
        merged.setdefault(parsed.email, {}).update(parsed.personal)
    found = {
        row.email: row
        for row in conn.execute(select(_CONTACT).where(_CONTACT.c.email.in_(list(merged))))
    }
    ids: dict[str, int] = {email: row.id for email, row in found.items()}
    new = [email for email in merged if email not in found]
    if new:
        empty = dict.fromkeys(CONTACT_FIELDS)
        conn.execute(
            insert(_CONTACT),
            [{**empty, **merged[email], "email": email, "created_at": now} for email in new],
        )
        query = select(_CONTACT.c.email, _CONTACT.c.id).where(_CONTACT.c.email.in_(new))
        ids.update((email, id_) for email, id_ in conn.execute(query))
        counts.created += len(new)
    changes = []
    for email, row in found.items():
        diff = {f: v for f, v in merged[email].items() if row._mapping[f] != v}
        if diff:
            changes.append({"_id": row.id, **{f"v_{f}": diff.get(f) for f in CONTACT_FIELDS}})
    if changes:
        conn.execute(_UPDATE_CONTACT, changes)
        counts.updated += len(changes)
    return ids


def _add_events(conn: Connection, events: Iterable[tuple[int, EventIn]], now: datetime) -> int:
    """Insert the events not stored yet (same contact, list, event and time); returns how many."""
    events = list(events)
    stored: set[tuple[int, str, str, datetime]] = set()
    requested: set[tuple[int, str]] = set()  # (contact, list) with any request on record
    query = select(_CONSENT.c.contact_id, _CONSENT.c.list_name, _CONSENT.c.event, _CONSENT.c.at)
    for contact_id, list_name, event, at in conn.execute(
        query.where(_CONSENT.c.contact_id.in_({contact_id for contact_id, _ in events}))
    ):
        stored.add((contact_id, list_name, event, as_utc(at)))
        if event == ConsentEvent.REQUESTED:
            requested.add((contact_id, list_name))
    fresh: list[dict[str, Any]] = []
    for contact_id, event in events:
        if event.at is None and (contact_id, event.list_name) in requested:
            continue  # an untimed request would otherwise be added again at every import
        key = (contact_id, event.list_name, str(event.event), event.at or now)
        if key in stored:
            continue
        stored.add(key)
        if event.event is ConsentEvent.REQUESTED:
            requested.add((contact_id, event.list_name))
        fresh.append(
            {
                "contact_id": contact_id, "list_name": event.list_name, "event": str(event.event),
                "origin": str(ConsentOrigin.IMPORT), "wording": event.wording,
                "source": event.source, "ip": event.ip, "user_agent": None, "at": key[3],
            }
        )  # fmt: skip
    if fresh:
        conn.execute(insert(_CONSENT), fresh)
    return len(fresh)


def _add_purchases(
    conn: Connection, purchases: Sequence[tuple[int, PurchaseIn]], counts: ImportCounts
) -> None:
    """Insert purchases not stored yet (same contact, category, time), and count them.

    A known purchase is left as it is, except that an objection (AVG art. 21) the file records
    is added to it: an objection is the person's own "no" and must never be lost on re-import.
    """
    stored: dict[tuple[int, str, datetime], tuple[int, datetime | None]] = {}
    query = select(_PURCHASE.c.id, _PURCHASE.c.contact_id, _PURCHASE.c.category,
                   _PURCHASE.c.at, _PURCHASE.c.objected_at)  # fmt: skip
    for id_, contact_id, category, at, objected_at in conn.execute(
        query.where(_PURCHASE.c.contact_id.in_({contact_id for contact_id, _ in purchases}))
    ):
        stored[(contact_id, category, as_utc(at))] = (id_, objected_at)
    fresh: dict[tuple[int, str, datetime], dict[str, Any]] = {}
    objections: dict[int, datetime] = {}
    for contact_id, purchase in purchases:
        key = (contact_id, purchase.category, purchase.at)
        if key in stored:
            id_, objected_at = stored[key]
            if objected_at is None and purchase.objected_at is not None:
                objections.setdefault(id_, purchase.objected_at)
        elif key in fresh:
            if fresh[key]["objected_at"] is None:
                fresh[key]["objected_at"] = purchase.objected_at
        else:
            fresh[key] = {
                "contact_id": contact_id, "category": purchase.category, "at": purchase.at,
                "optout_offered": purchase.optout_offered, "objected_at": purchase.objected_at,
            }  # fmt: skip
    if fresh:
        conn.execute(insert(_PURCHASE), list(fresh.values()))
    if objections:
        conn.execute(
            _RECORD_OBJECTION, [{"_id": i, "v_objected_at": at} for i, at in objections.items()]
        )
    counts.purchases += len(fresh)
    # A re-import that only adds an objection changes the plan: it is reported, not "0 updated".
    counts.objections += len(objections) + sum(
        1 for f in fresh.values() if f["objected_at"] is not None
    )
