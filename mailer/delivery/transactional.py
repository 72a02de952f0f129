"""Transactional mail (a confirmation link, an unsubscribe acknowledgement): one message, sent
at once on its own connection, never behind a campaign's throttle, and never raising over the
server's answer (the person already has their page)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import format_datetime, make_msgid
from typing import Literal

from mailer.config import Settings
from mailer.core.addresses import wire_address
from mailer.core.dkim import SigningKey, sign_message
from mailer.core.headers import encode_address, encode_header
from mailer.core.render import quoted_printable
from mailer.core.text import without_addresses
from mailer.delivery.sending import Connection
from mailer.delivery.transport import Outcome, SmtpConnection, classify

__all__ = ["deliver_one", "transactional_message"]

log = logging.getLogger("mailer.delivery.transactional")


def transactional_message(
    settings: Settings,
    *,
    to: str,
    subject: str,
    body: str,
    now: datetime,
    auto_submitted: Literal["auto-generated", "auto-replied"],
    dkim: Sequence[SigningKey],
) -> bytes:
    """A plain-text message from the configured sender to `to`, DKIM-signed with each of
    `dkim` (none without `[dkim]`).

    Signed like campaign mail: a receiver applying DMARC judges the sender's domain by all
    its mail, and an unsigned confirmation from a domain that publishes p=reject is refused.

    Built with the header encoders of campaign mail (mailer.core.headers), not with the stdlib's
    `EmailMessage`, which cost most of a signup's CPU under a burst (docs/performance.md).
    """
    sender = settings.sender
    to = wire_address(to)  # IDN domain as A-label; a non-ASCII local part needs SMTPUTF8
    headers = [
        "From: " + encode_address(sender.from_name, sender.from_address),
        "To: " + encode_address(None, to, utf8=not to.isascii()),
        encode_header("Subject", subject),
        f"Date: {format_datetime(now)}",
        f"Message-ID: {make_msgid(domain=sender.domain)}",
        *([f"Reply-To: {encode_address(None, sender.reply_to)}"] if sender.reply_to else []),
        # RFC 3834 §5: sent by software, so auto-responders must not answer it.
        f"Auto-Submitted: {auto_submitted}",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
    ]
    # ASCII, except a non-ASCII local part in To (RFC 6532: sent only with SMTPUTF8).
    data = "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + quoted_printable(body)
    return sign_message(data, dkim, int(now.timestamp())) if dkim else data


async def deliver_one(
    data: bytes,
    recipient: str,
    settings: Settings,
    *,
    what: str,
    connect: Callable[[], Connection] | None = None,
) -> bool:
    """Send `data` to `recipient` on a fresh connection; True if the server accepted it."""
    connection = connect() if connect else SmtpConnection(settings.smtp, settings.smtp_password)
    try:
        reply = await connection.send(settings.sender.from_address, recipient, data)
    finally:
        await connection.close()
    if classify(reply) is not Outcome.SENT:
        # The address is personal data: log the domain only.
        # The reply quotes the address too ("550 5.1.1 <jan@...>"): only its domain is logged.
        log.warning(
            "%s to a recipient at %s not accepted: %s",
            what,
            recipient.rsplit("@", 1)[-1],
            without_addresses(str(reply)),
        )
        return False
    return True
