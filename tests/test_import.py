"""CSV import: what it stores, what it refuses, and that a refusal writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select
from sqlmodel import SQLModel

from mailer.addresses import _validated, normalise_address
from mailer.config import Settings
from mailer.errors import InputError
from mailer.importer import ImportResult, import_contacts, import_customers

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TABLES = ("contact", "consent", "purchase", "suppression")
CONTACT_HEADER = "email,first_name,list,requested_at,confirmed_at,ip,source"
CUSTOMER_HEADER = "email,category,purchased_at,optout_offered"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files are named relative to the working directory, so messages read "contacts.csv:3: ...".
    monkeypatch.chdir(tmp_path)


def write(name: str, *lines: str) -> Path:
    path = Path(name)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(
                select(func.count()).select_from(SQLModel.metadata.tables[name])
            ).scalar_one()
            for name in TABLES
        }


def rows(engine: Engine, table: str) -> list[dict[str, object]]:
    t = SQLModel.metadata.tables[table]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.id))]


def utc(value: object) -> datetime:
    # SQLite hands back naive datetimes; they were stored as UTC.
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NOTHING = dict.fromkeys(TABLES, 0)


# --- what a good import stores -----------------------------------------------------------------


def test_confirmed_row_creates_contact_with_requested_and_confirmed_events_and_evidence(
    engine: Engine, settings: Settings
) -> None:
    path = write(
        "contacts.csv",
        CONTACT_HEADER + ",wording",
        "jan@example.nl,Jan,newsletter,2026-03-01T10:00:00,2026-03-01T12:05:00+01:00,"
        "192.0.2.1,https://bakkerij.example/aanmelden,Ja graag",
    )

    result = import_contacts(engine, settings, path, now=NOW)

    assert result == ImportResult(
        rows=1, contacts_created=1, contacts_updated=0, consent_events=2, purchases=0
    )
    [contact] = rows(engine, "contact")
    assert contact["email"] == "jan@example.nl"
    assert contact["first_name"] == "Jan"
    assert utc(contact["created_at"]) == NOW
    requested, confirmed = rows(engine, "consent")
    assert (requested["event"], utc(requested["at"])) == (
        "requested",
        datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
    )
    # +01:00 is stored as the same moment in UTC.
    assert (confirmed["event"], utc(confirmed["at"])) == (
        "confirmed",
        datetime(2026, 3, 1, 11, 5, tzinfo=UTC),
    )
    for event in (requested, confirmed):
        assert event["contact_id"] == contact["id"]
        assert event["list_name"] == "newsletter"
        assert event["origin"] == "import"
        assert event["wording"] == "Ja graag"
        assert event["source"] == "https://bakkerij.example/aanmelden"
        assert event["ip"] == "192.0.2.1"
        assert event["user_agent"] is None


def test_missing_wording_and_source_fall_back_to_configured_wording_and_file_name(
    engine: Engine, settings: Settings
) -> None:
    path = write("contacts.csv", "email,list,confirmed_at", "jan@example.nl,offers,2026-03-01")

    import_contacts(engine, settings, path, now=NOW)

    events = rows(engine, "consent")
    assert [(e["event"], utc(e["at"])) for e in events] == [
        ("requested", datetime(2026, 3, 1, tzinfo=UTC)),
        ("confirmed", datetime(2026, 3, 1, tzinfo=UTC)),
    ]
    assert {e["wording"] for e in events} == {settings.lists["offers"].wording}
    assert {e["source"] for e in events} == {"import:contacts.csv"}


def test_pending_row_without_confirmed_at_yields_only_a_requested_event(
    engine: Engine, settings: Settings
) -> None:
    path = write("contacts.csv", CONTACT_HEADER, "jan@example.nl,,newsletter,2026-03-01,,,")

    result = import_contacts(engine, settings, path, now=NOW)

    assert result.consent_events == 1
    [event] = rows(engine, "consent")
    assert event["event"] == "requested"
    assert utc(event["at"]) == datetime(2026, 3, 1, tzinfo=UTC)


def test_row_without_list_creates_contact_but_no_consent(
    engine: Engine, settings: Settings
) -> None:
    path = write("contacts.csv", "email,first_name,birth_date", "jan@example.nl,Jan,1980-12-31")

    import_contacts(engine, settings, path, now=NOW)

    assert counts(engine) == {**NOTHING, "contact": 1}
    assert rows(engine, "contact")[0]["birth_date"] == date(1980, 12, 31)


def test_addresses_are_normalised_so_one_person_is_one_contact(
    engine: Engine, settings: Settings
) -> None:
    path = write(
        "contacts.csv",
        "email,first_name",
        '" Jan@Example.NL ",Jan',
        "jan@example.nl,",
        "JAN@EXAMPLE.NL,Johannes",
    )

    result = import_contacts(engine, settings, path, now=NOW)

    assert result.rows == 3
    assert result.contacts_created == 1
    [contact] = rows(engine, "contact")
    assert contact["email"] == "jan@example.nl"
    # Rows apply in file order; an empty value never erases a stored one.
    assert contact["first_name"] == "Johannes"


def test_normalise_address_lowercases_and_strips() -> None:
    assert normalise_address(" Jan@Example.NL ") == "jan@example.nl"


def test_normalise_address_raises_email_validators_sentence() -> None:
    with pytest.raises(ValueError, match=r"^There must be something after the @-sign\.$"):
        normalise_address("jan@")


def test_known_contact_gets_only_the_fields_the_row_gives(
    engine: Engine, settings: Settings
) -> None:
    first = write("first.csv", "email,first_name,city", "jan@example.nl,Jan,Utrecht")
    second = write("second.csv", "email,first_name,city", "jan@example.nl,,Zwolle")
    import_contacts(engine, settings, first, now=NOW)

    result = import_contacts(engine, settings, second, now=NOW)

    assert (result.contacts_created, result.contacts_updated) == (0, 1)
    [contact] = rows(engine, "contact")
    assert (contact["first_name"], contact["city"]) == ("Jan", "Zwolle")
    assert utc(contact["created_at"]) == NOW


def test_reimporting_the_same_contacts_file_adds_nothing(
    engine: Engine, settings: Settings
) -> None:
    path = write(
        "contacts.csv",
        CONTACT_HEADER,
        "jan@example.nl,Jan,newsletter,2026-03-01T12:00:00,2026-03-01T12:05:00,,",
        "piet@example.nl,Piet,offers,,,,",  # pending, no time: recorded at `now`, once
    )
    import_contacts(engine, settings, path, now=NOW)
    before = counts(engine)

    later = datetime(2026, 4, 1, tzinfo=UTC)
    result = import_contacts(engine, settings, path, now=later)

    assert result == ImportResult(
        rows=2, contacts_created=0, contacts_updated=0, consent_events=0, purchases=0
    )
    assert counts(engine) == before == {**NOTHING, "contact": 2, "consent": 3}


def test_customers_import_records_one_purchase_per_row(engine: Engine, settings: Settings) -> None:
    path = write(
        "customers.csv",
        CUSTOMER_HEADER + ",objected_at,first_name",
        "jan@example.nl,brood,2026-02-01T09:30:00,true,,Jan",
        "jan@example.nl,taart,2026-02-02,FALSE,2026-02-03,",
        "piet@example.nl,brood,2026-02-01T09:30:00+01:00,true,,Piet",
    )

    result = import_customers(engine, settings, path, now=NOW)

    assert result == ImportResult(
        rows=3, contacts_created=2, contacts_updated=0, consent_events=0, purchases=3
    )
    purchases = rows(engine, "purchase")
    assert [
        (
            p["category"],
            utc(p["at"]),
            p["optout_offered"],
            p["objected_at"] and utc(p["objected_at"]),
        )
        for p in purchases
    ] == [
        ("brood", datetime(2026, 2, 1, 9, 30, tzinfo=UTC), True, None),
        ("taart", datetime(2026, 2, 2, tzinfo=UTC), False, datetime(2026, 2, 3, tzinfo=UTC)),
        ("brood", datetime(2026, 2, 1, 8, 30, tzinfo=UTC), True, None),
    ]
    assert counts(engine)["consent"] == 0


def test_reimporting_the_same_customers_file_adds_nothing(
    engine: Engine, settings: Settings
) -> None:
    path = write("customers.csv", CUSTOMER_HEADER, "jan@example.nl,brood,2026-02-01,true")
    import_customers(engine, settings, path, now=NOW)

    result = import_customers(engine, settings, path, now=NOW)

    assert result.purchases == 0
    assert counts(engine) == {**NOTHING, "contact": 1, "purchase": 1}


def test_objection_in_a_later_file_is_added_to_the_known_purchase(
    engine: Engine, settings: Settings
) -> None:
    header = CUSTOMER_HEADER + ",objected_at"
    import_customers(
        engine, settings, write("a.csv", header, "jan@example.nl,brood,2026-02-01,true,"), now=NOW
    )

    import_customers(
        engine, settings, write("b.csv", header, "jan@example.nl,brood,2026-02-01,true,2026-03-01"),
        now=NOW,
    )  # fmt: skip

    [purchase] = rows(engine, "purchase")
    assert utc(purchase["objected_at"]) == datetime(2026, 3, 1, tzinfo=UTC)


def test_utf8_bom_and_crlf_line_endings_are_accepted(engine: Engine, settings: Settings) -> None:
    path = Path("contacts.csv")
    path.write_bytes(b"\xef\xbb\xbfemail,first_name\r\njan@example.nl,Ren\xc3\xa9\r\n")

    import_contacts(engine, settings, path, now=NOW)

    assert rows(engine, "contact")[0]["first_name"] == "René"


def test_import_never_touches_suppressions(engine: Engine, settings: Settings) -> None:
    suppression = SQLModel.metadata.tables["suppression"]
    with engine.begin() as conn:
        conn.execute(insert(suppression).values(address_hash="x" * 64, reason="erased", at=NOW))
    path = write("contacts.csv", CONTACT_HEADER, "jan@example.nl,Jan,newsletter,,2026-03-01,,")

    import_contacts(engine, settings, path, now=NOW)

    assert [(s["address_hash"], s["reason"]) for s in rows(engine, "suppression")] == [
        ("x" * 64, "erased")
    ]


# --- what a bad file gets: one exact sentence, and nothing written ------------------------------

CONTACT_COLUMN_LIST = (
    "email, first_name, last_name, initials, title, gender, birth_date, street, postcode, city, "
    "phone, locale, relationship_ended_at, list, wording, source, requested_at, confirmed_at, ip"
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
    "semicolon separated": (
        ["email;first_name", "jan@example.nl;Jan"],
        'contacts.csv:1: the columns are separated by ";"; save the file as CSV with "," between '
        "columns.",
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


def test_error_after_several_written_batches_rolls_back_the_whole_file(
    engine: Engine, settings: Settings
) -> None:
    good = [f"person{i}@example.nl,P{i},newsletter,2026-03-01,2026-03-02,," for i in range(2500)]
    path = write("contacts.csv", CONTACT_HEADER, *good, "last@example.nl,L,newsletter,,nooit,,")

    with pytest.raises(InputError, match=r"^contacts\.csv:2502: column \"confirmed_at\""):
        import_contacts(engine, settings, path, now=NOW)

    assert counts(engine) == NOTHING


def test_many_rows_across_batches_import_with_duplicates_merged(
    engine: Engine, settings: Settings
) -> None:
    # The same 1,000 people twice, so duplicates land in different batches.
    lines = [
        f"person{i % 1000}@example.nl,P{i},newsletter,2026-03-01,2026-03-02,," for i in range(2000)
    ]
    path = write("contacts.csv", CONTACT_HEADER, *lines)

    result = import_contacts(engine, settings, path, now=NOW)

    assert (result.rows, result.contacts_created, result.consent_events) == (2000, 1000, 2000)
    assert counts(engine) == {**NOTHING, "contact": 1000, "consent": 2000}


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


ADDRESS_PARTS = st.sampled_from(
    ["jan", "Jan", "a.b", ".a", "a.", "a..b", "x+tag", '"q"', "é", "ß", " ", "@", "<", ">",
     "example.nl", "Example.NL", "bakkerij.example", "b.test", "localhost", "xn--bcher-kva.de",
     "bücher.de", "[192.0.2.1]", "-a.nl", "a-.nl", "_", "=", "~", "!", "#", "a" * 64, "b" * 70]
)  # fmt: skip


@given(st.lists(ADDRESS_PARTS, max_size=6).map("".join))
def test_fast_path_of_normalise_address_agrees_with_email_validator(raw: str) -> None:
    def outcome(normalise: Callable[[str], str]) -> str:
        try:
            return normalise(raw)
        except ValueError as exc:
            return f"error: {exc}"

    assert outcome(normalise_address) == outcome(lambda a: _validated(a.strip()))
