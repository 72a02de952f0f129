"""Transactional mail (a confirmation link, an unsubscribe acknowledgement): one message, sent
at once on its own connection, never behind a campaign's throttle, and never raising over the
server's answer (the person already has their page)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid
from typing import Literal

from mailer.config import Settings
from mailer.core.addresses import wire_address
from mailer.core.headers import check_header_value
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
) -> bytes:
    """A plain-text message from the configured sender to `to`."""
    sender = settings.sender
    to = wire_address(to)  # IDN domain as A-label; a non-ASCII local part needs SMTPUTF8
    message = EmailMessage(policy=SMTP if to.isascii() else SMTPUTF8)
    message["From"] = Address(
        check_header_value("From", sender.from_name), addr_spec=sender.from_address
    )
    message["To"] = to
    message["Subject"] = check_header_value("Subject", subject)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender.domain)
    if sender.reply_to:
        message["Reply-To"] = sender.reply_to
    # RFC 3834 §5: sent by software, so auto-responders must not answer it.
    message["Auto-Submitted"] = auto_submitted
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


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
