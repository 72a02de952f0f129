"""The welcome mail on confirmation: per list, once per confirmation, through the real sink."""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import Settings
from mailer.delivery.sink import SmtpSink
from tests.conftest import BASE_CONFIG, make_settings
from tests.web_support import BASE, FakeClock, body_text, client, confirm_path, parsed, rows

pytestmark = pytest.mark.anyio
JAN = "jan@example.nl"


def lists(newsletter: dict[str, Any], offers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "newsletter": {**BASE_CONFIG["lists"]["newsletter"], **newsletter},
        "offers": {**BASE_CONFIG["lists"]["offers"], **(offers or {})},
    }


async def confirm_signup(app: FastAPI, sink: SmtpSink, *names: str) -> httpx.Response:
    async with client(app) as web:
        await web.post("/subscribe", data={"email": JAN, "lists": list(names), "website": ""})
        [confirmation] = [m for m in parsed(sink) if "/confirm/" in body_text(m)]
        link = confirm_path(confirmation)
        first = await web.post(link)
        assert first.status_code == 200, first.text
        again = await web.post(link)  # a second click, or a scanner replaying the POST
        assert again.status_code == 200
        return first


def welcomes(sink: SmtpSink) -> list[EmailMessage]:
    return [m for m in parsed(sink) if str(m["Subject"]).startswith(("Welkom", "Welcome"))]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def app_for(engine: Engine, settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(settings, engine, clock=clock)


async def test_a_confirmation_is_welcomed_once_for_a_list_with_welcome_on(
    engine: Engine, db_url: str, sink: SmtpSink, clock: FakeClock
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port}, lists=lists({"welcome": True}))
    await confirm_signup(app_for(engine, settings, clock), sink, "newsletter", "offers")

    [welcome] = welcomes(sink)  # one, for the one list with welcome on, despite two clicks
    assert welcome["To"] == JAN
    assert welcome["Subject"] == "Welkom bij Nieuwsbrief van Bakkerij Voorbeeld"
    assert welcome["Auto-Submitted"] == "auto-replied"
    text = body_text(welcome)
    assert "Je aanmelding voor Nieuwsbrief van Bakkerij Voorbeeld B.V. is bevestigd." in text
    assert '"Ja, ik wil de maandelijkse nieuwsbrief per e-mail ontvangen."' in text
    # Its one-click unsubscribe link works like a campaign's.
    [link] = re.findall(rf"{re.escape(BASE)}(/unsubscribe/\S+)", text)
    async with client(app_for(engine, settings, clock)) as web:
        assert (await web.post(link, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    events = [(e["list_name"], e["event"]) for e in rows(engine, "consent")]
    assert ("newsletter", "withdrawn") in events


async def test_no_welcome_by_default(
    engine: Engine, send_settings: Settings, sink: SmtpSink, clock: FakeClock
) -> None:
    await confirm_signup(app_for(engine, send_settings, clock), sink, "newsletter")
    assert welcomes(sink) == []
    assert len(sink.messages) == 1  # the confirmation mail only


async def test_a_list_template_turns_the_welcome_on_and_welcome_false_turns_it_off(
    engine: Engine, db_url: str, sink: SmtpSink, clock: FakeClock, tmp_path: Path
) -> None:
    mail = tmp_path / "own" / "mail"
    mail.mkdir(parents=True)
    (mail / "welcome.newsletter.nl.txt").write_text(
        "Fijn dat je er bent, {{ email }}! Afmelden: {{ unsubscribe_url }}\n", encoding="utf-8"
    )
    (mail / "welcome.offers.nl.txt").write_text("Nooit verstuurd.\n", encoding="utf-8")
    settings = make_settings(
        db_url, smtp={"port": sink.port}, templates_dir=str(tmp_path / "own"),
        lists=lists({}, {"welcome": False}),
    )  # fmt: skip
    await confirm_signup(app_for(engine, settings, clock), sink, "newsletter", "offers")
    [welcome] = welcomes(sink)
    assert body_text(welcome).startswith(f"Fijn dat je er bent, {JAN}! Afmelden: {BASE}/unsub")
