"""Signups an attacker cannot multiply or forge (issue 14, row 6): HTTP against the real app,
mails caught by the aiosmtpd sink, on SQLite and PostgreSQL."""

from __future__ import annotations

import anyio
import httpx
import pytest
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.core.tokens import TokenSigner
from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET, make_settings
from tests.web_support import BASE, FakeClock, client, parsed, rows

pytestmark = pytest.mark.anyio
VICTIM = "victim@example.nl"


def confirmation_mails(sink: SmtpSink) -> list[str]:
    return [str(m["To"]) for m in parsed(sink) if m["List-Unsubscribe"] is None]


@pytest.fixture
def app(db_url: str, engine: Engine, sink: SmtpSink):  # type: ignore[no-untyped-def]
    # No per-IP limit: only the per-address one is under test.
    settings = make_settings(db_url, smtp={"port": sink.port}, web={"signups_per_ip_per_hour": 0})
    return create_app(settings, engine, clock=FakeClock())


async def test_thirty_parallel_signups_for_one_address_send_three_mails(
    app: object, sink: SmtpSink, engine: Engine
) -> None:
    answers: list[httpx.Response] = []

    async def one(n: int) -> None:
        async with client(app, ip=f"198.51.100.{n}") as web:  # type: ignore[arg-type]
            data = {"email": VICTIM, "lists": "newsletter"}
            answers.append(await web.post("/subscribe", data=data))

    async with anyio.create_task_group() as group:
        for n in range(30):
            group.start_soon(one, n)

    assert [a.status_code for a in answers] == [200] * 30
    assert confirmation_mails(sink) == [VICTIM] * 3
    assert len([r for r in rows(engine, "signup_attempt") if r["kind"] == "address"]) == 3


async def test_plus_addresses_share_the_limit_of_their_mailbox(app: object, sink: SmtpSink) -> None:
    async with client(app) as web:  # type: ignore[arg-type]
        for n in range(1, 6):
            await web.post(
                "/subscribe", data={"email": f"victim+{n}@example.nl", "lists": "newsletter"}
            )
        await web.post("/subscribe", data={"email": VICTIM, "lists": "newsletter"})
    assert confirmation_mails(sink) == ["victim+1@example.nl", "victim+2@example.nl",
                                        "victim+3@example.nl"]  # fmt: skip


@pytest.mark.parametrize(
    "headers",
    [{"origin": "https://evil.example"}, {"origin": "null"},
     {"referer": "https://evil.example/page"}, {"origin": "http://bakkerij.example"},
     {"origin": "https://evil.example", "referer": f"{BASE}/subscribe"}],
    ids=["foreign origin", "null origin", "foreign referer", "other scheme", "origin wins"],
)  # fmt: skip
async def test_a_cross_site_signup_post_is_refused_and_nothing_stored(
    app: object, sink: SmtpSink, engine: Engine, headers: dict[str, str]
) -> None:
    async with client(app) as web:  # type: ignore[arg-type]
        answer = await web.post(
            "/subscribe", data={"email": VICTIM, "lists": "newsletter"}, headers=headers
        )
    assert answer.status_code == 403
    assert "Er is niets opgeslagen" in answer.text
    assert rows(engine, "contact") == [] and rows(engine, "signup_attempt") == []
    assert confirmation_mails(sink) == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"origin": BASE}, {"referer": f"{BASE}/subscribe?lang=en"}, {"origin": BASE + ":443"}],
    ids=["neither", "our origin", "our referer", "explicit default port"],
)
async def test_our_own_form_and_header_less_posts_are_accepted(
    app: object, sink: SmtpSink, headers: dict[str, str]
) -> None:
    async with client(app) as web:  # type: ignore[arg-type]
        page = await web.get("/subscribe")
        answer = await web.post(
            "/subscribe", data={"email": VICTIM, "lists": "newsletter"}, headers=headers
        )
    # Our form page lets the browser name its origin on the POST (no-referrer would send null).
    assert page.headers["referrer-policy"] == "same-origin"
    assert answer.status_code == 200
    assert confirmation_mails(sink) == [VICTIM]


async def test_the_one_click_unsubscribe_needs_neither_origin_nor_referer(
    app: object, engine: Engine
) -> None:
    async with client(app) as web:  # type: ignore[arg-type]
        await web.post("/subscribe", data={"email": VICTIM, "lists": "newsletter"})
        token = TokenSigner([SECRET]).unsubscribe_token(
            rows(engine, "contact")[0]["id"], "newsletter"
        )
        answer = await web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"},
                                headers={"origin": "null"})  # fmt: skip
    assert answer.status_code == 200
    assert [s["reason"] for s in rows(engine, "suppression")] == ["unsubscribed"]
