"""DKIM signatures made in a process of their own, beside the sending worker's event loop.

An RSA-2048 signature costs 1.2 ms of CPU on this kind of machine (`openssl speed rsa2048`),
more than the rest of a message's work in the worker. In the worker's own process it takes
the core the event loop needs; in a thread it still fights the loop for the GIL around each
call (measured: RSA at 0.49 of unsigned). A child process signs on the other core while the
loop renders and talks SMTP.

What the connections ask for while the child is busy goes to it as one write, and the child
answers each message as soon as it is signed, not the batch at the end: with a batch's
answers held back, the loop waited while the child signed and the child waited while the loop
sent (RSA at 0.49 of unsigned with neither process busy). Only the signature headers travel
back (mailer.core.dkim.signature_headers), a few hundred bytes a message.
The child is this module run as `python -m mailer.delivery.signing`; its keys reach it over
its standard input, never on a command line or in a file. It ignores Ctrl-C, so messages
in flight while `campaign send` winds down still get their signatures, and it ends when its
standard input closes, also when the worker dies without closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import serialization

from mailer.core.dkim import SigningKey, signature_headers
from mailer.errors import SigningError

__all__ = ["SigningProcess"]

_LENGTH = struct.Struct(">I")
_Batch = list[tuple[asyncio.Future[bytes], int, bytes]]
_Waiting = deque[asyncio.Future[bytes]]


class SigningProcess:
    """Signs messages with `keys` in a child process, started at the first message."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self._keys = tuple(keys)
        self._starting: asyncio.Task[asyncio.subprocess.Process] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: _Batch = []
        self._in_flight: _Waiting = deque()  # sent to the child, oldest first
        self._failed: SigningError | None = None
        self.batches = 0  # batches sent, for the benchmarks

    async def sign(self, message: bytes, timestamp: int) -> bytes:
        """`message` with its DKIM-Signature headers in front (mailer.core.dkim.sign_message)."""
        if self._process is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        if self._failed is not None:
            raise self._failed
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((future, timestamp, message))
        if len(self._waiting) == 1:
            asyncio.get_running_loop().call_soon(self._send_waiting)
        return await future + message

    async def close(self) -> None:
        """End the child: it finishes what it was sent, then exits on end of input."""
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await self._starting
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader

    async def _start(self) -> asyncio.subprocess.Process:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as failed:
            self._failed = SigningError(f"cannot start the DKIM signing process: {failed}")
            raise self._failed from failed
        assert process.stdin is not None
        process.stdin.write(_frame([_key_material(key) for key in self._keys]))
        self._process = process
        self._reader = asyncio.ensure_future(self._read(process))
        return process

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        if self._failed is not None:
            _fail((future for future, _, _ in batch), self._failed)
            return
        assert self._process is not None and self._process.stdin is not None
        self._in_flight.extend(future for future, _, _ in batch)
        self.batches += 1
        self._process.stdin.write(_frame([(timestamp, data) for _, timestamp, data in batch]))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and process.stderr is not None
        try:
            while True:
                head = await process.stdout.readexactly(_LENGTH.size)
                signed, value = pickle.loads(
                    await process.stdout.readexactly(*_LENGTH.unpack(head))
                )
                future = self._in_flight.popleft()
                if future.done():  # its connection was cancelled meanwhile
                    continue
                if signed:
                    future.set_result(value)
                else:
                    future.set_exception(SigningError(f"cannot sign a message: {value}"))
        except asyncio.IncompleteReadError:
            pass  # end of output: the child ended, on purpose or not
        code = await process.wait()
        errors = (await process.stderr.read()).decode("utf-8", "replace").strip()
        self._failed = SigningError(
            f"the DKIM signing process ended (exit code {code})"
            + (f": {errors.splitlines()[-1]}" if errors else "")
        )
        _fail(self._in_flight, self._failed)
        self._in_flight.clear()


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
