"""The welcome mail: one short transactional message when a signup for a list is confirmed.

Optional per list (`[lists.NAME] welcome`): true sends it, false never; unset sends it only when
a template for that list exists (`mail/welcome.NAME.LOCALE.txt`, in templates_dir or bundled).
The text is `mail/welcome.NAME.LOCALE.txt` if present, else the bundled `mail/welcome.LOCALE.txt`;
the subject likewise from `welcome_subject`. It goes the confirmation mail's way: after the
answer page, on its own connection, never behind a campaign's throttle, never raising over the
server's answer. It carries the list's unsubscribe link (one click, as in every campaign mail).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from jinja2 import Environment, TemplateNotFound

from mailer.config import Settings
from mailer.core.dkim import SigningKey
from mailer.delivery.sending import Connection
from mailer.delivery.transactional import deliver_one, transactional_message

__all__ = ["build_welcome", "send_welcome", "welcome_wanted"]


def _own_template(env: Environment, kind: str, list_name: str, locale: str) -> str | None:
    name = f"mail/{kind}.{list_name}.{locale}.txt"
    try:
        env.get_template(name)
    except TemplateNotFound:
        return None
    return name


def welcome_wanted(env: Environment, settings: Settings, list_name: str, locale: str) -> bool:
    """Whether a confirmation of `list_name` is answered with a welcome mail."""
    config = settings.lists.get(list_name)
    if config is None:
        return False
    if config.welcome is not None:
        return config.welcome
    return _own_template(env, "welcome", list_name, locale) is not None


def build_welcome(
    env: Environment,
    settings: Settings,
    *,
    email: str,
    list_name: str,
    unsubscribe_url: str,
    locale: str,
    now: datetime,
    dkim: Sequence[SigningKey],
) -> bytes:
    """The welcome mail as bytes ready for SMTP, signed with `dkim`."""
    config = settings.lists[list_name]
    context = {
        "sender": settings.sender,
        "email": email,
        "list_title": config.title,
        "wording": config.wording,
        "unsubscribe_url": unsubscribe_url,
    }
    body_name = _own_template(env, "welcome", list_name, locale) or f"mail/welcome.{locale}.txt"
    subject_name = (
        _own_template(env, "welcome_subject", list_name, locale)
        or f"mail/welcome_subject.{locale}.txt"
    )
    subject = env.get_template(subject_name).render(context).strip()
    body = env.get_template(body_name).render(context)
    return transactional_message(
        settings,
        to=email,
        subject=subject,
        body=body,
        now=now,
        auto_submitted="auto-replied",
        dkim=dkim,
    )


async def send_welcome(
    data: bytes,
    email: str,
    settings: Settings,
    *,
    connect: Callable[[], Connection] | None = None,
) -> bool:
    """Send it; True if the server accepted it. A refusal is logged (domain only)."""
    return await deliver_one(data, email, settings, what="welcome mail", connect=connect)
