"""SMTP pipelining (RFC 2920): against a server that offers PIPELINING, every transport test
of test_transport.py and test_transport_replies.py runs again, and so do campaign runs of
test_sending_messages.py and test_sending_faults.py (imported below, with the fixtures here);
what is particular to pipelining is checked on its own.

The server is aiosmtpd, which reads commands from its stream in order and so takes pipelined
commands as they come; here it also says so in its EHLO reply, as Postfix and Exim do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailer.config import SmtpSettings
from mailer.delivery.pipelining import wire_body
from mailer.delivery.sink import SmtpSink
from mailer.delivery.transport import CONNECTION_LOST, Reply, SmtpConnection
from tests.test_sending_faults import (  # noqa: F401  (collected again, over pipelining)
    test_a_hard_bounce_fails_the_row_and_suppresses_the_address_for_the_next_campaign,
    test_a_temporary_failure_is_retried_up_to_max_attempts_then_fails,
)
from tests.test_sending_messages import (  # noqa: F401  (collected again, over pipelining)
    test_every_message_has_one_recipient_the_sender_identity_and_working_unsubscribe_links,
)
from tests.test_transport import (  # noqa: F401  (collected again, over pipelining)
    closed_port,
    test_a_message_is_accepted_for_exactly_one_recipient,
    test_a_probe_says_whether_the_server_answers,
    test_a_refusal_is_a_reply_and_the_connection_goes_on,
    test_after_a_421_the_next_message_reconnects_and_is_accepted,
    test_nobody_listening_gives_a_connection_problem_reply_not_an_exception,
)
from tests.test_transport_replies import (  # noqa: F401  (collected again, over pipelining)
    ScriptedHandler,
    serve_scripted,
    test_a_251_to_rcpt_is_accepted_and_the_message_delivered,
    test_a_421_at_mail_or_rcpt_is_retried_and_the_next_message_uses_a_new_connection,
    test_a_refused_recipient_is_a_reply_and_the_same_connection_goes_on,
    test_a_refused_sender_is_a_reply_and_the_same_connection_goes_on,
    test_a_server_that_does_not_answer_in_time_is_a_retry_on_a_fresh_connection,
    test_an_internationalised_address_goes_out_with_smtputf8,
    test_an_internationalised_address_refused_at_rcpt_is_that_reply,
    test_an_internationalised_address_through_a_server_without_smtputf8_fails_for_good,
    test_mail_and_rcpt_are_sent_in_the_syntax_of_rfc_5321,
    test_the_session_ends_with_quit,
)


class PipeliningHandler(ScriptedHandler):
    """The scripted server of test_transport_replies, offering PIPELINING; it also keeps
    how many EHLO it saw and the raw commands in the order they came."""

    def __init__(self) -> None:
        super().__init__()
        self.ehlos = 0
        self.rsets = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlos += 1
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.rsets += 1
        return "250 OK"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[ScriptedHandler, int]]:
    """The scripted server, offering PIPELINING as well."""
    yield from serve_scripted(request, PipeliningHandler())


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(pipelining=True) as server:
        yield server


def _connection(port: int) -> SmtpConnection:
    return SmtpConnection(
        SmtpSettings(host="127.0.0.1", port=port, security="none", timeout_seconds=5)
    )


def test_the_session_is_pipelined_when_the_server_offers_it(sink: SmtpSink) -> None:
    async def go() -> tuple[bool, list[Reply]]:
        connection = _connection(sink.port)
        try:
            replies = [await connection.send("a@b.example", "c@d.example", b"x\r\n")]
            return connection._pipe is not None, replies
        finally:
            await connection.close()

    pipelined, [reply] = asyncio.run(go())
    assert pipelined and reply.code == 250


def test_the_server_receives_the_message_byte_for_byte_with_dots_and_line_ends(
    sink: SmtpSink,
) -> None:
    # RFC 5321 §4.5.2: a line that starts with "." goes out with one more and comes back as
    # it was; a bare LF is sent as CRLF (the renderer makes CRLF only; this is the fallback).
    messages = [
        b"Subject: dots\r\n\r\n.first line\r\n..two\r\n.\r\nlast\r\n",
        b".\r\nstarts with a dot",
        b"Subject: bare\n\nline one\nline two\n",
    ]

    async def go() -> list[Reply]:
        connection = _connection(sink.port)
        try:
            return [await connection.send("a@b.example", "c@d.example", m) for m in messages]
        finally:
            await connection.close()

    assert [r.code for r in asyncio.run(go())] == [250, 250, 250]
    assert [m.data for m in sink.messages] == [
        messages[0],
        b".\r\nstarts with a dot\r\n",
        b"Subject: bare\r\n\r\nline one\r\nline two\r\n",
    ]


def test_dot_stuffing_and_the_end_of_data() -> None:
    assert wire_body(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert wire_body(b".a") == b"..a\r\n.\r\n"
    assert wire_body(b"a\rb\nc\r\n") == b"a\r\nb\r\nc\r\n.\r\n"


def test_many_messages_share_one_session_and_one_ehlo(
    server: tuple[ScriptedHandler, int],
) -> None:
    handler, port = server
    handler.rcpt_answers["gone@example.nl"] = "550 5.1.1 No such user"
    recipients = [f"p{n}@example.nl" for n in range(20)]
    recipients[7] = "gone@example.nl"

    async def go() -> list[Reply]:
        connection = _connection(port)
        try:
            return [await connection.send("n@bakkerij.example", r, b"x\r\n") for r in recipients]
        finally:
            await connection.close()

    replies = asyncio.run(go())
    assert [r.code for r in replies] == [250] * 7 + [550] + [250] * 12
    assert handler.delivered == [r for r in recipients if r != "gone@example.nl"]
    assert len(set(handler.connections)) == 1
    assert isinstance(handler, PipeliningHandler)
    assert (handler.ehlos, handler.rsets) == (1, 1)  # the refused envelope was reset, once


def _timed_sends(delays: list[float], timeout: float) -> tuple[list[Reply], float]:
    """Send one message per delay over one pipelined connection with `timeout`; the server
    takes each delay before it answers the message's body."""
    late = iter(delays)

    def slow(message: Any) -> None:
        time.sleep(next(late))

    with SmtpSink(pipelining=True, reply=slow) as server:

        async def go() -> list[Reply]:
            connection = SmtpConnection(
                SmtpSettings(host="127.0.0.1", port=server.port, security="none",
                             timeout_seconds=timeout)
            )  # fmt: skip
            try:
                return [await connection.send("a@b.example", f"c{n}@d.example", b"x\r\n")
                        for n in range(len(delays))]  # fmt: skip
            finally:
                await connection.close()

        start = time.monotonic()
        replies = asyncio.run(go())
        return replies, time.monotonic() - start


