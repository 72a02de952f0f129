"""Reading a CSV file of the import formats: header checks, one validated row at a time.

Every problem is an `InputError` naming the file, the physical line and the column.
"""

from __future__ import annotations

import codecs
import csv
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from itertools import chain
from typing import IO

from mailer.core.addresses import normalise_address
from mailer.core.text import control_characters
from mailer.errors import InputError
from mailer.store.formats import GENERIC, Header, ImportFormat, detect_delimiter, resolve_header

__all__ = ["SPECIAL_CATEGORY_COLUMNS", "CsvRow", "as_utc", "read_rows"]

# AVG art. 9 categories (and their usual Dutch names): refused with a message of their own, so
# the person exporting the file learns why, instead of just renaming the column.
SPECIAL_CATEGORY_COLUMNS: frozenset[str] = frozenset(
    {
        "health", "medical", "allergy", "allergies", "disability", "religion", "religious_belief",
        "religious_beliefs", "belief", "politics", "political_opinion", "political_opinions",
        "political_party", "philosophical_beliefs", "ethnicity", "ethnic_origin", "race",
        "racial_origin", "union", "union_membership", "trade_union", "sexual_orientation",
        "sex_life", "biometric", "biometrics", "genetic", "genetics", "gezondheid", "medisch",
        "allergie", "allergieen", "handicap", "religie", "geloof", "godsdienst", "politiek",
        "politieke_voorkeur", "etniciteit", "afkomst", "ras", "vakbond", "seksuele_geaardheid",
        "geaardheid", "biometrisch", "genetisch",
    }
)  # fmt: skip

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LINE_BREAK = re.compile(r"[\r\n]")
# Shopify writes "2025-10-07 09:50:26 +0200", which fromisoformat does not read.
_SPACED_OFFSET = "%Y-%m-%d %H:%M:%S %z"


