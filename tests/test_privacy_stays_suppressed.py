"""An erased person stays unmailable through the keyed hash: an import cannot undo it, the
person's own new double opt-in can. Against the real SMTP sink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.core.policy import ConsentFact
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.privacy.person import erase_person
from mailer.store.campaign import create_campaign
from mailer.store.importer import import_contacts, import_customers
from mailer.store.models import ConsentEvent, ConsentOrigin
from tests.factories import add_contact
from tests.web_support import ledger

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OBJECTOR = "oscar@example.nl"


async def send(engine: Engine, settings: Settings, name: str, at: datetime) -> dict[str, str]:
    campaign = create_campaign(
        engine, settings, name=name, list_name="newsletter", subject="Nieuws",
        template="newsletter", category="brood", now=at,
    )  # fmt: skip
    await run_campaign(engine, settings, campaign, clock=lambda: at)
    return ledger(engine, campaign.id or 0)


async def test_an_erased_objector_reimported_with_claimed_consent_is_not_mailed(
    engine: Engine, send_settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    # An objecting customer asks to be erased.
    (tmp_path / "buy.csv").write_text(
        "email,first_name,category,purchased_at,optout_offered,objected_at\n"
        f"{OBJECTOR},Oscar,brood,2026-01-01T10:00:00,true,2026-02-01T10:00:00\n",
        encoding="utf-8",
    )
    import_customers(engine, send_settings, tmp_path / "buy.csv", now=T0)
    erase_person(engine, send_settings, OBJECTOR, now=T0)

    # Later an old list is imported that claims a confirmed newsletter signup, and a purchase
    # with an offered opt-out: both bases would apply to a stranger.
    (tmp_path / "old.csv").write_text(
        "email,first_name,list,requested_at,confirmed_at\n"
        f"{OBJECTOR.upper()},Oscar,newsletter,2025-06-01T10:00:00,2025-06-01T10:05:00\n"
        "paula@example.nl,Paula,newsletter,2025-06-01T10:00:00,2025-06-01T10:05:00\n",
        encoding="utf-8",
    )
    (tmp_path / "buy2.csv").write_text(
        f"email,category,purchased_at,optout_offered\n{OBJECTOR},brood,2026-02-20T10:00:00,true\n",
        encoding="utf-8",
    )
    later = T0 + timedelta(days=10)
    import_contacts(engine, send_settings, tmp_path / "old.csv", now=later)
    import_customers(engine, send_settings, tmp_path / "buy2.csv", now=later)

    outcome = await send(engine, send_settings, "april", later)
    assert outcome == {OBJECTOR: "skipped:suppressed", "paula@example.nl": "sent"}
    assert [m.recipients for m in sink.messages] == [("paula@example.nl",)]


async def test_only_the_persons_own_confirmed_double_optin_lifts_an_erasure(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    add_contact(engine, send_settings, OBJECTOR, at=T0)
    erase_person(engine, send_settings, OBJECTOR, now=T0)
    later = T0 + timedelta(days=1)
    add_contact(
        engine, send_settings, OBJECTOR, at=later,
        consents=[ConsentFact("newsletter", ConsentEvent.REQUESTED, ConsentOrigin.WEB, later),
                  ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, later)],
    )  # fmt: skip
    assert await send(engine, send_settings, "mei", later) == {OBJECTOR: "sent"}
