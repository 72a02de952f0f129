"""The database side of the web flow: contacts, consent events, rate-limit counters.

Synchronous SQLAlchemy Core on one `Connection` inside a transaction the caller owns; the flow
runs these in a worker thread so the event loop never waits on the database.

The statements that run once per request are built once, at import, with bind parameters:
SQLAlchemy then reuses their compiled form and cache key, where building them per call cost
more than the SQL itself under a burst of unsubscribes (docs/performance.md). Those of every
unsubscribe and confirmation (the contact, its events, the new event, the suppression check
and insert) go one step further: compiled once per dialect (store.prepared) and run on the
DB-API cursor of the caller's connection, in its transaction, with none of SQLAlchemy's
per-execution work. Prepared converts each bind with the dialect's own processor, so a time
is stored as SQLAlchemy stores it (tests/test_prepared.py).

Serialisation matters for the anti-bombing counters: every write path here starts with a write,
so on SQLite the transaction holds the single write lock before it counts anything, and two
concurrent signups cannot both see "2 mails sent" and both send the third and fourth.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from mailer.core.tokens import address_hashes
from mailer.store.models import (
    Consent,
    ConsentEvent,
    ConsentOrigin,
    Contact,
    Purchase,
    SignupAttempt,
    Suppression,
    SuppressionReason,
)
from mailer.store.prepared import Prepared
from mailer.store.suppression import ADD_SUPPRESSION

__all__ = [
    "ContactRow",
    "Evidence",
    "add_events",
    "contact_by_id",
    "count_attempts",
    "ensure_contact",
    "last_confirmed_at",
    "latest_events",
    "object_to_customer_basis",
    "prune_attempts",
    "record_attempt",
    "serialise_on",
    "suppress",
]

_contact = Contact.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_attempt = SignupAttempt.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ContactRow:
    id: int
    email: str
    locale: str | None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Who did it, from where, when: stored with every consent event (DESIGN.md rule 7)."""

    source: str
    ip: str | None
    user_agent: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class LatestEvent:
    event: ConsentEvent
    wording: str


def ensure_contact(conn: Connection, email: str, locale: str, now: datetime) -> ContactRow:
    """The contact with this (normalised) address, created if new; an existing one is unchanged.

    INSERT .. ON CONFLICT DO NOTHING rather than select-then-insert: two signups of one new
    address at the same moment must not fail on the unique constraint.
    """
    insert = _new_contact[conn.dialect.name == "sqlite"]
    conn.execute(insert, {"email": email, "locale": locale, "created_at": now})
    row = conn.execute(_by_email, {"email": email}).one()
    return ContactRow(row.id, row.email, row.locale)


# Keyed by "is SQLite": the two dialects spell ON CONFLICT with their own insert().
_new_contact = {
    lite: (sqlite.insert if lite else postgresql.insert)(_contact).on_conflict_do_nothing(
        index_elements=["email"]
    )
    for lite in (True, False)
}
_by_email = select(_contact.c.id, _contact.c.email, _contact.c.locale).where(
    _contact.c.email == bindparam("email")
)


_by_id = select(_contact.c.id, _contact.c.email, _contact.c.locale).where(
    _contact.c.id == bindparam("contact_id")
)


_PREPARED: dict[tuple[str, str, str], Prepared] = {}


def _raw(conn: Connection, name: str, statement: ClauseElement) -> tuple[Prepared, Any]:
    """`statement` compiled once for `conn`'s dialect, and a DB-API cursor in its transaction."""
    dialect = conn.dialect
    key = (dialect.name, dialect.driver, name)
    if (prepared := _PREPARED.get(key)) is None:
        prepared = _PREPARED[key] = Prepared(statement, dialect)
    return prepared, conn.connection.cursor()


def contact_by_id(conn: Connection, contact_id: int) -> ContactRow | None:
    prepared, cursor = _raw(conn, "contact_by_id", _by_id)
    rows = prepared.fetch(cursor, {"contact_id": contact_id})
    return ContactRow(*rows[0]) if rows else None


def add_events(
    conn: Connection,
    contact_id: int,
    wordings: dict[str, str],
    event: ConsentEvent,
    evidence: Evidence,
) -> None:
    """One consent event per list in `wordings` (list name -> the exact wording shown)."""
    if not wordings:
        return
    prepared, cursor = _raw(conn, "add_consent", _add_consent)
    common = {
        "contact_id": contact_id,
        "event": event,
        # Only our own pages record events here: a web confirmation is the person's own
        # double opt-in, the one thing that may lift a suppression (policy rule 1).
        "origin": ConsentOrigin.WEB,
        "source": evidence.source[:500],
        "ip": evidence.ip[:64] if evidence.ip else None,
        "user_agent": evidence.user_agent[:500] if evidence.user_agent else None,
        "at": evidence.at,
    }
    for list_name, wording in wordings.items():
        prepared.execute(cursor, {**common, "list_name": list_name, "wording": wording})


_events = (
    select(_consent.c.list_name, _consent.c.event, _consent.c.wording)
    .where(_consent.c.contact_id == bindparam("contact_id"))
    .order_by(_consent.c.at, _consent.c.id)
)


# Each column named: an insert compiled without values would bind the id too.
_add_consent = _consent.insert().values(
    {name: bindparam(name, type_=_consent.c[name].type) for name in (
        "contact_id", "list_name", "event", "origin", "wording", "source", "ip", "user_agent",
        "at",
    )}
)  # fmt: skip


