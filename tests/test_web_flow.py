"""Double opt-in and unsubscribe through HTTP (httpx against the app), mails caught by aiosmtpd."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import Settings
from mailer.core.tokens import TokenSigner
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.campaign import create_campaign
from mailer.store.planning import materialise
from tests.conftest import SECRET
from tests.web_support import (
    BASE,
    FakeClock,
    body_text,
    client,
    confirm_path,
    confirmations,
    ledger,
    marketing_to,
    rows,
    send_campaign_now,
    unsubscribe_path,
)

pytestmark = pytest.mark.anyio
JAN = "jan@example.nl"
NEWSLETTER_WORDING = "Ja, ik wil de maandelijkse nieuwsbrief per e-mail ontvangen."


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(engine: Engine, send_settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(send_settings, engine, clock=clock)


@pytest.fixture
async def web(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as http:
        yield http


async def subscribe(web: httpx.AsyncClient, address: str = JAN, *lists: str) -> httpx.Response:
    data = {"email": address, "lists": list(lists or ("newsletter",)), "website": ""}
    return await web.post("/subscribe", data=data)


async def subscribed_and_confirmed(
    web: httpx.AsyncClient, sink: SmtpSink, address: str = JAN, *lists: str
) -> None:
    await subscribe(web, address, *lists)
    answer = await web.post(confirm_path(confirmations(sink, address)[-1]))
    assert answer.status_code == 200, answer.text


# --- signup ------------------------------------------------------------------------------------


async def test_signup_records_requested_consent_with_its_evidence(
    web: httpx.AsyncClient, engine: Engine, clock: FakeClock
) -> None:
    answer = await subscribe(web, "  Jan@Example.NL ")

    assert answer.status_code == 200
    assert "Kijk in je mailbox" in answer.text
    [contact] = rows(engine, "contact")
    assert contact["email"] == JAN
    [event] = rows(engine, "consent")
    assert {k: event[k] for k in ("list_name", "event", "origin", "wording", "source", "ip")} == {
        "list_name": "newsletter",
        "event": "requested",
        "origin": "web",
        "wording": NEWSLETTER_WORDING,
        "source": f"{BASE}/subscribe",
        "ip": "192.0.2.10",
    }
    assert event["user_agent"] == "Mozilla/5.0 (test)"
    assert event["at"] == clock.now


async def test_confirmation_mail_names_sender_and_request_and_carries_only_the_link(
    web: httpx.AsyncClient, sink: SmtpSink
) -> None:
    await subscribe(web, JAN, "newsletter", "offers")

    [mail] = confirmations(sink, JAN)
    text = body_text(mail)
    assert mail["From"] == "Bakkerij Voorbeeld <nieuws@bakkerij.example>"
    assert mail["Subject"] == "Bevestig je aanmelding bij Bakkerij Voorbeeld"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "Bakkerij Voorbeeld B.V." in text and "Dorpsstraat 1, 1234 AB Voorbeeld" in text
    assert f'Nieuwsbrief: "{NEWSLETTER_WORDING}"' in text
    assert 'Aanbiedingen: "Ja, stuur mij aanbiedingen per e-mail."' in text
    # Transactional: one link (the confirmation), no unsubscribe headers, no HTML, no images.
    assert text.count("https://") == 1 and confirm_path(mail).startswith("/confirm/")
    assert mail["List-Unsubscribe"] is None and not mail.is_multipart()


async def test_no_marketing_before_confirmation_then_the_next_campaign_includes_them(
    web: httpx.AsyncClient, engine: Engine, send_settings: Settings, sink: SmtpSink,
    clock: FakeClock,
) -> None:  # fmt: skip
    await subscribe(web)
    clock.advance(minutes=1)

    first = await send_campaign_now(engine, send_settings, clock, "before-confirm")
    assert first == {JAN: "skipped:pending_confirmation"}
    assert marketing_to(sink, JAN) == []

    link = confirm_path(confirmations(sink, JAN)[0])
    page = await web.get(link)
    assert page.status_code == 200
    assert "Ja, ik bevestig mijn aanmelding" in page.text and '<form method="post">' in page.text
    assert [e["event"] for e in rows(engine, "consent")] == ["requested"]  # GET changed nothing

    clock.advance(minutes=1)
    confirmed = await web.post(link, headers={"user-agent": "Browser/2"})
    assert confirmed.status_code == 200 and "je aanmelding is bevestigd" in confirmed.text
    event = rows(engine, "consent")[-1]
    assert (event["event"], event["origin"], event["ip"], event["user_agent"], event["at"]) == (
        "confirmed", "web", "192.0.2.10", "Browser/2", clock.now,
    )  # fmt: skip
    assert event["wording"] == NEWSLETTER_WORDING

    clock.advance(minutes=1)
    second = await send_campaign_now(engine, send_settings, clock, "after-confirm")
    assert second == {JAN: "sent"}
    assert len(marketing_to(sink, JAN)) == 1


async def test_confirming_twice_is_harmless(
    web: httpx.AsyncClient, engine: Engine, sink: SmtpSink
) -> None:
    await subscribe(web)
    link = confirm_path(confirmations(sink, JAN)[0])

    answers = [await web.post(link), await web.post(link), await web.get(link)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("je aanmelding is bevestigd" in a.text for a in answers)
    assert [e["event"] for e in rows(engine, "consent")] == ["requested", "confirmed"]


# --- unsubscribe -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_unsubscribe_then_the_next_campaign_skips_them(
    encoding: str, web: httpx.AsyncClient, engine: Engine, send_settings: Settings,
    sink: SmtpSink, clock: FakeClock,
) -> None:  # fmt: skip
    await subscribed_and_confirmed(web, sink)
    clock.advance(minutes=1)
    await send_campaign_now(engine, send_settings, clock, "november")
    [mail] = marketing_to(sink, JAN)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    clock.advance(minutes=1)

    # What a mailbox provider sends (RFC 8058 §3.1): no cookie, no other credentials.
    if encoding == "urlencoded":
        answer = await web.post(
            unsubscribe_path(mail), content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
    else:
        answer = await web.post(
            unsubscribe_path(mail), files={"List-Unsubscribe": (None, "One-Click")}
        )
        assert answer.request.headers["content-type"].startswith("multipart/form-data")

    assert answer.status_code == 200  # RFC 8058 §3.2: never a redirect
    assert "location" not in answer.headers and "set-cookie" not in answer.headers
    assert "Je bent afgemeld" in answer.text
    withdrawn = rows(engine, "consent")[-1]
    assert (withdrawn["event"], withdrawn["list_name"], withdrawn["at"]) == (
        "withdrawn", "newsletter", clock.now,
    )  # fmt: skip
    assert "RFC 8058" in withdrawn["wording"]
    [suppression] = rows(engine, "suppression")
    assert (suppression["reason"], suppression["scope"]) == ("unsubscribed", "newsletter")
    assert JAN not in str(suppression)  # only a keyed hash of the address

    clock.advance(minutes=1)
    assert await send_campaign_now(engine, send_settings, clock, "december") == {
        JAN: "skipped:suppressed"
    }
    assert len(marketing_to(sink, JAN)) == 1


async def test_unsubscribe_stops_a_campaign_that_already_queued_the_person(
    web: httpx.AsyncClient, engine: Engine, send_settings: Settings, sink: SmtpSink,
    clock: FakeClock,
) -> None:  # fmt: skip
    await subscribed_and_confirmed(web, sink)
    clock.advance(minutes=1)
    campaign = create_campaign(
        engine, send_settings, name="running", list_name="newsletter", subject="Nu",
        template="newsletter", category=None, now=clock(),
    )  # fmt: skip
    materialise(engine, send_settings, campaign, clock())  # the run planned them: queued
    assert ledger(engine, campaign.id or 0) == {JAN: "queued"}
    token = TokenSigner([SECRET]).unsubscribe_token(rows(engine, "contact")[0]["id"], "newsletter")

    await web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    await run_campaign(engine, send_settings, campaign, clock=clock)

    assert ledger(engine, campaign.id or 0) == {JAN: "suppressed"}
    assert marketing_to(sink, JAN) == []


async def test_unsubscribe_page_shows_the_lists_and_get_changes_nothing(
    web: httpx.AsyncClient, engine: Engine, sink: SmtpSink
) -> None:
    await subscribed_and_confirmed(web, sink, JAN, "newsletter", "offers")
    token = TokenSigner([SECRET]).unsubscribe_token(rows(engine, "contact")[0]["id"], "offers")

    page = await web.get(f"/unsubscribe/{token}")

    assert page.status_code == 200
    assert 'value="offers" checked' in page.text and 'value="newsletter">' in page.text
    assert "Alle e-mail van Bakkerij Voorbeeld B.V." in page.text
    assert "<script" not in page.text  # works without JavaScript: a plain form
    assert rows(engine, "suppression") == []
    assert [e["event"] for e in rows(engine, "consent")].count("withdrawn") == 0


async def test_unsubscribe_from_everything_withdraws_every_list_and_suppresses_all(
    web: httpx.AsyncClient, engine: Engine, send_settings: Settings, sink: SmtpSink,
    clock: FakeClock,
) -> None:  # fmt: skip
    await subscribed_and_confirmed(web, sink, JAN, "newsletter", "offers")
    token = TokenSigner([SECRET]).unsubscribe_token(rows(engine, "contact")[0]["id"], "offers")
    clock.advance(minutes=1)

    answer = await web.post(f"/unsubscribe/{token}", data={"scope": "_all"})

    assert answer.status_code == 200
    assert "geen e-mail meer van Bakkerij Voorbeeld B.V." in answer.text
    withdrawn = [e["list_name"] for e in rows(engine, "consent") if e["event"] == "withdrawn"]
    assert sorted(withdrawn) == ["newsletter", "offers"]
    assert [s["scope"] for s in rows(engine, "suppression")] == [None]
    clock.advance(minutes=1)
    for name in ("newsletter", "offers"):
        result = await send_campaign_now(engine, send_settings, clock, f"c-{name}", name)
        assert result == {JAN: "skipped:suppressed"}


async def test_unsubscribing_twice_records_one_suppression(
    web: httpx.AsyncClient, engine: Engine, sink: SmtpSink
) -> None:
    await subscribed_and_confirmed(web, sink)
    token = TokenSigner([SECRET]).unsubscribe_token(rows(engine, "contact")[0]["id"], "newsletter")

    for _ in range(3):
        answer = await web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200

    assert len(rows(engine, "suppression")) == 1
    assert [e["event"] for e in rows(engine, "consent")].count("withdrawn") == 1


async def test_old_confirm_link_cannot_undo_an_unsubscribe_but_a_new_signup_can(
    web: httpx.AsyncClient, engine: Engine, send_settings: Settings, sink: SmtpSink,
    clock: FakeClock,
) -> None:  # fmt: skip
    await subscribed_and_confirmed(web, sink)
    old_link = confirm_path(confirmations(sink, JAN)[0])
    token = TokenSigner([SECRET]).unsubscribe_token(rows(engine, "contact")[0]["id"], "newsletter")
    clock.advance(minutes=1)
    await web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    clock.advance(minutes=1)

    stale = await web.post(old_link)

    assert stale.status_code == 410 and "niet meer geldig" in stale.text
    assert rows(engine, "consent")[-1]["event"] == "withdrawn"

    # The person's own new double opt-in lifts their suppression (DESIGN.md rule 1).
    clock.advance(minutes=1)
    await subscribed_and_confirmed(web, sink)
    clock.advance(minutes=1)
    assert await send_campaign_now(engine, send_settings, clock, "welcome-back") == {JAN: "sent"}


# --- bad links ---------------------------------------------------------------------------------


async def test_forged_tokens_get_400_and_a_clear_page_and_change_nothing(
    web: httpx.AsyncClient, engine: Engine, sink: SmtpSink
) -> None:
    await subscribe(web)
    confirm = confirm_path(confirmations(sink, JAN)[0])
    unsubscribe = "/unsubscribe/" + TokenSigner([SECRET]).unsubscribe_token(1, "newsletter")
    forged_unsubscribe = "/unsubscribe/" + TokenSigner(["another key"]).unsubscribe_token(
        1, "newsletter"
    )
    attempts = [
        ("GET", confirm[:-3] + "xyz"),
        ("POST", confirm[:-3] + "xyz"),
        ("POST", "/confirm/" + unsubscribe.rsplit("/", 1)[1]),  # right key, wrong purpose
        ("GET", forged_unsubscribe),
        ("POST", forged_unsubscribe),
        ("POST", "/unsubscribe/" + confirm.rsplit("/", 1)[1]),
        ("POST", "/unsubscribe/not-a-token"),
    ]

    for method, path in attempts:
        answer = await web.request(method, path, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 400, (method, path)
        assert "Deze link klopt niet" in answer.text
        assert "Er is niets gewijzigd." in answer.text

    assert [e["event"] for e in rows(engine, "consent")] == ["requested"]
    assert rows(engine, "suppression") == []


async def test_expired_confirm_link_confirms_nothing_and_offers_a_new_mail(
    web: httpx.AsyncClient, engine: Engine, send_settings: Settings, sink: SmtpSink,
    clock: FakeClock,
) -> None:  # fmt: skip
    await subscribe(web)
    link = confirm_path(confirmations(sink, JAN)[0])
    clock.advance(hours=send_settings.web.confirm_ttl_hours + 1)

    shown = await web.get(link)
    posted = await web.post(link)

    for answer in (shown, posted):
        assert answer.status_code == 400
        assert "Deze bevestigingslink is verlopen" in answer.text
        assert 'name="renew"' in answer.text
    assert [e["event"] for e in rows(engine, "consent")] == ["requested"]

    renewed = await web.post(link, data={"renew": "1"})

    assert renewed.status_code == 200 and "Kijk in je mailbox" in renewed.text
    fresh = confirm_path(confirmations(sink, JAN)[-1])
    assert fresh != link
    assert (await web.post(fresh)).status_code == 200
    assert [e["event"] for e in rows(engine, "consent")] == ["requested", "confirmed"]


# --- JSON and health ---------------------------------------------------------------------------


async def test_json_signup_is_a_double_opt_in_too_and_documented(
    web: httpx.AsyncClient, engine: Engine, sink: SmtpSink
) -> None:
    answer = await web.post(
        "/api/subscribe",
        json={"email": JAN, "lists": ["offers"], "source_url": "https://shop.example/news"},
    )

    assert answer.status_code == 202
    assert answer.json()["status"] == "pending_confirmation"
    [event] = rows(engine, "consent")
    assert (event["event"], event["list_name"], event["source"]) == (
        "requested", "offers", "https://shop.example/news",
    )  # fmt: skip
    assert len(confirmations(sink, JAN)) == 1

    bad = await web.post("/api/subscribe", json={"email": "jan@", "lists": ["offers"]})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_address"
    assert "something after the @-sign" in bad.json()["detail"]

    schema = (await web.get("/openapi.json")).json()
    operation = schema["paths"]["/api/subscribe"]["post"]
    assert set(operation["responses"]) >= {"202", "400", "429"}
    assert "SignupRequest" in schema["components"]["schemas"]
    lists = (await web.get("/api/lists")).json()
    assert lists[0] == {"name": "newsletter", "title": "Nieuwsbrief", "wording": NEWSLETTER_WORDING}


async def test_healthz_answers_ok(web: httpx.AsyncClient) -> None:
    answer = await web.get("/healthz")

    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
