"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives.

Used by `mailer demo` and by the tests: nothing is mocked, messages really cross a socket.
A `reply` hook lets a test script the server's answer per message (4xx, 5xx, ...).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["DROP", "CapturedMessage", "SmtpSink"]

# A reply hook may return DROP to make the server close the connection without answering.
DROP = "DROP"


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    received_at: float  # time.monotonic()


ReplyHook = Callable[[CapturedMessage], str | None]


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self._sink.pipelining:  # aiosmtpd reads pipelined commands in order; it may say so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = CapturedMessage(
            mail_from=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            received_at=time.monotonic(),
        )
        answer = self._sink.reply(message) if self._sink.reply else None
        if answer == DROP:
            server.transport.close()  # the connection dies in the middle of DATA
            return "421 4.4.2 connection dropped"
        if answer is None or answer.startswith("2"):
            with self._sink.lock:
                self._sink.messages.append(message)
        return answer or "250 OK: queued"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class SmtpSink:
    """`with SmtpSink() as sink:` serves SMTP on 127.0.0.1:`sink.port` until the block ends."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        reply: ReplyHook | None = None,
        *,
        smtputf8: bool = False,
        pipelining: bool = False,
    ) -> None:
        self.host = host
        self.smtputf8 = smtputf8  # offer SMTPUTF8 (RFC 6531), as most providers do
        self.pipelining = pipelining  # offer PIPELINING (RFC 2920), as Postfix and Exim do
        self.port = 0
        self.reply = reply
        self.messages: list[CapturedMessage] = []
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> SmtpSink:
        for _ in range(5):  # the free port may be taken between probing and binding
            self.port = _free_port(self.host)
            controller = Controller(
                _Handler(self), hostname=self.host, port=self.port, decode_data=False,
                data_size_limit=10 * 1024 * 1024, enable_SMTPUTF8=self.smtputf8,
            )  # fmt: skip
            try:
                controller.start()
            except (OSError, RuntimeError):
                continue
            self._controller = controller
            return self
        raise RuntimeError("could not bind an SMTP sink on a free loopback port")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
