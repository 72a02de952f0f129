"""SMTP reply classification (pure) and the connection against a real server."""

from __future__ import annotations

import asyncio

import pytest

from mailer.config import SmtpSettings
from mailer.sink import SmtpSink
from mailer.transport import Outcome, Reply, SmtpConnection, classify


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (250, "2.0.0 Ok: queued", Outcome.SENT),
        (421, "4.3.2 Service shutting down", Outcome.RETRY),
        (450, "4.2.1 Mailbox busy", Outcome.RETRY),
        (451, "4.3.0 Try again later", Outcome.RETRY),
        (452, "4.2.2 Mailbox full", Outcome.RETRY),
        (0, "connection problem: refused", Outcome.RETRY),
        (550, "5.1.1 <x@y.nl>: No such user", Outcome.HARD_BOUNCE),
        (550, "5.1.10 Recipient address rejected", Outcome.HARD_BOUNCE),
        (553, "5.1.3 Bad destination mailbox address syntax", Outcome.HARD_BOUNCE),
        (550, "5.2.1 Mailbox disabled", Outcome.HARD_BOUNCE),
        (550, "User unknown", Outcome.HARD_BOUNCE),
        (552, "5.2.2 Mailbox full", Outcome.FAILED),
        (554, "5.7.1 Message rejected as spam", Outcome.FAILED),
        (550, "Administrative prohibition", Outcome.FAILED),
    ],
)
def test_replies_are_classified(code: int, text: str, outcome: Outcome) -> None:
    assert classify(Reply(code, text)) is outcome


MESSAGE = b"Subject: x\r\n\r\nx\r\n"


def send(port: int, recipient: str = "anna@example.nl") -> Reply:
    async def go() -> Reply:
        connection = SmtpConnection(SmtpSettings(host="127.0.0.1", port=port, security="none"))
        try:
            return await connection.send(
                "nieuws@bakkerij.example", recipient, b"Subject: x\r\n\r\nx\r\n"
            )
        finally:
            await connection.close()

    return asyncio.run(go())


def test_a_message_is_delivered_to_exactly_one_recipient(sink: SmtpSink) -> None:
    assert send(sink.port).code == 250
    assert [m.recipients for m in sink.messages] == [("anna@example.nl",)]


def test_a_refusal_is_a_reply_not_an_exception_and_the_connection_goes_on(sink: SmtpSink) -> None:
    sink.reply = lambda m: "550 5.1.1 No such user" if m.recipients[0].startswith("x") else None

    async def go() -> list[Reply]:
        connection = SmtpConnection(SmtpSettings(host="127.0.0.1", port=sink.port, security="none"))
        replies = [await connection.send("n@b.example", r, b"Subject: x\r\n\r\nx\r\n")
                   for r in ("x@example.nl", "anna@example.nl")]  # fmt: skip
        await connection.close()
        return replies

    gone, ok = asyncio.run(go())
    assert (gone.code, classify(gone)) == (550, Outcome.HARD_BOUNCE)
    assert ok.code == 250 and len(sink.messages) == 1


def test_nobody_listening_gives_a_connection_problem_reply() -> None:
    with SmtpSink() as closed:
        port = closed.port
    reply = send(port)
    assert reply.code == 0 and classify(reply) is Outcome.RETRY
