"""Ids that are neither reused nor readable (issue 14, row 5): `mailer init` upgrades an old
contact table, tokens and Message-IDs carry no sequential id, and old tokens keep working."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import Settings
from mailer.core.policy import ConsentFact
from mailer.core.states import ConsentEvent, ConsentOrigin
from mailer.core.tokens import TokenSigner
from mailer.delivery.sink import SmtpSink
from mailer.privacy.erasure import erase_contacts
from mailer.store.models import Contact
from tests.conftest import SECRET
from tests.factories import add_contact
from tests.process_support import mailer, write_project
from tests.web_support import FakeClock, client, marketing_to, rows, send_campaign_now

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def payload(token: str) -> list[object]:
    data = token.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))  # type: ignore[no-any-return]


def downgrade_to_a_table_without_autoincrement(database: Path) -> None:
    """The contact table as releases before AUTOINCREMENT made it."""
    db = sqlite3.connect(database, isolation_level=None)
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'contact'").fetchone()
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("BEGIN")
    db.execute(
        sql.replace("CREATE TABLE contact", "CREATE TABLE old").replace(" AUTOINCREMENT", "")
    )
    db.execute("INSERT INTO old SELECT * FROM contact")
    db.execute("DROP TABLE contact")
    db.execute("ALTER TABLE old RENAME TO contact")
    db.execute("CREATE UNIQUE INDEX ix_contact_email ON contact (email)")
    db.execute("COMMIT")
    db.close()


def contact_ids(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT email, id FROM contact"))  # type: ignore[arg-type]


def test_init_upgrades_an_old_contact_table_so_an_erased_id_is_never_handed_out_again(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=3)
    database = tmp_path / "mailer.db"
    downgrade_to_a_table_without_autoincrement(database)

    upgraded = mailer(config, "init")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "contact.autoincrement" in upgraded.stdout
    assert "up to date" in mailer(config, "init").stdout  # idempotent
    with sqlite3.connect(database) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'contact'").fetchone()
        assert "AUTOINCREMENT" in sql
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("SELECT count(*) FROM consent").fetchone() == (6,)
    assert contact_ids(database) == {"p0@example.nl": 1, "p1@example.nl": 2, "p2@example.nl": 3}

    assert mailer(config, "privacy", "erase", "p2@example.nl").returncode == 0
    newcomer = tmp_path / "new.csv"
    newcomer.write_text("email\nnew@example.nl\n", encoding="utf-8")
    assert mailer(config, "contacts", "import", str(newcomer)).returncode == 0
    assert contact_ids(database)["new@example.nl"] == 4


@pytest.mark.anyio
async def test_a_link_made_for_an_erased_person_does_not_act_on_whoever_has_their_id_now(
    engine: Engine, send_settings: Settings
) -> None:
    clock = FakeClock()
    erased = add_contact(engine, send_settings, "gone@example.nl", at=clock())
    link = TokenSigner([SECRET]).unsubscribe_token(erased, "newsletter", email="gone@example.nl")
    with engine.begin() as conn:
        erase_contacts(
            conn, send_settings.require_hash_keys(), [(erased, "gone@example.nl")], clock(),
            suppress=True,
        )  # fmt: skip
    # What an old SQLite table did: the next contact gets the same id.
    with engine.begin() as conn:
        conn.execute(
            Contact.__table__.insert().values(  # type: ignore[attr-defined]
                id=erased, email="next@example.nl", created_at=clock()
            )
        )
    async with client(create_app(send_settings, engine, clock=clock)) as web:
        answer = await web.post(f"/unsubscribe/{link}", data=ONE_CLICK)
    assert answer.status_code == 200
    assert [s["reason"] for s in rows(engine, "suppression")] == ["erased"]  # not "next"
    assert [e["event"] for e in rows(engine, "consent")] == []


@pytest.mark.anyio
async def test_tokens_and_message_ids_show_no_sequential_id_and_old_tokens_still_work(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    signer = TokenSigner([SECRET])
    first, second = (signer.unsubscribe_token(n, "newsletter", email="a@b.nl") for n in (1, 2))
    for token, number in ((first, 1), (second, 2)):
        opaque = payload(token)[0]
        assert isinstance(opaque, str) and opaque != f"{number:016x}"
        assert signer.read_unsubscribe(token).contact_id == number
    assert int(str(payload(second)[0]), 16) - int(str(payload(first)[0]), 16) != 1
    confirm = signer.confirm_token(7, ["newsletter"], email="a@b.nl")
    assert 7 not in payload(confirm)

    clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    confirmed = ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, clock())
    jan = add_contact(engine, send_settings, "jan@example.nl", at=clock(), consents=[confirmed])
    clock.advance(minutes=1)
    assert await send_campaign_now(engine, send_settings, clock, "nov") == {
        "jan@example.nl": "sent"
    }
    [mail] = marketing_to(sink, "jan@example.nl")
    [delivery] = rows(engine, "delivery")
    assert f"{delivery['campaign_id']}.{delivery['id']}" not in str(mail["Message-ID"])
    assert delivery["message_id"] == mail["Message-ID"]

    # A token of the old form ([id, list], as mail sent before this release carries).
    old = URLSafeSerializer([SECRET], salt="mailer.unsubscribe.v1").dumps([jan, "newsletter"])
    async with client(create_app(send_settings, engine, clock=clock)) as web:
        answer = await web.post(f"/unsubscribe/{old}", data=ONE_CLICK)
    assert answer.status_code == 200
    assert [s["scope"] for s in rows(engine, "suppression")] == ["newsletter"]
