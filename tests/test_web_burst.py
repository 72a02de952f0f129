"""A burst of concurrent one-click unsubscribes and signups (issue 12, item 7): the web side
commits them together (double_optin.writer), and still loses nothing and keeps nothing of a
refused attempt. HTTP against the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import Settings
from mailer.core.policy import ConsentFact
from mailer.core.states import ConsentEvent, ConsentOrigin
from mailer.core.tokens import TokenSigner, address_hash
from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET, make_settings
from tests.factories import add_consent, add_contact
from tests.web_support import FakeClock, client, rows

pytestmark = pytest.mark.anyio
SUBSCRIBED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def subscribed_people(engine: Engine, settings: Settings, count: int) -> dict[int, str]:
    fact = ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, SUBSCRIBED)
    emails = [f"klant{n}@voorbeeld.nl" for n in range(count)]
    return {add_contact(engine, settings, e, at=SUBSCRIBED, consents=[fact]): e for e in emails}


async def test_a_burst_of_unsubscribes_and_signups_is_stored_in_full(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    # One signup per IP an hour: the second signup from each IP is refused (429) in the same
    # burst, and its refusal must not take the unsubscribes committed beside it along.
    settings = make_settings(db_url, smtp={"port": sink.port}, web={"signups_per_ip_per_hour": 1})
    app = create_app(settings, engine, clock=FakeClock())
    people = subscribed_people(engine, settings, 30)
    signer = TokenSigner([SECRET])
    answers: dict[str, int] = {}

    async def unsubscribe(contact_id: int) -> None:
        async with client(app, ip=f"203.0.113.{contact_id % 200}") as web:
            token = signer.unsubscribe_token(contact_id, "newsletter")
            answer = await web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
            answers[people[contact_id]] = answer.status_code

    async def signup(n: int) -> None:
        async with client(app, ip=f"198.51.100.{n // 2}") as web:
            data = {"email": f"nieuw{n}@voorbeeld.nl", "lists": "newsletter"}
            answer: httpx.Response = await web.post("/subscribe", data=data)
            answers[data["email"]] = answer.status_code

    async with anyio.create_task_group() as group:
        for n, contact_id in enumerate(people):
            group.start_soon(unsubscribe, contact_id)
            if n < 20:
                group.start_soon(signup, n)

    assert [answers[email] for email in people.values()] == [200] * 30
    withdrawn = {r["contact_id"] for r in rows(engine, "consent") if r["event"] == "withdrawn"}
    assert withdrawn == set(people)
    hashes = {r["address_hash"] for r in rows(engine, "suppression")}
    assert {address_hash(email, SECRET) for email in people.values()} <= hashes

    refused = sorted(e for e, status in answers.items() if status == 429)
    accepted = sorted(e for e, status in answers.items() if e.startswith("nieuw") and status == 200)
    assert len(refused) == len(accepted) == 10  # two signups per IP, one of each allowed
    stored = {r["email"] for r in rows(engine, "contact")}
    assert set(accepted) <= stored
    assert not set(refused) & stored  # nothing of a refused attempt is kept


async def test_an_unsubscribe_after_a_new_confirmation_gets_a_suppression_of_its_own(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    # The earlier-suppression check now asks for the last confirmation inside its own query:
    # a confirmation lifted the old suppression (policy rule 1), so the next unsubscribe must
    # add one, while a repeat with no confirmation between adds nothing.
    settings = make_settings(db_url, smtp={"port": sink.port})
    clock = FakeClock(SUBSCRIBED)
    app = create_app(settings, engine, clock=clock)
    (contact_id,) = subscribed_people(engine, settings, 1)
    token = TokenSigner([SECRET]).unsubscribe_token(contact_id, "newsletter")

    async def one_click() -> None:
        clock.advance(minutes=1)
        async with client(app) as web:
            answer = await web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 200

    await one_click()
    await one_click()
    assert len(rows(engine, "suppression")) == 1
    clock.advance(minutes=1)
    fact = ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, clock())
    add_consent(engine, contact_id, fact)
    await one_click()

    assert [s["scope"] for s in rows(engine, "suppression")] == ["newsletter", "newsletter"]


async def test_a_changed_page_template_shows_on_the_next_unsubscribe(
    db_url: str, engine: Engine, sink: SmtpSink, tmp_path: Path
) -> None:
    # The one-click answer page is kept between answers (Pages.render cached=True); a shop
    # that restyles its pages while the server runs still sees the change at once.
    page = tmp_path / "pages" / "nl" / "unsubscribed.html"
    page.parent.mkdir(parents=True)
    page.write_text('{% extends "pages/base.html" %}{% block content %}Eerste{% endblock %}')
    settings = make_settings(db_url, smtp={"port": sink.port}, templates_dir=str(tmp_path))
    app = create_app(settings, engine, clock=FakeClock())
    people = subscribed_people(engine, settings, 2)
    signer = TokenSigner([SECRET])
    answers = []
    async with client(app) as web:
        for contact_id in people:
            token = signer.unsubscribe_token(contact_id, "newsletter")
            answers.append(
                await web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
            )
            page.write_text(page.read_text().replace("Eerste", "Tweede"))
            later = page.stat().st_mtime + 5  # Jinja compares modification times
            os.utime(page, (later, later))

    assert [a.status_code for a in answers] == [200, 200]
    assert "Eerste" in answers[0].text and "Tweede" in answers[1].text
