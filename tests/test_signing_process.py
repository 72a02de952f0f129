"""DKIM signatures from the signing process (mailer.delivery.signing): the same bytes as signing
inline, one message that cannot be signed fails alone, and a signing process that dies stops
the run without a message going out unsigned or twice."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections import Counter
from pathlib import Path

import dkim
import pytest
from sqlalchemy import Engine, select

from mailer.core.dkim import SigningKey, sign_message
from mailer.core.render import MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner, message_ref
from mailer.delivery.dkimkeys import generate_key_pair, load_signing_keys
from mailer.delivery.sender import MessageSender
from mailer.delivery.signing import SigningProcess
from mailer.delivery.sink import CapturedMessage, SmtpSink
from mailer.errors import SigningError
from mailer.store.campaign import content_of
from mailer.store.models import Contact, Delivery
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign
from tests.sending_support import NOW, received, run, status_of, subscribed

DKIM_SECTION = {"selector": "rsa", "domain": "bakkerij.example"}


def _dual_keys(tmp_path: Path) -> tuple[dict[str, str], dict[bytes, bytes]]:
    rsa_key = generate_key_pair("rsa", "bakkerij.example", "rsa", tmp_path)
    ed_key = generate_key_pair("ed", "bakkerij.example", "ed25519", tmp_path)
    section = {
        **DKIM_SECTION,
        "private_key_file": str(rsa_key.private_key_file),
        "second_selector": "ed",
        "second_private_key_file": str(ed_key.private_key_file),
    }
    records = {k.dns_name.encode(): k.txt_value.encode() for k in (rsa_key, ed_key)}
    return section, records


def _ed25519_key(tmp_path: Path) -> tuple[dict[str, str], dict[bytes, bytes]]:
    ed_key = generate_key_pair("ed", "bakkerij.example", "ed25519", tmp_path)
    section = {"selector": "ed", "domain": "bakkerij.example", "algorithm": "ed25519-sha256",
               "private_key_file": str(ed_key.private_key_file)}  # fmt: skip
    return section, {ed_key.dns_name.encode(): ed_key.txt_value.encode()}


KEY_SETS = {"rsa and ed25519": _dual_keys, "ed25519 alone": _ed25519_key}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[SigningKey, ...]:
    section, _records = _dual_keys(tmp_path)
    return load_signing_keys(make_settings("sqlite://", dkim=section))


def _message(n: int) -> bytes:
    return (
        f"From: nieuws@bakkerij.example\r\nTo: klant{n}@example.nl\r\n"
        f"Subject: Aanbieding {n}\r\n\r\nBeste klant {n},\r\n\r\nvers brood.\r\n"
    ).encode()


def _signing_children() -> list[int]:
    """The pids of this process's children that run the signing process."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
            command = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if f"\nPPid:\t{os.getpid()}\n" in status and b"mailer.delivery.signing" in command:
            found.append(int(proc.name))
    return found


def test_messages_signed_in_the_process_are_byte_identical_to_signing_inline(
    keys: tuple[SigningKey, ...],
) -> None:
    messages = [_message(n) for n in range(120)]

    async def sign_all() -> tuple[list[bytes], int, list[int]]:
        signing = SigningProcess(keys)
        try:
            signed = await asyncio.gather(*(signing.sign(m, 1_764_000_000 + i)
                                            for i, m in enumerate(messages)))  # fmt: skip
            return signed, signing.batches, _signing_children()
        finally:
            await signing.close()

    signed, batches, children = asyncio.run(sign_all())
    assert len(children) == 1
    for i, (message, headers) in enumerate(zip(messages, signed, strict=True)):
        assert headers + message == sign_message(message, keys, timestamp=1_764_000_000 + i)
    # Asked for in one tick, sent in one write: not a round trip per message.
    assert batches == 1
    assert _signing_children() == []  # close() ended it


def test_a_message_that_cannot_be_signed_fails_alone(keys: tuple[SigningKey, ...]) -> None:
    async def sign_bad_then_good() -> tuple[BaseException | bytes, bytes]:
        signing = SigningProcess(keys)
        try:
            bad, good = await asyncio.gather(
                signing.sign(b"no header here\r\n\r\nbody\r\n", 1),
                signing.sign(_message(1), 1),
                return_exceptions=True,
            )
            assert isinstance(good, bytes)
            return bad, await signing.sign(_message(2), 2) + _message(2)
        finally:
            await signing.close()

    bad, later = asyncio.run(sign_bad_then_good())
    assert isinstance(bad, SigningError)
    assert str(bad).startswith("cannot sign a message: not a header line")
    assert later == sign_message(_message(2), keys, timestamp=2)


def test_a_signing_process_that_dies_fails_every_later_message(
    keys: tuple[SigningKey, ...],
) -> None:
    async def sign_after_kill() -> str:
        signing = SigningProcess(keys)
        try:
            await signing.sign(_message(1), 1)
            [child] = _signing_children()
            os.kill(child, signal.SIGKILL)
            for _ in range(2):  # the one in flight when it dies, and any after it
                with pytest.raises(SigningError) as caught:
                    await signing.sign(_message(2), 2)
            return str(caught.value)
        finally:
            await signing.close()

    assert asyncio.run(sign_after_kill()) == "the DKIM signing process ended (exit code -9)"


