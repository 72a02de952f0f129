"""CSV import of contacts with consent evidence, and of customers with purchases.

File formats: DESIGN.md, "CSV formats". What this module promises:

- All or nothing: one import is one transaction. A bad row raises `InputError` naming the file,
  the physical line and the column, and nothing of the file is written (exit code 2 contract).
- Bounded memory: rows are read one at a time and written in batches, so a file of a million
  rows needs no more memory than one of a thousand.
- Idempotent: a contact is keyed by its normalised address, and a consent event or a purchase that
  is already stored is not added again, so importing the same file twice adds nothing.
- Data minimisation (AVG art. 5(1)(c)): only the columns of `importrows` (or of a vendor format,
  `formats`) are accepted; any other column is refused by name, and special-category data
  (AVG art. 9) gets a message of its own.
- An import never touches `Suppression`: only the person can lift a suppression (DESIGN rule 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from mailer.config import Settings
from mailer.errors import InputError, MailerError
from mailer.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from mailer.store.csvfile import SPECIAL_CATEGORY_COLUMNS, as_utc, read_rows
from mailer.store.formats import (
    CONTACT_FORMATS,
    CUSTOMER_FORMATS,
    Header,
    ImportFormat,
    ImportSource,
    parse_delimiter,
    parse_map,
    pick_format,
)
from mailer.store.importrows import (
    CONTACT_COLUMNS,
    CONTACT_FIELDS,
    CUSTOMER_COLUMNS,
    CUSTOMER_REQUIRED,
    EventIn,
    Parsed,
    PurchaseIn,
    RowParser,
    Skip,
    contact_parser,
    customer_parser,
)
from mailer.store.models import ConsentEvent, ConsentOrigin

__all__ = [
    "CONTACT_COLUMNS",
    "CUSTOMER_COLUMNS",
    "SPECIAL_CATEGORY_COLUMNS",
    "ImportResult",
    "ImportSource",
    "import_contacts",
    "import_customers",
    "pick_format",
]

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


@dataclass(frozen=True, slots=True)
class ImportResult:
    rows: int
    contacts_created: int
    contacts_updated: int
    consent_events: int
    purchases: int
    # Objections (AVG art. 21) newly on record: on a new purchase or one already stored.
    objections: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # rows left out, by reason
    ignored_columns: tuple[str, ...] = ()  # columns the format knows and does not need


# Called after each batch with (bytes read, file size): a progress bar for large files.
Progress = Callable[[int, int], None]


def import_contacts(
    engine: Engine,
    settings: Settings,
    path: Path,
    *,
    now: datetime,
    on_progress: Progress | None = None,
    source: ImportSource | None = None,
    list_name: str | None = None,
) -> ImportResult:
    """Import contacts and their consent evidence from the CSV file at `path`.

    A vendor format (Mailchimp, Laposta) has no list column: every row goes to `list_name`.
    """
    source = source or ImportSource()
    fmt = pick_format(CONTACT_FORMATS, source.format)
    constants: dict[str, str] = {}
    if list_name is None and not fmt.generic:
        if len(settings.lists) != 1:
            raise InputError(
                f"--list: name the list the members of {fmt.title} signed up for; lists: "
                f"{', '.join(settings.lists)}."
            )
        list_name = next(iter(settings.lists))
    if list_name is not None:
        if list_name not in settings.lists:
            raise InputError(
                f'--list: "{list_name}" is not a configured list; lists: '
                f"{', '.join(settings.lists)}."
            )
        constants["list"] = list_name
    label = f"import:{path.name}" if fmt.generic else f"import:{path.name} ({fmt.title})"
    parse = contact_parser(settings, label, as_utc(now))
    return _run(engine, settings, path, now, _Reading(CONTACT_COLUMNS, ("email",), fmt,
                source, constants), parse, on_progress)  # fmt: skip


def import_customers(
    engine: Engine,
    settings: Settings,
    path: Path,
    *,
    now: datetime,
    on_progress: Progress | None = None,
    source: ImportSource | None = None,
    optout_offered: bool | None = None,
) -> ImportResult:
    """Import customers and their purchases (the soft opt-in facts) from the CSV file at `path`.

    `optout_offered` states for every row whether the shop offered an opt-out when it collected
    the address (Telecommunicatiewet 11.7 lid 3); a shop's own export has no such column.
    """
    source = source or ImportSource()
    fmt = pick_format(CUSTOMER_FORMATS, source.format)
    # A shop's own export has no such column: then the command line must say it (checked once
    # the header is read); the mailer's own format keeps requiring the column.
    stated = optout_offered is not None
    required = tuple(c for c in CUSTOMER_REQUIRED
                     if c != "optout_offered" or (fmt.generic and not stated))  # fmt: skip
    parse = customer_parser(category_list=fmt.category_list, optout_offered=optout_offered)
    reading = _Reading(CUSTOMER_COLUMNS, required, fmt, source, {}, needs_optout=not stated)
    return _run(engine, settings, path, now, reading, parse, on_progress)


@dataclass(frozen=True, slots=True)
class _Reading:
    columns: Sequence[str]
    required: Sequence[str]
    fmt: ImportFormat
    source: ImportSource
    constants: dict[str, str]
    needs_optout: bool = False  # the file must give optout_offered per row


def _check_optout_column(file: str, header: Header, reading: _Reading) -> None:
    if reading.needs_optout and "optout_offered" not in header.labels:
        raise InputError(
            f"{reading.fmt.title} has no optout_offered column; say whether the shop offered "
            "an opt-out when it collected these addresses (Telecommunicatiewet 11.7 lid 3): "
            "--optout-offered or --no-optout-offered.",
            file=file,
        )


# --- writing -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counts:
    rows: int = 0
    created: int = 0
    updated: int = 0
    events: int = 0
    purchases: int = 0
    objections: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()


def _run(
    engine: Engine,
    settings: Settings,
    path: Path,
    now: datetime,
    reading: _Reading,
    parse: RowParser,
    on_progress: Progress | None = None,
) -> ImportResult:
    file, now, counts = str(path), as_utc(now), _Counts()
    user_map = parse_map(reading.source.column_map, reading.columns)
    delimiter = parse_delimiter(reading.source.delimiter)
    zone = ZoneInfo(settings.scheduler.timezone) if reading.fmt.local_times else ZoneInfo("UTC")

    def on_header(header: Header) -> None:
        counts.ignored = tuple(header.ignored)
        _check_optout_column(file, header, reading)

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
            batch: list[Parsed] = []
            rows = read_rows(
                handle, file, reading.columns, reading.required, _MAX_LENGTH, fmt=reading.fmt,
                user_map=user_map, delimiter=delimiter, constants=reading.constants, zone=zone,
                on_header=on_header,
            )  # fmt: skip
            for row in rows:
                parsed = parse(row)
                counts.rows += 1
                if isinstance(parsed, Skip):
                    counts.skipped[parsed.reason] = counts.skipped.get(parsed.reason, 0) + 1
                    continue
                batch.append(parsed)
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
        counts.rows, counts.created, counts.updated, counts.events, counts.purchases,
        counts.objections, dict(counts.skipped), counts.ignored,
    )  # fmt: skip


def _write(conn: Connection, batch: Sequence[Parsed], now: datetime, counts: _Counts) -> None:
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
    conn: Connection, batch: Sequence[Parsed], now: datetime, counts: _Counts
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
    conn: Connection, purchases: Sequence[tuple[int, PurchaseIn]], counts: _Counts
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
