"""The retention purge with dates in the past, on a real SQLite file and a real PostgreSQL.

The relationship's end comes in through the import, as a business would record it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mailer.config import Settings
from mailer.privacy.person import purge
from mailer.privacy.retention import PurgeReport
from mailer.store.importer import import_contacts, import_customers

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# NOW - 365 days is 2025-06-01T12:00. Who is who:
#   former      customer, relationship ended 2025-05-31 (366 days): erased, stays suppressed
#   subscriber  relationship ended 2025-01-01, but a newsletter subscription in force: kept
#   recent      relationship ended 2026-02-21 (100 days): kept
#   stale       a signup of 2026-04-01, never confirmed (61 days): removed, not suppressed
#   fresh       a signup of 2026-05-25, not confirmed yet (7 days): kept
#   buyer       a customer with a stale signup: kept, the stale request (IP) goes
CONTACTS = """email,first_name,list,requested_at,confirmed_at,ip,relationship_ended_at
subscriber@example.nl,Sjoerd,newsletter,2024-01-01T10:00:00,2024-01-01T10:05:00,,2025-01-01T00:00:00
recent@example.nl,Rik,newsletter,2025-01-01T10:00:00,2025-01-01T10:05:00,,2026-02-21T12:00:00
stale@example.nl,Sanne,newsletter,2026-04-01T10:00:00,,192.0.2.1,
fresh@example.nl,Femke,newsletter,2026-05-25T10:00:00,,,
buyer@example.nl,Bea,newsletter,2026-04-01T10:00:00,,192.0.2.2,
"""
CUSTOMERS = """email,first_name,category,purchased_at,optout_offered,relationship_ended_at
former@example.nl,Fenna,brood,2024-01-01T10:00:00,true,2025-05-31T00:00:00
buyer@example.nl,,brood,2026-03-01T10:00:00,false,
"""
EVERYONE = {"former", "subscriber", "recent", "stale", "fresh", "buyer"}


@pytest.fixture
def db(engine: Engine, settings: Settings) -> tuple[Engine, Settings]:
    """The same tests on both databases: `engine` runs on SQLite and on PostgreSQL."""
    return engine, settings


def seed(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    (tmp_path / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    # Imported now: a consent dated after the import's `now` is refused as a time in the future.
    import_contacts(engine, settings, tmp_path / "contacts.csv", now=NOW)
    import_customers(engine, settings, tmp_path / "customers.csv", now=NOW - timedelta(days=900))
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO campaign (name, list_name, subject, template, status, created_at) "
            "VALUES ('old', 'newsletter', 'Oud', 'newsletter', 'done', '2023-01-01 00:00:00')"
        ))  # fmt: skip
        # Sent long ago (older than delivery_retention_days = 730) to two people.
        conn.execute(text(
            "INSERT INTO delivery (campaign_id, contact_id, basis, status, attempts, message_id, "
            "smtp_reply, sent_at) SELECT 1, id, 'consent', 'sent', 1, '<m' || id || '@x>', "
            "'250 ok', '2024-02-01 00:00:00' FROM contact "
            "WHERE email IN ('recent@example.nl', 'former@example.nl')"
        ))  # fmt: skip


def people(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT email FROM contact"))
        return {r[0].removesuffix("@example.nl") for r in rows}


def facts(report: PurgeReport) -> tuple[object, ...]:
    return (
        report.ended_count, report.still_subscribed, report.unconfirmed_count,
        report.stale_requests, report.deliveries,
    )  # fmt: skip


def test_a_dry_run_names_what_would_go_and_changes_nothing(
    db: tuple[Engine, Settings], tmp_path: Path
) -> None:
    engine, settings = db
    seed(engine, settings, tmp_path)
    dry = purge(engine, settings, now=NOW, dry_run=True)
    assert (dry.ended, dry.unconfirmed) == (["former@example.nl"], ["stale@example.nl"])
    assert facts(dry) == (1, 1, 1, 1, 1)
    assert people(engine) == EVERYONE
    assert dry.lines()[0] == (
        "1 contacts whose relationship ended more than the retention period ago would be erased."
    )


def test_purge_erases_former_relations_drops_stale_signups_and_strips_old_deliveries(
    db: tuple[Engine, Settings], tmp_path: Path
) -> None:
    engine, settings = db
    seed(engine, settings, tmp_path)
    done = purge(engine, settings, now=NOW, dry_run=False)
    assert facts(done) == (1, 1, 1, 1, 1)
    assert done.ended == [] and done.unconfirmed == []  # a real run names nobody
    assert done.wal_truncated
    assert people(engine) == EVERYONE - {"former", "stale"}
    with engine.connect() as conn:
        # Only the former relation stays suppressed: the stale signup never consented.
        assert [tuple(r) for r in conn.execute(text("SELECT reason FROM suppression"))] == [
            ("erased",)
        ]
        # The buyer keeps the purchase; the stale request and its IP are gone.
        assert [tuple(r) for r in conn.execute(text(
            "SELECT k.event, k.ip FROM consent k JOIN contact c ON c.id = k.contact_id "
            "WHERE c.email = 'buyer@example.nl'"
        ))] == []  # fmt: skip
        ledger = conn.execute(
            text("SELECT contact_id, message_id, smtp_reply, basis, status FROM delivery")
        )
        assert [tuple(r) for r in ledger] == [(None, None, None, "consent", "sent")] * 2
    again = purge(engine, settings, now=NOW, dry_run=False)
    assert facts(again) == (0, 1, 0, 0, 0)  # idempotent; the subscriber is still kept
    assert again.lines() == [
        "0 contacts whose relationship ended more than the retention period ago were erased.",
        "0 signups never confirmed within 30 days were removed, and 0 unconfirmed requests of "
        "other contacts.",
        "0 delivery records older than the delivery retention were stripped of the person.",
        "1 contacts whose relationship ended still subscribe to a list and are kept; they "
        "leave when they unsubscribe.",
    ]


def test_a_campaign_whose_ledger_was_stripped_is_archived_and_never_sent_again(
    db: tuple[Engine, Settings], tmp_path: Path
) -> None:
    import asyncio

    from mailer.delivery.sending import run_campaign
    from mailer.errors import MailerError
    from mailer.store.campaign import get_campaign

    engine, settings = db
    seed(engine, settings, tmp_path)
    purge(engine, settings, now=NOW, dry_run=False)
    with engine.connect() as conn:
        names = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT DISTINCT c.name FROM campaign c JOIN delivery d ON d.campaign_id = c.id"
                )
            )
        ]
    assert names
    for name in names:
        campaign = get_campaign(engine, name)
        # Its ledger no longer says who was mailed: sending it again would mail everyone twice.
        assert campaign.status == "archived"
        with pytest.raises(MailerError, match=f'Campaign "{name}" is archived'):
            asyncio.run(run_campaign(engine, settings, campaign, clock=lambda: NOW))


def test_purge_works_in_batches_and_leaves_rows_of_a_running_campaign(
    db: tuple[Engine, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, settings = db
    monkeypatch.setattr("mailer.privacy.retention._BATCH", 2)
    monkeypatch.setattr("mailer.privacy.retention._LEDGER_BATCH", 2)
    lines = ["email,category,purchased_at,optout_offered,relationship_ended_at"]
    lines += [f"p{i}@example.nl,brood,2024-01-01T10:00:00,true,2025-01-01T00:00:00"
              for i in range(7)]  # fmt: skip
    lines.append("active@example.nl,brood,2024-01-01T10:00:00,true,")
    (tmp_path / "many.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    import_customers(engine, settings, tmp_path / "many.csv", now=NOW - timedelta(days=900))
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO campaign (name, list_name, subject, template, status, created_at) "
            "VALUES ('old', 'newsletter', 'Oud', 'newsletter', 'done', '2023-01-01 00:00:00'), "
            "('slow', 'newsletter', 'Traag', 'newsletter', 'running', '2023-01-01 00:00:00')"
        ))  # fmt: skip
        # Old rows: five that lost the person earlier but still hold a Message-ID, one of the
        # active customer; and a row of the same customer in a run that is still going.
        conn.execute(text(
            "INSERT INTO delivery (campaign_id, contact_id, basis, status, attempts, message_id, "
            "sent_at) SELECT 1, NULL, 'consent', 'sent', 1, '<m' || id || '@x>', "
            "'2024-02-01 00:00:00' FROM contact WHERE id <= 5"
        ))  # fmt: skip
        conn.execute(text(
            "INSERT INTO delivery (campaign_id, contact_id, basis, status, attempts, message_id, "
            "sent_at) SELECT c.id, k.id, 'existing_customer', 'sent', 1, NULL, NULL "
            "FROM campaign c, contact k WHERE k.email = 'active@example.nl' AND c.name = 'old'"
        ))  # fmt: skip
        conn.execute(text(
            "INSERT INTO delivery (campaign_id, contact_id, basis, status, attempts) "
            "SELECT c.id, k.id, 'existing_customer', 'queued', 0 FROM campaign c, contact k "
            "WHERE k.email = 'active@example.nl' AND c.name = 'slow'"
        ))  # fmt: skip
    done = purge(engine, settings, now=NOW, dry_run=False)
    assert (done.ended_count, done.deliveries) == (7, 6)
    assert people(engine) == {"active"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM suppression")).scalar_one() == 7
        named = conn.execute(text(
            "SELECT c.name, d.status FROM delivery d JOIN campaign c ON c.id = d.campaign_id "
            "WHERE d.contact_id IS NOT NULL OR d.message_id IS NOT NULL"
        ))  # fmt: skip
        assert [tuple(r) for r in named] == [("slow", "queued")]
