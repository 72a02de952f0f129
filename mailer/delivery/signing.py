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
sent). Only the signature headers travel back (mailer.core.dkim.signature_headers), a few
hundred bytes a message. The child is this module run as `python -m
mailer.delivery.signing`; its keys reach it over its standard input, never on a command line
or in a file. It ignores Ctrl-C, so messages in flight while `campaign send` winds down
still get their signatures, and it ends when its standard input closes, also when the
worker dies without closing it.
"""

from __future__ import annotations

import asyncio
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives import serialization

from mailer.core.dkim import SigningKey, signature_headers
from mailer.errors import SigningError

__all__ = ["SigningProcess"]

_LENGTH = struct.Struct(">I")
_STDERR_KEPT = 4096  # the end of what the child writes there, for the error message


class SigningProcess:
    """Signs messages with `keys` in a child process, started at the first message.

    The child's answers are read in the event loop's callbacks (a subprocess protocol), not
    by a task, and `sign` hands back a future without a coroutine of its own: on the loop
    that sends, a signature costs a few dict and deque operations.
    """

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self._keys = tuple(keys)
        self._starting: asyncio.Task[None] | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._waiting: list[tuple[asyncio.Future[bytes], int, bytes]] = []
        self._in_flight: deque[asyncio.Future[bytes]] = deque()  # sent, oldest first
        self._answers = bytearray()
        self._errors = bytearray()
        self._failed: SigningError | None = None
        self._ended: asyncio.Future[None] | None = None
        self.batches = 0  # batches sent, for the tests and benchmarks

    def sign(self, message: bytes, timestamp: int) -> asyncio.Future[bytes]:
        """A future of the DKIM-Signature headers to put in front of `message`
        (mailer.core.dkim.signature_headers); it fails with SigningError."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if self._failed is not None:
            future.set_exception(self._failed)
            return future
        self._waiting.append((future, timestamp, message))
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
        self._send_waiting()

    def _send_waiting(self) -> None:
        # Not started yet: _start sends them. Failed: _fail has answered them already.
        if self._stdin is None or not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        self._in_flight.extend(future for future, _, _ in batch)
        self.batches += 1
        self._stdin.write(_frame([(timestamp, data) for _, timestamp, data in batch]))

    def _received(self, data: bytes) -> None:
        answers = self._answers
        answers += data
        offset = 0
        while len(answers) - offset >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(answers, offset)
            end = offset + _LENGTH.size + length
            if len(answers) < end:
                break
            signed, value = pickle.loads(answers[offset + _LENGTH.size : end])
            offset = end
            future = self._in_flight.popleft()
            if future.done():  # its connection was cancelled meanwhile
                continue
            if signed:
                future.set_result(value)
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
        _fail((future for future, _, _ in self._waiting), self._failed)
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


def _fail(futures: Iterable[asyncio.Future[bytes]], error: SigningError) -> None:
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
    """The child: read the keys, then sign each batch of (timestamp, message), answering
    every message as soon as it is signed, in order."""
    material = _read_frame(stdin)
    if material is None:
        return
    keys = []
    for selector, domain, algorithm, der in material:
        private_key: Any = serialization.load_der_private_key(der, password=None)
        keys.append(SigningKey(selector, domain, algorithm, private_key))
    while (batch := _read_frame(stdin)) is not None:
        for timestamp, message in batch:
            answer: tuple[bool, bytes | str]
            try:
                answer = (True, signature_headers(message, keys, timestamp))
            except ValueError as bad:  # one message that is not RFC 5322, not the batch
                answer = (False, str(bad))
            stdout.write(_frame(answer))
            stdout.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
