"""The confirmation mail of the double opt-in: transactional, sent at once on its own connection.

It names the sender, says what was asked for (each list with the exact wording ticked), carries
the confirm link, and nothing else: no offers, no tracking, no images. It is not a campaign
message, so it does not queue behind a campaign's throttle; it opens its own SMTP connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from jinja2 import Environment

from mailer.config import Settings
from mailer.headers import check_header_value
from mailer.sending import Connection
from mailer.transport import Outcome, SmtpConnection, classify

__all__ = ["ConfirmationMail", "build_confirmation", "deliver"]

log = logging.getLogger("double_optin.mail")


@dataclass(frozen=True, slots=True)
class ConfirmationMail:
    """What to send, decided by the flow; rendered and sent after the answer went out."""

    email: str
    locale: str
    confirm_url: str
    list_names: tuple[str, ...]
    wordings: tuple[str, ...]
    expires_at: datetime


def build_confirmation(
    env: Environment, settings: Settings, mail: ConfirmationMail, now: datetime
) -> bytes:
    sender = settings.sender
    context = {
        "sender": sender,
        "email": mail.email,
        "confirm_url": mail.confirm_url,
        "lists": [
            {"title": settings.lists[name].title if name in settings.lists else name, "wording": w}
            for name, w in zip(mail.list_names, mail.wordings, strict=True)
        ],
        "expires_at": mail.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
    }
    subject = env.get_template(f"mail/confirm_subject.{mail.locale}.txt").render(context).strip()
    body = env.get_template(f"mail/confirm.{mail.locale}.txt").render(context)
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(
        check_header_value("From", sender.from_name), addr_spec=sender.from_address
    )
    message["To"] = mail.email
    message["Subject"] = check_header_value("Subject", subject)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender.domain)
    if sender.reply_to:
        message["Reply-To"] = sender.reply_to
    # RFC 3834 §5: sent by software on someone's request, so auto-responders must not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


async def deliver(
    data: bytes,
    recipient: str,
    settings: Settings,
    connect: Callable[[], Connection] | None = None,
) -> bool:
    """Send one confirmation mail on a fresh connection; True if the server accepted it.

    Never raises: the person already has their answer page; a failure is logged, and they can
    ask for a new mail by signing up again.
    """
    connection = connect() if connect else SmtpConnection(settings.smtp, settings.smtp_password)
    try:
        reply = await connection.send(settings.sender.from_address, recipient, data)
    finally:
        await connection.close()
    if classify(reply) is not Outcome.SENT:
        # The address is personal data: log the domain only.
        log.warning(
            "confirmation mail to a recipient at %s not accepted: %s",
            recipient.rsplit("@", 1)[-1],
            reply,
        )
        return False
    return True
