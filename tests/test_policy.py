"""Rule 1 of DESIGN.md, table-driven: every basis and every skip reason, and the subtle cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.models import ConsentEvent, ConsentOrigin
from mailer.policy import (
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

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
NEWS = CampaignFacts(list_name="newsletter", category="brood")
NL = PolicyRules(jurisdiction="NL", offer_addresses=frozenset({"offertes@groothandel.example"}))
BE = PolicyRules(jurisdiction="BE", role_addresses=True)


def consent(event: ConsentEvent, days_ago: float, list_name: str = "newsletter",
            origin: ConsentOrigin = ConsentOrigin.WEB) -> ConsentFact:  # fmt: skip
    return ConsentFact(list_name, event, origin, NOW - days_ago * DAY)


REQ, CONF, WD = ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED, ConsentEvent.WITHDRAWN
CONFIRMED = (consent(REQ, 30), consent(CONF, 29))
BREAD = PurchaseFact("brood", NOW - 10 * DAY, optout_offered=True)

CASES = [
    ("confirmed-consent", ContactFacts("a@x.nl", consents=CONFIRMED), NL, Basis.CONSENT),
    ("customer-similar-product", ContactFacts("b@x.nl", purchases=(BREAD,)), NL,
     Basis.EXISTING_CUSTOMER),
    ("nl-offer-address", ContactFacts("offertes@groothandel.example"), NL, Basis.ROLE_ADDRESS),
    ("be-role-address", ContactFacts("info@bedrijf.be"), BE, Basis.ROLE_ADDRESS),
    ("suppressed", ContactFacts("c@x.nl", consents=CONFIRMED,
                                suppressions=(SuppressionFact("unsubscribed", NOW - DAY),)), NL,
     SkipReason.SUPPRESSED),
    ("pending", ContactFacts("d@x.nl", consents=(consent(REQ, 2),)), NL,
     SkipReason.PENDING_CONFIRMATION),
    ("other-list", ContactFacts("e@x.nl", consents=(consent(REQ, 9, "offers"),
                                                     consent(CONF, 9, "offers"))), NL,
     SkipReason.OTHER_LIST),
    ("other-category", ContactFacts("f@x.nl", purchases=(PurchaseFact("taart", NOW - DAY, True),)),
     NL, SkipReason.OTHER_CATEGORY),
    ("optout-not-offered", ContactFacts("g@x.nl", purchases=(PurchaseFact("brood", NOW - DAY,
                                                                          False),)), NL,
     SkipReason.OPTOUT_NOT_OFFERED),
    ("objected", ContactFacts("h@x.nl", purchases=(PurchaseFact("brood", NOW - 9 * DAY, True,
                                                                NOW - DAY),)), NL,
     SkipReason.OBJECTED),
    ("no-basis", ContactFacts("i@x.nl"), NL, SkipReason.NO_BASIS),
    ("nl-info-is-not-exempt", ContactFacts("info@bedrijf.nl"), NL, SkipReason.NO_BASIS),
    ("be-role-addresses-off", ContactFacts("info@bedrijf.be"),
     PolicyRules(jurisdiction="BE", role_addresses=False), SkipReason.NO_BASIS),
    ("be-personal-address", ContactFacts("jan.peeters@bedrijf.be"), BE, SkipReason.NO_BASIS),
    # The flag of the other country has no effect: NL never exempts info@, BE has no list.
    ("nl-role-addresses-flag-has-no-effect", ContactFacts("info@bedrijf.nl"),
     PolicyRules(jurisdiction="NL", role_addresses=True), SkipReason.NO_BASIS),
    ("be-ignores-offer-addresses", ContactFacts("offertes@groothandel.example"),
     PolicyRules(jurisdiction="BE", offer_addresses=frozenset({"offertes@groothandel.example"})),
     SkipReason.NO_BASIS),
    ("be-role-address-any-case", ContactFacts("Sales@Bedrijf.be"), BE, Basis.ROLE_ADDRESS),
    ("withdrawn-consent", ContactFacts("j@x.nl", consents=(*CONFIRMED, consent(WD, 1))), NL,
     SkipReason.NO_BASIS),
    ("imported-consent-does-not-lift-suppression",
     ContactFacts("k@x.nl", consents=(consent(REQ, 1, origin=ConsentOrigin.IMPORT),
                                      consent(CONF, 1, origin=ConsentOrigin.IMPORT)),
                  suppressions=(SuppressionFact("erased", NOW - 5 * DAY),)), NL,
     SkipReason.SUPPRESSED),
    ("new-double-opt-in-lifts-suppression",
     ContactFacts("l@x.nl", consents=(consent(REQ, 1), consent(CONF, 1)),
                  suppressions=(SuppressionFact("unsubscribed", NOW - 5 * DAY),)), NL,
     Basis.CONSENT),
    ("web-confirmation-before-suppression-does-not-lift-it",
     ContactFacts("m@x.nl", consents=CONFIRMED,
                  suppressions=(SuppressionFact("unsubscribed", NOW - 5 * DAY),)), NL,
     SkipReason.SUPPRESSED),
    ("list-scoped-suppression-blocks-that-list",
     ContactFacts("n@x.nl", consents=CONFIRMED,
                  suppressions=(SuppressionFact("unsubscribed", NOW - DAY, "newsletter"),)), NL,
     SkipReason.SUPPRESSED),
    ("list-scoped-suppression-spares-other-lists",
     ContactFacts("o@x.nl", consents=CONFIRMED,
                  suppressions=(SuppressionFact("unsubscribed", NOW - DAY, "offers"),)), NL,
     Basis.CONSENT),
    ("soft-optin-off", ContactFacts("p@x.nl", purchases=(BREAD,)),
     PolicyRules(soft_optin=False), SkipReason.NO_BASIS),
    ("objection-beats-role-address",
     ContactFacts("info@bedrijf.be", purchases=(PurchaseFact("brood", NOW - 9 * DAY, True,
                                                             NOW - DAY),)), BE,
     SkipReason.OBJECTED),
    ("facts-after-now-are-ignored",
     ContactFacts("q@x.nl", consents=(consent(REQ, -1), consent(CONF, -2))), NL,
     SkipReason.NO_BASIS),
    ("consent-beats-customer-skip",
     ContactFacts("r@x.nl", consents=CONFIRMED,
                  purchases=(PurchaseFact("taart", NOW - DAY, True),)), NL, Basis.CONSENT),
]  # fmt: skip


@pytest.mark.parametrize(("facts", "rules", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_policy_decides_the_basis_or_the_skip_reason(
    facts: ContactFacts, rules: PolicyRules, expected: Basis | SkipReason
) -> None:
    decision = decide(facts, NEWS, NOW, rules)
    assert decision.label == str(expected)
    assert decision.allowed == isinstance(expected, Basis)


def test_every_basis_and_every_skip_reason_is_covered_by_the_table() -> None:
    labels = {str(c[3]) for c in CASES}
    assert labels == {str(b) for b in Basis} | {str(r) for r in SkipReason}


def test_a_campaign_without_category_gives_customers_no_basis() -> None:
    decision = decide(ContactFacts("b@x.nl", purchases=(BREAD,)), CampaignFacts("newsletter"),
                      NOW, NL)  # fmt: skip
    assert decision == Decision(skip=SkipReason.OTHER_CATEGORY)


def test_a_decision_has_exactly_one_of_basis_and_skip() -> None:
    with pytest.raises(ValueError, match="either a basis or a skip reason"):
        Decision(basis=Basis.CONSENT, skip=SkipReason.NO_BASIS)
    with pytest.raises(ValueError, match="either a basis or a skip reason"):
        Decision()


times = st.integers(min_value=-5, max_value=60).map(lambda d: NOW - d * DAY)
consents = st.builds(
    ConsentFact,
    st.sampled_from(["newsletter", "offers"]),
    st.sampled_from(list(ConsentEvent)),
    st.sampled_from(list(ConsentOrigin)),
    times,
)
purchases = st.builds(
    PurchaseFact, st.sampled_from(["brood", "taart"]), times, st.booleans(),
    st.none() | times,
)  # fmt: skip
suppressions = st.builds(
    SuppressionFact, st.sampled_from(["unsubscribed", "erased", "hard_bounce"]), times,
    st.sampled_from([None, "newsletter", "offers"]),
)  # fmt: skip
contacts = st.builds(
    ContactFacts,
    st.sampled_from(["info@bedrijf.be", "jan@x.nl", "offertes@groothandel.example"]),
    st.lists(consents, max_size=6),
    st.lists(purchases, max_size=3),
    st.lists(suppressions, max_size=2),
)
rules = st.builds(
    PolicyRules, st.sampled_from(["NL", "BE"]), st.booleans(), st.booleans(),
    st.just(frozenset({"offertes@groothandel.example"})),
)  # fmt: skip


@given(contacts, rules)
def test_a_suppressed_person_is_mailed_only_after_their_own_later_confirmation(
    facts: ContactFacts, policy: PolicyRules
) -> None:
    decision = decide(facts, NEWS, NOW, policy)
    assert (decision.basis is None) != (decision.skip is None)
    blocking = [s.at for s in facts.suppressions
                if s.at <= NOW and s.scope in (None, "newsletter")]  # fmt: skip
    if blocking and decision.allowed:
        own = [c.at for c in facts.consents if c.list_name == "newsletter"
               and c.event is CONF and c.origin is ConsentOrigin.WEB and c.at <= NOW]  # fmt: skip
        assert decision.basis is Basis.CONSENT
        assert own and max(own) > max(blocking)
