"""CSV import of contacts: the contacts, consent events and evidence a good file stores.

Also: a known contact only gets the fields a row gives, a second import of the same file adds
nothing, a BOM and CRLF are read, and an import never touches the suppression list.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert
from sqlmodel import SQLModel

from mailer.config import Settings
from mailer.store.importer import ImportResult, import_contacts
from tests.import_support import CONTACT_HEADER, NOTHING, NOW, counts, rows, utc, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files are named relative to the working directory, so messages read "contacts.csv:3: ...".
    monkeypatch.chdir(tmp_path)


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


def test_missing_wording_is_recorded_as_not_recorded_and_source_falls_back_to_file_name(
    engine: Engine, settings: Settings
) -> None:
    path = write("contacts.csv", "email,list,confirmed_at", "jan@example.nl,offers,2026-03-01")

    import_contacts(engine, settings, path, now=NOW)

    events = rows(engine, "consent")
    assert [(e["event"], utc(e["at"])) for e in events] == [
        ("requested", datetime(2026, 3, 1, tzinfo=UTC)),
        ("confirmed", datetime(2026, 3, 1, tzinfo=UTC)),
    ]
    # Never today's configured text: the person may have read another wording, years ago.
    assert {e["wording"] for e in events} == {"wording not recorded by the source"}
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
