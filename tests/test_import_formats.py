"""Contacts from vendors' exports: Mailchimp's audience export and Laposta's, mapped columns,
separators detected, evidence kept as the source gave it.

The files in tests/data/imports/ follow the vendors' documented column lists (see
mailer/store/formats.py), with the awkward cases of real files: a BOM, `;` from Dutch Excel,
CRLF, an empty CONFIRM_TIME, upper-case addresses, a NOTES cell holding the separator.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.errors import InputError
from mailer.store.importer import ImportResult, ImportSource, import_contacts
from tests.import_support import NOTHING, NOW, counts, rows, utc, write

DATA = Path(__file__).parent / "data" / "imports"
MAILCHIMP = ImportSource("mailchimp")
NOT_RECORDED = "wording not recorded by the source"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in DATA.iterdir():
        shutil.copy(name, tmp_path / name.name)


def test_mailchimp_subscribed_export_gives_confirmed_consent_with_both_events_evidence(
    engine: Engine, settings: Settings
) -> None:
    result = import_contacts(
        engine, settings, Path("mailchimp-subscribed.csv"), now=NOW, source=MAILCHIMP,
        list_name="newsletter",
    )  # fmt: skip

    assert (result.rows, result.contacts_created, result.consent_events) == (30, 30, 54)
    assert result.ignored_columns == (
        "Address", "Birthday", "MEMBER_RATING", "LATITUDE", "LONGITUDE", "GMTOFF", "DSTOFF",
        "TIMEZONE", "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS",
    )  # fmt: skip
    contacts = {c["id"]: c for c in rows(engine, "contact")}
    by_email = {c["email"]: c for c in contacts.values()}
    assert "jan.jansen@example.nl" in by_email  # "Jan.Jansen@Example.NL" in the file
    assert by_email["renee.dubois@example.be"]["first_name"] == "Renée"
    assert by_email["anna.bakker@example.nl"]["phone"] == "+31 6 12345600"
    events = [e for e in rows(engine, "consent") if contacts[e["contact_id"]]["email"] ==
              "anna.bakker@example.nl"]  # fmt: skip
    assert [(e["event"], utc(e["at"]), e["ip"]) for e in events] == [
        ("requested", datetime(2022, 1, 1, 8, 0, 11, tzinfo=UTC), "198.51.100.1"),
        ("confirmed", datetime(2022, 1, 1, 8, 0, 59, tzinfo=UTC), "203.0.113.1"),
    ]
    for event in events:
        assert event["list_name"] == "newsletter"
        assert event["wording"] == NOT_RECORDED
        assert event["source"] == "import:mailchimp-subscribed.csv (a Mailchimp audience export)"


def test_mailchimp_member_without_confirm_time_is_only_a_pending_signup(
    engine: Engine, settings: Settings
) -> None:
    import_contacts(
        engine, settings, Path("mailchimp-subscribed.csv"), now=NOW, source=MAILCHIMP,
        list_name="newsletter",
    )  # fmt: skip

    [lisa] = [c for c in rows(engine, "contact") if c["email"] == "lisa.kok@example.nl"]
    events = [e for e in rows(engine, "consent") if e["contact_id"] == lisa["id"]]
    assert [(e["event"], e["ip"]) for e in events] == [("requested", "198.51.100.25")]
    pending = {e["contact_id"] for e in rows(engine, "consent")} - {
        e["contact_id"] for e in rows(engine, "consent") if e["event"] == "confirmed"
    }
    assert len(pending) == 6


def test_reimporting_the_mailchimp_export_adds_nothing(engine: Engine, settings: Settings) -> None:
    path = Path("mailchimp-subscribed.csv")
    import_contacts(engine, settings, path, now=NOW, source=MAILCHIMP, list_name="newsletter")
    before = counts(engine)

    again = import_contacts(
        engine, settings, path, now=NOW, source=MAILCHIMP, list_name="newsletter"
    )

    assert (again.contacts_created, again.contacts_updated, again.consent_events) == (0, 0, 0)
    assert counts(engine) == before


def test_vendor_format_needs_the_list_when_several_are_configured(
    engine: Engine, settings: Settings
) -> None:
    with pytest.raises(InputError) as caught:
        import_contacts(engine, settings, Path("mailchimp-subscribed.csv"), now=NOW,
                        source=MAILCHIMP)  # fmt: skip

    assert str(caught.value) == (
        "--list: name the list the members of a Mailchimp audience export signed up for; "
        "lists: newsletter, offers."
    )
    assert counts(engine) == NOTHING


def test_unknown_columns_of_a_vendor_file_are_all_named_and_can_be_mapped_or_left_out(
    engine: Engine, settings: Settings
) -> None:
    write(
        "export.csv",
        "Email Address,Favoriete taart,First Name,Bedrijf,CONFIRM_TIME",
        "jan@example.nl,appel,Jan,Bakkerij,2024-01-01 10:00:00",
    )
    with pytest.raises(InputError) as caught:
        import_contacts(engine, settings, Path("export.csv"), now=NOW, source=MAILCHIMP,
                        list_name="newsletter")  # fmt: skip
    assert str(caught.value).startswith(
        'export.csv:1: unknown columns "Favoriete taart", "Bedrijf" for a Mailchimp audience '
        'export; map each to a field with --map "Favoriete taart=field" or leave it out with '
        '--map "Favoriete taart="; fields: email, first_name,'
    )
    assert counts(engine) == NOTHING

    mapped = ImportSource("mailchimp", column_map="favoriete taart=, Bedrijf=last_name")
    result = import_contacts(engine, settings, Path("export.csv"), now=NOW, source=mapped,
                             list_name="newsletter")  # fmt: skip

    assert result.consent_events == 2
    [contact] = rows(engine, "contact")
    assert (contact["first_name"], contact["last_name"]) == ("Jan", "Bakkerij")


def test_laposta_export_imports_active_members_and_leaves_out_the_others(
    engine: Engine, settings: Settings
) -> None:
    result = import_contacts(
        engine, settings, Path("laposta-members.csv"), now=NOW, source=ImportSource("laposta"),
        list_name="newsletter",
    )  # fmt: skip

    assert result.skipped == {
        "member state unsubscribed (not a signup)": 1,
        "member state cleaned (not a signup)": 1,
    }
    assert result.ignored_columns == ("member_id", "list_id", "modified")
    contacts = {c["id"]: c["email"] for c in rows(engine, "contact")}
    assert sorted(contacts.values()) == ["joost@example.net", "maartje@example.net"]
    trail = [(contacts[e["contact_id"]], e["event"], e["ip"], e["source"])
             for e in rows(engine, "consent")]  # fmt: skip
    page = "https://bakkerij.example/nieuwsbrief"
    assert trail == [
        ("maartje@example.net", "requested", "198.51.100.7", page),
        ("maartje@example.net", "confirmed", None, page),
        ("joost@example.net", "requested", "198.51.100.8", page),
    ]


def test_separate_ip_columns_keep_each_events_ip_and_the_old_ip_column_fills_both(
    engine: Engine, settings: Settings
) -> None:
    write(
        "contacts.csv",
        "email,list,requested_at,confirmed_at,requested_ip,confirmed_ip,ip",
        "jan@example.nl,newsletter,2022-05-01T10:00,2022-05-01T10:03,192.0.2.1,192.0.2.2,",
        "piet@example.nl,newsletter,2022-05-01T11:00,2022-05-01T11:09,,,192.0.2.3",
    )

    import_contacts(engine, settings, Path("contacts.csv"), now=NOW)

    assert [e["ip"] for e in rows(engine, "consent")] == [
        "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.3",
    ]  # fmt: skip


@pytest.mark.parametrize("separator, given", [(";", None), ("\t", None), ("|", "|"), ("\t", "tab")])
def test_separator_is_detected_or_given(
    engine: Engine, settings: Settings, separator: str, given: str | None
) -> None:
    write(
        "contacts.csv",
        separator.join(["email", "first_name", "city"]),
        separator.join(["jan@example.nl", "Jan", "Ouderkerk, aan de Amstel"]),
    )

    result = import_contacts(engine, settings, Path("contacts.csv"), now=NOW,
                             source=ImportSource(delimiter=given))  # fmt: skip

    assert result == ImportResult(rows=1, contacts_created=1, contacts_updated=0,
                                  consent_events=0, purchases=0)  # fmt: skip
    [contact] = rows(engine, "contact")
    assert contact["first_name"] == "Jan"


def test_free_text_source_is_kept_as_given(engine: Engine, settings: Settings) -> None:
    source = "Beurs 'Brood & Banket' 2024, stand 12 – formulier op papier (ingevoerd door Ria)"
    write("contacts.csv", "email,list,source", f'jan@example.nl,newsletter,"{source}"')

    import_contacts(engine, settings, Path("contacts.csv"), now=NOW)

    [event] = rows(engine, "consent")
    assert event["source"] == source


def test_map_with_an_unknown_field_is_refused(engine: Engine, settings: Settings) -> None:
    write("contacts.csv", "E-mail", "jan@example.nl")

    with pytest.raises(InputError) as caught:
        import_contacts(engine, settings, Path("contacts.csv"), now=NOW,
                        source=ImportSource(column_map="E-mail=mail"))  # fmt: skip

    assert str(caught.value).startswith('--map: "mail" is not a field; fields: email, first_name')
    result = import_contacts(engine, settings, Path("contacts.csv"), now=NOW,
                             source=ImportSource(column_map="E-mail=email"))  # fmt: skip
    assert result.contacts_created == 1
