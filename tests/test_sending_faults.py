"""What happens mid-run: an unsubscribe stops that person's message (suppression is re-checked
before each send), a hard bounce fails and suppresses, a temporary failure is retried.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.delivery.sink import CapturedMessage, SmtpSink
from mailer.delivery.transport import Reply, SmtpConnection
from mailer.store.models import Suppression, SuppressionReason
from mailer.store.suppression import is_suppressed
from tests.conftest import make_settings
from tests.factories import add_contact, suppress
from tests.sending_support import NOW, ledger, received, send, subscribed

# -- rule 3: suppression is re-checked just before each send ----------------------------------


class UnsubscribeAfterFirstDelivery:
    """A real SMTP connection; right after the first delivery someone clicks "unsubscribe"."""

    def __init__(self, settings: Settings, engine: Engine, victim: str) -> None:
        self.inner = SmtpConnection(settings.smtp)
        self.engine, self.settings, self.victim, self.done = engine, settings, victim, False

    async def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        reply = await self.inner.send(sender, recipient, message)
        if not self.done:
            self.done = True
            suppress(self.engine, self.settings, self.victim, SuppressionReason.UNSUBSCRIBED, NOW)
        return reply

    async def probe(self) -> bool:
        return await self.inner.probe()

    async def close(self) -> None:
        await self.inner.close()


def test_an_unsubscribe_during_a_run_stops_the_message_to_that_person(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port, "max_connections": 1})
    for n in range(5):
        add_contact(engine, settings, f"p{n}@example.nl", at=NOW, consents=subscribed())
    campaign = send(engine, settings, "nov",
                    connect=lambda: UnsubscribeAfterFirstDelivery(settings, engine,
                                                                  "p3@example.nl"))  # fmt: skip
    assert received(sink) == ["p0@example.nl", "p1@example.nl", "p2@example.nl", "p4@example.nl"]
    rows = ledger(engine, campaign)
    assert rows["p3@example.nl"][1:4] == ("suppressed", "consent", "suppressed")
    assert {rows[f"p{n}@example.nl"][1] for n in (0, 1, 2, 4)} == {"sent"}


# -- scripted server faults -------------------------------------------------------------------


class Script:
    """A `sink.reply` hook: the replies to give one address, in order; 250 for everyone else."""

    def __init__(self, address: str, replies: list[str]) -> None:
        self.address, self.replies, self.calls = address, list(replies), 0
        self.lock = threading.Lock()

    def __call__(self, message: CapturedMessage) -> str | None:
        if message.recipients != (self.address,):
            return None
        with self.lock:
            self.calls += 1
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def test_a_hard_bounce_fails_the_row_and_suppresses_the_address_for_the_next_campaign(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    for local in ("gone", "anna"):
        add_contact(engine, send_settings, f"{local}@example.nl", at=NOW, consents=subscribed())
    sink.reply = Script("gone@example.nl", ["550 5.1.1 No such user"])
    first = send(engine, send_settings, "nov")
    assert received(sink) == ["anna@example.nl"]
    assert ledger(engine, first)["gone@example.nl"][1:] == ("failed", "consent", None, 1)
    with engine.connect() as conn:
        assert conn.execute(select(Suppression.reason)).scalars().all() == ["hard_bounce"]
        keys = send_settings.require_secret_keys()
        assert is_suppressed(conn, keys, "gone@example.nl", "offers")
        assert not is_suppressed(conn, keys, "anna@example.nl", "newsletter")

    sink.reply = None
    sink.messages.clear()
    second = send(engine, send_settings, "dec")
    assert received(sink) == ["anna@example.nl"]
    assert ledger(engine, second)["gone@example.nl"][1:] == ("skipped", None, "suppressed", 0)


def test_a_temporary_failure_is_retried_up_to_max_attempts_then_fails(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(
        db_url, smtp={"port": sink.port},
        throttle={"retry_base_seconds": 0, "max_attempts": 3},
    )  # fmt: skip
    for local in ("busy", "anna"):
        add_contact(engine, settings, f"{local}@example.nl", at=NOW, consents=subscribed())
    script = Script("busy@example.nl", ["451 4.3.0 try later"])
    sink.reply = script
    campaign = send(engine, settings, "nov")
    assert script.calls == 3
    assert received(sink) == ["anna@example.nl"]
    assert ledger(engine, campaign)["busy@example.nl"][1:] == ("failed", "consent", None, 3)
    with engine.connect() as conn:  # a soft failure is no reason to suppress
        assert conn.execute(select(Suppression.id)).first() is None
