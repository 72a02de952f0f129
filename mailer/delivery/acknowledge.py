"""The acknowledgement of an unsubscribe: one short transactional mail, no marketing in it.

Sent when `policy.unsubscribe_ack` is on (by default in BE, off in NL; see config.py). It says
what ended and nothing else: no offers, no images, no tracking, and no unsubscribe footer (there
is nothing left to unsubscribe from). It goes on its own SMTP connection, after the person's
answer page, so a slow relay never holds the unsubscribe itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from mailer.config import Settings
from mailer.core.dkim import SigningKey
from mailer.core.render import make_environment
from mailer.delivery.sending import Connection
from mailer.delivery.transactional import deliver_one, transactional_message

__all__ = ["build_unsubscribe_ack", "send_unsubscribe_ack"]


def build_unsubscribe_ack(
    settings: Settings,
    email: str,
    list_title: str,
    *,
    locale: str,
    now: datetime,
    dkim: Sequence[SigningKey],
) -> bytes:
    """The acknowledgement as bytes ready for SMTP, signed with `dkim` (pure: no I/O beyond
    reading templates)."""
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
    return transactional_message(
        settings,
        to=email,
        subject=subject,
        body=body,
        now=now,
        auto_submitted="auto-replied",
        dkim=dkim,
    )


async def send_unsubscribe_ack(
    settings: Settings,
    email: str,
    list_title: str,
    *,
    dkim: Sequence[SigningKey],
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
        settings, email, list_title, locale=chosen, now=now or datetime.now(UTC), dkim=dkim
    )
    return await deliver_one(
        data, email, settings, what="unsubscribe acknowledgement", connect=connect
    )
