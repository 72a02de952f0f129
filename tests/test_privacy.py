"""The person's rights through the command line, on a real SQLite file: export, erase (checked in
the raw database bytes), consent proof, the ledger as CSV, and the retention purge."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text, update

from mailer.cli import main
from mailer.config import Settings
from mailer.delivery.sink import SmtpSink
from mailer.privacy.person import consent_trail, erase_person, export_person
from mailer.store.db import create_schema, make_engine
from mailer.store.models import Contact
from tests.conftest import SECRET, make_settings
from tests.project_files import settings_toml
from tests.test_retention import seed

CONTACTS = """email,first_name,last_name,city,list,wording,source,requested_at,confirmed_at,ip
anna@example.nl,Anna,Zwaanswijk,Utrecht,newsletter,Ja graag de nieuwsbrief.,https://shop.example/form,2026-01-01T10:00:00,2026-01-01T10:05:00,192.0.2.7
bram@example.nl,Bram,Kwakkelstein,Gouda,newsletter,,,2026-01-01T10:00:00,2026-01-01T10:05:00,
"""
# The same people again with a changed surname: the import rewrites their rows, leaving the
# old cells as free space in the page (what secure delete must not leave readable).
CONTACTS_AGAIN = """email,last_name
anna@example.nl,Zwaanswijk-Oordt
bram@example.nl,Kwakkelstein-Oordt
"""
CUSTOMERS = """email,category,purchased_at,optout_offered
anna@example.nl,brood,2026-02-01T15:00:00,true
"""


@pytest.fixture
def project(tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mailer.toml"
    config.write_text(settings_toml(sink.port, f"sqlite:///{tmp_path / 'm.db'}"), encoding="utf-8")
    for name, body in (("contacts.csv", CONTACTS), ("again.csv", CONTACTS_AGAIN),
                       ("customers.csv", CUSTOMERS)):  # fmt: skip
        (tmp_path / name).write_text(body, encoding="utf-8")
    return config


def mailer(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def sent_campaign(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ("init",),
        ("contacts", "import", "contacts.csv"),
        ("contacts", "import", "again.csv"),
        ("customers", "import", "customers.csv"),
        ("campaign", "create", "nov", "--list", "newsletter", "--subject", "Nieuws",
         "--template", "newsletter"),
        ("campaign", "send", "nov"),
    ):  # fmt: skip
        assert mailer(config, *args) == 0, args
    capsys.readouterr()


def sql(config: Path, query: str) -> list[tuple[object, ...]]:
    with create_engine(f"sqlite:///{config.parent / 'm.db'}").connect() as conn:
        return [tuple(r) for r in conn.execute(text(query))]


def raw_bytes(config: Path) -> bytes:
    """The database file and its write-ahead log, as they are on disk."""
    data = b""
    for suffix in ("", "-wal", "-journal"):
        path = config.parent / f"m.db{suffix}"
        if path.exists():
            data += path.read_bytes()
    return data


def test_export_gives_contact_consent_evidence_purchases_and_deliveries_as_json(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    sent_campaign(project, capsys)
    assert mailer(project, "privacy", "export", " Anna@Example.NL ") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["email"] == "anna@example.nl"
    contact = document["contact"]
    assert (contact["first_name"], contact["last_name"], contact["city"]) == (
        "Anna", "Zwaanswijk-Oordt", "Utrecht",
    )  # fmt: skip
    assert [(c["list"], c["event"], c["at"]) for c in document["consents"]] == [
        ("newsletter", "requested", "2026-01-01T10:00:00+00:00"),
        ("newsletter", "confirmed", "2026-01-01T10:05:00+00:00"),
    ]
    evidence = document["consents"][1]
    assert evidence["wording"] == "Ja graag de nieuwsbrief."
    assert evidence["source"] == "https://shop.example/form"
    assert (evidence["ip"], evidence["origin"]) == ("192.0.2.7", "import")
    assert document["purchases"] == [
        {"category": "brood", "purchased_at": "2026-02-01T15:00:00+00:00",
         "optout_offered": True, "objected_at": None}
    ]  # fmt: skip
    [delivery] = document["deliveries"]
    assert (delivery["campaign"], delivery["basis"], delivery["status"]) == (
        "nov", "consent", "sent",
    )  # fmt: skip
    assert delivery["sent_at"] and delivery["message_id"]
    assert document["suppressions"] == []


def test_an_unknown_address_exits_1_with_a_clear_message(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "init") == 0
    capsys.readouterr()
    for command in ("export", "erase"):
        assert mailer(project, "privacy", command, "nobody@example.nl") == 1
        assert capsys.readouterr().err.strip() == (
            "error: No contact with the address nobody@example.nl is stored."
        )
    assert mailer(project, "consent", "show", "nobody@example.nl") == 1
    assert mailer(project, "privacy", "export", "not-an-address") == 2
    assert '"not-an-address" is not an e-mail address' in capsys.readouterr().err


def test_erase_leaves_neither_address_nor_name_in_the_database_file_or_its_wal(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    sent_campaign(project, capsys)
    before = raw_bytes(project)
    assert b"anna@example.nl" in before and b"Zwaanswijk" in before  # the scan can see them

    assert mailer(project, "privacy", "erase", "anna@example.nl") == 0
    said = capsys.readouterr().out
    assert "Erased anna@example.nl: the contact, 2 consent events, 1 purchases" in said

    after = raw_bytes(project)
    for needle in (b"anna@example.nl", b"Zwaanswijk", b"192.0.2.7", b"Anna"):
        assert needle not in after, needle
    assert b"bram@example.nl" in after and b"Kwakkelstein" in after  # others untouched
    wal = project.parent / "m.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed and truncated
    # The ledger keeps campaign, basis and status, without the person or the SMTP details.
    kept = "SELECT contact_id, basis, status, message_id, smtp_reply FROM delivery"
    assert sql(project, kept + " WHERE contact_id IS NULL") == [
        (None, "consent", "sent", None, None)
    ]
    assert sql(project, "SELECT reason, scope FROM suppression") == [("erased", None)]
    assert mailer(project, "privacy", "export", "anna@example.nl") == 1
    assert "it was erased. Only a keyed hash" in capsys.readouterr().err


def test_consent_show_prints_the_trail_with_its_evidence(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    sent_campaign(project, capsys)
    assert mailer(project, "consent", "show", "anna@example.nl") == 0
    table = capsys.readouterr().out
    for expected in ("Consent trail of anna@example.nl", "2026-01-01 10:00:00", "requested",
                     "2026-01-01 10:05:00", "confirmed", "Ja graag de nieuwsbrief.",
                     "https://shop.example/form", "192.0.2.7", "newsletter"):  # fmt: skip
        assert expected in table, expected


def test_campaign_report_csv_lists_who_was_mailed_when_and_on_which_basis(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    sent_campaign(project, capsys)
    assert mailer(project, "campaign", "report", "nov", "--csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == [
        "email", "status", "basis", "skip_reason", "attempts", "sent_at", "message_id",
    ]  # fmt: skip
    by_email = {r["email"]: r for r in rows}
    assert set(by_email) == {"anna@example.nl", "bram@example.nl"}
    anna = by_email["anna@example.nl"]
    assert (anna["status"], anna["basis"], anna["skip_reason"], anna["attempts"]) == (
        "sent", "consent", "", "1",
    )  # fmt: skip
    assert datetime.fromisoformat(anna["sent_at"]).tzinfo is not None
    assert anna["message_id"].startswith("<")


# --- retention (more in test_retention.py) ------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def emails(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT email FROM contact"))}


def test_purge_through_the_command_line_prints_what_it_would_remove(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the seeded dates are relative to NOW
    monkeypatch.setattr("mailer.cli.privacy.utc_now", lambda: NOW)
    assert mailer(project, "init") == 0
    engine = make_engine(f"sqlite:///{project.parent / 'm.db'}")
    settings = make_settings(f"sqlite:///{project.parent / 'm.db'}")
    seed(engine, settings, project.parent)
    engine.dispose()
    capsys.readouterr()
    assert mailer(project, "privacy", "purge", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would erase: former@example.nl" in out and "would remove: stale@example.nl" in out
    assert "1 contacts whose relationship ended still subscribe to a list and are kept" in out
    assert mailer(project, "privacy", "purge") == 0
    out = capsys.readouterr().out
    assert (
        "1 contacts whose relationship ended more than the retention period ago were erased." in out
    )
    assert "former@example.nl" not in out and "stale@example.nl" not in out
    assert sql(project, "SELECT email FROM contact ORDER BY email") == [
        ("buyer@example.nl",), ("fresh@example.nl",), ("recent@example.nl",),
        ("subscriber@example.nl",),
    ]  # fmt: skip


def test_consent_trail_includes_suppressions_in_time_order(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed(engine, settings, tmp_path)
    from mailer.store.suppression import add_suppression

    with engine.begin() as conn:
        add_suppression(conn, [SECRET], "recent@example.nl", "unsubscribed", NOW, "newsletter")  # type: ignore[arg-type]
    trail = consent_trail(engine, settings, "recent@example.nl")
    assert [(e.event, e.list_name) for e in trail] == [
        ("requested", "newsletter"), ("confirmed", "newsletter"),
        ("suppressed: unsubscribed", "newsletter"),
    ]  # fmt: skip
    assert export_person(engine, settings, "recent@example.nl")["suppressions"] == [
        {"reason": "unsubscribed", "scope": "newsletter", "at": NOW.isoformat()}
    ]
    erase_person(engine, settings, "recent@example.nl", now=NOW)
    assert "recent@example.nl" not in emails(engine)


def test_erase_leaves_no_old_copy_even_where_sqlite_is_built_without_secure_delete(
    tmp_path: Path,
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'plain.db'}")  # an SQLite matter
    # Debian builds SQLite with secure delete on by default; python.org and macOS builds do
    # not. Simulate those: the build default is off, before the mailer's own settings apply.
    engine = make_engine(settings.database.url)
    event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA secure_delete=OFF"),
                 insert=True)  # fmt: skip
    create_schema(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    contact = Contact.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(contact.insert().values(email="target@example.nl", first_name="Targetta",
                                             last_name="Zwaanswijk", created_at=NOW))  # fmt: skip
    # Thousands of others arrive, and the target's row is rewritten (longer each time) in
    # between: its old copies are freed in pages that the erasure itself never touches.
    for batch in range(10):
        with engine.begin() as conn:
            conn.execute(contact.insert(), [
                {"email": f"p{batch}-{i}@example.nl", "last_name": "L" * (i % 60),
                 "created_at": NOW} for i in range(500)
            ])  # fmt: skip
            conn.execute(
                update(contact).where(contact.c.email == "target@example.nl")
                .values(last_name="Zwaanswijk" + "x" * (batch * 10))
            )  # fmt: skip
    engine.dispose()
    db = Path(settings.database.url.removeprefix("sqlite:///"))
    engine = make_engine(settings.database.url)
    event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA secure_delete=OFF"),
                 insert=True)  # fmt: skip
    erase_person(engine, settings, "target@example.nl", now=NOW)
    data = b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    assert b"target@example.nl" not in data and b"Zwaanswijk" not in data
    assert b"p9-499@example.nl" in data  # the scan sees what is there
    engine.dispose()


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_stay_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mailer.cli.output import csv_rows

    csv_rows(["email", "status"], [{"email": "=HYPERLINK(1)@x.nl", "status": "sent"},
                                   {"email": "-jan@x.nl", "status": None},
                                   {"email": "anna@x.nl", "status": "sent"}])  # fmt: skip
    assert capsys.readouterr().out.splitlines() == [
        "email,status",
        "'=HYPERLINK(1)@x.nl,sent",
        "'-jan@x.nl,",
        "anna@x.nl,sent",
    ]
