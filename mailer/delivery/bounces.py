"""Bounces, complaints and mailto unsubscribes from a mailbox (Maildir, or IMAP over TLS).

A delivery status notification (RFC 3464) says per recipient whether delivery failed for good
(Status 5.x.x: a hard bounce, the address is suppressed) or for now (4.x.x: a soft bounce, only
noted). A feedback report (ARF, RFC 5965: `multipart/report; report-type=feedback-report`, as
Yahoo's and Microsoft's feedback loops send them) with Feedback-Type `abuse` or `fraud` is a
complaint: the address is suppressed on every list. A mail to the List-Unsubscribe mailto
address (RFC 2369) whose subject carries our signed token unsubscribes that person from that
list, like the one-click link.

Bounces and complaints act only on mail we sent (mailer.delivery.feedback): the report must
name one of our deliveries by its signed VERP return path (`bounces.return_path`) or by the
Message-ID of the original it quotes; one that does not is counted `unmatched` and changes
nothing, whatever address it names.

`classify_message` is pure; `process_mailbox` does the I/O. Each message is handled in its own
transaction and then marked seen, so processing the same mailbox twice changes nothing.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import mailbox
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from enum import StrEnum
from pathlib import Path

from flufl.bounce import all_failures
from sqlalchemy import Engine

from mailer.config import BounceSettings, Settings
from mailer.core.tokens import TokenSigner
from mailer.core.verp import read_verp
from mailer.delivery.feedback import Report, ReportKind, apply_report
from mailer.delivery.transport import Outcome, Reply, classify
from mailer.errors import ConfigError, ForgedToken, InputError, TransportError
from mailer.store.models import ConsentEvent

__all__ = ["BounceReport", "Classified", "Kind", "classify_message", "process_mailbox"]

_TOKEN = re.compile(r"\bunsubscribe\s+([A-Za-z0-9_.\-]+)", re.IGNORECASE)
_STATUS = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}")


class Kind(StrEnum):
    HARD = "hard_bounce"  # no such mailbox (5.1.x) or disabled (5.2.1): suppressed
    FAILED = "failed"  # another permanent refusal (5.7.1 spam, 5.2.2 full): not suppressed
    SOFT = "soft_bounce"
    COMPLAINT = "complaint"  # an ARF abuse report: suppressed on every list
    UNSUBSCRIBE = "unsubscribe"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Classified:
    kind: Kind
    addresses: tuple[str, ...] = ()
    status: str | None = None  # the DSN's Status field, e.g. 5.1.1
    message_id: str | None = None  # of the message that bounced
    token: str | None = None  # of a mailto unsubscribe
    # Where a VERP return path of ours may show: the addresses the report was delivered to,
    # the ARF Original-Mail-From, the original's Return-Path.
    envelope: str = ""


@dataclass
class BounceReport:
    counts: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        names = (
            "hard_bounce",
            "failed",
            "soft_bounce",
            "complaint",
            "unmatched",
            "unsubscribe",
            "forged",
            "ignored",
            "unreadable",
        )
        return ", ".join(f"{self.counts[n]} {n.replace('_', ' ')}" for n in names)


def _recipient_fields(msg: Message) -> Iterator[tuple[str, str]]:
    """(recipient, status) per recipient block of a message/delivery-status part."""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, Message):
                continue
            recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
            status = str(block.get("Status") or "").strip()
            if ";" in recipient and status:
                yield recipient.split(";", 1)[1].strip().strip("<>"), status


def _original_headers(msg: Message) -> Message | None:
    """The headers of the original message a DSN or ARF report returns, if it returns them."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            return email.message_from_string(text)
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
    return None


# A bounce that is no DSN (exim, qmail) often quotes the original's headers in its text.
_QUOTED_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _original_message_id(msg: Message) -> str | None:
    headers = _original_headers(msg)
    if headers is not None and headers.get("Message-ID"):
        return str(headers["Message-ID"]).strip()
    for part in msg.walk():
        if part.get_content_type() != "text/plain":
            continue
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        if found := _QUOTED_ID.search(text):
            return found.group(1)
    return None


_ENVELOPE_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")


def _envelope(msg: Message, *extra: str) -> str:
    """Every place a VERP return path of ours may show in a report (see `Classified`)."""
    found = [str(v) for h in _ENVELOPE_HEADERS for v in msg.get_all(h, [])]
    original = _original_headers(msg)
    if original is not None:
        found += [str(v) for v in original.get_all("Return-Path", [])]
    return " ".join([*found, *extra])


