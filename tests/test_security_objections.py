"""An unsubscribe ends what the mail's basis was (issue 14, row 4): through HTTP and the sink."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import Settings
from mailer.core.policy import PurchaseFact
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.planning import materialise
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign
from tests.web_support import FakeClock, client, ledger, marketing_to, rows, unsubscribe_path

pytestmark = pytest.mark.anyio
CUSTOMER = "klant@example.nl"
ROLE = "info@bedrijf.example"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def run(
    engine: Engine, settings: Settings, clock: FakeClock, name: str, list_name: str
) -> dict[str, str]:
    campaign = new_campaign(engine, settings, name, at=clock(), list_name=list_name)
    await run_campaign(engine, settings, campaign, clock=clock)
    return ledger(engine, campaign.id or 0)


async def test_unsubscribing_from_a_customer_mail_objects_to_every_customer_campaign(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    clock = FakeClock()
    bought = clock() - timedelta(days=30)
    add_contact(engine, send_settings, CUSTOMER, at=bought,
                purchases=[PurchaseFact("brood", bought, optout_offered=True)])  # fmt: skip
    assert await run(engine, send_settings, clock, "brood-1", "newsletter") == {CUSTOMER: "sent"}
    [mail] = marketing_to(sink, CUSTOMER)
    path = unsubscribe_path(mail)

    async with client(create_app(send_settings, engine, clock=clock)) as web:
        page = await web.get(path)
        assert "Afmelden is ook bezwaar tegen e-mail als klant" in page.text
        clock.advance(minutes=1)
        answer = await web.post(path, data=ONE_CLICK)
    assert answer.status_code == 200
    assert "je ontvangt ook geen aanbiedingen meer als klant" in answer.text
    [purchase] = rows(engine, "purchase")
    assert purchase["objected_at"] == clock()

    clock.advance(minutes=1)
    # Another list, same category: the objection ends the customer basis, not only one list.
    assert await run(engine, send_settings, clock, "brood-2", "offers") == {
        CUSTOMER: "skipped:objected"
    }
    assert len(marketing_to(sink, CUSTOMER)) == 1


async def test_unsubscribing_from_a_role_address_mail_suppresses_every_list(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(
        db_url, smtp={"port": sink.port}, policy={"jurisdiction": "BE", "role_addresses": True}
    )
    clock = FakeClock()
    add_contact(engine, settings, ROLE, at=clock() - timedelta(days=1))
    assert await run(engine, settings, clock, "b2b-1", "newsletter") == {ROLE: "sent"}
    path = unsubscribe_path(marketing_to(sink, ROLE)[0])

    async with client(create_app(settings, engine, clock=clock)) as web:
        page = await web.get(path)
        assert "Afmelden stopt alle e-mail van" in page.text
        clock.advance(minutes=1)
        answer = await web.post(path, data=ONE_CLICK)
    assert "Je ontvangt geen e-mail meer van Bakkerij Voorbeeld B.V." in answer.text
    assert [(s["reason"], s["scope"]) for s in rows(engine, "suppression")] == [
        ("unsubscribed", None)
    ]
    clock.advance(minutes=1)
    assert await run(engine, settings, clock, "b2b-2", "offers") == {ROLE: "skipped:suppressed"}


async def test_an_objection_stops_a_customer_campaign_that_already_queued_the_person(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    clock = FakeClock()
    bought = clock() - timedelta(days=30)
    add_contact(engine, send_settings, CUSTOMER, at=bought,
                purchases=[PurchaseFact("brood", bought, optout_offered=True)])  # fmt: skip
    assert await run(engine, send_settings, clock, "brood-1", "newsletter") == {CUSTOMER: "sent"}
    path = unsubscribe_path(marketing_to(sink, CUSTOMER)[0])
    queued = new_campaign(engine, send_settings, "brood-2", at=clock(), list_name="offers")
    materialise(engine, send_settings, queued, clock())  # planned before the objection
    assert ledger(engine, queued.id or 0) == {CUSTOMER: "queued"}

    async with client(create_app(send_settings, engine, clock=clock)) as web:
        clock.advance(minutes=1)
        assert (await web.post(path, data=ONE_CLICK)).status_code == 200
    await run_campaign(engine, send_settings, queued, clock=clock)

    assert ledger(engine, queued.id or 0) == {CUSTOMER: "suppressed"}
    assert [
        d["skip_reason"] for d in rows(engine, "delivery") if d["campaign_id"] == queued.id
    ] == ["objected"]
    assert len(marketing_to(sink, CUSTOMER)) == 1
