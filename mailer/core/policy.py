"""Rule 1 of DESIGN.md as one pure function: may this person get this campaign, and on what basis?

`decide` takes facts, never a database or a clock: the caller passes `now`. The answer is a value
(`Decision`) that the ledger stores, the report counts and the demo shows.

Order of the rule:
  1. a suppression (unsubscribed, objected, bounced, complained, erased) blocks, unless the person
     confirmed a new double opt-in for this list themselves after it (an import never lifts one);
  2. confirmed consent to this list;
  3. existing customer: bought a product of this campaign's category (or of one below it, see
     core.categories), was offered an opt-out when the address was collected, has not
     objected (and `policy.soft_optin` is on);
  4. role address: BE impersonal address of a company (`policy.role_addresses`), or in NL an
     address the company published for receiving offers (`policy.offer_addresses`);
  5. otherwise skip, with the most specific reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mailer.core.categories import category_matches
from mailer.core.states import ConsentEvent, ConsentOrigin

__all__ = [
    "BE_ROLE_LOCAL_PARTS",
    "Basis",
    "CampaignFacts",
    "ConsentFact",
    "ContactFacts",
    "Decider",
    "Decision",
    "PolicyRules",
    "PurchaseFact",
    "SkipReason",
    "SuppressionFact",
    "consent_state",
    "decide",
    "is_role_address",
]


class Basis(StrEnum):
    CONSENT = "consent"
    EXISTING_CUSTOMER = "existing_customer"
    ROLE_ADDRESS = "role_address"


class SkipReason(StrEnum):
    SUPPRESSED = "suppressed"
    PENDING_CONFIRMATION = "pending_confirmation"
    OTHER_LIST = "other_list"
    OTHER_CATEGORY = "other_category"
    OPTOUT_NOT_OFFERED = "optout_not_offered"
    OBJECTED = "objected"
    NO_BASIS = "no_basis"


# Impersonal local parts of legal persons that Belgian practice treats as not personal data
# (FOD Economie: "info@", "sales@", ...). Documented in the README; compared case-insensitively.
BE_ROLE_LOCAL_PARTS: frozenset[str] = frozenset(
    {
        "admin", "administratie", "administration", "boekhouding", "commercial", "contact",
        "hello", "hallo", "info", "inkoop", "office", "orders", "purchasing", "reception",
        "sales", "secretariaat", "secretariat", "verkoop", "welcome",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConsentFact:
    """One consent event of the contact (any list)."""

    list_name: str
    event: ConsentEvent
    origin: ConsentOrigin
    at: datetime


@dataclass(frozen=True, slots=True)
class PurchaseFact:
    category: str
    at: datetime
    optout_offered: bool
    objected_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SuppressionFact:
    reason: str
    at: datetime
    scope: str | None = None  # None: every list


@dataclass(frozen=True, slots=True)
class ContactFacts:
    email: str
    consents: Sequence[ConsentFact] = ()
    purchases: Sequence[PurchaseFact] = ()
    suppressions: Sequence[SuppressionFact] = ()


@dataclass(frozen=True, slots=True)
class CampaignFacts:
    list_name: str
    category: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyRules:
    jurisdiction: str = "NL"
    soft_optin: bool = True
    role_addresses: bool = False
    offer_addresses: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Decision:
    basis: Basis | None = None
    skip: SkipReason | None = None

    def __post_init__(self) -> None:
        if (self.basis is None) == (self.skip is None):
            raise ValueError("a decision has either a basis or a skip reason")

    @property
    def allowed(self) -> bool:
        return self.basis is not None

    @property
    def label(self) -> str:
        return str(self.basis or self.skip)


# Every possible answer, built once: `decide` returns these shared values (a Decision is frozen).
_ALLOW = {basis: Decision(basis=basis) for basis in Basis}
_SKIP = {reason: Decision(skip=reason) for reason in SkipReason}


@dataclass(frozen=True, slots=True)
class _ListState:
    confirmed_at: datetime | None  # latest confirmation still in force
    self_confirmed_at: datetime | None  # the same, if the person confirmed it on our page
    pending: bool  # requested, not (yet) confirmed


def _list_state(events: Iterable[ConsentFact], list_name: str) -> _ListState:
    confirmed_at: datetime | None = None
    self_confirmed_at: datetime | None = None
    pending = False
    for fact in sorted((e for e in events if e.list_name == list_name), key=lambda e: e.at):
        if fact.event is ConsentEvent.REQUESTED:
            pending = confirmed_at is None
        elif fact.event is ConsentEvent.CONFIRMED:
            confirmed_at, pending = fact.at, False
            if fact.origin is ConsentOrigin.WEB:
                self_confirmed_at = fact.at
        else:  # withdrawn
            confirmed_at, self_confirmed_at, pending = None, None, False
    return _ListState(confirmed_at, self_confirmed_at, pending)


def consent_state(events: Iterable[ConsentFact], list_name: str) -> str:
    """One list's consent as `decide` reads it: confirmed, pending, withdrawn or none."""
    mine = [e for e in events if e.list_name == list_name]
    state = _list_state(mine, list_name)
    if state.confirmed_at is not None:
        return "confirmed"
    if state.pending:
        return "pending"
    return "withdrawn" if any(e.event is ConsentEvent.WITHDRAWN for e in mine) else "none"


