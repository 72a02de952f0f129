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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from mailer.config import Settings
from mailer.errors import InputError, MailerError
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
    CUSTOMER_COLUMNS,
    CUSTOMER_REQUIRED,
    Parsed,
    RowParser,
    Skip,
    contact_parser,
    customer_parser,
)
from mailer.store.importwrite import MAX_LENGTH, ImportCounts, write_batch

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


def _run(
    engine: Engine,
    settings: Settings,
    path: Path,
    now: datetime,
    reading: _Reading,
    parse: RowParser,
    on_progress: Progress | None = None,
) -> ImportResult:
    file, now, counts = str(path), as_utc(now), ImportCounts()
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
                handle, file, reading.columns, reading.required, MAX_LENGTH, fmt=reading.fmt,
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
                    write_batch(conn, batch, now, counts)
                    batch.clear()
                    if on_progress is not None:
                        on_progress(handle.tell(), size)
            write_batch(conn, batch, now, counts)
            if on_progress is not None:
                on_progress(size, size)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise MailerError(f"{file}: nothing was imported; the database refused: {reason}") from exc
    return ImportResult(
        counts.rows, counts.created, counts.updated, counts.events, counts.purchases,
        counts.objections, dict(counts.skipped), counts.ignored,
    )  # fmt: skip
