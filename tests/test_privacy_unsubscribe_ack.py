"""The unsubscribe acknowledgement (policy.unsubscribe_ack; on by default in BE): sent once,
after the answer, through a real SMTP server; never in NL unless asked for. And the old link of
an erased person, which must not reach whoever is stored next."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from double_optin.app import create_app
from mailer.core.policy import ConsentFact
from mailer.core.tokens import TokenSigner
from mailer.delivery.acknowledge import send_unsubscribe_ack
from mailer.delivery.sink import SmtpSink
from mailer.privacy.person import erase_person
from mailer.store.db import create_schema, make_engine
from mailer.store.models import ConsentEvent, ConsentOrigin
from tests.conftest import SECRET, make_settings
from tests.factories import add_contact
from tests.web_support import FakeClock, body_text, client, parsed, wait_for

pytestmark = pytest.mark.anyio
JAN = "jan@example.nl"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ONE_CLICK = {
    "content": b"List-Unsubscribe=One-Click",
    "headers": {"content-type": "application/x-www-form-urlencoded"},
}


async def unsubscribe_twice(
    db_url: str, sink: SmtpSink, policy: dict[str, Any], locale: str | None = None
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port}, policy=policy)
    engine = make_engine(db_url)
    create_schema(engine)
    contact_id = add_contact(
        engine, settings, JAN, at=T0, locale=locale,
        consents=[ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, T0)],
    )  # fmt: skip
    path = "/unsubscribe/" + TokenSigner([SECRET]).unsubscribe_token(contact_id, "newsletter")
    app = create_app(settings, engine, clock=FakeClock(T0))
    async with client(app) as web:
        # A mailbox provider may retry the one-click POST: one acknowledgement, not two.
        for _ in range(2):
            answer = await web.post(path, **ONE_CLICK)  # type: ignore[arg-type]
            assert answer.status_code == 200
    engine.dispose()


async def test_in_belgium_an_unsubscribe_is_acknowledged_once_by_mail(
    db_url: str, sink: SmtpSink
) -> None:
    await unsubscribe_twice(db_url, sink, {"jurisdiction": "BE"})
    wait_for(lambda: len(sink.messages) >= 1)
    [ack] = parsed(sink)
    assert ack["To"] == JAN
    assert ack["Subject"] == "Afmelding bevestigd: Bakkerij Voorbeeld"
    assert ack["Auto-Submitted"] == "auto-replied"
    # Transactional: no unsubscribe headers, no HTML part, no offers.
    assert ack["List-Unsubscribe"] is None and ack.get_body(("html",)) is None
    text = body_text(ack)
    assert "Je bent afgemeld voor Nieuwsbrief van Bakkerij Voorbeeld B.V." in text
    assert "https://bakkerij.example/subscribe" in text


async def test_in_the_netherlands_an_unsubscribe_sends_nothing_by_default(
    db_url: str, sink: SmtpSink
) -> None:
    await unsubscribe_twice(db_url, sink, {"jurisdiction": "NL"})
    assert sink.messages == []


async def test_the_acknowledgement_can_be_switched_on_in_nl_and_speaks_the_contacts_language(
    db_url: str, sink: SmtpSink
) -> None:
    await unsubscribe_twice(db_url, sink, {"jurisdiction": "NL", "unsubscribe_ack": True}, "en")
    wait_for(lambda: len(sink.messages) >= 1)
    [ack] = parsed(sink)
    assert ack["Subject"] == "Unsubscribe confirmed: Bakkerij Voorbeeld"
    assert "You have been unsubscribed from Nieuwsbrief" in body_text(ack)


async def test_send_unsubscribe_ack_reports_a_refusal_without_raising(db_url: str) -> None:
    with SmtpSink(reply=lambda _m: "550 5.7.1 refused") as refusing:
        settings = make_settings(db_url, smtp={"port": refusing.port})
        assert await send_unsubscribe_ack(settings, JAN, "Nieuwsbrief", dkim=()) is False
    with SmtpSink() as accepting:
        settings = make_settings(db_url, smtp={"port": accepting.port})
        sent = await send_unsubscribe_ack(settings, JAN, "Nieuwsbrief", locale="en", dkim=())
        assert sent is True
        assert [m.recipients for m in accepting.messages] == [(JAN,)]


async def test_an_erased_persons_old_unsubscribe_link_never_acts_on_the_next_contact(
    db_url: str, sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port}, policy={"jurisdiction": "BE"})
    engine = make_engine(db_url)
    create_schema(engine)
    subscribed = [ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, T0)]
    erased_id = add_contact(engine, settings, JAN, at=T0, consents=subscribed)
    old_link = "/unsubscribe/" + TokenSigner([SECRET]).unsubscribe_token(erased_id, "newsletter")
    erase_person(engine, settings, JAN, now=T0)
    # The newest contact was erased; SQLite would hand its id to the next one without
    # AUTOINCREMENT, and the old link would unsubscribe (and show the lists of) a stranger.
    newcomer = add_contact(engine, settings, "piet@example.nl", at=T0, consents=subscribed)
    assert newcomer != erased_id
    app = create_app(settings, engine, clock=FakeClock(T0))
    async with client(app) as web:
        view = await web.get(old_link)
        answer = await web.post(old_link, **ONE_CLICK)  # type: ignore[arg-type]
    assert (view.status_code, answer.status_code) == (200, 200)
    assert "Nieuwsbrief" not in view.text  # no one's lists are shown
    with engine.connect() as conn:
        events = conn.execute(text("SELECT event FROM consent WHERE contact_id = :c"),
                              {"c": newcomer})  # fmt: skip
        assert [r[0] for r in events] == ["confirmed"]
    assert sink.messages == []  # and no acknowledgement to anyone
    engine.dispose()
