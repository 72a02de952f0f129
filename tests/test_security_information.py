"""Information at collection (GDPR art. 13; issue 14, row 11): the signup page, the footers,
the warning of `mailer serve`, and one full stop after "B.V."."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from double_optin.app import create_app
from double_optin.outcomes import ALL_LISTS
from mailer.core.tokens import TokenSigner
from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET, make_settings
from tests.process_support import MAILER, env, wait_for, write_project
from tests.web_support import (
    FakeClock,
    body_text,
    client,
    confirm_path,
    confirmations,
    marketing_to,
    rows,
    send_campaign_now,
)

PRIVACY = "https://bakkerij.example/privacy"


def test_serve_warns_at_start_without_a_privacy_url_and_keeps_serving(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=1)
    port = tomllib.loads(config.read_text())["web"]["port"]
    service = subprocess.Popen(
        [MAILER, "--config", str(config), "serve"], env=env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=30)
    finally:
        service.terminate()
        _, stderr = service.communicate(timeout=30)
    assert "warning: sender.privacy_url is not set" in stderr


@pytest.mark.anyio
async def test_the_signup_page_says_how_long_where_to_ask_and_links_the_privacy_statement(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(
        db_url, smtp={"port": sink.port}, sender={"privacy_url": PRIVACY},
        policy={"retention_days": 200},
    )  # fmt: skip
    async with client(create_app(settings, engine, clock=FakeClock())) as web:
        nl, en = await web.get("/subscribe"), await web.get("/subscribe?lang=en")
    assert "wissen we ze binnen 200 dagen" in nl.text
    assert "Inzage, correctie of verwijdering vragen: mail naar" in nl.text
    assert 'href="mailto:info@bakkerij.example"' in nl.text
    assert f'<a href="{PRIVACY}">privacyverklaring</a>' in nl.text
    assert "we erase them within 200 days" in en.text
    assert f'<a href="{PRIVACY}">privacy statement</a>' in en.text


@pytest.mark.anyio
async def test_every_footer_links_the_privacy_statement_when_it_is_set(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port}, sender={"privacy_url": PRIVACY})
    clock = FakeClock()
    async with client(create_app(settings, engine, clock=clock)) as web:
        await web.post("/subscribe", data={"email": "jan@example.nl", "lists": "newsletter"})
    async with client(create_app(settings, engine, clock=clock)) as web:
        await web.post(confirm_path(confirmations(sink, "jan@example.nl")[-1]))
    clock.advance(minutes=1)
    await send_campaign_now(engine, settings, clock, "nov")
    [mail] = marketing_to(sink, "jan@example.nl")
    assert f"Privacyverklaring: {PRIVACY}" in body_text(mail)
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and f'href="{PRIVACY}"' in str(html.get_content())  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_unsubscribed_from_everything_ends_with_one_full_stop_after_bv(
    engine: Engine, send_settings: object
) -> None:
    async with client(create_app(send_settings, engine, clock=FakeClock())) as web:  # type: ignore[arg-type]
        await web.post("/subscribe", data={"email": "jan@example.nl", "lists": "newsletter"})
        token = TokenSigner([SECRET]).unsubscribe_token(
            rows(engine, "contact")[0]["id"], "newsletter"
        )
        answer = await web.post(f"/unsubscribe/{token}", data={"scope": ALL_LISTS})
    assert "Je ontvangt geen e-mail meer van Bakkerij Voorbeeld B.V.</p>" in answer.text
    assert "B.V.." not in answer.text
