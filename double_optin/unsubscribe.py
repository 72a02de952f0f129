"""Unsubscribe: withdraw consent and suppress at once, in the caller's transaction.

The withdrawal and the suppression go in together, so a running campaign skips the person from
the next message on (sending re-checks suppression before each send). The one-click POST of
RFC 8058 and the button of the unsubscribe page both end here; the web layer renders the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection as DbConnection

from double_optin.outcomes import ALL_LISTS, Acknowledgement, TokenStatus, UnsubscribeOutcome
from mailer.config import Settings
from mailer.store import signups as store
from mailer.store.models import ConsentEvent

__all__ = ["ACTIVE", "ALL_TITLE", "Unsubscribe", "record_unsubscribe"]

ACTIVE = (ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED)
# What "everything" is called in the acknowledgement ("afgemeld voor al onze e-mail van ...").
ALL_TITLE = {"nl": "al onze e-mail", "en": "all our e-mail"}


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What a verified unsubscribe link asks, with who asked (None: only show the page)."""

    contact_id: int
    list_name: str
    # A list name, ALL_LISTS, or None for the list of the mail the link came from.
    scope: str | None
    how: str  # stored as the withdrawal's wording
    evidence: store.Evidence | None
    basis: str | None = None
    # An id given to someone else after an erasure (databases from before AUTOINCREMENT) must
    # not act on them: the token names the address it was made for (TokenSigner.made_for).
    made_for: Callable[[str], bool] = field(default=lambda _email: True)


def record_unsubscribe(
    conn: DbConnection, settings: Settings, hash_keys: Sequence[str], asked: Unsubscribe
) -> UnsubscribeOutcome:
    """The unsubscribe page's choices (a view: `asked.evidence` None) or the unsubscribe
    itself, on `conn` inside the caller's transaction."""
    contact_id, list_name, basis = asked.contact_id, asked.list_name, asked.basis
    scope, evidence = asked.scope, asked.evidence
    contact = store.contact_by_id(conn, contact_id)
    # An id given to someone else after an erasure (databases from before AUTOINCREMENT)
    # must not act on them: the token names the address it was made for.
    if contact is None or not asked.made_for(contact.email):
        # Erased: the erasure left a hashed suppression for every list; nothing to do.
        return UnsubscribeOutcome(TokenStatus.STALE, list_name)
    latest = store.latest_events(conn, contact_id)
    active = tuple(n for n, e in latest.items() if e.event in ACTIVE)
    subscribed = tuple(dict.fromkeys((list_name, *active)))
    if evidence is None:
        return UnsubscribeOutcome(
            TokenStatus.READY, list_name, subscribed, locale=contact.locale, basis=basis
        )
    # A mail to a role address (no consent, no customer) had no list of its own to
    # leave: its unsubscribe ends all mail to the address (issue 14, row 4).
    everything = scope == ALL_LISTS or basis == "role_address"
    # None suppresses every list. The page only offers the person's own lists; any
    # other value (or none: the one-click POST) means the list of the mail.
    target = None if everything else (scope if scope in subscribed else list_name)
    ending = active if everything else tuple(n for n in (target,) if n in active)
    withdrawn = dict.fromkeys(ending, asked.how)
    store.add_events(conn, contact_id, withdrawn, ConsentEvent.WITHDRAWN, evidence)
    added = store.suppress(conn, hash_keys, contact, [target], evidence.at)
    objected = False
    if basis == "existing_customer":
        # Tw 11.7(2): the opt-out in a soft opt-in mail objects to "such use" of the
        # address: every customer-basis campaign skips the person from now on.
        objected = store.object_to_customer_basis(conn, contact_id, evidence.at) > 0
    left = ending if everything else (target or list_name,)
    ack = None
    # Only when something changed: a provider retrying the one-click POST, or a second
    # click, must not send a second acknowledgement.
    if settings.policy.acknowledge_unsubscribe and (ending or added or objected):
        locale = contact.locale if contact.locale in ALL_TITLE else settings.locale
        lists = settings.lists
        titles = [lists[n].text_for(locale).title for n in left if n in lists]
        title = ALL_TITLE[locale] if everything or not titles else ", ".join(titles)
        ack = Acknowledgement(contact.email, title, locale)
    return UnsubscribeOutcome(
        TokenStatus.UNSUBSCRIBED,
        list_name,
        subscribed,
        left,
        everything,
        contact.locale,
        ack,
        basis,
        objected,
    )
