"""`campaign list`, `lists` and `contacts show` through the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.cli import main
from mailer.config import load_settings
from mailer.core.policy import ConsentFact
from mailer.delivery.sink import SmtpSink
from mailer.store.db import make_engine
from mailer.store.models import ConsentEvent, ConsentOrigin, SuppressionReason
from tests.conftest import SECRET
from tests.factories import add_consent, suppress
from tests.project_files import settings_toml

CONTACTS = """email,first_name,city,list,requested_at,confirmed_at
anna@example.nl,Anna,Utrecht,newsletter,2026-01-01T10:00:00,2026-01-01T10:05:00
bram@example.nl,Bram,,newsletter,2026-01-01T10:00:00,
carla@example.nl,Carla,,newsletter,2026-01-01T10:00:00,2026-01-01T10:05:00
dirk@example.nl,Dirk,,offers,2026-01-01T10:00:00,2026-01-01T10:05:00
"""
CUSTOMERS = """email,category,purchased_at,optout_offered
anna@example.nl,brood,2026-05-01T15:00:00,true
"""


@pytest.fixture
def project(tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mailer.toml"
    settings = settings_toml(
        sink.port, f"sqlite:///{tmp_path / 'm.db'}", lists=("newsletter", "offers")
    )
    config.write_text(settings, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    (tmp_path / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    for args in (
        ["init"],
        ["contacts", "import", "contacts.csv"],
        ["customers", "import", "customers.csv"],
        ["campaign", "create", "weekly", "--list", "newsletter", "--subject", "Week",
         "--template", "newsletter"],
        ["campaign", "create", "promo", "--list", "offers", "--subject", "Promo",
         "--template", "newsletter", "--category", "brood"],
    ):  # fmt: skip
        assert mailer(config, *args) == 0
    # Carla withdraws from the newsletter (an unsubscribe: event and suppression).
    settings = load_settings(config)
    engine = make_engine(settings.database.url)
    at = datetime(2026, 2, 1, tzinfo=UTC)
    add_consent(engine, 3, ConsentFact("newsletter", ConsentEvent.WITHDRAWN, ConsentOrigin.WEB, at))
    suppress(engine, settings, "carla@example.nl", SuppressionReason.UNSUBSCRIBED, at, "newsletter")
    suppress(engine, settings, "gone@example.nl", SuppressionReason.ERASED, at)
    engine.dispose()
    return config


def mailer(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def as_json(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    assert mailer(config, *args, "--json") == 0
    loaded: dict[str, object] = json.loads(capsys.readouterr().out)
    return loaded


def test_campaign_list_shows_status_counts_and_next_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "campaign", "send", "weekly") == 0
    assert mailer(project, "schedule", "add", "promo", "--cron", "0 9 * * MON") == 0
    assert mailer(project, "campaign", "pause", "promo", "--reason", "waiting for prices") == 0
    listed = as_json(project, capsys, "campaign", "list")["campaigns"]
    assert isinstance(listed, list)
    weekly, promo = sorted(listed, key=lambda c: c["name"], reverse=True)
    assert weekly == {
        "name": "weekly", "list": "newsletter", "category": None, "status": "done",
        "status_reason": None, "by_status": {"sent": 1, "skipped": 3}, "total": 4,
        "next_run": None,
    }  # fmt: skip
    assert promo["status"] == "paused" and promo["status_reason"] == "waiting for prices"
    assert promo["by_status"] == {} and promo["next_run"] is not None
    assert datetime.fromisoformat(promo["next_run"]).weekday() == 0  # a Monday

    capsys.readouterr()
    assert mailer(project, "campaign", "list") == 0
    table = capsys.readouterr().out
    assert "weekly" in table and "sent 1, skipped 3" in table
    assert "promo" in table and "paused" in table and "none" in table


def test_lists_counts_confirmed_pending_withdrawn_and_suppressed_per_list(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert as_json(project, capsys, "lists") == {
        "lists": [
            {"list": "newsletter", "title": "Nieuwsbrief", "confirmed": 1, "pending": 1,
             "withdrawn": 1, "suppressed": 2},
            {"list": "offers", "title": "Aanbiedingen", "confirmed": 1, "pending": 0,
             "withdrawn": 0, "suppressed": 1},
        ]
    }  # fmt: skip
    assert mailer(project, "lists") == 0
    assert "Nieuwsbrief" in capsys.readouterr().out


def test_contacts_show_gives_fields_consent_purchases_suppressions_and_deliveries(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "campaign", "send", "weekly") == 0
    capsys.readouterr()
    assert mailer(project, "contacts", "show", "Anna@Example.nl") == 0
    out = capsys.readouterr().out
    assert out.startswith("anna@example.nl\n")
    assert "city:" in out and "Utrecht" in out
    rows = {line.split("\t")[0]: line for line in out.splitlines() if "\t" in line}
    assert "confirmed" in rows["newsletter"] and "none" in rows["offers"]
    assert "brood" in rows and "yes" in rows["brood"]
    assert "weekly" in rows and "consent" in rows["weekly"] and "sent" in rows["weekly"]

    capsys.readouterr()
    assert mailer(project, "contacts", "show", "carla@example.nl") == 0
    out = capsys.readouterr().out
    assert "withdrawn" in out and "unsubscribed" in out


def test_contacts_show_of_an_unknown_address_exits_1(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "contacts", "show", "gone@example.nl") == 1
    assert "it was erased" in capsys.readouterr().err
