"""Export and erasure on a real PostgreSQL (127.0.0.1:5432), in a database of its own per
session (tests/conftest.py); skipped, with the reason, only when the server cannot be reached."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mailer.cli import main
from mailer.config import Settings
from mailer.privacy.person import erase_person, export_person
from mailer.store.importer import import_contacts, import_customers
from mailer.store.suppression import is_suppressed
from tests.conftest import SECRET, make_settings
from tests.project_files import settings_toml

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def pg(postgres_engine: Engine, postgres_url: str) -> tuple[Engine, Settings]:
    return postgres_engine, make_settings(postgres_url)


def seed(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(
        "email,first_name,last_name,list,requested_at,confirmed_at,ip\n"
        "anna@example.nl,Anna,Zwaanswijk,newsletter,2026-01-01T10:00:00,2026-01-01T10:05:00,"
        "192.0.2.7\nbram@example.nl,Bram,,newsletter,2026-01-01T10:00:00,,\n",
        encoding="utf-8",
    )
    (tmp_path / "p.csv").write_text(
        "email,category,purchased_at,optout_offered\nanna@example.nl,brood,2026-02-01T15:00:00,"
        "true\n", encoding="utf-8",
    )  # fmt: skip
    import_contacts(engine, settings, tmp_path / "c.csv", now=T0)
    import_customers(engine, settings, tmp_path / "p.csv", now=T0)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO campaign (name, list_name, subject, template, status, created_at) "
            "VALUES ('nov', 'newsletter', 'Nieuws', 'newsletter', 'done', now())"
        ))  # fmt: skip
        conn.execute(text(
            "INSERT INTO delivery (campaign_id, contact_id, basis, status, attempts, message_id, "
            "smtp_reply, sent_at) SELECT c.id, k.id, 'consent', 'sent', 1, '<m1@x>', "
            "'250 queued for anna@example.nl', now() FROM campaign c, contact k "
            "WHERE k.email = 'anna@example.nl'"
        ))  # fmt: skip


def test_export_on_postgresql(pg: tuple[Engine, Settings], tmp_path: Path) -> None:
    engine, settings = pg
    seed(engine, settings, tmp_path)
    document = export_person(engine, settings, "ANNA@example.nl")
    assert document["contact"]["last_name"] == "Zwaanswijk"
    assert [c["event"] for c in document["consents"]] == ["requested", "confirmed"]
    assert document["consents"][1]["ip"] == "192.0.2.7"
    assert [p["category"] for p in document["purchases"]] == ["brood"]
    [delivery] = document["deliveries"]
    assert (delivery["campaign"], delivery["basis"], delivery["status"]) == (
        "nov", "consent", "sent",
    )  # fmt: skip


def test_erase_on_postgresql_leaves_a_hash_and_an_anonymous_ledger_row(
    pg: tuple[Engine, Settings], tmp_path: Path
) -> None:
    engine, settings = pg
    seed(engine, settings, tmp_path)
    report = erase_person(engine, settings, "anna@example.nl", now=T0)
    assert (report.erased.consents, report.erased.purchases, report.erased.deliveries) == (2, 1, 1)
    with engine.connect() as conn:
        # Rule 6: the erased person stays suppressed through the keyed hash, on every list;
        # the other person, never suppressed, is not.
        keys = settings.require_secret_keys()
        assert is_suppressed(conn, keys, "anna@example.nl", "newsletter")
        assert is_suppressed(conn, keys, "Anna@Example.nl", "offers")
        assert not is_suppressed(conn, keys, "bram@example.nl", "newsletter")
        emails = [r[0] for r in conn.execute(text("SELECT email FROM contact"))]
        ledger = list(conn.execute(text(
            "SELECT contact_id, basis, status, message_id, smtp_reply FROM delivery"
        )))  # fmt: skip
        suppressions = list(
            conn.execute(text("SELECT reason, scope, address_hash FROM suppression"))
        )
        # Every text column of every table, as one string: the address is in none of them.
        dump = " ".join(
            str(tuple(r))
            for t in ("contact", "consent", "purchase", "suppression", "delivery", "campaign")
            for r in conn.execute(text(f"SELECT * FROM {t}"))
        )
    assert emails == ["bram@example.nl"]
    assert [tuple(r) for r in ledger] == [(None, "consent", "sent", None, None)]
    [(reason, scope, digest)] = suppressions
    assert (reason, scope, len(digest)) == ("erased", None, 64)
    assert "anna@example.nl" not in dump and "Zwaanswijk" not in dump


def test_the_commands_on_postgresql(
    pg: tuple[Engine, Settings],
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, settings = pg
    seed(engine, settings, tmp_path)
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    config = tmp_path / "mailer.toml"
    config.write_text(settings_toml(2525, postgres_url), encoding="utf-8")

    def mailer(*args: str) -> str:
        assert main(["--config", str(config), *args]) == 0, args
        return capsys.readouterr().out

    trail = mailer("consent", "show", "anna@example.nl")
    assert "confirmed" in trail and "192.0.2.7" in trail
    assert json.loads(mailer("privacy", "export", "anna@example.nl"))["purchases"]
    rows = list(csv.DictReader(io.StringIO(mailer("campaign", "report", "nov", "--csv"))))
    assert [(r["email"], r["basis"], r["status"]) for r in rows] == [
        ("anna@example.nl", "consent", "sent")
    ]
    assert "Erased anna@example.nl" in mailer("privacy", "erase", "anna@example.nl")
    rows = list(csv.DictReader(io.StringIO(mailer("campaign", "report", "nov", "--csv"))))
    assert [(r["email"], r["basis"], r["status"]) for r in rows] == [("", "consent", "sent")]
    assert "0 contacts whose relationship ended" in mailer("privacy", "purge", "--dry-run")
    assert main(["--config", str(config), "privacy", "export", "anna@example.nl"]) == 1
    assert "it was erased" in capsys.readouterr().err
