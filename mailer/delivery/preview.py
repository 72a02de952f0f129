"""Looking at a campaign before it goes out: the exact message one person would get now and
the decision behind it (`campaign preview`), and a `[TEST] ` send to the sender's own inboxes
(`campaign test`).

The decision is the planning path itself (mailer.store.planning.iter_decisions for one contact,
so policy.decide on the facts from the database), and the message is rendered by the same
MessageFactory a worker uses, DKIM signature included.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.core.addresses import normalise_address
from mailer.core.policy import Basis, Decision
from mailer.core.render import MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.delivery.dkimkeys import load_signing_keys
from mailer.delivery.transactional import deliver_one
from mailer.delivery.worker import Connection
from mailer.errors import InputError, NotFoundError
from mailer.store.campaign import content_of
from mailer.store.models import Campaign, Contact, Delivery
from mailer.store.planning import iter_decisions

__all__ = ["Preview", "TEST_PREFIX", "html_part", "preview", "send_test"]

log = logging.getLogger("mailer.delivery.preview")
TEST_PREFIX = "[TEST] "
# Without --email: the sample recipient of `campaign check`, who is no contact.
SAMPLE = Recipient(0, "joel.muller@example.com", "Joël", "Müller", None)

_contact = Contact.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Preview:
    recipient: Recipient
    decision: Decision | None  # None for the sample recipient
    message: bytes | None  # None when the person would not be mailed
    ledger_status: str | None  # this campaign's ledger row for the person, if any
    campaign_status: str = ""

    def stopped_line(self, name: str) -> list[str]:
        if self.campaign_status == "paused":
            return [f"Campaign {name} is paused: nothing is sent until `mailer campaign resume`."]
        if self.campaign_status == "cancelled":
            return [f"Campaign {name} is cancelled: it sends nothing any more."]
        return []

    def lines(self, name: str) -> list[str]:
        """The decision in sentences, for the terminal."""
        return self._decision_lines(name) + self.stopped_line(name)

    def _decision_lines(self, name: str) -> list[str]:
        who = self.recipient.email
        if self.decision is None:
            return [
                f"Sample recipient {who} (not a contact): rendered as if mailed on consent. "
                "Give --email ADDR to see a real person's message and decision."
            ]
        if not self.decision.allowed:
            return [
                f"{who} would not be mailed by campaign {name}: skipped, reason "
                f"{self.decision.skip}. No message written."
            ]
        said = [f"{who} would be mailed by campaign {name} on basis {self.decision.basis}."]
        # A skipped row is decided again by the next run; any other row keeps its state.
        if self.ledger_status not in (None, "queued", "skipped"):
            said.append(
                f"This campaign's ledger already has {who} as {self.ledger_status}: a run does "
                "not mail them again."
            )
        return said


def _factory(settings: Settings, campaign: Campaign, subject_prefix: str = "") -> MessageFactory:
    content = content_of(campaign)
    if subject_prefix:
        content = dataclasses.replace(content, subject=subject_prefix + content.subject)
    return MessageFactory(
        make_environment(settings),
        settings,
        content,
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
        load_signing_keys(settings),  # both keys when dual signing, as a campaign signs
    )


def _address(raw: str, option: str) -> str:
    try:
        return normalise_address(raw)
    except ValueError as exc:
        raise InputError(f'{option} "{raw}" is not an e-mail address: {exc}') from None


def preview(
    engine: Engine, settings: Settings, campaign: Campaign, email: str | None, now: datetime
) -> Preview:
    """What `email` (or the sample recipient) would get from `campaign` now, and why."""
    factory = _factory(settings, campaign)
    if email is None:
        message = factory.render(SAMPLE, basis=Basis.CONSENT, now=now, delivery_ref="preview")
        return Preview(SAMPLE, None, message.data, None, campaign.status)
    address = _address(email, "--email")
    with engine.connect() as conn:
        row = conn.execute(
            select(_contact.c.id, _contact.c.email, _contact.c.first_name,
                   _contact.c.last_name, _contact.c.locale).where(_contact.c.email == address)
        ).first()  # fmt: skip
        if row is None:
            raise NotFoundError(
                f"No contact with the address {address} is stored: campaign {campaign.name} "
                "would not mail it."
            )
        decisions = list(iter_decisions(conn, settings, campaign, now, contact_id=row.id))
        status = conn.execute(
            select(_delivery.c.status).where(
                _delivery.c.campaign_id == campaign.id, _delivery.c.contact_id == row.id
            )
        ).scalar()
    recipient = Recipient(row.id, row.email, row.first_name, row.last_name, row.locale)
    decision = decisions[0][1]
    if not decision.allowed:
        return Preview(recipient, decision, None, status, campaign.status)
    assert decision.basis is not None
    rendered = factory.render(recipient, basis=decision.basis, now=now, delivery_ref="preview")
    return Preview(recipient, decision, rendered.data, status, campaign.status)


def html_part(message: bytes) -> str | None:
    """The text/html part of a rendered message, decoded, with plain newlines (the message
    has CRLF, as SMTP wants; a file for a browser or an editor does not)."""
    parsed = message_from_bytes(message, policy=default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(preferencelist=("html",))
    return None if part is None else str(part.get_content()).replace("\r\n", "\n")


async def send_test(
    settings: Settings,
    campaign: Campaign,
    to: Sequence[str],
    now: datetime,
    *,
    connect: Callable[[], Connection] | None = None,
) -> list[tuple[str, bool]]:
    """Send the campaign's message, subject prefixed `[TEST] `, to each of `to`.

    Only addresses in `sender.test_addresses` are allowed: a test send needs no consent, so it
    must never reach anyone else (InputError naming the setting, before anything is sent). Not
    a delivery: nothing is written to the ledger, reports do not count it; it is logged.
    """
    allowed = set(settings.sender.test_addresses)
    addresses = [_address(raw, "--to") for raw in to]
    refused = [a for a in addresses if a not in allowed]
    if refused:
        listed = ", ".join(sorted(allowed)) or "none"
        raise InputError(
            f"{', '.join(refused)} is not in sender.test_addresses (now: {listed}); a test send "
            "goes only to the addresses listed there.",
            file=settings.source,
            field="sender.test_addresses",
        )
    factory = _factory(settings, campaign, TEST_PREFIX)
    results = []
    for address in addresses:
        person = dataclasses.replace(SAMPLE, email=address)
        message = factory.render(person, basis=Basis.CONSENT, now=now, delivery_ref="test")
        accepted = await deliver_one(
            message.data, address, settings, what="test send", connect=connect
        )
        log.info("test send of campaign %s to %s: %s", campaign.name, address,
                 "accepted" if accepted else "refused")  # fmt: skip
        results.append((address, accepted))
    return results