@pytest.mark.parametrize("key_set", KEY_SETS)  # the loop renders; the child renders
def test_a_campaign_whose_signing_process_dies_sends_nothing_unsigned_nor_twice(
    tmp_path: Path, engine: Engine, db_url: str, key_set: str
) -> None:
    section, records = KEY_SETS[key_set](tmp_path)
    killed: list[int] = []

    def kill_at_the_fifth(message: CapturedMessage) -> None:
        if not killed and len(sink.messages) == 4:
            killed.extend(_signing_children())
            for child in killed:
                os.kill(child, signal.SIGKILL)

    with SmtpSink(reply=kill_at_the_fifth) as sink:
        settings = make_settings(db_url, smtp={"port": sink.port}, dkim=section)
        people = [f"p{n:02}@example.nl" for n in range(40)]
        for email in people:
            add_contact(engine, settings, email, at=NOW, consents=subscribed())
        campaign = new_campaign(engine, settings, "nov", at=NOW)
        with pytest.raises(SigningError, match=r"the DKIM signing process ended \(exit code -9\)"):
            run(engine, settings, campaign)
        assert len(killed) == 1
        first_run = received(sink)
        statuses = Counter(status_of(engine, campaign).values())
        assert 5 <= len(first_run) < len(people)
        # Each connection holds one row at most when the run stops: in doubt, never resent.
        assert statuses["unknown"] <= settings.smtp.max_connections
        # What was waiting for its signature was not sent, and waits for the next run.
        assert statuses["deferred"] >= 1

        run(engine, settings, campaign)  # a next run signs again and sends the rest

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    for message in sink.messages:  # every message that went out carries every signature
        for index in range(len(records)):
            assert dkim.DKIM(message.data).verify(idx=index, dnsfunc=lookup)
    final = status_of(engine, campaign)
    in_doubt = {email for email, status in final.items() if status == "unknown"}
    counts = Counter(received(sink))
    assert max(counts.values()) == 1  # nobody mailed twice
    assert set(people) - in_doubt <= set(counts)  # everyone else mailed
    assert set(final.values()) <= {"sent", "unknown"}


def test_the_signing_process_works_on_uvloop_the_loop_of_mailer_serve(
    keys: tuple[SigningKey, ...],
) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def sign_two() -> list[bytes]:
        signing = SigningProcess(keys)
        try:
            return [await signing.sign(_message(n), n) + _message(n) for n in range(2)]
        finally:
            await signing.close()

    assert uvloop.run(sign_two()) == [
        sign_message(_message(n), keys, timestamp=n) for n in range(2)
    ]


def test_with_ed25519_alone_the_signing_process_renders_what_the_loop_would_have(
    tmp_path: Path, engine: Engine, db_url: str
) -> None:
    section, records = _ed25519_key(tmp_path)
    with SmtpSink() as sink:
        settings = make_settings(db_url, smtp={"port": sink.port}, dkim=section)
        for n in range(6):
            add_contact(engine, settings, f"p{n}@example.nl", at=NOW, consents=subscribed(),
                        first_name=f"Ans {n}")  # fmt: skip
        campaign = new_campaign(engine, settings, "nov", at=NOW)
        assert MessageSender(engine, settings, lambda: NOW, None).child_renders
        run(engine, settings, campaign)
    assert campaign.id is not None
    factory = MessageFactory(
        make_environment(settings), settings, content_of(campaign),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
    )  # fmt: skip
    rows = _deliveries(engine, campaign.id)
    assert len(sink.messages) == len(rows) == 6
    for message in sink.messages:
        assert dkim.DKIM(message.data).verify(dnsfunc=lambda name, timeout=5: records[name])
        delivery_id, basis, recipient = rows[message.recipients[0]]
        ref = message_ref(settings.require_secret_keys()[-1], f"{campaign.id}.{delivery_id}")
        here = factory.render(recipient, basis=basis, now=NOW, delivery_ref=ref)
        signature, _, rest = message.data.partition(b"\r\nFrom: ")
        assert signature.startswith(b"DKIM-Signature: ")
        assert _unrandom(b"From: " + rest) == _unrandom(here.data)


def _unrandom(message: bytes) -> bytes:
    """The message with what is random in each (its MIME boundary and the random half of its
    Message-ID, after the delivery's keyed reference) named the same."""
    boundary = re.search(rb'boundary="([^"]+)"', message)
    assert boundary is not None
    message = message.replace(boundary.group(1), b"BOUNDARY")
    return re.sub(rb"(Message-ID: <[0-9a-f]+)\.[0-9a-f]+@", rb"\1.RANDOM@", message)


def _deliveries(engine: Engine, campaign_id: int) -> dict[str, tuple[int, str, Recipient]]:
    """email -> (delivery id, basis, the recipient as the worker reads it)."""
    d, c = Delivery.__table__, Contact.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.c.id, d.c.basis, c.c.id, c.c.email, c.c.first_name, c.c.last_name,
                   c.c.locale)
            .join(c, c.c.id == d.c.contact_id)
            .where(d.c.campaign_id == campaign_id)
        ).all()  # fmt: skip
    return {row[3]: (row[0], row[1], Recipient(*row[2:])) for row in rows}