def test_a_pipelined_server_that_stops_answering_times_out() -> None:
    [late], elapsed = _timed_sends([1.5], timeout=0.3)
    assert late.code == CONNECTION_LOST
    assert late.message == "connection problem: the server did not answer in time"
    assert 0.3 <= elapsed < 1.5  # given up before the server answered


def test_the_timeout_counts_from_each_write_not_from_the_first() -> None:
    # Four answers 0.2 s apart each: within a 0.5 s timeout every time, 0.8 s in all.
    replies, elapsed = _timed_sends([0.2] * 4, timeout=0.5)
    assert [r.code for r in replies] == [250] * 4
    assert elapsed >= 0.8


def test_the_session_is_pipelined_on_uvloop_the_loop_of_mailer_serve(sink: SmtpSink) -> None:
    # Scheduled runs send from inside `mailer serve`, which runs on uvloop, whose transports
    # are not asyncio.Transport subclasses.
    uvloop = pytest.importorskip("uvloop")

    async def go() -> tuple[bool, list[int]]:
        connection = _connection(sink.port)
        try:
            replies = [await connection.send("a@b.example", f"c{n}@d.example", b"x\r\n")
                       for n in range(3)]  # fmt: skip
            return connection._pipe is not None, [r.code for r in replies]
        finally:
            await connection.close()

    assert uvloop.run(go()) == (True, [250, 250, 250])
    assert [m.recipients for m in sink.messages] == [("c0@d.example",), ("c1@d.example",),
                                                    ("c2@d.example",)]  # fmt: skip
