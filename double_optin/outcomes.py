"""The double opt-in flow's vocabulary: where a request came from, and the outcomes it answers.

Plain values, no database and no HTTP: `Flow` (double_optin.flow) returns them, the web layer
(double_optin.app) only renders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from double_optin.mail import ConfirmationMail

__all__ = [
    "ALL_LISTS",
    "Acknowledgement",
    "ConfirmOutcome",
    "Seen",
    "SignupOutcome",
    "SignupStatus",
    "TokenStatus",
    "UnsubscribeOutcome",
    "Welcome",
]

# The scope value that means "every list". List names start with a letter or digit, so a list
# can never be called this.
ALL_LISTS = "_all"


@dataclass(frozen=True, slots=True)
class Seen:
    """Where a request came from: stored as evidence with consent events."""

    ip: str | None = None
    user_agent: str | None = None


class SignupStatus(StrEnum):
    # One status for "mail sent", "address already known", "address hit its daily limit" and
    # "a bot filled the honeypot": the answer must not tell which (no address enumeration).
    ACCEPTED = "accepted"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class SignupOutcome:
    status: SignupStatus
    error: str | None = None  # invalid_address | no_list | unknown_list
    detail: str | None = None  # email-validator's sentence, for the English page
    mail: ConfirmationMail | None = None


class TokenStatus(StrEnum):
    READY = "ready"  # confirm or unsubscribe page: shows the button
    CONFIRMED = "confirmed"
    RENEWED = "renewed"  # a new confirmation mail was asked for (same answer if limited)
    UNSUBSCRIBED = "unsubscribed"
    STALE = "stale"  # genuine, but nothing to do: withdrawn since, or the contact was erased
    EXPIRED = "expired"
    FORGED = "forged"


@dataclass(frozen=True, slots=True)
class Welcome:
    """A welcome mail to send after the answer: one per list this confirmation newly confirmed
    (only those with `[lists.NAME] welcome`), so a second click sends none."""

    email: str
    list_name: str
    locale: str
    unsubscribe_url: str


@dataclass(frozen=True, slots=True)
class ConfirmOutcome:
    status: TokenStatus
    lists: tuple[str, ...] = ()  # list names concerned
    locale: str | None = None
    signed_at: datetime | None = None
    mail: ConfirmationMail | None = None
    welcomes: tuple[Welcome, ...] = ()


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The unsubscribe acknowledgement to send (policy.unsubscribe_ack), after the answer."""

    email: str
    list_title: str
    locale: str


@dataclass(frozen=True, slots=True)
class UnsubscribeOutcome:
    status: TokenStatus
    list_name: str = ""  # the list of the mail the link came from
    subscribed: tuple[str, ...] = ()  # lists the person is on (confirmed or pending)
    left: tuple[str, ...] = ()  # lists this unsubscribe ended
    everything: bool = False
    locale: str | None = None
    ack: Acknowledgement | None = None
    # The basis of the mail the link came in (None: consent). existing_customer: the
    # unsubscribe is also an objection to mail as a customer; role_address: it ends all mail.
    basis: str | None = None
    objected: bool = False  # the customer basis ended with this unsubscribe
