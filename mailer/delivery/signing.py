"""DKIM signatures made in a process of their own, beside the sending worker's event loop.

One RSA-2048 signature costs 0.35 to 1.2 ms of CPU depending on the processor (`openssl
speed rsa2048`), about as much as the rest of a message's work in the worker. In the
worker's own process it takes the core the event loop needs; in a thread it still fights the
loop for the GIL around each call. A child process signs on the other core while the loop
renders and talks SMTP (RSA-signed `campaign send` at 0.42 of unsigned inline, 0.69 here;
Ed25519 at 0.70 and 0.83: docs/performance.md).

What the connections ask for while the child is busy goes to it as one write, and the child
answers each message as soon as it is signed, not the batch at the end (with the answers
held back, the loop waited while the child signed and the child waited while the loop
sent). For `sign` only the signature headers travel back (mailer.core.dkim.signature_headers),
a few hundred bytes a message. With Ed25519 keys alone the worker has the child render the
message too (`make`): those signatures leave the child most of its core, while the loop is
what limits a signed run (0.85 -> 0.94 of unsigned); an RSA signature fills that core by
itself, so there the loop renders. The child is this module run as `python -m
mailer.delivery.signing`; its keys, and for `make` the settings and secret keys, reach it
over its standard input, never on a command line or in a file. It ignores Ctrl-C, so
messages in flight while `campaign send` winds down still get their signatures, and it ends
when its standard input closes, also when the worker dies without closing it.
"""

from __future__ import annotations

import asyncio
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from cryptography.hazmat.primitives import serialization

from mailer.core.dkim import SigningKey, signature_headers
from mailer.errors import InputError, SigningError

if TYPE_CHECKING:  # the child imports them only to render (`_Renderer`): a quicker start
    from mailer.config import Settings
    from mailer.core.render import CampaignContent, MessageFactory, Recipient

__all__ = ["SigningProcess"]

_LENGTH = struct.Struct(">I")
_DONE, _BAD_INPUT, _FAILED = "done", "input", "failed"  # how the child answers an item
_STDERR_KEPT = 4096  # the end of what the child writes there, for the error message


class SigningProcess:
    """Signs messages with `keys` in a child process, started at the first message.

    The child's answers are read in the event loop's callbacks (a subprocess protocol), not
    by a task, and `sign` hands back a future without a coroutine of its own: on the loop
    that sends, a signature costs a few dict and deque operations.
    """

    def __init__(
        self, keys: Sequence[SigningKey], rendering: tuple[Settings, Sequence[str]] | None = None
    ) -> None:
        self._keys = tuple(keys)
        # The settings and secret keys the child renders with (`make`), or None (`sign` only).
        self._rendering = rendering
        self._campaigns: set[int] = set()  # those whose content the child has been sent
        self._starting: asyncio.Task[None] | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._waiting: list[tuple[asyncio.Future[Any], tuple[Any, ...]]] = []
        self._in_flight: deque[asyncio.Future[Any]] = deque()  # sent, oldest first
        self._answers = bytearray()
        self._errors = bytearray()
        self._failed: SigningError | None = None
        self._ended: asyncio.Future[None] | None = None
        self.batches = 0  # batches sent, for the tests and benchmarks

    def sign(self, message: bytes, timestamp: int) -> asyncio.Future[bytes]:
        """A future of the DKIM-Signature headers to put in front of `message`
        (mailer.core.dkim.signature_headers); it fails with SigningError."""
        return self._ask(("sign", timestamp, message))

    def make(
        self,
        campaign_id: int,
        content: CampaignContent,
        recipient: Recipient,
        *,
        basis: str,
        now: datetime,
        delivery_ref: str,
    ) -> asyncio.Future[tuple[bytes, str]]:
        """A future of the message rendered (`MessageFactory.render`) and signed in the child:
        its bytes, the signature headers in front, and its Message-ID. It fails with
        InputError for what the recipient's data does to the message, else SigningError."""
        assert self._rendering is not None, "started without what rendering needs"
        known = campaign_id in self._campaigns
        self._campaigns.add(campaign_id)
        return self._ask(
            ("make", campaign_id, None if known else content, recipient, basis, now, delivery_ref)
        )

    def _ask(self, item: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._failed is not None:
            future.set_exception(self._failed)
            return future
        self._waiting.append((future, item))
        if self._stdin is None:
            if self._starting is None:
                self._starting = loop.create_task(self._start())
        elif len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)
        return future

    async def close(self) -> None:
        """End the child: it finishes what it was sent, then exits on end of input."""
        if self._starting is not None:
            await self._starting
        if self._transport is None or self._ended is None:
            return
        assert self._stdin is not None
        self._stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), timeout=10)
        except TimeoutError:
            self._transport.kill()
            await self._ended

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _ChildProtocol(self),
                sys.executable,
                "-m",
                __name__,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as failed:
            self._fail(SigningError(f"cannot start the DKIM signing process: {failed}"))
            self._ended.set_result(None)
            return
        self._transport = transport
        self._stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        self._stdin.write(_frame([_key_material(key) for key in self._keys]))
        self._stdin.write(_frame(self._rendering))
        self._send_waiting()

    def _send_waiting(self) -> None:
        # Not started yet: _start sends them. Failed: _fail has answered them already.
        if self._stdin is None or not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self._in_flight.extend(future for future, _ in batch)
        self.batches += 1
        self._stdin.write(_frame([item for _, item in batch]))

    def _received(self, data: bytes) -> None:
        answers = self._answers
        answers += data
        offset = 0
        while len(answers) - offset >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(answers, offset)
            end = offset + _LENGTH.size + length
            if len(answers) < end:
                break
            kind, value = pickle.loads(answers[offset + _LENGTH.size : end])
            offset = end
            future = self._in_flight.popleft()
            if future.done():  # its connection was cancelled meanwhile
                continue
            if kind == _DONE:
                future.set_result(value)
            elif kind == _BAD_INPUT:
                future.set_exception(InputError(value))
            else:
                future.set_exception(SigningError(f"cannot sign a message: {value}"))
        del answers[:offset]

    def _exited(self) -> None:
        assert self._transport is not None and self._ended is not None
        errors = self._errors.decode("utf-8", "replace").strip()
        self._fail(SigningError(
            f"the DKIM signing process ended (exit code {self._transport.get_returncode()})"
            + (f": {errors.splitlines()[-1]}" if errors else "")
        ))  # fmt: skip
        self._transport.close()  # the child is gone: this only releases the transport
        if not self._ended.done():
            self._ended.set_result(None)

    def _fail(self, error: SigningError) -> None:
        self._failed = self._failed or error
        _fail(self._in_flight, self._failed)
        self._in_flight.clear()
        _fail((future for future, _ in self._waiting), self._failed)
        self._waiting = []


