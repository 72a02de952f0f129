"""A second, deliberately naive reading of rule 1 of DESIGN.md, to check `policy.decide` against.

It shares no code with `mailer.core.policy`: it reads the facts by attribute name (so the
policy's fact types and plain records both do), compares enum values as the strings DESIGN.md
uses, and answers with the label the ledger stores ("consent", "suppressed", ...). Where
`decide` replays the consent events in time order, this reads each state off the events
declaratively ("a confirmation after the last withdrawal"), so the two can only agree by both
being right.

Events at the same instant count in the order they are given (a stable reading of the trail).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

__all__ = ["ROLE_LOCAL_PARTS", "naive_label"]

# DESIGN.md rule 1, role address (BE): "an impersonal address of a legal person (info@, sales@)".
# Only the words the tests use; the README lists the rest.
ROLE_LOCAL_PARTS = frozenset({"info", "sales", "contact", "verkoop"})


def _events(consents: Sequence[Any], list_name: str, now: datetime) -> list[tuple[str, str]]:
    """(event, origin) of one list's events known at `now`, oldest first, ties as given."""
    known = [(c.at, i, str(c.event), str(c.origin)) for i, c in enumerate(consents)
             if c.list_name == list_name and c.at <= now]  # fmt: skip
    return [(event, origin) for _at, _i, event, origin in sorted(known)]


def _since_last_withdrawal(events: list[tuple[str, str]]) -> list[tuple[str, str]]:
    withdrawals = [i for i, (event, _) in enumerate(events) if event == "withdrawn"]
    return events[withdrawals[-1] + 1 :] if withdrawals else events


def _confirmed(consents: Sequence[Any], list_name: str, now: datetime) -> bool:
    """Consent: a confirmed double opt-in to the list that was not withdrawn since."""
    return any(
        e == "confirmed" for e, _ in _since_last_withdrawal(_events(consents, list_name, now))
    )


def _pending(consents: Sequence[Any], list_name: str, now: datetime) -> bool:
    """An unconfirmed signup: requested since the last withdrawal, never confirmed since."""
    current = [e for e, _ in _since_last_withdrawal(_events(consents, list_name, now))]
    return "requested" in current and "confirmed" not in current


def _confirmed_on_our_page_after(
    consents: Sequence[Any], list_name: str, now: datetime, moment: datetime
) -> bool:
    """The person themselves confirmed (web double opt-in) after `moment`, still in force."""
    in_force: list[Any] = []
    for c in sorted((c for c in consents if c.list_name == list_name and c.at <= now),
                    key=lambda c: c.at):  # fmt: skip
        in_force = [] if str(c.event) == "withdrawn" else [*in_force, c]
    return any(
        str(c.event) == "confirmed" and str(c.origin) == "web" and c.at > moment for c in in_force
    )


def _role_address(
    email: str, jurisdiction: str, role_addresses: bool, offer_addresses: Collection[str]
) -> bool:
    address = email.lower()
    if jurisdiction == "BE":  # impersonal addresses of companies, when switched on
        return role_addresses and address.partition("@")[0] in ROLE_LOCAL_PARTS
    # NL: the AP exempts only an address a company published for receiving offers.
    return address in {a.lower() for a in offer_addresses}


def naive_label(
    *,
    email: str,
    consents: Sequence[Any],
    purchases: Sequence[Any],
    suppressions: Sequence[Any],
    list_name: str,
    category: str | None,
    now: datetime,
    jurisdiction: str = "NL",
    soft_optin: bool = True,
    role_addresses: bool = False,
    offer_addresses: Collection[str] = (),
) -> str:
    """The basis ("consent", "existing_customer", "role_address") or the skip reason."""
    # 1. Suppressed (for every list, or for this one): never, until the person confirms a new
    #    double opt-in themselves, after the newest suppression. An import never lifts one.
    blocking = [s.at for s in suppressions if s.at <= now and s.scope in (None, list_name)]
    if blocking:
        if _confirmed_on_our_page_after(consents, list_name, now, max(blocking)):
            return "consent"
        return "suppressed"
    # 2. Consent to this list.
    if _confirmed(consents, list_name, now):
        return "consent"
    # 3. Existing customer. An objection (AVG art. 21) is the person's own "no" and beats the
    #    bases that follow.
    bought = [p for p in purchases if p.at <= now]
    if any(p.objected_at is not None and p.objected_at <= now for p in bought):
        return "objected"
    similar = [p for p in bought if category is not None and p.category == category]
    if soft_optin and any(p.optout_offered for p in similar):
        return "existing_customer"
    # 4. Role address.
    if _role_address(email, jurisdiction, role_addresses, offer_addresses):
        return "role_address"
    # 5. Nothing: the most specific reason.
    if _pending(consents, list_name, now):
        return "pending_confirmation"
    if soft_optin and bought:
        return "optout_not_offered" if similar else "other_category"
    others = {c.list_name for c in consents if c.list_name != list_name}
    if any(_confirmed(consents, other, now) for other in others):
        return "other_list"
    return "no_basis"
