"""The bounce mailbox: real DSNs and mailto unsubscribes in a real Maildir, a real database."""

from __future__ import annotations

import asyncio
import email
import email.policy
import mailbox
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.core.policy import ConsentFact
from mailer.delivery.bounces import Kind, classify_message, process_mailbox
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.errors import ConfigError, InputError
from mailer.store.models import Consent, ConsentEvent, ConsentOrigin, Delivery, Suppression
from tests.factories import add_contact, new_campaign

NOW = datetime(2026, 11, 16, 9, tzinfo=UTC)
DATA = Path(__file__).parent / "data" / "bounces"
JAN = datetime(2026, 1, 1, tzinfo=UTC)
SUBSCRIBED = [
    ConsentFact("newsletter", ConsentEvent.REQUESTED, ConsentOrigin.WEB, JAN),
    ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, JAN),
]


def dsn(recipient: str, message_id: str, *, status: str = "5.1.1", code: int = 550) -> bytes:
    text = (DATA / "postfix-dsn.eml").read_text(encoding="ascii")
    action = "failed" if status.startswith("5") else "delayed"
    body = text.format(recipient=recipient, message_id=message_id, status=status, code=code,
                       text="Mailbox problem", action=action)  # fmt: skip
    return body.replace("\n", "\r\n").encode("ascii")


def deliver(maildir: Path, *messages: bytes) -> None:
    box = mailbox.Maildir(maildir, create=True)
    for message in messages:
        box.add(message)


def send(engine: Engine, settings: Settings, name: str) -> None:
    campaign = new_campaign(engine, settings, name, at=NOW)
    asyncio.run(run_campaign(engine, settings, campaign, clock=lambda: NOW))


