"""SMTP replies at their edges: the classification table's boundaries, and a real server that
answers MAIL and RCPT (not only DATA) with what a relay may say: 251, 421, 450, 550."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from mailer.config import SmtpSettings
from mailer.delivery.sink import _free_port
from mailer.delivery.transport import Outcome, Reply, SmtpConnection, classify

SENT, RETRY, HARD, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.HARD_BOUNCE, Outcome.FAILED

# RFC 5321 §4.2.1: 2yz completed, 4yz transient (try again), 5yz permanent. RFC 3463: the
# enhanced code's class and subject; X.1.x addressing and X.2.1 disabled mailbox mean the
# address is dead (a hard bounce suppresses it), anything else permanent is a failure only.
EDGES = [
    (200, "2.0.0 done", SENT), (250, "2.0.0 Ok: queued", SENT),
    (251, "User not local; will forward", SENT), (299, "ok", SENT), (199, "odd", FAILED),
    (300, "odd", FAILED), (354, "Start mail input", FAILED), (399, "odd", FAILED),
    (400, "4.0.0 Try again", RETRY), (421, "4.3.2 Service not available", RETRY),
    (450, "4.2.1 Mailbox busy", RETRY), (499, "4.0.0 odd", RETRY),
    (450, "5.1.1 text says permanent, the code says transient", RETRY),
    (500, "5.5.2 Syntax error", FAILED), (500, "Syntax error, command unrecognised", FAILED),
    (550, "5.1.1 no such user", HARD), (550, "5.2.1 mailbox disabled", HARD),
    (550, "5.2.2 mailbox full", FAILED), (550, "5.7.1 relaying denied", FAILED),
    (552, "5.3.4 Message too big", FAILED), (554, "5.7.1 Rejected as spam", FAILED),
    (554, "Transaction failed", FAILED), (554, "5.1.0 Address rejected", HARD),
    (550, "4.1.1 an enhanced code of the wrong class", FAILED),
    # The enhanced code decides over the words: 5.7.1 is a policy refusal, whatever it says.
    (550, "5.7.1 Relaying denied: no such user here", FAILED),
    # Without an enhanced code only a 550 whose text says the mailbox does not exist is one.
    (550, "No such user here", HARD), (550, "User unknown in virtual mailbox table", HARD),
    (550, "unknown user piet", HARD), (550, "Requested mailbox does not exist", HARD),
    (550, "Mailbox unavailable", FAILED), (551, "User unknown; try elsewhere", FAILED),
    (553, "no such user", FAILED),
    (0, "connection problem: Connection reset", RETRY),
]  # fmt: skip


@pytest.mark.parametrize(("code", "text", "outcome"), EDGES,
                         ids=[f"{c} {t}" for c, t, _ in EDGES])  # fmt: skip
def test_the_reply_classification_at_its_edges(code: int, text: str, outcome: Outcome) -> None:
    assert classify(Reply(code, text)) is outcome


def test_a_reply_reads_as_the_server_wrote_it_in_the_ledger() -> None:
    assert str(Reply(550, "5.1.1 <x@y.nl>: no such user")) == "550 5.1.1 <x@y.nl>: no such user"
    assert str(Reply(250, "")) == "250"
    assert str(Reply(0, "connection problem: timed out")) == "0 connection problem: timed out"


# -- a real server that scripts its answers to MAIL and RCPT -----------------------------------


class RecordingSMTP(SMTP):
    """aiosmtpd's server, keeping the exact argument of each MAIL and RCPT command."""

    commands: list[str]

    async def smtp_MAIL(self, arg: str) -> None:
        self.commands.append(f"MAIL {arg}")
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        self.commands.append(f"RCPT {arg}")
        await super().smtp_RCPT(arg)


