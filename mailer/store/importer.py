"""CSV import of contacts with consent evidence, and of customers with purchases.

File formats: DESIGN.md, "CSV formats". What this module promises:

- All or nothing: one import is one transaction. A bad row raises `InputError` naming the file,
  the physical line and the column, and nothing of the file is written (exit code 2 contract).
- Bounded memory: rows are read one at a time and written in batches, so a file of a million
  rows needs no more memory than one of a thousand.
- Idempotent: a contact is keyed by its normalised address, and a consent event or a purchase that
  is already stored is not added again, so importing the same file twice adds nothing.
- Data minimisation (AVG art. 5(1)(c)): only the columns below are accepted; any other column is
  refused by name, and special-category data (AVG art. 9) gets a message of its own.
- An import never touches `Suppression`: only the person can lift a suppression (DESIGN rule 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from mailer.config import Settings
from mailer.errors import InputError, MailerError
from mailer.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from mailer.store.csvfile import SPECIAL_CATEGORY_COLUMNS, CsvRow, as_utc, read_rows
from mailer.store.models import CONTACT_PERSONAL_FIELDS, ConsentEvent, ConsentOrigin

__all__ = [
    "CONTACT_COLUMNS",
    "CUSTOMER_COLUMNS",
    "SPECIAL_CATEGORY_COLUMNS",
    "ImportResult",
    "import_contacts",
    "import_customers",
]

CONSENT_COLUMNS: tuple[str, ...] = (
    "list", "wording", "source", "requested_at", "confirmed_at", "ip",
)  # fmt: skip
# When the business relationship ended (a contract, an account closed): the retention purge
# erases the contact policy.retention_days later. Not personal data of its own, but a Contact
# field the file may set (empty keeps what is stored).
_ENDED = "relationship_ended_at"
_CONTACT_FIELDS: tuple[str, ...] = (*CONTACT_PERSONAL_FIELDS, _ENDED)
CONTACT_COLUMNS: tuple[str, ...] = ("email", *_CONTACT_FIELDS, *CONSENT_COLUMNS)
CUSTOMER_COLUMNS: tuple[str, ...] = (
    "email", "category", "purchased_at", "optout_offered", "objected_at", *_CONTACT_FIELDS,
)  # fmt: skip
_CUSTOMER_REQUIRED = ("email", "category", "purchased_at", "optout_offered")

# SQLite before 3.32 allows 999 parameters per statement; a batch stays under that, so each
# batch needs one `IN (...)` look-up per table and no query per row.
_BATCH_ROWS = 900

_CONTACT: Table = SQLModel.metadata.tables["contact"]
_CONSENT: Table = SQLModel.metadata.tables["consent"]
_PURCHASE: Table = SQLModel.metadata.tables["purchase"]
_MAX_LENGTH: dict[str, int | None] = {
    **{c.name: getattr(c.type, "length", None) for c in _CONTACT.c},
    **{c.name: getattr(c.type, "length", None) for c in _CONSENT.c},
    "category": getattr(_PURCHASE.c.category.type, "length", None),
}

# Existing contacts: set only the fields the row gives, keep the rest (COALESCE with NULL).
_UPDATE_CONTACT = (
    update(_CONTACT)
    .where(_CONTACT.c.id == bindparam("_id"))
    .values(
        {
            f: func.coalesce(bindparam(f"v_{f}", type_=_CONTACT.c[f].type), _CONTACT.c[f])
            for f in _CONTACT_FIELDS
        }
    )
)
_RECORD_OBJECTION = (
    update(_PURCHASE)
    .where(_PURCHASE.c.id == bindparam("_id"))
    .values(objected_at=bindparam("v_objected_at", type_=_PURCHASE.c.objected_at.type))
)


@dataclass(frozen=True, slots=True)
class ImportResult:
    rows: int
    contacts_created: int
    contacts_updated: int
    consent_events: int
    purchases: int


# Called after each batch with (bytes read, file size): a progress bar for large files.
Progress = Callable[[int, int], None]


def import_contacts(
    engine: Engine,
    settings: Settings,
    path: Path,
    *,
    now: datetime,
    on_progress: Progress | None = None,
) -> ImportResult:
    """Import contacts and their consent evidence from the CSV file at `path`."""
    default_source = f"import:{path.name}"
    return _run(
        engine, path, now, CONTACT_COLUMNS, ("email",),
        lambda row: _contact_row(row, settings, default_source), on_progress,
    )  # fmt: skip


def import_customers(
    engine: Engine,
    settings: Settings,
    path: Path,
    *,
    now: datetime,
    on_progress: Progress | None = None,
) -> ImportResult:
    """Import customers and their purchases (the soft opt-in facts) from the CSV file at `path`."""
    return _run(engine, path, now, CUSTOMER_COLUMNS, _CUSTOMER_REQUIRED, _customer_row, on_progress)


# --- parsing rows --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EventIn:
    list_name: str
    event: ConsentEvent
    at: datetime | None  # None: the file gave no time; recorded at `now`, once
    wording: str
    source: str
    ip: str | None


@dataclass(frozen=True, slots=True)
class _PurchaseIn:
    category: str
    at: datetime
    optout_offered: bool
    objected_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Parsed:
    email: str
    personal: dict[str, Any]
    events: tuple[_EventIn, ...] = ()
    purchase: _PurchaseIn | None = None


def _personal(row: CsvRow) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in CONTACT_PERSONAL_FIELDS:
        value = row.day(name) if name == "birth_date" else row.text(name)
        if value is not None:
            fields[name] = value
    ended = row.when(_ENDED)
    if ended is not None:
        fields[_ENDED] = ended
    return fields


def _contact_row(row: CsvRow, settings: Settings, default_source: str) -> _Parsed:
    email, personal = row.address(), _personal(row)
    raw_list = row.get("list")
    if raw_list is None:
        # Evidence without a list cannot be stored; dropping it silently would lose consent.
        for column in CONSENT_COLUMNS[1:]:
            if column in row.values:
                raise row.error("list", f"is empty, but {column} is given; name the list.")
        return _Parsed(email, personal)
    list_name = raw_list.lower()
    if list_name not in settings.lists:
        configured = ", ".join(settings.lists)
        raise row.error("list", f'"{raw_list}" is not a configured list; lists: {configured}.')
    requested, confirmed = row.when("requested_at"), row.when("confirmed_at")
    if requested is not None and confirmed is not None and confirmed < requested:
        raise row.error(
            "confirmed_at",
            f'"{row.values["confirmed_at"]}" is before requested_at '
            f'"{row.values["requested_at"]}"; a confirmation cannot precede its request.',
        )
    wording = row.text("wording", multiline=True) or settings.lists[list_name].wording
    source = row.text("source") or default_source
    ip = row.ip()
    # Rule 1: a row without confirmed_at is a pending signup, never consent.
    events = [_EventIn(list_name, ConsentEvent.REQUESTED, requested or confirmed, wording, source,
                       ip)]  # fmt: skip
    if confirmed is not None:
        events.append(_EventIn(list_name, ConsentEvent.CONFIRMED, confirmed, wording, source, ip))
    return _Parsed(email, personal, events=tuple(events))


def _customer_row(row: CsvRow) -> _Parsed:
    email, personal = row.address(), _personal(row)
    purchase = _PurchaseIn(
        category=row.text("category", required=True) or "",
        at=row.when("purchased_at", required=True) or datetime.min,
        optout_offered=row.boolean("optout_offered"),
        objected_at=row.when("objected_at"),
    )
    return _Parsed(email, personal, purchase=purchase)


# --- writing -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counts:
    rows: int = 0
    created: int = 0
    updated: int = 0
    events: int = 0
    purchases: int = 0


def _run(
    engine: Engine,
    path: Path,
    now: datetime,
    columns: Sequence[str],
    required: Sequence[str],
    parse: Callable[[CsvRow], _Parsed],
    on_progress: Progress | None = None,
) -> ImportResult:
    file, now, counts = str(path), as_utc(now), _Counts()
    try:
        handle = path.open("rb")
    except FileNotFoundError as exc:
        raise InputError("the file does not exist.", file=file) from exc
    except OSError as exc:
        raise InputError(f"the file cannot be read: {exc.strerror}.", file=file) from exc
    try:
        size = path.stat().st_size
        # One transaction for the whole file: any error below rolls every batch back.
        with handle, engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Every look-up here is by an indexed column, for a batch at a time. Without
                # this, PostgreSQL hashes the batch's IN list and scans the whole (growing)
                # table for each batch: a 1M-row import took many minutes (benchmarks/scale.py).
                conn.execute(text("SET LOCAL enable_seqscan = off"))
            batch: list[_Parsed] = []
            for row in read_rows(handle, file, columns, required, _MAX_LENGTH):
                batch.append(parse(row))
                counts.rows += 1
                if len(batch) == _BATCH_ROWS:
                    _write(conn, batch, now, counts)
                    batch.clear()
                    if on_progress is not None:
                        on_progress(handle.tell(), size)
            _write(conn, batch, now, counts)
            if on_progress is not None:
                on_progress(size, size)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise MailerError(f"{file}: nothing was imported; the database refused: {reason}") from exc
    return ImportResult(
        counts.rows, counts.created, counts.updated, counts.events, counts.purchases
    )


def _write(conn: Connection, batch: Sequence[_Parsed], now: datetime, counts: _Counts) -> None:
    if not batch:
        return
    ids = _upsert_contacts(conn, batch, now, counts)
    events = [(ids[p.email], e) for p in batch for e in p.events]
    if events:
        counts.events += _add_events(conn, events, now)
    purchases = [(ids[p.email], p.purchase) for p in batch if p.purchase is not None]
    if purchases:
        counts.purchases += _add_purchases(conn, purchases)


def _upsert_contacts(
    conn: Connection, batch: Sequence[_Parsed], now: datetime, counts: _Counts
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
        empty = dict.fromkeys(_CONTACT_FIELDS)
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
            changes.append({"_id": row.id, **{f"v_{f}": diff.get(f) for f in _CONTACT_FIELDS}})
    if changes:
        conn.execute(_UPDATE_CONTACT, changes)
        counts.updated += len(changes)
    return ids


def _add_events(conn: Connection, events: Iterable[tuple[int, _EventIn]], now: datetime) -> int:
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


def _add_purchases(conn: Connection, purchases: Sequence[tuple[int, _PurchaseIn]]) -> int:
    """Insert purchases not stored yet (same contact, category, time); returns how many.

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
    return len(fresh)