def _feedback_report(msg: Message) -> Message | None:
    """The machine-readable part of an ARF report (RFC 5965 §3.1), or None if it is none."""
    if msg.get_content_type() != "multipart/report":
        return None
    if str(msg.get_param("report-type", "")).lower() != "feedback-report":
        return None
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        if isinstance(payload, str):
            return email.message_from_string(payload)
    return None


# RFC 5965 §7.3: abuse (spam), fraud and virus are complaints about the message; not-spam and
# auth-failure (RFC 6591, a DMARC failure report) are not.
_COMPLAINT_TYPES = {"abuse", "fraud", "virus"}


def _addressed_to(msg: Message, address: str) -> bool:
    fields = " ".join(str(msg.get(h, "")) for h in ("To", "Delivered-To", "X-Original-To"))
    return address.lower() in fields.lower()


def classify_message(msg: Message, unsubscribe_address: str) -> Classified:
    """What a message in the bounce mailbox means (pure)."""
    if _addressed_to(msg, unsubscribe_address):
        found = _TOKEN.search(str(msg.get("Subject", "")))
        if found is None and not msg.is_multipart():
            body = msg.get_payload(decode=True)
            found = _TOKEN.search(
                body.decode("utf-8", "replace") if isinstance(body, bytes) else ""
            )
        if found:
            return Classified(Kind.UNSUBSCRIBE, token=found.group(1))
        return Classified(Kind.IGNORED)
    message_id = _original_message_id(msg)
    feedback = _feedback_report(msg)
    if feedback is not None:
        kind = str(feedback.get("Feedback-Type", "")).strip().lower()
        if kind not in _COMPLAINT_TYPES:
            return Classified(Kind.IGNORED)
        recipients = tuple(
            str(r).strip().strip("<>") for r in feedback.get_all("Original-Rcpt-To", [])
        )
        envelope = _envelope(msg, str(feedback.get("Original-Mail-From", "")))
        return Classified(Kind.COMPLAINT, recipients, kind, message_id, envelope=envelope)
    per_recipient = list(_recipient_fields(msg))
    # The DSN's own Status field is authoritative (RFC 3464 §2.3.4); flufl.bounce's heuristics
    # cover the many bounces that are not proper DSNs.
    # The same reading as a reply during the send (transport.classify): only a mailbox that does
    # not exist or is disabled is suppressed; a refusal of our content is not the person's fault.
    outcome = {r: classify(Reply(550 if s.startswith("5") else 450, s)) for r, s in per_recipient}
    hard = tuple(r for r, o in outcome.items() if o is Outcome.HARD_BOUNCE)
    failed = tuple(r for r, o in outcome.items() if o is Outcome.FAILED)
    soft = tuple(r for r, o in outcome.items() if o is Outcome.RETRY)
    if not per_recipient:
        failed = ()
        temporary, permanent = all_failures(msg)
        hard = tuple(a.decode("utf-8", "replace") for a in sorted(permanent))
        soft = tuple(a.decode("utf-8", "replace") for a in sorted(temporary))
    statuses = {s for _r, s in per_recipient}
    status = next(iter(sorted(statuses)), None)
    envelope = _envelope(msg)
    for kind_found, addresses in ((Kind.HARD, hard), (Kind.FAILED, failed), (Kind.SOFT, soft)):
        if addresses:
            return Classified(kind_found, addresses, status, message_id, envelope=envelope)
    return Classified(Kind.IGNORED)


_REPORT_KIND = {
    Kind.HARD: ReportKind.HARD_BOUNCE,
    Kind.FAILED: ReportKind.FAILED,
    Kind.SOFT: ReportKind.SOFT_BOUNCE,
    Kind.COMPLAINT: ReportKind.COMPLAINT,
}


def _apply(engine: Engine, settings: Settings, found: Classified, now: datetime) -> str:
    """Write what a classified message means; returns the count it belongs to."""
    keys = settings.require_hash_keys()
    if found.kind is Kind.UNSUBSCRIBE:
        return _unsubscribe(engine, settings, found.token or "", now)
    if found.kind is Kind.IGNORED:
        return "ignored"
    return_path = settings.bounces.return_path
    delivery_id = read_verp(found.envelope, return_path, keys) if return_path else None
    source = "feedback report" if found.kind is Kind.COMPLAINT else "delivery status notification"
    note = f"{found.kind}: {found.status or 'no status'} ({source})"
    report = Report(
        _REPORT_KIND[found.kind],
        note,
        message_ids=(found.message_id,) if found.message_id else (),
        delivery_id=delivery_id,
    )
    return apply_report(engine, settings, report, now)