def is_role_address(email: str, rules: PolicyRules) -> bool:
    address = email.lower()
    if rules.jurisdiction == "BE":
        return rules.role_addresses and address.split("@", 1)[0] in BE_ROLE_LOCAL_PARTS
    # NL: the AP does not exempt info@; only addresses published for receiving offers.
    return address in rules.offer_addresses


def decide(
    contact: ContactFacts, campaign: CampaignFacts, now: datetime, rules: PolicyRules
) -> Decision:
    """The basis on which `contact` may receive `campaign` at `now`, or why not."""
    state = _list_state((c for c in contact.consents if c.at <= now), campaign.list_name)

    blocking = [
        s
        for s in contact.suppressions
        if s.at <= now and (s.scope is None or s.scope == campaign.list_name)
    ]
    if blocking:
        latest = max(s.at for s in blocking)
        if state.self_confirmed_at is not None and state.self_confirmed_at > latest:
            return _ALLOW[Basis.CONSENT]
        return _SKIP[SkipReason.SUPPRESSED]

    if state.confirmed_at is not None:
        return _ALLOW[Basis.CONSENT]

    customer_skip: SkipReason | None = None
    purchases = [p for p in contact.purchases if p.at <= now]
    # An objection (AVG art. 21) counts whether or not the soft opt-in is used.
    if any(p.objected_at is not None and p.objected_at <= now for p in purchases):
        customer_skip = SkipReason.OBJECTED
    elif rules.soft_optin and purchases:
        # Case- and space-insensitive; a campaign category matches the categories below it.
        similar = [p for p in purchases if category_matches(campaign.category, p.category)]
        if not similar:
            customer_skip = SkipReason.OTHER_CATEGORY
        elif any(p.optout_offered for p in similar):
            return _ALLOW[Basis.EXISTING_CUSTOMER]
        else:
            customer_skip = SkipReason.OPTOUT_NOT_OFFERED

    # An objection (AVG art. 21) is the person's own "no": no other basis overrides it.
    if customer_skip is SkipReason.OBJECTED:
        return _SKIP[customer_skip]
    if is_role_address(contact.email, rules):
        return _ALLOW[Basis.ROLE_ADDRESS]
    if state.pending:
        return _SKIP[SkipReason.PENDING_CONFIRMATION]
    if customer_skip is not None:
        return _SKIP[customer_skip]
    known = [c for c in contact.consents if c.at <= now]
    other_lists = {c.list_name for c in known if c.list_name != campaign.list_name}
    if any(_list_state(known, name).confirmed_at for name in other_lists):
        return _SKIP[SkipReason.OTHER_LIST]
    return _SKIP[SkipReason.NO_BASIS]


class Decider:
    """`decide` for the many contacts of one campaign at one instant, each answer worked out once.

    `decide` is pure and reads the address only through `is_role_address`, so contacts with
    equal facts and the same kind of address get the same answer. A list imported from one
    file has thousands of contacts with the very same events (the planner shares the fact
    objects, so the comparison is mostly by identity): their answer is looked up, not worked
    out again. Facts that are all different (web signups, each at its own instant) only cost
    the lookup; the answers kept are bounded, so memory does not grow with the list.
    """

    KEPT = 20_000

    def __init__(self, campaign: CampaignFacts, now: datetime, rules: PolicyRules) -> None:
        self.campaign, self.now, self.rules = campaign, now, rules
        self._answers: dict[tuple[object, ...], Decision] = {}

    def decide(
        self,
        email: str,
        consents: Sequence[ConsentFact] = (),
        purchases: Sequence[PurchaseFact] = (),
        suppressions: Sequence[SuppressionFact] = (),
    ) -> Decision:
        role = is_role_address(email, self.rules)
        key = (role, tuple(consents), tuple(purchases), tuple(suppressions))
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) >= self.KEPT:
                self._answers.clear()
            contact = ContactFacts(email, consents, purchases, suppressions)
            answer = self._answers[key] = decide(contact, self.campaign, self.now, self.rules)
        return answer
