"""A list's text per language: the page in a language shows that language's title and wording,
and the consent records exactly the text shown (DESIGN rule 7), also in the confirmation mail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import ConfigError, Settings
from mailer.delivery.sink import SmtpSink
from tests.conftest import make_settings
from tests.web_support import FakeClock, body_text, client, confirm_path, confirmations, rows

pytestmark = pytest.mark.anyio
DUTCH = "Ja, ik wil de maandelijkse nieuwsbrief per e-mail ontvangen."
ENGLISH = "Yes, I want to receive the monthly newsletter by e-mail."


@pytest.fixture
def translated(db_url: str, sink: SmtpSink) -> Settings:
    lists = {
        "newsletter": {
            "title": "Nieuwsbrief",
            "wording": DUTCH,
            "translations": {"en": {"title": "Newsletter", "wording": ENGLISH}},
        },
        "offers": {"title": "Aanbiedingen", "wording": "Ja, stuur mij aanbiedingen per e-mail."},
    }
    return make_settings(db_url, smtp={"port": sink.port}, lists=lists)


@pytest.fixture
async def web(engine: Engine, translated: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(translated, engine, clock=FakeClock())
    async with client(app) as http:
        yield http


async def test_english_page_shows_the_english_text_and_the_dutch_page_the_dutch(
    web: httpx.AsyncClient,
) -> None:
    english = (await web.get("/subscribe?lang=en")).text
    dutch = (await web.get("/subscribe")).text

    assert "<strong>Newsletter</strong>" + ENGLISH in english and DUTCH not in english
    assert "<strong>Nieuwsbrief</strong>" + DUTCH in dutch and ENGLISH not in dutch
    # A list without a translation shows its own text on every page.
    assert "Aanbiedingen" in english


async def test_english_signup_records_the_english_wording_it_showed(
    web: httpx.AsyncClient, engine: Engine, sink: SmtpSink
) -> None:
    data = {"email": "jan@example.nl", "lists": ["newsletter"], "website": ""}
    assert (await web.post("/subscribe?lang=en", data=data)).status_code == 200
    [mail] = confirmations(sink, "jan@example.nl")
    assert "Newsletter" in body_text(mail) and ENGLISH in body_text(mail)

    assert (await web.post(confirm_path(mail))).status_code == 200

    assert [(e["event"], e["wording"]) for e in rows(engine, "consent")] == [
        ("requested", ENGLISH),
        ("confirmed", ENGLISH),
    ]


async def test_api_lists_gives_the_text_of_the_language_asked_for(
    web: httpx.AsyncClient,
) -> None:
    [newsletter, _offers] = (await web.get("/api/lists?lang=en")).json()

    assert (newsletter["title"], newsletter["wording"]) == ("Newsletter", ENGLISH)


def test_a_translation_key_must_be_a_locale(db_url: str) -> None:
    text = {"title": "N", "wording": "W"}
    lists = {"newsletter": {**text, "translations": {"English": text}}}
    with pytest.raises(ConfigError) as caught:
        make_settings(db_url, lists=lists)
    assert 'is not a locale like "en" or "nl"' in str(caught.value)
