"""The acknowledgement of an unsubscribe: one short transactional mail, no marketing in it.

Sent when `policy.unsubscribe_ack` is on (by default in BE, off in NL; see config.py). It says
what ended and nothing else: no offers, no images, no tracking, and no unsubscribe footer (there
is nothing left to unsubscribe from). It goes on its own SMTP connection, after the person's
answer page, so a slow relay never holds the unsubscribe itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from mailer.config import Settings
from mailer.headers import check_header_value
from mailer.render import make_environment
from mailer.sending import Connection
from mailer.transport import Outcome, SmtpConnection, classify

__all__ = ["build_unsubscribe_ack", "send_unsubscribe_ack"]

log = logging.getLogger("mailer.acknowledge")


def build_unsubscribe_ack(
    settings: Settings, email: str, list_title: str, *, locale: str, now: datetime
) -> bytes:
    """The acknowledgement as bytes ready for SMTP (pure: no I/O beyond reading templates)."""
    env = make_environment(settings)
    sender = settings.sender
    context = {
        "sender": sender,
        "email": email,
        "list_title": list_title,
        "subscribe_url": f"{settings.web.base_url}/subscribe",
    }
    subject = env.get_template(f"mail/unsubscribed_subject.{locale}.txt").render(context).strip()
    body = env.get_template(f"mail/unsubscribed.{locale}.txt").render(context)
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(
        check_header_value("From", sender.from_name), addr_spec=sender.from_address
    )
    message["To"] = email
    message["Subject"] = check_header_value("Subject", subject)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender.domain)
    if sender.reply_to:
        message["Reply-To"] = sender.reply_to
    # RFC 3834 §5: an automatic answer to the person's action; auto-responders must not reply.
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


async def send_unsubscribe_ack(
    settings: Settings,
    email: str,
    list_title: str,
    *,
    locale: str | None = None,
    now: datetime | None = None,
    connect: Callable[[], Connection] | None = None,
) -> bool:
    """Send the acknowledgement; True if the server accepted it.

    Never raises for the server's answer: the unsubscribe already took effect, and a lost
    acknowledgement changes nothing about it. A refusal is logged with the domain only (the
    address is personal data).
    """
    chosen = locale if locale in ("nl", "en") else settings.locale
    data = build_unsubscribe_ack(
        settings, email, list_title, locale=chosen, now=now or datetime.now(UTC)
    )
    connection = connect() if connect else SmtpConnection(settings.smtp, settings.smtp_password)
    try:
        reply = await connection.send(settings.sender.from_address, email, data)
    finally:
        await connection.close()
    if classify(reply) is not Outcome.SENT:
        log.warning(
            "unsubscribe acknowledgement to a recipient at %s not accepted: %s",
            email.rsplit("@", 1)[-1],
            reply,
        )
        return False
    return True