def _unsubscribe(engine: Engine, settings: Settings, token: str, now: datetime) -> str:
    # The web side's store holds the one implementation of "withdraw and suppress".
    from mailer.store import signups as store

    try:
        claim = TokenSigner(settings.require_secret_keys()).read_unsubscribe(token)
    except ForgedToken:
        return "forged"
    evidence = store.Evidence(f"mailto:{settings.sender.unsubscribe_mailto}", None, None, now)
    with engine.begin() as conn:
        contact = store.contact_by_id(conn, claim.contact_id)
        if contact is None or not TokenSigner.made_for(claim, contact.email):
            return "ignored"  # erased: a hashed suppression already covers every list
        store.add_events(
            conn, contact.id, {claim.list_name: "unsubscribed by e-mail"},
            ConsentEvent.WITHDRAWN, evidence,
        )  # fmt: skip
        # Issue 14 row 4: from a role-address mail every list ends, from a customer-basis
        # mail the customer basis ends too (an objection), exactly as on the web page.
        scope = None if claim.basis == "role_address" else claim.list_name
        store.suppress(conn, settings.require_hash_keys(), contact, [scope], now)
        if claim.basis == "existing_customer":
            store.object_to_customer_basis(conn, contact.id, now)
    return "unsubscribe"


MarkSeen = Callable[[], None]


def _maildir_messages(path: Path) -> Iterator[tuple[Message, MarkSeen]]:
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise InputError("is not a Maildir (it needs cur/ and new/ folders)", file=str(path))
    box = mailbox.Maildir(path, create=False)
    for key in list(box.keys()):
        stored = box.get_message(key)
        if "S" in stored.get_flags():
            continue

        def mark_seen(key: str = key, stored: mailbox.MaildirMessage = stored) -> None:
            stored.set_subdir("cur")
            stored.add_flag("S")
            box[key] = stored

        yield email.message_from_bytes(stored.as_bytes(), policy=email.policy.compat32), mark_seen


def _imap_messages(bounces: BounceSettings) -> Iterator[tuple[Message, MarkSeen]]:
    password = os.environ.get("MAILER_IMAP_PASSWORD", "")
    try:
        client = imaplib.IMAP4_SSL(bounces.imap_host or "", bounces.imap_port)
        client.login(bounces.imap_username, password)
        client.select(bounces.imap_folder)
        _status, found = client.search(None, "UNSEEN")
        for number in found[0].split():
            _status, data = client.fetch(number, "(BODY.PEEK[])")
            raw = data[0][1] if data and isinstance(data[0], tuple) else b""

            def mark_seen(number: bytes = number) -> None:
                client.store(number.decode(), "+FLAGS", "\\Seen")

            yield email.message_from_bytes(raw, policy=email.policy.compat32), mark_seen
        client.logout()
    except (imaplib.IMAP4.error, OSError) as exc:
        raise TransportError(f"The IMAP server {bounces.imap_host} failed: {exc}") from exc


def process_mailbox(
    engine: Engine, settings: Settings, *, now: datetime, maildir: Path | None = None
) -> BounceReport:
    """Handle every unseen message of the configured (or given) mailbox."""
    bounces = settings.bounces
    if maildir is None and bounces.maildir:
        maildir = Path(bounces.maildir)
    if maildir is None and not bounces.imap_host:
        raise ConfigError(
            "no mailbox configured: set bounces.maildir or bounces.imap_host (or --maildir)",
            file=settings.source, key="bounces",
        )  # fmt: skip
    if maildir is not None:
        messages = _maildir_messages(maildir)
    else:
        messages = _imap_messages(bounces)
    report = BounceReport()
    for message, mark_seen in messages:
        try:
            found = classify_message(message, settings.sender.unsubscribe_mailto)
        except (ValueError, LookupError, TypeError, AttributeError):
            report.counts["unreadable"] += 1  # a malformed message is skipped, never fatal
        else:
            report.counts[_apply(engine, settings, found, now)] += 1
        mark_seen()
    return report