# Bidirectional overrides and isolates (Unicode TR 9) make evidence read differently on screen
# than it is stored ("Trojan Source", CVE-2021-42574); they are refused like control characters.
@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data row: its non-empty values by column, and where it is, for error messages."""

    file: str
    line: int
    values: dict[str, str]
    limits: Mapping[str, int | None]  # the database's column lengths
    labels: Mapping[str, str] = field(default_factory=dict)  # field -> column name in the file
    zone: tzinfo = UTC  # of naive times in the file

    def error(self, column: str, message: str) -> InputError:
        return InputError(
            message, file=self.file, line=self.line, field=self.labels.get(column, column)
        )

    def get(self, column: str, *, required: bool = False) -> str | None:
        value = self.values.get(column)
        if value is None and required:
            raise self.error(column, "a value is required.")
        return value

    def text(self, column: str, *, required: bool = False, multiline: bool = False) -> str | None:
        value = self.get(column, required=required)
        if value is None:
            return None
        # These values end up in mail headers and templates; a line break there is an injection.
        if not multiline and _LINE_BREAK.search(value):
            raise self.error(column, "contains a line break; a value must be on one line.")
        allowed = {"U+000D", "U+000A", "U+0009"} if multiline else set()
        bad = [name for name in control_characters(value) if name not in allowed]
        if bad:
            position = value.index(chr(int(bad[0][2:], 16))) + 1
            raise self.error(
                column,
                f"contains the control character {bad[0]} at position {position}; "
                "evidence must read as it was given, remove it.",
            )
        limit = self.limits.get(column)
        if limit is not None and len(value) > limit:
            raise self.error(column, f"is {len(value)} characters long; at most {limit} fit.")
        return value

    def when(self, column: str, *, required: bool = False) -> datetime | None:
        raw = self.get(column, required=required)
        if raw is None:
            return None
        try:
            try:
                moment = datetime.fromisoformat(raw)
            except ValueError:
                moment = datetime.strptime(raw, _SPACED_OFFSET)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=self.zone)
            return as_utc(moment)
        except (ValueError, OverflowError) as exc:
            raise self.error(column, f'"{raw}" is not a date like 2026-03-01T12:00:00.') from exc

    def day(self, column: str) -> date | None:
        raw = self.get(column)
        if raw is None:
            return None
        try:
            if not _DATE.fullmatch(raw):
                raise ValueError(raw)
            return date.fromisoformat(raw)
        except ValueError as exc:
            raise self.error(column, f'"{raw}" is not a date like 1980-12-31.') from exc

    def boolean(self, column: str) -> bool:
        raw = self.get(column, required=True) or ""
        if raw.lower() not in ("true", "false"):
            raise self.error(column, f'"{raw}" is not true or false.')
        return raw.lower() == "true"

    def address(self) -> str:
        raw = self.get("email", required=True) or ""
        try:
            return normalise_address(raw)
        except ValueError as exc:
            raise self.error("email", f'"{raw}" is not a valid e-mail address: {exc}') from exc

    def ip(self, column: str = "ip") -> str | None:
        raw = self.get(column)
        if raw is None:
            return None
        try:
            return str(ipaddress.ip_address(raw))
        except ValueError as exc:
            raise self.error(column, f'"{raw}" is not an IP address.') from exc


def as_utc(moment: datetime) -> datetime:
    # Naive times in a file (and SQLite's naive read-back) are UTC by convention.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _lines(handle: IO[bytes], file: str) -> Iterator[str]:
    """Decoded lines; decoding per line lets a non-UTF-8 byte be reported with its line."""
    try:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]  # Excel's "CSV UTF-8" starts with a BOM
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"the line is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position "
                    f'{exc.start + 1}); save the file as "CSV UTF-8".',
                    file=file, line=number,
                ) from exc  # fmt: skip
    except OSError as exc:
        raise InputError(f"the file cannot be read: {exc.strerror}.", file=file) from exc


def read_rows(
    handle: IO[bytes],
    file: str,
    columns: Sequence[str],
    required: Sequence[str],
    limits: Mapping[str, int | None],
    *,
    fmt: ImportFormat = GENERIC,
    user_map: Mapping[str, str | None] | None = None,
    delimiter: str | None = None,
    constants: Mapping[str, str] | None = None,
    zone: tzinfo = UTC,
    on_header: Callable[[Header], None] | None = None,
) -> Iterator[CsvRow]:
    """Validated rows of the file, keyed by our field names (see mailer.store.formats).

    `constants` are values every row gets (the list of `--list`); `delimiter` None detects it.
    """
    lines = _lines(handle, file)
    first = next(lines, None)
    if first is None or not first.strip():
        raise InputError(
            f"the file is empty; its first line must be a header like: {','.join(required)}.",
            file=file,
        )
    separator = delimiter or detect_delimiter(first)
    reader = csv.reader(chain([first], lines), delimiter=separator, strict=True)
    done = 0  # physical lines consumed so far; a record starts on the next one
    try:
        header = resolve_header(
            next(reader), file=file, fields=columns, required=required, fmt=fmt,
            user_map=user_map or {}, special=SPECIAL_CATEGORY_COLUMNS,
        )  # fmt: skip
        if on_header is not None:
            on_header(header)
        names = header.fields
        labels = {**header.labels, **{name: f"--{name}" for name in constants or {}}}
        done = reader.line_num
        for record in reader:
            line, done = done + 1, reader.line_num
            values = {n: v.strip() for n, v in zip(names, record, strict=False)
                      if n is not None and v.strip()}  # fmt: skip
            if not values and not any(v.strip() for v in record):
                continue  # blank lines and Excel's trailing ",,,," rows
            if any(v.strip() for v in record[len(names) :]):
                raise InputError(
                    f"the row has {len(record)} values but the header has {len(names)} columns.",
                    file=file, line=line,
                )  # fmt: skip
            if not values:
                continue  # only columns that were left out have values
            yield CsvRow(file, line, {**values, **(constants or {})}, limits, labels, zone)
    except csv.Error as exc:
        raise InputError(f"the line is not valid CSV: {exc}.", file=file, line=done + 1) from exc
