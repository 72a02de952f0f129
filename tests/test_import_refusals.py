"""CSV import refusals: a bad file gets one exact sentence naming file, line and column, and
nothing of it is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.errors import InputError
from mailer.store.importer import import_contacts, import_customers
from tests.import_support import CONTACT_HEADER, CUSTOMER_HEADER, NOTHING, NOW, counts, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files are named relative to the working directory, so messages read "contacts.csv:3: ...".
    monkeypatch.chdir(tmp_path)


# --- what a bad file gets: one exact sentence, and nothing written ------------------------------

CONTACT_COLUMN_LIST = (
    "email, first_name, last_name, initials, title, gender, birth_date, street, postcode, city, "
    "phone, locale, relationship_ended_at, list, wording, source, requested_at, confirmed_at, ip, "
    "requested_ip, confirmed_ip"
)
GOOD = "jan@example.nl,Jan,newsletter,2026-03-01,2026-03-02,,"
GOOD2 = "piet@example.nl,Piet,offers,,,,"

BAD_CONTACT_FILES = {
    "unknown column": (
        ["email,shoe_size", "jan@example.nl,44"],
        f'contacts.csv:1: unknown column "shoe_size"; allowed: {CONTACT_COLUMN_LIST}.',
    ),
    "special-category column": (
        ["email,first_name,religion", "jan@example.nl,Jan,none"],
        'contacts.csv:1: column "religion" holds special-category personal data (AVG art. 9) '
        "and is never stored.",
    ),
    "special-category column in Dutch": (
        ["email,Gezondheid", "jan@example.nl,goed"],
        'contacts.csv:1: column "gezondheid" holds special-category personal data (AVG art. 9) '
        "and is never stored.",
    ),
    "missing email column": (
        ["first_name", "Jan"],
        'contacts.csv:1: the required column "email" is missing from the header.',
    ),
    "every unknown column at once": (
        ["email;shoe_size;first_name;hat", "jan@example.nl;44;Jan;L"],
        f'contacts.csv:1: unknown columns "shoe_size", "hat"; allowed: {CONTACT_COLUMN_LIST}.',
    ),
    "control character in the source": (
        ["email,list,source", "jan@example.nl,newsletter,beurs\x07 2024"],
        'contacts.csv:2: column "source": contains the control character U+0007 at position 6; '
        "evidence must read as it was given, remove it.",
    ),
    "consent in the future": (
        ["email,list,confirmed_at", "jan@example.nl,newsletter,2027-01-01T00:00:00"],
        'contacts.csv:2: column "confirmed_at": "2027-01-01T00:00:00" is in the future; consent '
        "cannot have been given later than now (2026-03-10 12:00 UTC).",
    ),
    "bad address on row 3": (
        [CONTACT_HEADER, GOOD, GOOD2, "jan@,Jan,,,,,"],
        'contacts.csv:4: column "email": "jan@" is not a valid e-mail address: '
        "There must be something after the @-sign.",
    ),
    "empty address": (
        [CONTACT_HEADER, GOOD, ",Jan,,,,,"],
        'contacts.csv:3: column "email": a value is required.',
    ),
    "bad date on row 3": (
        [CONTACT_HEADER, GOOD, GOOD2, "kees@example.nl,Kees,newsletter,,yesterday,,"],
        'contacts.csv:4: column "confirmed_at": "yesterday" is not a date like '
        "2026-03-01T12:00:00.",
    ),
    "bad birth date": (
        ["email,birth_date", "jan@example.nl,31-12-1980"],
        'contacts.csv:2: column "birth_date": "31-12-1980" is not a date like 1980-12-31.',
    ),
    "unknown list": (
        [CONTACT_HEADER, GOOD, "kees@example.nl,Kees,weekly,,,,"],
        'contacts.csv:3: column "list": "weekly" is not a configured list; '
        "lists: newsletter, offers.",
    ),
    "confirmation before request": (
        [CONTACT_HEADER, "jan@example.nl,Jan,newsletter,2026-03-02,2026-03-01,,"],
        'contacts.csv:2: column "confirmed_at": "2026-03-01" is before requested_at '
        '"2026-03-02"; a confirmation cannot precede its request.',
    ),
    "evidence without a list": (
        [CONTACT_HEADER, "jan@example.nl,Jan,,,2026-03-01,,"],
        'contacts.csv:2: column "list": is empty, but confirmed_at is given; name the list.',
    ),
    "bad ip": (
        [CONTACT_HEADER, "jan@example.nl,Jan,newsletter,,,192.0.2.999,"],
        'contacts.csv:2: column "ip": "192.0.2.999" is not an IP address.',
    ),
    "line break in a name": (
        [CONTACT_HEADER, GOOD, 'kees@example.nl,"Kees\nBcc: x@example.org",,,,,'],
        'contacts.csv:3: column "first_name": contains a line break; a value must be on one line.',
    ),
    "too long for the column": (
        ["email,locale", "jan@example.nl,nl-NL-x"],
        'contacts.csv:2: column "locale": is 7 characters long; at most 5 fit.',
    ),
    "more values than columns": (
        ["email,first_name", "jan@example.nl,Jan,extra"],
        "contacts.csv:2: the row has 3 values but the header has 2 columns.",
    ),
    "broken quoting": (
        ["email,first_name", 'jan@example.nl,"Jan"s'],
        "contacts.csv:2: the line is not valid CSV: ',' expected after '\"'.",
    ),
    "empty file": (
        [],
        "contacts.csv: the file is empty; its first line must be a header like: email.",
    ),
}


@pytest.mark.parametrize("lines, message", BAD_CONTACT_FILES.values(), ids=BAD_CONTACT_FILES)
def test_bad_contacts_file_is_refused_with_an_exact_message_and_nothing_written(
    engine: Engine, settings: Settings, lines: list[str], message: str
) -> None:
    path = Path("contacts.csv")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    with pytest.raises(InputError) as caught:
        import_contacts(engine, settings, path, now=NOW)

    assert str(caught.value) == message
    assert counts(engine) == NOTHING


BAD_CUSTOMER_FILES = {
    "bad boolean": (
        [
            CUSTOMER_HEADER,
            "jan@example.nl,brood,2026-02-01,true",
            "piet@example.nl,brood,2026-02-01,ja",
        ],
        'customers.csv:3: column "optout_offered": "ja" is not true or false.',
    ),
    "optout_offered column missing": (
        ["email,category,purchased_at", "jan@example.nl,brood,2026-02-01"],
        'customers.csv:1: the required column "optout_offered" is missing from the header.',
    ),
    "optout_offered empty": (
        [CUSTOMER_HEADER, "jan@example.nl,brood,2026-02-01,"],
        'customers.csv:2: column "optout_offered": a value is required.',
    ),
    "bad purchase date": (
        [CUSTOMER_HEADER, "jan@example.nl,brood,1 februari,true"],
        'customers.csv:2: column "purchased_at": "1 februari" is not a date like '
        "2026-03-01T12:00:00.",
    ),
    "consent column in a customers file": (
        [CUSTOMER_HEADER + ",list", "jan@example.nl,brood,2026-02-01,true,newsletter"],
        'customers.csv:1: unknown column "list"; allowed: email, category, purchased_at, '
        "optout_offered, objected_at, first_name, last_name, initials, title, gender, "
        "birth_date, street, postcode, city, phone, locale, relationship_ended_at.",
    ),
}


@pytest.mark.parametrize("lines, message", BAD_CUSTOMER_FILES.values(), ids=BAD_CUSTOMER_FILES)
def test_bad_customers_file_is_refused_with_an_exact_message_and_nothing_written(
    engine: Engine, settings: Settings, lines: list[str], message: str
) -> None:
    path = write("customers.csv", *lines)

    with pytest.raises(InputError) as caught:
        import_customers(engine, settings, path, now=NOW)

    assert str(caught.value) == message
    assert counts(engine) == NOTHING


def test_input_error_carries_file_line_and_field(engine: Engine, settings: Settings) -> None:
    path = write(
        "contacts.csv", CONTACT_HEADER, GOOD, "kees@example.nl,Kees,newsletter,,gisteren,,"
    )

    with pytest.raises(InputError) as caught:
        import_contacts(engine, settings, path, now=NOW)

    error = caught.value
    assert (error.file, error.line, error.field) == ("contacts.csv", 3, "confirmed_at")


def test_error_line_is_the_physical_line_after_a_multiline_field(
    engine: Engine, settings: Settings
) -> None:
    path = write(
        "contacts.csv",
        "email,list,wording",
        'jan@example.nl,newsletter,"Ja,\nik wil\nde nieuwsbrief"',
        "",
        "kees@,newsletter,",
    )

    with pytest.raises(InputError, match=r"^contacts\.csv:6: column \"email\""):
        import_contacts(engine, settings, path, now=NOW)


def test_file_that_is_not_utf8_is_refused_naming_the_line(
    engine: Engine, settings: Settings
) -> None:
    path = Path("contacts.csv")
    path.write_bytes(b"email,first_name\njan@example.nl,Jan\npiet@example.nl,Ren\xe9\n")

    with pytest.raises(InputError) as caught:
        import_contacts(engine, settings, path, now=NOW)

    assert str(caught.value) == (
        "contacts.csv:3: the line is not UTF-8 text (byte 0xe9 at position 20); "
        'save the file as "CSV UTF-8".'
    )
    assert counts(engine) == NOTHING


def test_missing_file_is_refused_naming_the_file(engine: Engine, settings: Settings) -> None:
    with pytest.raises(InputError) as caught:
        import_contacts(engine, settings, Path("nope.csv"), now=NOW)

    assert str(caught.value) == "nope.csv: the file does not exist."


def test_directory_instead_of_file_is_refused_naming_the_file(
    engine: Engine, settings: Settings
) -> None:
    Path("adir").mkdir()

    with pytest.raises(InputError) as caught:
        import_customers(engine, settings, Path("adir"), now=NOW)

    assert str(caught.value) == "adir: the file cannot be read: Is a directory."
