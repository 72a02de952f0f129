"""SMTP reply classification (pure) and the connection against a real server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from mailer.config import SmtpSettings
from mailer.delivery.sink import SmtpSink
from mailer.delivery.transport import Outcome, Reply, SmtpConnection, classify

CLASSIFICATION = [
    ("250 accepted", 250, "2.0.0 Ok: queued as 4F2A1", Outcome.SENT),
    ("421 service closing", 421, "4.3.2 Service shutting down", Outcome.RETRY),
    ("450 mailbox busy", 450, "4.2.1 Mailbox busy, try later", Outcome.RETRY),
    ("451 local error", 451, "4.3.0 Try again later", Outcome.RETRY),
    ("452 insufficient storage", 452, "4.2.2 Mailbox full", Outcome.RETRY),
    ("451 greylisted, no enhanced code", 451, "Greylisted, please try again", Outcome.RETRY),
    ("0 connection lost", 0, "connection problem: Connection refused", Outcome.RETRY),
    ("550 5.1.1 no such user", 550, "5.1.1 <x@y.nl>: Recipient address rejected: no such user",
     Outcome.HARD_BOUNCE),
    ("550 5.1.10 null MX", 550, "5.1.10 Recipient address rejected", Outcome.HARD_BOUNCE),
    ("551 5.1.6 user not local", 551, "5.1.6 User not local; please try <piet@elders.nl>",
     Outcome.HARD_BOUNCE),
    ("553 5.1.3 bad address syntax", 553, "5.1.3 Bad destination mailbox address syntax",
     Outcome.HARD_BOUNCE),
    ("550 5.2.1 mailbox disabled", 550, "5.2.1 The email account is disabled",
     Outcome.HARD_BOUNCE),
    ("550 User unknown without enhanced code", 550, "User unknown", Outcome.HARD_BOUNCE),
    ("552 5.2.2 mailbox full", 552, "5.2.2 Mailbox full", Outcome.FAILED),
    ("554 5.7.1 spam", 554, "5.7.1 Message rejected as spam", Outcome.FAILED),
    ("550 policy without enhanced code", 550, "Administrative prohibition", Outcome.FAILED),
]  # fmt: skip


@pytest.mark.parametrize(("code", "text", "outcome"), [c[1:] for c in CLASSIFICATION],
                         ids=[c[0] for c in CLASSIFICATION])  # fmt: skip
def test_a_reply_is_classified_as_sent_retry_hard_bounce_or_failed(
    code: int, text: str, outcome: Outcome
) -> None:
    assert classify(Reply(code, text)) is outcome


def test_the_table_covers_every_outcome() -> None:
    assert {c[3] for c in CLASSIFICATION} == set(Outcome)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "Rejected: client 5.1.83.20 is listed at bl.example"),
        (554, "Service unavailable; client host [10.5.1.3] blocked using zen.spamhaus.org"),
    ],
    ids=["550 IP 5.1.83.20 on a blocklist", "554 IP 10.5.1.3 on a blocklist"],
)
def test_an_ip_address_in_the_reply_text_is_not_read_as_an_enhanced_status_code(
    code: int, text: str
) -> None:
    # RFC 2034 §4 / RFC 3463: the enhanced status code is the first token of the text. A server
    # without ENHANCEDSTATUSCODES that rejects our IP is a policy refusal, not "no such
    # mailbox": a hard bounce would suppress a working address for good.
    assert classify(Reply(code, text)) is Outcome.FAILED


SENDER = "nieuws@bakkerij.example"
MESSAGE = b"From: nieuws@bakkerij.example\r\nSubject: Nieuws\r\n\r\nHallo\r\n"


def connection_to(port: int) -> SmtpConnection:
    return SmtpConnection(
        SmtpSettings(host="127.0.0.1", port=port, security="none", timeout_seconds=5)
    )


def send_each(port: int, recipients: list[str]) -> list[Reply]:
    """Send MESSAGE to each recipient, in order, over one SmtpConnection."""

    async def go() -> list[Reply]:
        connection = connection_to(port)
        try:
            return [await connection.send(SENDER, r, MESSAGE) for r in recipients]
        finally:
            await connection.close()

    return asyncio.run(go())


def test_a_message_is_accepted_for_exactly_one_recipient(sink: SmtpSink) -> None:
    [reply] = send_each(sink.port, ["anna@example.nl"])
    assert reply.code == 250 and classify(reply) is Outcome.SENT
    assert len(sink.messages) == 1
    [received] = sink.messages
    assert (received.mail_from, received.recipients) == (SENDER, ("anna@example.nl",))
    assert b"Subject: Nieuws" in received.data


def test_a_refusal_is_a_reply_and_the_connection_goes_on(sink: SmtpSink) -> None:
    sink.reply = lambda m: (
        "550 5.1.1 No such user" if m.recipients == ("gone@example.nl",) else None
    )
    gone, anna = send_each(sink.port, ["gone@example.nl", "anna@example.nl"])
    assert gone == Reply(550, "5.1.1 No such user")
    assert classify(gone) is Outcome.HARD_BOUNCE
    assert anna.code == 250
    assert [m.recipients for m in sink.messages] == [("anna@example.nl",)]


def test_after_a_421_the_next_message_reconnects_and_is_accepted(sink: SmtpSink) -> None:
    answers = iter(["421 4.3.2 Shutting down", None])
    sink.reply = lambda m: next(answers)
    closing, anna = send_each(sink.port, ["anna@example.nl", "anna@example.nl"])
    assert (closing.code, classify(closing)) == (421, Outcome.RETRY)
    assert anna.code == 250
    assert len(sink.messages) == 1


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def test_nobody_listening_gives_a_connection_problem_reply_not_an_exception(
    closed_port: int,
) -> None:
    [reply] = send_each(closed_port, ["anna@example.nl"])
    assert reply.code == 0
    assert reply.message.startswith("connection problem: ")
    assert classify(reply) is Outcome.RETRY


def test_a_probe_says_whether_the_server_answers(sink: SmtpSink, closed_port: int) -> None:
    async def probe(port: int) -> bool:
        connection = connection_to(port)
        try:
            return await connection.probe()
        finally:
            await connection.close()

    assert asyncio.run(probe(sink.port)) is True
    assert asyncio.run(probe(closed_port)) is False
    assert sink.messages == []
