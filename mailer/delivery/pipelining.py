"""SMTP pipelining (RFC 2920) on a session that aiosmtplib opened.

aiosmtplib cannot pipeline: its protocol waits for one reply at a time and drops data that
arrives while no command is outstanding (docs/performance.md). For a server that offers
PIPELINING, aiosmtplib still connects and does TLS, EHLO and AUTH; then the connection's
transport is handed to `PipelinedSession`, which writes MAIL, RCPT and DATA in one go and
pairs the replies with the commands in order. That is two round trips per message instead of
four, half the writes and wake-ups, and no regular-expression pass over the body per message:
the renderer's bytes are CRLF-only and are dot-stuffed with one `replace`.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import cast

from aiosmtplib import SMTPResponse as Reply  # (code, message), as aiosmtplib reads one

__all__ = ["PipelinedSession", "wire_body"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # never inside a command argument (injection)
_MAX_BUFFER = 1 << 20  # a reply longer than this is not SMTP


def wire_body(message: bytes) -> bytes:
    """The message as DATA sends it: CRLF line ends, dot-stuffed (RFC 5321 §4.5.2), ended by
    CRLF.CRLF. A rendered message is CRLF-only already, so the line-end pass is skipped."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class PipelinedSession(asyncio.Protocol):
    """Takes over an open SMTP connection (after EHLO) and pipelines each transaction.

    Replies are parsed as they arrive and given to the waiting commands oldest first. A lost
    connection, a reply nobody asked for or a timeout ends the session: `open` turns False
    and every waiting command raises (ConnectionError or TimeoutError, both OSError).
    """

    def __init__(self, transport: asyncio.BaseTransport, timeout: float | None) -> None:
        # uvloop's transports (`mailer serve` runs on uvloop) are not asyncio.Transport
        # subclasses but have the same methods.
        self._transport = cast(asyncio.Transport, transport)
        self._timeout = timeout
        self._buffer = bytearray()
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._lost: OSError | None = None
        # One watchdog per session instead of a timer per write (its creation and cancel
        # were a few per cent of the sending loop): each write moves the deadline, and the
        # watchdog, when it wakes, ends the session if replies are still owed past it.
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        transport.set_protocol(self)

    @property
    def open(self) -> bool:
        return self._lost is None and not self._transport.is_closing()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _MAX_BUFFER:
            self._end(ConnectionError("the server's reply is too long"))
            return
        while (reply := self._parse()) is not None:
            if not self._waiting:
                self._end(ConnectionError(f"the server sent a reply nobody asked for: {reply}"))
                return
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(ConnectionError(f"the server closed the connection{f': {exc}' if exc else ''}"))

    def eof_received(self) -> bool:
        self._end(ConnectionError("the server closed the connection"))
        return False

    def _parse(self) -> Reply | None:
        """One complete reply (all lines of a multiline one) off the buffer, or None yet."""
        lines: list[bytes] = []
        offset = 0
        while True:
            end = self._buffer.find(b"\n", offset)
            if end == -1:
                return None
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                break
        del self._buffer[:offset]
        try:
            code = int(line[:3])
        except ValueError:
            self._end(ConnectionError(f"the server's reply is not SMTP: {line[:80]!r}"))
            return None
        return Reply(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))

    def _end(self, why: OSError) -> None:
        if self._lost is None:
            self._lost = why
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(why)
                waiter.exception()  # retrieved: a later waiter of the same write is not awaited
        self._transport.abort()

    # -- commands ------------------------------------------------------------------------------

    async def _replies(self, data: bytes, count: int) -> list[Reply]:
        """Write `data` (`count` commands, or a body) and wait for its `count` replies."""
        if self._lost is not None:
            raise self._lost
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in range(count)]
        self._waiting.extend(waiters)
        self._transport.write(data)
        if self._timeout:
            self._deadline = loop.time() + self._timeout
            if self._watchdog is None:
                self._watchdog = loop.call_at(self._deadline, self._watch)
        return [await waiter for waiter in waiters]

    def _watch(self) -> None:
        self._watchdog = None
        if not self._waiting or self._lost is not None:
            return  # nothing owed: the next write sets it going again
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self._end(TimeoutError("the server did not answer in time"))
        else:
            self._watchdog = loop.call_at(self._deadline, self._watch)

    async def transaction(
        self, sender: bytes, recipient: bytes, body: bytes, options: bytes = b""
    ) -> Reply:
        """MAIL, RCPT and DATA in one write, then the body (`wire_body`): the reply that
        decides the message, the first refusal or the reply to the body."""
        if _CONTROL.search(sender + recipient + options):
            raise ValueError("an address contains a control character")
        mail, rcpt, data = await self._replies(
            b"MAIL FROM:<%s>%s\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender, options, recipient), 3
        )
        refusal = next((r for r in (mail, rcpt, data) if r.code not in (250, 251, 354)), None)
        if refusal is None and (mail.code, data.code) == (250, 354):
            [done] = await self._replies(body, 1)
            return done
        if data.code == 354:
            # RFC 2920 §3.1 has the server refuse DATA without a valid recipient; one that
            # takes it anyway is not sent an empty message: the session ends instead.
            self._end(ConnectionError("the server took DATA after refusing the envelope"))
            return refusal or data
        assert refusal is not None
        if refusal.code != 421:  # RFC 5321 §3.8: after 421 the server closes the channel
            await self._replies(b"RSET\r\n", 1)
        return refusal

    async def command(self, line: bytes) -> Reply:
        [reply] = await self._replies(line + b"\r\n", 1)
        return reply

    async def quit(self) -> None:
        """QUIT (RFC 5321 §4.1.1.10) and close; a session already lost is only closed."""
        try:
            if self.open:
                await self.command(b"QUIT")
        except OSError:
            pass
        finally:
            self._lost = self._lost or ConnectionError("the session has ended")
            self._transport.close()