class RecordingController(Controller):
    def __init__(self, handler: Any, commands: list[str], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.commands = commands

    def factory(self) -> SMTP:
        server = RecordingSMTP(self.handler, **self.SMTP_kwargs)
        server.commands = self.commands
        return server


class ScriptedHandler:
    """aiosmtpd hooks: MAIL answers come from `mail_answers` in turn, RCPT answers by address."""

    def __init__(self) -> None:
        self.mail_answers: list[str] = []
        self.rcpt_answers: dict[str, str] = {}
        self.delivered: list[str] = []
        self.connections: list[tuple[str, int]] = []  # the peer of each MAIL: one per session
        self.stall_seconds = 0.0
        self.quits = 0
        self.commands: list[str] = []  # MAIL and RCPT exactly as sent

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.connections.append(tuple(session.peer))  # type: ignore[arg-type]
        answer = self.mail_answers.pop(0) if self.mail_answers else "250 OK"
        if answer.startswith("2"):
            envelope.mail_from = address
        return answer

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        answer = self.rcpt_answers.get(address, "250 OK")
        if answer.startswith("2"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stall_seconds:  # a server that takes longer than the client waits
            stall, self.stall_seconds = self.stall_seconds, 0.0
            await asyncio.sleep(stall)
        self.delivered.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"


def serve_scripted(
    request: pytest.FixtureRequest, handler: ScriptedHandler
) -> Iterator[tuple[ScriptedHandler, int]]:
    """`handler` on loopback; it offers SMTPUTF8 unless the test asks otherwise."""
    port = _free_port("127.0.0.1")
    smtputf8 = getattr(request, "param", "with SMTPUTF8") == "with SMTPUTF8"
    controller = RecordingController(
        handler, handler.commands, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[ScriptedHandler, int]]:
    """The scripted server on loopback."""
    yield from serve_scripted(request, ScriptedHandler())


def send_each(port: int, recipients: list[str], timeout: float = 5) -> list[Reply]:
    async def go() -> list[Reply]:
        connection = SmtpConnection(
            SmtpSettings(host="127.0.0.1", port=port, security="none", timeout_seconds=timeout)
        )
        try:
            return [
                await connection.send("nieuws@bakkerij.example", r, b"Subject: x\r\n\r\nx\r\n")
                for r in recipients
            ]
        finally:
            await connection.close()

    return asyncio.run(go())


def test_mail_and_rcpt_are_sent_in_the_syntax_of_rfc_5321(
    server: tuple[ScriptedHandler, int],
) -> None:
    # RFC 5321 §4.1.1.2-3: "MAIL FROM:<reverse-path>", "RCPT TO:<forward-path>"; a lenient
    # server (aiosmtpd) takes a missing ">", a strict relay would refuse every message.
    handler, port = server
    send_each(port, ["anna@example.nl"])
    assert handler.commands == ["MAIL FROM:<nieuws@bakkerij.example>", "RCPT TO:<anna@example.nl>"]


def test_a_251_to_rcpt_is_accepted_and_the_message_delivered(
    server: tuple[ScriptedHandler, int],
) -> None:
    handler, port = server
    handler.rcpt_answers["piet@elders.nl"] = "251 2.1.5 User not local; will forward"
    [reply] = send_each(port, ["piet@elders.nl"])
    assert (reply.code, classify(reply)) == (250, SENT)
    assert handler.delivered == ["piet@elders.nl"]


@pytest.mark.parametrize("step", ["MAIL", "RCPT"])
def test_a_421_at_mail_or_rcpt_is_retried_and_the_next_message_uses_a_new_connection(
    server: tuple[ScriptedHandler, int], step: str
) -> None:
    handler, port = server
    if step == "MAIL":
        handler.mail_answers.append("421 4.3.2 Service shutting down")
    else:
        handler.rcpt_answers["anna@example.nl"] = "421 4.3.2 Service shutting down"
    closing, bram = send_each(port, ["anna@example.nl", "bram@example.nl"])
    assert closing == Reply(421, "4.3.2 Service shutting down")
    assert classify(closing) is RETRY
    assert bram.code == 250 and handler.delivered == ["bram@example.nl"]
    # RFC 5321 §3.8: after a 421 the client closes the channel; the next message reconnects.
    first, second = handler.connections
    assert first != second


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [("450 4.2.1 Mailbox busy", RETRY), ("550 5.1.1 No such user", HARD),
     ("554 5.7.1 Recipient refused by policy", FAILED)],
    ids=["450", "550", "554"],
)  # fmt: skip
def test_a_refused_recipient_is_a_reply_and_the_same_connection_goes_on(
    server: tuple[ScriptedHandler, int], answer: str, outcome: Outcome
) -> None:
    handler, port = server
    handler.rcpt_answers["gone@example.nl"] = answer
    gone, anna = send_each(port, ["gone@example.nl", "anna@example.nl"])
    assert str(gone) == answer and classify(gone) is outcome
    # The transaction was reset (RSET), so the next MAIL on the same connection is accepted.
    assert anna.code == 250 and handler.delivered == ["anna@example.nl"]
    first, second = handler.connections
    assert first == second


def test_a_refused_sender_is_a_reply_and_the_same_connection_goes_on(
    server: tuple[ScriptedHandler, int],
) -> None:
    handler, port = server
    handler.mail_answers.append("550 5.7.1 Sender not allowed")
    refused, anna = send_each(port, ["anna@example.nl", "anna@example.nl"])
    assert refused == Reply(550, "5.7.1 Sender not allowed")
    assert classify(refused) is FAILED
    assert anna.code == 250 and handler.delivered == ["anna@example.nl"]
    assert handler.connections[0] == handler.connections[1]


def test_an_internationalised_address_goes_out_with_smtputf8(
    server: tuple[ScriptedHandler, int],
) -> None:
    # RFC 6531: a non-ASCII mailbox needs SMTPUTF8, which sendmail negotiates.
    handler, port = server
    [reply] = send_each(port, ["joël@voorbeeld.example"])
    assert (reply.code, classify(reply)) == (250, SENT)
    assert handler.delivered == ["joël@voorbeeld.example"]


def test_an_internationalised_address_refused_at_rcpt_is_that_reply(
    server: tuple[ScriptedHandler, int],
) -> None:
    handler, port = server
    handler.rcpt_answers["zoë@voorbeeld.example"] = "550 5.1.1 No such user"
    gone, anna = send_each(port, ["zoë@voorbeeld.example", "anna@example.nl"])
    assert gone == Reply(550, "5.1.1 No such user") and classify(gone) is HARD
    assert anna.code == 250 and handler.delivered == ["anna@example.nl"]


@pytest.mark.parametrize("server", ["without SMTPUTF8"], indirect=True)
def test_an_internationalised_address_through_a_server_without_smtputf8_fails_for_good(
    server: tuple[ScriptedHandler, int],
) -> None:
    # The message cannot go through this relay, ever, but the address may well exist: a
    # failure (RFC 6531 §3.7.4.2: 553 5.6.7), not a hard bounce; and no exception.
    handler, port = server
    zoe, anna = send_each(port, ["zoë@voorbeeld.example", "anna@example.nl"])
    assert zoe.code == 553 and zoe.message.startswith("5.6.7 ")
    assert classify(zoe) is FAILED
    assert anna.code == 250 and handler.delivered == ["anna@example.nl"]


def test_a_server_that_does_not_answer_in_time_is_a_retry_on_a_fresh_connection(
    server: tuple[ScriptedHandler, int],
) -> None:
    handler, port = server
    handler.stall_seconds = 4.0
    late, anna = send_each(port, ["late@example.nl", "anna@example.nl"], timeout=2)
    assert late.code == 0 and late.message.startswith("connection problem: ")
    assert classify(late) is RETRY
    # The timed-out session is closed, not reused mid-transaction: the next one is new.
    assert anna.code == 250 and "anna@example.nl" in handler.delivered
    assert handler.connections[0] != handler.connections[-1]


def test_the_session_ends_with_quit(server: tuple[ScriptedHandler, int]) -> None:
    handler, port = server
    send_each(port, ["anna@example.nl"])
    assert handler.quits == 1  # RFC 5321 §4.1.1.10


@pytest.mark.parametrize(
    ("security", "implicit_tls", "starttls"),
    [("none", False, False), ("starttls", False, True), ("tls", True, False)],
)
def test_the_security_setting_chooses_implicit_tls_or_starttls(
    security: str, implicit_tls: bool, starttls: bool
) -> None:
    # The client is only built here, not connected: a TLS server on loopback would need a
    # certificate the client trusts. aiosmtplib's own tests cover the handshakes.
    connection = SmtpConnection(SmtpSettings(host="127.0.0.1", port=25, security=security))
    client = connection._client()
    assert (client.use_tls, client._start_tls_on_connect) == (implicit_tls, starttls)