class _ChildProtocol(asyncio.SubprocessProtocol):
    def __init__(self, owner: SigningProcess) -> None:
        self._owner = owner

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._owner._received(data)
        else:
            errors = self._owner._errors
            errors += data
            del errors[:-_STDERR_KEPT]

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once the child has exited and all its pipes are read to the end.
        self._owner._exited()


def _fail(futures: Iterable[asyncio.Future[Any]], error: SigningError) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


def _key_material(key: SigningKey) -> tuple[str, str, str, bytes]:
    der = key.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key.selector, key.domain, key.algorithm, der


def _frame(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def _read_frame(stream: BinaryIO) -> Any | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    return pickle.loads(stream.read(length))


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child: read the keys and what rendering needs, then make each batch's items (a
    signature, or a message rendered and signed), answering each as soon as it is made, in
    order."""
    material = _read_frame(stdin)
    if material is None:
        return
    keys = []
    for selector, domain, algorithm, der in material:
        private_key: Any = serialization.load_der_private_key(der, password=None)
        keys.append(SigningKey(selector, domain, algorithm, private_key))
    rendering = _read_frame(stdin)
    renderer = None if rendering is None else _Renderer(*rendering)
    while (batch := _read_frame(stdin)) is not None:
        for item in batch:
            answer: tuple[str, Any]
            try:
                if item[0] == "sign":
                    answer = (_DONE, signature_headers(item[2], keys, item[1]))
                else:
                    assert renderer is not None
                    answer = (_DONE, renderer.make(keys, *item[1:]))
            except InputError as bad:  # this recipient's data, not the batch
                answer = (_BAD_INPUT, str(bad))
            except ValueError as bad:  # one message that is not RFC 5322, not the batch
                answer = (_FAILED, str(bad))
            stdout.write(_frame(answer))
            stdout.flush()


class _Renderer:
    """What the worker's MessageSender renders with, rebuilt in the child."""

    def __init__(self, settings: Settings, secret_keys: Sequence[str]) -> None:
        from mailer.core.render import make_environment
        from mailer.core.tokens import TokenSigner

        self._settings = settings
        self._env = make_environment(settings)
        self._token = TokenSigner(secret_keys).unsubscribe_token
        self._contents: dict[int, CampaignContent] = {}
        self._factories: dict[int, MessageFactory] = {}

    def make(
        self,
        keys: Sequence[SigningKey],
        campaign_id: int,
        content: CampaignContent | None,
        recipient: Recipient,
        basis: str,
        now: datetime,
        delivery_ref: str,
    ) -> tuple[bytes, str]:
        if content is not None:  # the campaign's first message here
            self._contents[campaign_id] = content
        factory = self._factories.get(campaign_id)
        if factory is None:  # built at first use: one that fails fails each message, alone
            from mailer.core.render import MessageFactory

            factory = self._factories[campaign_id] = MessageFactory(
                self._env, self._settings, self._contents[campaign_id], self._token
            )
        message = factory.render(recipient, basis=basis, now=now, delivery_ref=delivery_ref)
        headers = signature_headers(message.data, keys, int(now.timestamp()))
        return headers + message.data, message.message_id


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
