"""Import of suppressions: the people who unsubscribed, bounced or complained elsewhere.

Moving in from Mailchimp, its unsubscribed and cleaned exports must come along: otherwise a
person who unsubscribed there comes back as an "existing customer" from the shop's orders.

- Only the keyed hash of each address is stored (DESIGN rule 6); no contact is created.
- Adds, never removes: an import can never lift a suppression (rule 1). A suppression already
  on record (same address, reason and scope) is counted, not added twice.
- All or nothing, like every import: a bad row names file, line and column, nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, bindparam, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from mailer.config import Settings
from mailer.core.tokens import address_hashes
from mailer.errors import InputError, MailerError
from mailer.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from mailer.store.csvfile import CsvRow, as_utc, read_rows
from mailer.store.formats import (
    SUPPRESSION_FORMATS,
    Header,
    ImportSource,
    parse_delimiter,
    parse_map,
    pick_format,
)
from mailer.store.models import SuppressionReason

__all__ = [
    "IMPORTABLE_REASONS",
    "SUPPRESSION_COLUMNS",
    "SuppressionImportResult",
    "import_suppressions",
]

SUPPRESSION_COLUMNS = ("email", "suppressed_at")
# `erased` is what `privacy erase` leaves behind; it is never imported.
IMPORTABLE_REASONS = tuple(r for r in SuppressionReason if r is not SuppressionReason.ERASED)
# Which Mailchimp export this is, by its time column.
_MAILCHIMP_REASON = {
    "unsub_time": SuppressionReason.UNSUBSCRIBED,
    "clean_time": SuppressionReason.HARD_BOUNCE,
}
_BATCH_ROWS = 900
_SUPPRESSION: Table = SQLModel.metadata.tables["suppression"]


@dataclass(frozen=True, slots=True)
class SuppressionImportResult:
    rows: int
    added: int
    already_suppressed: int
    reason: SuppressionReason
    scope: str | None  # None: every list
    ignored_columns: tuple[str, ...] = ()


def import_suppressions(
    engine: Engine,
    settings: Settings,
    path: Path,
    *,
    now: datetime,
    reason: SuppressionReason | None,
    list_name: str | None = None,
    source: ImportSource | None = None,
) -> SuppressionImportResult:
    """Suppress every address of the file for all lists, or for `list_name` only."""
    source = source or ImportSource()
    fmt = pick_format(SUPPRESSION_FORMATS, source.format)
    if reason is not None and reason not in IMPORTABLE_REASONS:
        raise InputError(
            f'--reason: "{reason}" cannot be imported; reasons: {", ".join(IMPORTABLE_REASONS)}.'
        )
    if reason is None and fmt.generic:
        raise InputError(f"--reason: say why these addresses are suppressed: "
                         f"{', '.join(IMPORTABLE_REASONS)}.")  # fmt: skip
    if list_name is not None and list_name not in settings.lists:
        raise InputError(
            f'--list: "{list_name}" is not a configured list; lists: {", ".join(settings.lists)}.'
        )
    keys = settings.require_hash_keys()
    file, now = str(path), as_utc(now)
    chosen: list[SuppressionReason] = []
    ignored: list[str] = []

    def on_header(header: Header) -> None:
        ignored.extend(header.ignored)
        inferred = _MAILCHIMP_REASON.get(header.labels.get("suppressed_at", "").lower())
        if inferred is None and reason is None:
            # Without UNSUB_TIME or CLEAN_TIME this is not one of those two exports: most
            # likely the subscribed one, whose members must not be suppressed by a slip.
            raise InputError(
                f"this is not {fmt.title}: it has no UNSUB_TIME or CLEAN_TIME column. The "
                "subscribed export goes to `mailer contacts import --format mailchimp`; for "
                "another file, give --reason.",
                file=file,
            )
        chosen.append(reason or inferred or SuppressionReason.UNSUBSCRIBED)

    try:
        handle = path.open("rb")
    except OSError as exc:
        what = "does not exist" if isinstance(exc, FileNotFoundError) else "cannot be read"
        raise InputError(f"the file {what}.", file=file) from exc
    total = added = already = 0
    try:
        with handle, engine.begin() as conn:
            batch: list[tuple[str, datetime]] = []
            for row in read_rows(
                handle, file, SUPPRESSION_COLUMNS, ("email",), {}, fmt=fmt,
                user_map=parse_map(source.column_map, SUPPRESSION_COLUMNS),
                delimiter=parse_delimiter(source.delimiter), on_header=on_header,
            ):  # fmt: skip
                batch.append(_parse(row, now))
                total += 1
                if len(batch) == _BATCH_ROWS:
                    new = _write(conn, keys, batch, chosen[0], list_name)
                    added, already, batch = added + new, already + len(batch) - new, []
            if batch:
                new = _write(conn, keys, batch, chosen[0], list_name)
                added, already = added + new, already + len(batch) - new
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise MailerError(f"{file}: nothing was imported; the database refused: {cause}") from exc
    final = chosen[0] if chosen else (reason or SuppressionReason.UNSUBSCRIBED)
    return SuppressionImportResult(total, added, already, final, list_name, tuple(ignored))


def _parse(row: CsvRow, now: datetime) -> tuple[str, datetime]:
    email = row.address()
    at = row.when("suppressed_at") or now
    if at > now:
        raise row.error("suppressed_at", f'"{row.values["suppressed_at"]}" is in the future.')
    return email, at


def _write(
    conn: Connection,
    keys: Sequence[str],
    batch: Sequence[tuple[str, datetime]],
    reason: SuppressionReason,
    scope: str | None,
) -> int:
    """Insert the suppressions not on record yet (under any key); returns how many."""
    hashes = {email: address_hashes(email, keys) for email, _ in batch}
    query = select(_SUPPRESSION.c.address_hash).where(
        _SUPPRESSION.c.address_hash.in_(bindparam("hashes", expanding=True)),
        _SUPPRESSION.c.reason == str(reason),
        _SUPPRESSION.c.scope.is_(None) if scope is None else _SUPPRESSION.c.scope == scope,
    )
    known = set(conn.execute(query, {"hashes": [h for hs in hashes.values() for h in hs]})
                .scalars())  # fmt: skip
    fresh: dict[str, dict[str, object]] = {}
    for email, at in batch:
        if known.intersection(hashes[email]) or email in fresh:
            continue
        # The newest key's hash: the one every look-up tries first.
        fresh[email] = {"address_hash": hashes[email][0], "reason": str(reason), "scope": scope,
                        "at": at}  # fmt: skip
    if fresh:
        conn.execute(insert(_SUPPRESSION), list(fresh.values()))
    return len(fresh)