def parse(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def test_a_postfix_dsn_is_a_hard_or_soft_bounce_by_its_status_field() -> None:
    hard = classify_message(parse(dsn("gone@example.nl", "<a.1@bakkerij.example>")),
                            "unsubscribe@bakkerij.example")  # fmt: skip
    assert (hard.kind, hard.addresses, hard.status, hard.message_id) == (
        Kind.HARD, ("gone@example.nl",), "5.1.1", "<a.1@bakkerij.example>"
    )  # fmt: skip
    soft = classify_message(parse(dsn("full@example.nl", "<a.2@x>", status="4.2.2", code=452)),
                            "unsubscribe@bakkerij.example")  # fmt: skip
    assert (soft.kind, soft.addresses) == (Kind.SOFT, ("full@example.nl",))


def test_a_refusal_of_our_content_fails_the_delivery_but_does_not_suppress_the_person() -> None:
    found = classify_message(
        parse(dsn("anna@example.nl", "<a.3@x>", status="5.7.1", code=554)),
        "unsubscribe@bakkerij.example",
    )
    assert (found.kind, found.addresses, found.status) == (
        Kind.FAILED, ("anna@example.nl",), "5.7.1"
    )  # fmt: skip


def test_a_bounce_that_is_not_a_dsn_is_recognised_by_flufl_bounce() -> None:
    text = (DATA / "exim-plain.eml").read_text(encoding="ascii").format(recipient="x@example.org")
    found = classify_message(parse(text.encode()), "unsubscribe@bakkerij.example")
    assert found.kind is Kind.HARD and found.addresses == ("x@example.org",)


def test_ordinary_mail_is_ignored() -> None:
    hello = b"From: a@b.example\r\nTo: nieuws@bakkerij.example\r\nSubject: Hallo\r\n\r\nHoi!\r\n"
    assert classify_message(parse(hello), "unsubscribe@bakkerij.example").kind is Kind.IGNORED


def test_hard_bounces_are_suppressed_soft_ones_are_not_and_the_mailbox_is_read_once(
    engine: Engine, send_settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    for address in ("gone@example.nl", "full@example.nl", "fine@example.nl"):
        add_contact(engine, send_settings, address, at=NOW, consents=SUBSCRIBED)
    send(engine, send_settings, "one")
    ids = {m.recipients[0]: parse(m.data)["Message-ID"] for m in sink.messages}
    maildir = tmp_path / "Maildir"
    deliver(
        maildir,
        dsn("gone@example.nl", ids["gone@example.nl"]),
        dsn("full@example.nl", ids["full@example.nl"], status="4.2.2", code=452),
        dsn("fine@example.nl", ids["fine@example.nl"], status="5.7.1", code=554),
        b"this is not\r\n\r\n a mail at all",
    )
    report = process_mailbox(engine, send_settings, now=NOW, maildir=maildir)
    assert (report.counts["hard_bounce"], report.counts["soft_bounce"]) == (1, 1)
    assert report.counts["failed"] == 1  # 5.7.1: our content refused, the person not suppressed
    assert report.counts["unreadable"] == 1  # skipped and counted, never fatal
    with engine.connect() as conn:
        assert conn.execute(select(Suppression.reason)).scalars().all() == ["hard_bounce"]
        statuses = dict(conn.execute(select(Delivery.message_id, Delivery.status)).all())
    assert statuses[ids["gone@example.nl"]] == "failed"
    assert statuses[ids["full@example.nl"]] == "sent"
    assert statuses[ids["fine@example.nl"]] == "failed"

    again = process_mailbox(engine, send_settings, now=NOW, maildir=maildir)
    assert sum(again.counts.values()) == 0

    sink.messages.clear()
    send(engine, send_settings, "two")
    assert sorted(m.recipients[0] for m in sink.messages) == ["fine@example.nl", "full@example.nl"]


def test_a_mail_to_the_unsubscribe_address_unsubscribes_from_that_list(
    engine: Engine, send_settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    add_contact(engine, send_settings, "anna@example.nl", at=NOW, consents=SUBSCRIBED)
    add_contact(engine, send_settings, "bram@example.nl", at=NOW, consents=SUBSCRIBED)
    send(engine, send_settings, "one")
    anna = next(m for m in sink.messages if m.recipients[0] == "anna@example.nl")
    mailto = str(parse(anna.data)["List-Unsubscribe"]).split("<mailto:")[1].rstrip(">")
    to, _, query = mailto.partition("?")
    subject = unquote(query.removeprefix("subject="))
    request = f"From: anna@example.nl\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n".encode()
    forged = f"From: x@y.nl\r\nTo: {to}\r\nSubject: unsubscribe WzEsIm5ld3MiXQ.forged\r\n\r\n"
    maildir = tmp_path / "Maildir"
    deliver(maildir, request, forged.encode())

    report = process_mailbox(engine, send_settings, now=NOW, maildir=maildir)
    assert (report.counts["unsubscribe"], report.counts["forged"]) == (1, 1)
    with engine.connect() as conn:
        events = conn.execute(select(Consent.event, Consent.source).where(
            Consent.event == "withdrawn")).all()  # fmt: skip
    assert events == [("withdrawn", f"mailto:{to}")]

    sink.messages.clear()
    send(engine, send_settings, "two")
    assert [m.recipients[0] for m in sink.messages] == ["bram@example.nl"]


def test_a_missing_mailbox_is_a_clear_error(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="set bounces.maildir or bounces.imap_host"):
        process_mailbox(engine, settings, now=NOW)
    with pytest.raises(InputError, match="is not a Maildir"):
        process_mailbox(engine, settings, now=NOW, maildir=tmp_path)


# -- issue 14 row 3 and issue 16: only reports about mail we sent act; ARF complaints ---------

BOTH_LISTS = [
    *SUBSCRIBED,
    ConsentFact("offers", ConsentEvent.REQUESTED, ConsentOrigin.WEB, JAN),
    ConsentFact("offers", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, JAN),
]


def arf(name: str, **fields: str) -> bytes:
    """A feedback report as the named loop sends it (RFC 5965 §2), CRLF line ends."""
    text = (DATA / name).read_text(encoding="ascii")
    for key, value in fields.items():
        text = text.replace("{" + key + "}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def suppressions(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(Suppression.reason, Suppression.scope)))


def test_a_forged_dsn_about_mail_we_did_not_send_suppresses_nobody(
    engine: Engine, send_settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    add_contact(engine, send_settings, "r11@example.nl", at=NOW, consents=SUBSCRIBED)
    send(engine, send_settings, "one")
    maildir = tmp_path / "Maildir"
    deliver(
        maildir,
        dsn("r11@example.nl", "<made.up@bakkerij.example>"),  # a Message-ID we never sent
        dsn("never-stored@example.nl", "<x@y>"),
        (DATA / "exim-plain.eml").read_text().format(recipient="r11@example.nl").encode(),
    )
    report = process_mailbox(engine, send_settings, now=NOW, maildir=maildir)
    assert report.counts["unmatched"] == 3 and report.counts["hard_bounce"] == 0
    assert "3 unmatched" in report.line()
    assert suppressions(engine) == []
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(select(Delivery.status, Delivery.feedback))] == [
            ("sent", None)
        ]
    sink.messages.clear()
    send(engine, send_settings, "two")
    assert [m.recipients[0] for m in sink.messages] == ["r11@example.nl"]


def test_arf_complaints_from_yahoo_and_microsoft_suppress_on_every_list(
    engine: Engine, send_settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    for address in ("anna@example.nl", "bram@example.nl", "cees@example.nl"):
        add_contact(engine, send_settings, address, at=NOW, consents=BOTH_LISTS)
    send(engine, send_settings, "one")
    sent = {m.recipients[0]: m for m in sink.messages}
    anna, bram = sent["anna@example.nl"], sent["bram@example.nl"]
    maildir = tmp_path / "Maildir"
    deliver(
        maildir,
        # Yahoo returns the whole message; Microsoft only its headers, recipient redacted.
        arf("arf-yahoo.eml", mail_from=anna.mail_from, recipient="anna@example.nl",
            original=anna.data.decode("ascii")),
        arf("arf-microsoft.eml", message_id=parse(bram.data)["Message-ID"]),
        # About mail we never sent (someone else's message, naming cees): changes nothing.
        arf("arf-microsoft.eml", message_id="<8787KJKJ3K4J3K4J3K4J3.mail@example.net>"),
        # Not a complaint: a report that the message was not spam.
        arf("arf-microsoft.eml", message_id=parse(sent["cees@example.nl"].data)["Message-ID"])
        .replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam"),
    )  # fmt: skip
    report = process_mailbox(engine, send_settings, now=NOW, maildir=maildir)
    assert (report.counts["complaint"], report.counts["unmatched"]) == (2, 1)
    assert report.counts["ignored"] == 1
    assert "2 complaint, 1 unmatched" in report.line()
    assert suppressions(engine) == [("complaint", None), ("complaint", None)]
    with engine.connect() as conn:
        marked = dict(conn.execute(select(Delivery.message_id, Delivery.feedback)).all())
        statuses = set(conn.execute(select(Delivery.status)).scalars())
    assert marked[parse(anna.data)["Message-ID"]] == "complaint"
    assert marked[parse(bram.data)["Message-ID"]] == "complaint"
    assert marked[parse(sent["cees@example.nl"].data)["Message-ID"]] is None
    assert statuses == {"sent"}  # a complaint is about a message that arrived

    sink.messages.clear()
    send(engine, send_settings, "offers")  # another list: a complaint covers every list
    campaign = new_campaign(engine, send_settings, "aanbod", at=NOW, list_name="offers")
    asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert sorted({m.recipients[0] for m in sink.messages}) == ["cees@example.nl"]


def test_a_verp_return_path_names_the_delivery_even_when_the_bounce_quotes_nothing(
    engine: Engine, sink: SmtpSink, db_url: str, tmp_path: Path
) -> None:
    from tests.conftest import make_settings

    settings = make_settings(db_url, smtp={"port": sink.port},
                             bounces={"return_path": "bounces@bakkerij.example"})  # fmt: skip
    for address in ("gone@example.nl", "kept@example.nl"):
        add_contact(engine, settings, address, at=NOW, consents=SUBSCRIBED)
    send(engine, settings, "one")
    envelope = {m.recipients[0]: m.mail_from for m in sink.messages}
    assert all(f.startswith("bounces+") and f.endswith("@bakkerij.example")
               for f in envelope.values())  # fmt: skip
    plain = (DATA / "exim-plain.eml").read_text(encoding="ascii")

    def bounce(recipient: str, to: str) -> bytes:
        text = plain.format(recipient=recipient).replace("bounces@bakkerij.example", to)
        return text.encode("ascii")

    tampered = envelope["kept@example.nl"][:-20] + "0" + envelope["kept@example.nl"][-19:]
    maildir = tmp_path / "Maildir"
    deliver(
        maildir,
        bounce("gone@example.nl", envelope["gone@example.nl"]),
        bounce("kept@example.nl", tampered),  # a made-up return path: not ours
    )
    report = process_mailbox(engine, settings, now=NOW, maildir=maildir)
    assert (report.counts["hard_bounce"], report.counts["unmatched"]) == (1, 1)
    assert suppressions(engine) == [("hard_bounce", None)]
    sink.messages.clear()
    send(engine, settings, "two")
    assert [m.recipients[0] for m in sink.messages] == ["kept@example.nl"]
