"""Internationalised addresses (issue 14, row 8): an IDN domain goes as its A-label, a
non-ASCII local part with SMTPUTF8 when the server offers it, otherwise a clear failure.
Real aiosmtpd servers with and without SMTPUTF8; HTTP against the real app."""

from __future__ import annotations

import email
import logging
from collections.abc import Iterator
from datetime import timedelta
from email.policy import default

import pytest
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.core.policy import ConsentFact
from mailer.core.states import ConsentEvent, ConsentOrigin
from mailer.delivery.sink import SmtpSink
from tests.conftest import make_settings
from tests.factories import add_contact
from tests.web_support import FakeClock, client, rows, send_campaign_now

pytestmark = pytest.mark.anyio
IDN_DOMAIN = "jan@exämple.com"
UTF8_LOCAL = "jöran@exämple.com"


@pytest.fixture
def utf8_sink() -> Iterator[SmtpSink]:
    with SmtpSink(smtputf8=True) as server:
        yield server


def subscribe(engine: Engine, settings: object, clock: FakeClock, *addresses: str) -> None:
    for address in addresses:
        confirmed = ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB,
                                clock() - timedelta(days=1))  # fmt: skip
        add_contact(engine, settings, address, at=clock(), consents=[confirmed])  # type: ignore[arg-type]


async def test_an_idn_domain_is_sent_as_its_a_label_without_smtputf8(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port})
    clock = FakeClock()
    subscribe(engine, settings, clock, IDN_DOMAIN)
    assert await send_campaign_now(engine, settings, clock, "nov") == {IDN_DOMAIN: "sent"}
    [message] = sink.messages
    assert message.recipients == ("jan@xn--exmple-cua.com",)
    parsed = email.message_from_bytes(message.data, policy=default)  # type: ignore[arg-type]
    assert parsed["To"] == "jan@xn--exmple-cua.com"


async def test_a_non_ascii_local_part_is_sent_with_smtputf8_when_the_server_offers_it(
    db_url: str, engine: Engine, utf8_sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": utf8_sink.port})
    clock = FakeClock()
    subscribe(engine, settings, clock, UTF8_LOCAL)
    assert await send_campaign_now(engine, settings, clock, "nov") == {UTF8_LOCAL: "sent"}
    [message] = utf8_sink.messages
    assert message.recipients == ("jöran@xn--exmple-cua.com",)
    assert b"To: j\xc3\xb6ran@xn--exmple-cua.com" in message.data  # RFC 6532 UTF-8 header


async def test_without_smtputf8_that_delivery_fails_with_a_reason_and_the_run_goes_on(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port})
    clock = FakeClock()
    subscribe(engine, settings, clock, UTF8_LOCAL, "anna@example.nl")
    outcome = await send_campaign_now(engine, settings, clock, "nov")
    assert outcome == {UTF8_LOCAL: "failed", "anna@example.nl": "sent"}
    [failed] = [d for d in rows(engine, "delivery") if d["status"] == "failed"]
    assert "does not offer SMTPUTF8 (RFC 6531)" in failed["smtp_reply"]
    assert [m.recipients for m in sink.messages] == [("anna@example.nl",)]


async def test_a_signup_with_a_non_ascii_local_part_never_crashes_the_confirmation_mail(
    db_url: str, engine: Engine, sink: SmtpSink, utf8_sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    for server, expected in ((utf8_sink, 1), (sink, 0)):
        settings = make_settings(db_url, smtp={"port": server.port})
        with caplog.at_level(logging.WARNING):
            async with client(create_app(settings, engine, clock=FakeClock())) as web:
                answer = await web.post(
                    "/subscribe", data={"email": UTF8_LOCAL, "lists": "newsletter"}
                )
        assert answer.status_code == 200
        assert len(server.messages) == expected
    assert "confirmation mail to a recipient at exämple.com not accepted" in caplog.text
    assert "jöran" not in caplog.text
