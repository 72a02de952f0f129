"""CSV import of customers: one purchase per row (the soft opt-in basis), no consent events,
re-imports add nothing, a later objection lands on the known purchase, and
relationship_ended_at is stored for retention.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.store.importer import ImportResult, import_customers
from mailer.store.models import Contact
from tests.import_support import CUSTOMER_HEADER, NOTHING, NOW, counts, rows, utc, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files are named relative to the working directory, so messages read "contacts.csv:3: ...".
    monkeypatch.chdir(tmp_path)


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
        rows=3, contacts_created=2, contacts_updated=0, consent_events=0, purchases=3,
        objections=1,
    )  # fmt: skip
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


def test_relationship_ended_at_is_imported_so_retention_can_count_from_it(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    from mailer.privacy.person import purge

    path = tmp_path / "customers.csv"
    path.write_text(
        "email,category,purchased_at,optout_offered,relationship_ended_at\n"
        "gone@example.nl,brood,2024-01-10,true,2025-01-01T00:00:00\n"
        "stays@example.nl,brood,2026-01-10,true,\n",
        encoding="utf-8",
    )
    import_customers(engine, settings, path, now=NOW)
    with engine.connect() as conn:
        ended = dict(conn.execute(select(Contact.email, Contact.relationship_ended_at)).all())
    assert ended == {
        "gone@example.nl": datetime(2025, 1, 1, tzinfo=UTC),
        "stays@example.nl": None,
    }
    report = purge(engine, settings, now=datetime(2026, 3, 1, tzinfo=UTC), dry_run=True)
    assert report.ended == ["gone@example.nl"]
