"""What the web side refuses: bombing, enumeration, bots, bad input, framing, foreign assets."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import Settings
from mailer.delivery.sink import SmtpSink
from tests.conftest import make_settings
from tests.web_support import FakeClock, client, confirm_path, confirmations, rows

pytestmark = pytest.mark.anyio
JAN = "jan@example.nl"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(engine: Engine, send_settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(send_settings, engine, clock=clock)


async def post_signup(
    app: FastAPI, address: str, *, ip: str = "192.0.2.10", honeypot: str = ""
) -> httpx.Response:
    async with client(app, ip) as web:
        data = {"email": address, "lists": ["newsletter"], "website": honeypot}
        return await web.post("/subscribe", data=data)


def comparable(answer: httpx.Response) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    headers = tuple(sorted((k, v) for k, v in answer.headers.items() if k != "date"))
    return answer.status_code, answer.text, headers


# --- subscription bombing ----------------------------------------------------------------------


async def test_at_most_three_confirmation_mails_per_address_per_day(
    app: FastAPI, sink: SmtpSink, clock: FakeClock
) -> None:
    # From five different IPs, so only the per-address limit applies.
    answers = [await post_signup(app, JAN, ip=f"198.51.100.{n}") for n in range(5)]

    assert len(confirmations(sink, JAN)) == 3
    assert len({comparable(a) for a in answers}) == 1  # the fourth looks like the first

    clock.advance(hours=23)
    await post_signup(app, JAN, ip="198.51.100.9")
    assert len(confirmations(sink, JAN)) == 3
    clock.advance(hours=1, seconds=1)
    await post_signup(app, JAN, ip="198.51.100.9")
    assert len(confirmations(sink, JAN)) == 4


async def test_signups_per_ip_per_hour_are_limited(
    engine: Engine, db_url: str, sink: SmtpSink, clock: FakeClock
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port}, web={"signups_per_ip_per_hour": 2})
    app = create_app(settings, engine, clock=clock)

    first, second, third = [await post_signup(app, f"p{n}@example.nl") for n in range(3)]

    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert third.headers["retry-after"] == "3600"
    assert "Probeer het over een uur opnieuw" in third.text
    assert len(sink.messages) == 2
    assert [c["email"] for c in rows(engine, "contact")] == ["p0@example.nl", "p1@example.nl"]
    assert (await post_signup(app, "other@example.nl", ip="203.0.113.5")).status_code == 200
    clock.advance(hours=1, seconds=1)
    assert (await post_signup(app, "p2@example.nl")).status_code == 200


async def test_rate_limit_state_holds_keyed_hashes_not_addresses_or_ips(
    app: FastAPI, engine: Engine
) -> None:
    await post_signup(app, JAN, ip="192.0.2.77")

    stored = rows(engine, "signup_attempt")

    assert sorted(r["kind"] for r in stored) == ["address", "ip"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["key_hash"]) for r in stored)
    assert "jan@" not in str(stored) and "192.0.2.77" not in str(stored)


async def test_honeypot_filled_in_gets_the_same_answer_and_nothing_is_stored_or_sent(
    app: FastAPI, engine: Engine, sink: SmtpSink
) -> None:
    bot = await post_signup(app, "victim@example.nl", honeypot="http://spam.example")
    person = await post_signup(app, "someone@example.nl")

    assert comparable(bot) == comparable(person)
    assert [c["email"] for c in rows(engine, "contact")] == ["someone@example.nl"]
    assert confirmations(sink, "victim@example.nl") == []


# --- no enumeration ----------------------------------------------------------------------------


async def test_answer_is_identical_for_new_known_confirmed_and_limited_addresses(
    app: FastAPI, sink: SmtpSink
) -> None:
    await post_signup(app, "known@example.nl", ip="203.0.113.1")
    await post_signup(app, "confirmed@example.nl", ip="203.0.113.2")
    async with client(app) as web:
        await web.post(confirm_path(confirmations(sink, "confirmed@example.nl")[0]))
    for n in range(3):
        await post_signup(app, "limited@example.nl", ip=f"203.0.113.{10 + n}")

    answers = [
        await post_signup(app, address, ip="198.51.100.50")
        for address in ("new@example.nl", "known@example.nl", "confirmed@example.nl",
                        "limited@example.nl")
    ]  # fmt: skip

    assert len({comparable(a) for a in answers}) == 1
    assert answers[0].status_code == 200


# --- input -------------------------------------------------------------------------------------


async def test_invalid_address_shows_the_form_again_with_a_message_and_stores_nothing(
    app: FastAPI, engine: Engine
) -> None:
    dutch = await post_signup(app, "jan@@example")
    async with client(app) as web:
        english = await web.post(
            "/subscribe?lang=en", data={"email": "jan@", "lists": ["newsletter"]}
        )

    assert dutch.status_code == 400
    assert "Dit e-mailadres klopt niet." in dutch.text and 'aria-invalid="true"' in dutch.text
    assert english.status_code == 400
    assert (
        "This e-mail address is not valid: There must be something after the @-sign."
        in english.text
    )
    assert rows(engine, "contact") == [] and rows(engine, "consent") == []


async def test_a_list_must_be_chosen_and_must_exist(app: FastAPI, engine: Engine) -> None:
    async with client(app) as web:
        none = await web.post("/subscribe", data={"email": JAN})
        unknown = await web.post("/subscribe", data={"email": JAN, "lists": ["secret"]})

    assert none.status_code == 400 and "Kies hieronder minstens één onderwerp." in none.text
    assert unknown.status_code == 400 and "Kies alleen uit de onderwerpen" in unknown.text
    assert rows(engine, "consent") == []


async def test_what_the_visitor_typed_is_escaped_when_shown_again(app: FastAPI) -> None:
    async with client(app) as web:
        answer = await web.post(
            "/subscribe", data={"email": '"><script>alert(1)</script>', "lists": ["newsletter"]}
        )

    assert "<script>" not in answer.text
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text


# --- pages -------------------------------------------------------------------------------------


async def test_signup_form_shows_every_list_unticked_with_its_exact_wording(
    app: FastAPI, send_settings: Settings
) -> None:
    async with client(app) as web:
        page = await web.get("/subscribe")

    boxes = re.findall(r'<input type="checkbox"[^>]*>', page.text)
    assert len(boxes) == len(send_settings.lists)
    assert not any("checked" in box for box in boxes)
    for name, item in send_settings.lists.items():
        assert f'<label for="list-{name}"><strong>{item.title}</strong>{item.wording}</label>' in (
            page.text
        )
    assert '<label for="email">E-mailadres</label>' in page.text


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_every_page_sends_security_headers_and_loads_nothing_from_other_hosts(
    app: FastAPI, lang: str
) -> None:
    async with client(app) as web:
        answers = [
            await web.get(f"/subscribe?lang={lang}"),
            await web.post(f"/subscribe?lang={lang}", data={"email": "x"}),
            await web.get(f"/confirm/forged?lang={lang}"),
            await web.post(f"/unsubscribe/forged?lang={lang}"),
        ]

    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        # The signup form may name its origin on its own POST (cross-site check); no other
        # page, and none with a token, leaks anything in a Referer.
        own_form = answer.request.url.path == "/subscribe"
        assert answer.headers["referrer-policy"] == ("same-origin" if own_form else "no-referrer")
        assert "set-cookie" not in answer.headers
        assert f'<html lang="{lang}">' in answer.text
        assert '<meta name="viewport"' in answer.text
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', answer.text):
            assert not re.match(r"^(?:[a-z]+:)?//", url), url  # relative: our own host only
    async with client(app) as web:
        css = await web.get("/assets/page.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/subscribe", "/unsubscribe/forged"])
@pytest.mark.parametrize("lang", ["de", "", "NL"])
async def test_a_page_language_other_than_nl_or_en_is_refused_with_400_naming_the_field(
    app: FastAPI, path: str, lang: str
) -> None:
    async with client(app) as web:
        answer = await web.post(f"{path}?lang={lang}", data={"List-Unsubscribe": "One-Click"})

    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_request",
        "detail": "query.lang: String should match pattern '^(nl|en)$'.",
    }
    assert answer.headers["x-frame-options"] == "DENY"
