"""Rule 1 at its edges: facts dated exactly `now`, ties, the order of the trail, the rule order.

Each test here pins one choice of `policy.decide` that a one-character change would flip and
that a user would notice (tools/mutate.py found them surviving).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mailer.core.policy import (
    BE_ROLE_LOCAL_PARTS,
    Basis,
    CampaignFacts,
    ConsentFact,
    ContactFacts,
    Decision,
    PolicyRules,
    PurchaseFact,
    SkipReason,
    SuppressionFact,
    decide,
)
from mailer.core.states import ConsentEvent, ConsentOrigin
from tests.policy_oracle import ROLE_LOCAL_PARTS

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
NEWS = CampaignFacts(list_name="newsletter", category="brood")
NL = PolicyRules(jurisdiction="NL")
BE = PolicyRules(jurisdiction="BE", role_addresses=True)
REQ, CONF, WD = ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED, ConsentEvent.WITHDRAWN
WEB, IMPORT = ConsentOrigin.WEB, ConsentOrigin.IMPORT


def at(days_ago: float) -> datetime:
    return NOW - days_ago * DAY


def event(kind: ConsentEvent, when: datetime, list_name: str = "newsletter",
          origin: ConsentOrigin = WEB) -> ConsentFact:  # fmt: skip
    return ConsentFact(list_name, kind, origin, when)


def label(facts: ContactFacts, rules: PolicyRules = NL, campaign: CampaignFacts = NEWS) -> str:
    return decide(facts, campaign, NOW, rules).label


# -- a fact dated exactly `now` is known at `now` ----------------------------------------------


def test_a_confirmation_at_now_is_consent() -> None:
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(1)), event(CONF, NOW)))
    assert decide(facts, NEWS, NOW, NL) == Decision(basis=Basis.CONSENT)


def test_a_withdrawal_at_now_ends_the_consent() -> None:
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(9)), event(CONF, at(8)), event(WD, NOW)))
    assert label(facts) == "no_basis"


def test_a_suppression_at_now_blocks() -> None:
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(9)), event(CONF, at(8))),
                         suppressions=(SuppressionFact("unsubscribed", NOW),))  # fmt: skip
    assert label(facts) == "suppressed"


def test_a_purchase_at_now_makes_an_existing_customer() -> None:
    facts = ContactFacts("a@x.nl", purchases=(PurchaseFact("brood", NOW, True),))
    assert label(facts) == "existing_customer"


def test_an_objection_at_now_counts() -> None:
    facts = ContactFacts("a@x.nl", purchases=(PurchaseFact("brood", at(5), True, NOW),))
    assert label(facts) == "objected"


def test_a_confirmation_to_another_list_at_now_is_another_list() -> None:
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(1), "offers"),
                                             event(CONF, NOW, "offers")))  # fmt: skip
    assert label(facts) == "other_list"


def test_a_future_confirmation_to_another_list_is_not_another_list_yet() -> None:
    later = NOW + timedelta(seconds=1)
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(1), "offers"),
                                             event(CONF, later, "offers")))  # fmt: skip
    assert label(facts) == "no_basis"
    assert decide(facts, NEWS, later, NL).label == "other_list"


# -- suppressions: ties and more than one ------------------------------------------------------


def test_a_web_confirmation_at_the_same_instant_as_the_suppression_does_not_lift_it() -> None:
    # DESIGN.md rule 1: "until the person confirms a new double opt-in": new means after.
    moment = at(2)
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(3)), event(CONF, moment)),
                         suppressions=(SuppressionFact("unsubscribed", moment),))  # fmt: skip
    assert label(facts) == "suppressed"
    one_second_later = ContactFacts(
        "a@x.nl", consents=(event(REQ, at(3)), event(CONF, moment + timedelta(seconds=1))),
        suppressions=facts.suppressions,
    )  # fmt: skip
    assert label(one_second_later) == "consent"


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_a_confirmation_between_two_suppressions_does_not_lift_the_newer_one(order: str) -> None:
    suppressions = [SuppressionFact("unsubscribed", at(10)), SuppressionFact("complaint", at(2))]
    if order == "newest first":
        suppressions.reverse()
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(6)), event(CONF, at(5))),
                         suppressions=tuple(suppressions))  # fmt: skip
    assert label(facts) == "suppressed"


# -- the trail is read in time order, whatever order the database returns it in ----------------


TRAILS = [
    ("confirmed, withdrawn, confirmed again",
     [event(REQ, at(30)), event(CONF, at(29)), event(WD, at(20)), event(CONF, at(2))], "consent"),
    ("confirmed, then withdrawn",
     [event(REQ, at(30)), event(CONF, at(29)), event(WD, at(1))], "no_basis"),
    ("withdrawn, then signed up again and not confirmed",
     [event(REQ, at(30)), event(CONF, at(29)), event(WD, at(20)), event(REQ, at(1))],
     "pending_confirmation"),
    ("confirmed, then requested again (a second signup)",
     [event(REQ, at(30)), event(CONF, at(29)), event(REQ, at(1))], "consent"),
]  # fmt: skip


@pytest.mark.parametrize(("trail", "expected"), [t[1:] for t in TRAILS], ids=[t[0] for t in TRAILS])
def test_the_decision_does_not_depend_on_the_order_the_events_are_stored_in(
    trail: list[ConsentFact], expected: str
) -> None:
    shuffler = random.Random(17)
    orders = [trail, trail[::-1]] + [shuffler.sample(trail, len(trail)) for _ in range(6)]
    assert {label(ContactFacts("a@x.nl", consents=tuple(o))) for o in orders} == {expected}


def test_a_web_confirmation_lifts_a_suppression_whatever_the_stored_order() -> None:
    trail = [event(REQ, at(30)), event(CONF, at(29)), event(WD, at(20)), event(REQ, at(3)),
             event(CONF, at(2))]  # fmt: skip
    suppressions = (SuppressionFact("unsubscribed", at(20)),)
    for order in (trail, trail[::-1]):
        assert label(ContactFacts("a@x.nl", consents=tuple(order),
                                  suppressions=suppressions)) == "consent"  # fmt: skip
    # Withdrawn after that confirmation: the suppression holds again, in any order.
    withdrawn = [*trail, event(WD, at(1))]
    for order in (withdrawn, withdrawn[::-1]):
        assert label(ContactFacts("a@x.nl", consents=tuple(order),
                                  suppressions=suppressions)) == "suppressed"  # fmt: skip


# -- the order of the rule ---------------------------------------------------------------------


def test_a_role_address_is_mailed_even_with_a_pending_signup() -> None:
    # Rule 1 order: a role address is a basis; a pending signup is only a reason to skip.
    pending = ContactFacts("info@bedrijf.be", consents=(event(REQ, at(1)),))
    assert label(pending, BE) == "role_address"
    assert label(pending, NL) == "pending_confirmation"


def test_an_existing_customer_beats_a_role_address_as_the_recorded_basis() -> None:
    facts = ContactFacts("info@bedrijf.be", purchases=(PurchaseFact("brood", at(3), True),))
    assert label(facts, BE) == "existing_customer"


def test_a_pending_signup_is_more_specific_than_a_purchase_of_another_kind() -> None:
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(1)),),
                         purchases=(PurchaseFact("taart", at(3), True),))  # fmt: skip
    assert label(facts) == "pending_confirmation"


def test_a_purchase_of_another_kind_is_more_specific_than_another_list() -> None:
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(9), "offers"),
                                             event(CONF, at(8), "offers")),
                         purchases=(PurchaseFact("taart", at(3), True),))  # fmt: skip
    assert label(facts) == "other_category"
    without_soft_optin = PolicyRules(jurisdiction="NL", soft_optin=False)
    assert label(facts, without_soft_optin) == "other_list"


def test_only_a_withdrawal_from_the_other_list_itself_ends_it() -> None:
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(9), "offers"),
                                             event(CONF, at(8), "offers"),
                                             event(WD, at(1), "newsletter")))  # fmt: skip
    assert label(facts) == "other_list"


def test_a_suppression_scoped_to_another_list_does_not_block_this_one() -> None:
    offers_only = (SuppressionFact("unsubscribed", at(1), "offers"),)
    facts = ContactFacts("a@x.nl", consents=(event(REQ, at(9)), event(CONF, at(8))),
                         suppressions=offers_only)  # fmt: skip
    assert label(facts) == "consent"


def test_an_imported_confirmation_is_consent_but_does_not_lift_a_suppression() -> None:
    trail = (event(REQ, at(3), origin=IMPORT), event(CONF, at(2), origin=IMPORT))
    assert label(ContactFacts("a@x.nl", consents=trail)) == "consent"
    blocked = ContactFacts("a@x.nl", consents=trail,
                           suppressions=(SuppressionFact("unsubscribed", at(5)),))  # fmt: skip
    assert label(blocked) == "suppressed"


def test_the_oracle_uses_only_words_the_policy_counts_as_role_addresses() -> None:
    # tests/policy_oracle.py keeps its own few words; comparing with decide is fair only if
    # each of them is one of the policy's (BE) role local parts.
    assert ROLE_LOCAL_PARTS <= BE_ROLE_LOCAL_PARTS
    for word in sorted(ROLE_LOCAL_PARTS):
        assert label(ContactFacts(f"{word}@bedrijf.be"), BE) == "role_address"
        assert label(ContactFacts(f"{word}x@bedrijf.be"), BE) == "no_basis"


def test_a_decision_says_whether_it_allows_and_what_it_is() -> None:
    assert Decision(basis=Basis.ROLE_ADDRESS).allowed is True
    assert Decision(skip=SkipReason.OBJECTED).allowed is False
    assert Decision(basis=Basis.EXISTING_CUSTOMER).label == "existing_customer"
    assert Decision(skip=SkipReason.OPTOUT_NOT_OFFERED).label == "optout_not_offered"


def test_the_policy_defaults_are_soft_optin_on_and_role_addresses_off() -> None:
    # DESIGN.md rule 1: the role-address basis is "off by default"; config.example.toml too.
    default = PolicyRules()
    assert (default.jurisdiction, default.soft_optin, default.role_addresses) == ("NL", True, False)
    assert label(ContactFacts("info@bedrijf.be"), PolicyRules(jurisdiction="BE")) == "no_basis"
    customer = ContactFacts("a@x.nl", purchases=(PurchaseFact("brood", at(3), True),))
    assert label(customer, PolicyRules()) == "existing_customer"