def latest_events(conn: Connection, contact_id: int) -> dict[str, LatestEvent]:
    """The most recent consent event per list (by time, then by insertion order)."""
    prepared, cursor = _raw(conn, "latest_events", _events)
    rows = prepared.fetch(cursor, {"contact_id": contact_id})
    return {name: LatestEvent(ConsentEvent(event), wording) for name, event, wording in rows}


def serialise_on(conn: Connection, key_hash: str) -> None:
    """Hold a lock on `key_hash` (hex) until the transaction ends, so that counting attempts and
    recording one is atomic per key: 30 parallel signups for one address send 3 mails, not 6.

    PostgreSQL: a transaction-level advisory lock on the first 60 bits of the hash. SQLite:
    nothing to do, the transaction's first write (prune_attempts) already holds the database's
    single write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(key_hash[:15], 16)})


def record_attempt(conn: Connection, kind: str, key_hash: str, at: datetime) -> None:
    conn.execute(_add_attempt, {"kind": kind, "key_hash": key_hash, "at": at})


_add_attempt = _attempt.insert()


_count = (
    select(func.count())
    .select_from(_attempt)
    .where(
        _attempt.c.kind == bindparam("kind"),
        _attempt.c.key_hash == bindparam("key_hash"),
        _attempt.c.at > bindparam("since", type_=_attempt.c.at.type),
    )
)


def count_attempts(conn: Connection, kind: str, key_hash: str, since: datetime) -> int:
    found = conn.execute(_count, {"kind": kind, "key_hash": key_hash, "since": since}).scalar()
    return int(found or 0)


def prune_attempts(conn: Connection, before: datetime) -> None:
    """Forget rate-limit rows older than the longest window: they are personal data too."""
    conn.execute(_prune, {"before": before})


_prune = delete(_attempt).where(_attempt.c.at < bindparam("before", type_=_attempt.c.at.type))


_last_confirmed = select(func.max(_consent.c.at)).where(
    _consent.c.contact_id == bindparam("contact_id"), _consent.c.event == ConsentEvent.CONFIRMED
)


def last_confirmed_at(conn: Connection, contact_id: int) -> datetime | None:
    moment: datetime | None = conn.execute(_last_confirmed, {"contact_id": contact_id}).scalar()
    return moment


@cache
def _unsubscribed(for_all_lists: bool, hashes: int) -> Select[Any]:
    """An earlier unsubscribe suppression of the address for the scope (None: all lists), made
    after the contact's last confirmation, if any (a confirmation lifts a suppression).

    One bind per hash (one per key), not an expanding IN: the statement then compiles once
    and runs on the cursor (`_raw`)."""
    confirmed = (
        select(func.max(_consent.c.at))
        .where(
            _consent.c.contact_id == bindparam("contact_id"),
            _consent.c.event == ConsentEvent.CONFIRMED,
        )
        .scalar_subquery()
    )
    same_scope = (
        _suppression.c.scope.is_(None)
        if for_all_lists
        else _suppression.c.scope == bindparam("scope", type_=_suppression.c.scope.type)
    )
    return (
        select(_suppression.c.id)
        .where(
            _suppression.c.address_hash.in_([bindparam(f"hash{n}") for n in range(hashes)]),
            _suppression.c.reason == SuppressionReason.UNSUBSCRIBED,
            same_scope,
            _suppression.c.at >= func.coalesce(confirmed, _suppression.c.at),
        )
        .limit(1)
    )


def suppress(
    conn: Connection,
    keys: Sequence[str],
    contact: ContactRow,
    scopes: Iterable[str | None],
    at: datetime,
) -> int:
    """Suppress the contact's address for each scope (a list name, or None for all lists);
    returns how many suppressions were added.

    A second unsubscribe (the person clicks twice, the provider retries the one-click POST) adds
    nothing, unless the person confirmed a new subscription since the earlier suppression: that
    confirmation lifted it (policy rule 1), so this unsubscribe needs a suppression of its own.
    """
    hashes = address_hashes(contact.email, keys)
    by_hash = {f"hash{n}": value for n, value in enumerate(hashes)}
    added = 0
    for scope in scopes:
        everything = scope is None
        earlier, cursor = _raw(
            conn, f"earlier:{everything}:{len(hashes)}", _unsubscribed(everything, len(hashes))
        )
        values = {**by_hash, "scope": scope, "contact_id": contact.id}
        if not earlier.fetch(cursor, values):
            insert, cursor = _raw(conn, "add_suppression", ADD_SUPPRESSION)
            reason = SuppressionReason.UNSUBSCRIBED
            insert.execute(cursor, {"address_hash": hashes[0], "reason": reason, "scope": scope,
                                    "at": at})  # fmt: skip
            added += 1
    return added


def object_to_customer_basis(conn: Connection, contact_id: int, at: datetime) -> int:
    """Record the person's objection to being mailed as an existing customer; returns how many
    purchases it newly marks.

    Tw 11.7(2) / ePrivacy 13(2): every message on the soft opt-in must offer to object "to such
    use" of the address; the objection ends the basis for every campaign, not only this list
    (policy.decide skips the person as `objected`). An earlier objection keeps its time.
    """
    result = conn.execute(_object, {"contact": contact_id, "objected": at})
    return int(result.rowcount or 0)


_object = (
    _purchase.update()
    .where(_purchase.c.contact_id == bindparam("contact"), _purchase.c.objected_at.is_(None))
    .values(objected_at=bindparam("objected", type_=_purchase.c.objected_at.type))
)
