"""The confirmation mail of the double opt-in: transactional, sent at once on its own connection.

It names the sender, says what was asked for (each list with the exact wording ticked), carries
the confirm link, and nothing else: no offers, no tracking, no images. It is not a campaign
message, so it does not queue behind a campaign's throttle; it opens its own SMTP connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from jinja2 import Environment

from mailer.config import Settings
from mailer.core.dkim import SigningKey
from mailer.delivery.sending import Connection
from mailer.delivery.transactional import deliver_one, transactional_message

__all__ = ["ConfirmationMail", "build_confirmation", "deliver"]


@dataclass(frozen=True, slots=True)
class ConfirmationMail:
    """What to send, decided by the flow; rendered and sent after the answer went out."""

    email: str
    locale: str
    confirm_url: str
    list_names: tuple[str, ...]
    wordings: tuple[str, ...]
    expires_at: datetime


def _title(settings: Settings, name: str, locale: str) -> str:
    found = settings.lists.get(name)
    return found.text_for(locale).title if found is not None else name


def build_confirmation(
    env: Environment,
    settings: Settings,
    mail: ConfirmationMail,
    now: datetime,
    dkim: Sequence[SigningKey],
) -> bytes:
    sender = settings.sender
    context = {
        "sender": sender,
        "email": mail.email,
        "confirm_url": mail.confirm_url,
        "lists": [
            {"title": _title(settings, name, mail.locale), "wording": w}
            for name, w in zip(mail.list_names, mail.wordings, strict=True)
        ],
        "expires_at": mail.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
    }
    subject = env.get_template(f"mail/confirm_subject.{mail.locale}.txt").render(context).strip()
    body = env.get_template(f"mail/confirm.{mail.locale}.txt").render(context)
    return transactional_message(
        settings, to=mail.email, subject=subject, body=body, now=now,
        auto_submitted="auto-generated", dkim=dkim,
    )  # fmt: skip


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
    return await deliver_one(data, recipient, settings, what="confirmation mail", connect=connect)
