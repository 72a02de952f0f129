"""Rule 1 of DESIGN.md, table-driven: every basis and every skip reason, and the subtle cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.policy import (
    Basis,
    CampaignFacts,
    ConsentFact,
    ContactFacts,
    Decider,
    Decision,
    PolicyRules,
    PurchaseFact,
    SkipReason,
    SuppressionFact,
    decide,
)
from mailer.store.models import ConsentEvent, ConsentOrigin
from tests.policy_oracle import naive_label

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
NEWS = CampaignFacts(list_name="newsletter", category="brood")
NL = PolicyRules(jurisdiction="NL", offer_addresses=frozenset({"offertes@groothandel.example"}))
BE = PolicyRules(jurisdiction="BE", role_addresses=True)
REQ, CONF, WD = ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED, ConsentEvent.WITHDRAWN
WEB, IMPORT = ConsentOrigin.WEB, ConsentOrigin.IMPORT


def consent(event: ConsentEvent, days_ago: float, list_name: str = "newsletter",
            origin: ConsentOrigin = WEB) -> ConsentFact:  # fmt: skip
    return ConsentFact(list_name, event, origin, NOW - days_ago * DAY)


def suppressed(days_ago: float, scope: str | None = None, reason: str = "unsubscribed") -> tuple[
    SuppressionFact, ...
]:  # fmt: skip
    return (SuppressionFact(reason, NOW - days_ago * DAY, scope),)


def bought(category: str = "brood", days_ago: float = 10, optout_offered: bool = True,
           objected_days_ago: float | None = None) -> PurchaseFact:  # fmt: skip
    objected = None if objected_days_ago is None else NOW - objected_days_ago * DAY
    return PurchaseFact(category, NOW - days_ago * DAY, optout_offered, objected)


CONFIRMED = (consent(REQ, 30), consent(CONF, 29))
CONFIRMED_OFFERS = (consent(REQ, 9, "offers"), consent(CONF, 9, "offers"))

# (id, facts, rules, expected): one row at least for every basis and every skip reason.
BASIS_CASES = [
    ("consent: confirmed double opt-in to this list",
     ContactFacts("a@x.nl", consents=CONFIRMED), NL, Basis.CONSENT),
    ("consent: imported with confirmation evidence",
     ContactFacts("a@x.nl", consents=(consent(REQ, 30, origin=IMPORT),
                                      consent(CONF, 29, origin=IMPORT))), NL, Basis.CONSENT),
    ("consent: withdrawn and later confirmed again",
     ContactFacts("a@x.nl", consents=(*CONFIRMED, consent(WD, 20), consent(REQ, 3),
                                      consent(CONF, 2))), NL, Basis.CONSENT),
    ("consent: beats a customer skip",
     ContactFacts("a@x.nl", consents=CONFIRMED, purchases=(bought("taart"),)), NL, Basis.CONSENT),
    ("existing_customer: similar product, opt-out offered",
     ContactFacts("b@x.nl", purchases=(bought(),)), NL, Basis.EXISTING_CUSTOMER),
    ("existing_customer: one similar purchase with opt-out offered suffices",
     ContactFacts("b@x.nl", purchases=(bought(optout_offered=False), bought(days_ago=3),
                                       bought("taart"))), NL, Basis.EXISTING_CUSTOMER),
    ("existing_customer: pending signup does not hide it",
     ContactFacts("b@x.nl", consents=(consent(REQ, 1),), purchases=(bought(),)), NL,
     Basis.EXISTING_CUSTOMER),
    ("role_address: NL address published for offers",
     ContactFacts("offertes@groothandel.example"), NL, Basis.ROLE_ADDRESS),
    ("role_address: NL offer address compared case-insensitively",
     ContactFacts("Offertes@Groothandel.EXAMPLE"), NL, Basis.ROLE_ADDRESS),
    ("role_address: BE impersonal info@ with role_addresses on",
     ContactFacts("info@bedrijf.be"), BE, Basis.ROLE_ADDRESS),
    ("role_address: BE sales@ in capitals",
     ContactFacts("SALES@bedrijf.be"), BE, Basis.ROLE_ADDRESS),
]  # fmt: skip

SKIP_CASES = [
    ("suppressed: unsubscribed after consent",
     ContactFacts("c@x.nl", consents=CONFIRMED, suppressions=suppressed(1)), NL,
     SkipReason.SUPPRESSED),
    ("suppressed: hard bounce blocks a customer",
     ContactFacts("c@x.nl", purchases=(bought(),), suppressions=suppressed(1, None, "hard_bounce")),
     NL, SkipReason.SUPPRESSED),
    ("suppressed: erased blocks a BE role address",
     ContactFacts("info@bedrijf.be", suppressions=suppressed(1, None, "erased")), BE,
     SkipReason.SUPPRESSED),
    ("pending_confirmation: signup never confirmed",
     ContactFacts("d@x.nl", consents=(consent(REQ, 2),)), NL, SkipReason.PENDING_CONFIRMATION),
    ("other_list: confirmed only to offers",
     ContactFacts("e@x.nl", consents=CONFIRMED_OFFERS), NL, SkipReason.OTHER_LIST),
    ("other_category: bought another kind of product",
     ContactFacts("f@x.nl", purchases=(bought("taart"),)), NL, SkipReason.OTHER_CATEGORY),
    ("optout_not_offered: similar product, no opt-out at collection",
     ContactFacts("g@x.nl", purchases=(bought(optout_offered=False),)), NL,
     SkipReason.OPTOUT_NOT_OFFERED),
    ("objected: customer objected",
     ContactFacts("h@x.nl", purchases=(bought(objected_days_ago=1),)), NL, SkipReason.OBJECTED),
    ("objected: objection on another purchase counts too",
     ContactFacts("h@x.nl", purchases=(bought(), bought("taart", objected_days_ago=1))), NL,
     SkipReason.OBJECTED),
    ("no_basis: nothing known",
     ContactFacts("i@x.nl"), NL, SkipReason.NO_BASIS),
    ("no_basis: withdrawn consent is not consent",
     ContactFacts("j@x.nl", consents=(*CONFIRMED, consent(WD, 1))), NL, SkipReason.NO_BASIS),
    ("no_basis: withdrawn from offers is not another list",
     ContactFacts("j@x.nl", consents=(*CONFIRMED_OFFERS, consent(WD, 1, "offers"))), NL,
     SkipReason.NO_BASIS),
]  # fmt: skip

CASES = BASIS_CASES + SKIP_CASES


@pytest.mark.parametrize(("facts", "rules", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_policy_decides_the_basis_or_the_skip_reason(
    facts: ContactFacts, rules: PolicyRules, expected: Basis | SkipReason
) -> None:
    decision = decide(facts, NEWS, NOW, rules)
    if isinstance(expected, Basis):
        assert decision == Decision(basis=expected)
        assert decision.allowed
    else:
        assert decision == Decision(skip=expected)
        assert not decision.allowed
    assert decision.label == str(expected)


def test_the_table_covers_every_basis_and_every_skip_reason() -> None:
    assert {c[3] for c in BASIS_CASES} == set(Basis)
    assert {c[3] for c in SKIP_CASES} == set(SkipReason)


def test_a_campaign_without_category_gives_customers_no_basis() -> None:
    facts = ContactFacts("f@x.nl", purchases=(bought(),))
    decision = decide(facts, CampaignFacts("newsletter"), NOW, NL)
    assert decision == Decision(skip=SkipReason.OTHER_CATEGORY)


def test_withdrawn_consent_is_not_consent() -> None:
    facts = ContactFacts("j@x.nl", consents=(*CONFIRMED, consent(WD, 1)))
    assert decide(facts, NEWS, NOW, NL) == Decision(skip=SkipReason.NO_BASIS)
    # ... but until the withdrawal it was.
    assert decide(facts, NEWS, NOW - 2 * DAY, NL) == Decision(basis=Basis.CONSENT)


def test_an_imported_confirmation_does_not_lift_a_suppression() -> None:
    facts = ContactFacts(
        "k@x.nl",
        consents=(consent(REQ, 2, origin=IMPORT), consent(CONF, 1, origin=IMPORT)),
        suppressions=suppressed(5, None, "erased"),
    )
    assert decide(facts, NEWS, NOW, NL) == Decision(skip=SkipReason.SUPPRESSED)


def test_a_later_web_double_opt_in_lifts_a_suppression() -> None:
    facts = ContactFacts(
        "l@x.nl", consents=(consent(REQ, 2), consent(CONF, 1)), suppressions=suppressed(5)
    )
    assert decide(facts, NEWS, NOW, NL) == Decision(basis=Basis.CONSENT)


def test_a_web_confirmation_older_than_the_suppression_does_not_lift_it() -> None:
    facts = ContactFacts("m@x.nl", consents=CONFIRMED, suppressions=suppressed(5))
    assert decide(facts, NEWS, NOW, NL) == Decision(skip=SkipReason.SUPPRESSED)


def test_a_web_confirmation_to_another_list_does_not_lift_a_suppression_for_this_one() -> None:
    facts = ContactFacts(
        "m@x.nl",
        consents=(*CONFIRMED, consent(REQ, 2, "offers"), consent(CONF, 1, "offers")),
        suppressions=suppressed(5),
    )
    assert decide(facts, NEWS, NOW, NL) == Decision(skip=SkipReason.SUPPRESSED)
    assert decide(facts, CampaignFacts("offers"), NOW, NL) == Decision(basis=Basis.CONSENT)


def test_a_later_import_does_not_undo_the_lifting_web_confirmation_nor_replace_it() -> None:
    web_then_import = ContactFacts(
        "m@x.nl",
        consents=(consent(REQ, 3), consent(CONF, 2), consent(CONF, 1, origin=IMPORT)),
        suppressions=suppressed(4),
    )
    assert decide(web_then_import, NEWS, NOW, NL) == Decision(basis=Basis.CONSENT)
    withdrawn_after = replace(web_then_import, consents=(*web_then_import.consents,
                                                          consent(WD, 0.5)))  # fmt: skip
    assert decide(withdrawn_after, NEWS, NOW, NL) == Decision(skip=SkipReason.SUPPRESSED)


def test_a_list_scoped_suppression_blocks_only_that_list() -> None:
    facts = ContactFacts(
        "n@x.nl",
        consents=(*CONFIRMED, *CONFIRMED_OFFERS),
        suppressions=suppressed(1, scope="newsletter"),
    )
    assert decide(facts, NEWS, NOW, NL) == Decision(skip=SkipReason.SUPPRESSED)
    assert decide(facts, CampaignFacts("offers"), NOW, NL) == Decision(basis=Basis.CONSENT)


def test_a_suppression_without_scope_blocks_every_list() -> None:
    facts = ContactFacts("n@x.nl", consents=(*CONFIRMED, *CONFIRMED_OFFERS),
                         suppressions=suppressed(1))  # fmt: skip
    for campaign in (NEWS, CampaignFacts("offers")):
        assert decide(facts, campaign, NOW, NL) == Decision(skip=SkipReason.SUPPRESSED)


def test_soft_optin_off_disables_the_existing_customer_basis() -> None:
    facts = ContactFacts("p@x.nl", purchases=(bought(),))
    assert decide(facts, NEWS, NOW, NL) == Decision(basis=Basis.EXISTING_CUSTOMER)
    off = replace(NL, soft_optin=False)
    assert decide(facts, NEWS, NOW, off) == Decision(skip=SkipReason.NO_BASIS)


def test_an_objection_beats_a_role_address() -> None:
    facts = ContactFacts("info@bedrijf.be", purchases=(bought(days_ago=9, objected_days_ago=1),))
    assert decide(facts, NEWS, NOW, BE) == Decision(skip=SkipReason.OBJECTED)


def test_an_objection_beats_a_role_address_also_with_soft_optin_off() -> None:
    # AVG art. 21: the objection is the person's own "no"; switching off the soft opt-in basis
    # must not turn it into a yes for the role-address basis.
    facts = ContactFacts("info@bedrijf.be", purchases=(bought(days_ago=9, objected_days_ago=1),))
    rules = replace(BE, soft_optin=False)
    assert decide(facts, NEWS, NOW, rules) == Decision(skip=SkipReason.OBJECTED)


def test_facts_dated_after_now_are_ignored() -> None:
    future_consent = ContactFacts("q@x.nl", consents=(consent(REQ, -1), consent(CONF, -2)))
    assert decide(future_consent, NEWS, NOW, NL) == Decision(skip=SkipReason.NO_BASIS)
    future_suppression = ContactFacts("q@x.nl", consents=CONFIRMED, suppressions=suppressed(-1))
    assert decide(future_suppression, NEWS, NOW, NL) == Decision(basis=Basis.CONSENT)
    future_withdrawal = ContactFacts("q@x.nl", consents=(*CONFIRMED, consent(WD, -1)))
    assert decide(future_withdrawal, NEWS, NOW, NL) == Decision(basis=Basis.CONSENT)
    future_purchase = ContactFacts("q@x.nl", purchases=(bought(days_ago=-1),))
    assert decide(future_purchase, NEWS, NOW, NL) == Decision(skip=SkipReason.NO_BASIS)
    future_objection = ContactFacts("q@x.nl", purchases=(bought(objected_days_ago=-1),))
    assert decide(future_objection, NEWS, NOW, NL) == Decision(basis=Basis.EXISTING_CUSTOMER)


@pytest.mark.parametrize(
    ("email", "rules", "expected"),
    [
        ("info@bedrijf.be", BE, Basis.ROLE_ADDRESS),
        ("info@bedrijf.be", replace(BE, role_addresses=False), SkipReason.NO_BASIS),
        ("jan.peeters@bedrijf.be", BE, SkipReason.NO_BASIS),
        ("info@bedrijf.nl", NL, SkipReason.NO_BASIS),
        ("info@bedrijf.nl", replace(NL, role_addresses=True), SkipReason.NO_BASIS),
        ("offertes@groothandel.example", NL, Basis.ROLE_ADDRESS),
        ("offertes@andere.example", NL, SkipReason.NO_BASIS),
        (
            "offertes@groothandel.example",
            replace(BE, role_addresses=False, offer_addresses=NL.offer_addresses),
            SkipReason.NO_BASIS,
        ),
    ],
    ids=[
        "BE info@ with role_addresses on: no opt-in needed",
        "BE info@ with role_addresses off (the default): not sent",
        "BE personal address of a company: not a role address",
        "NL info@: the AP does not exempt it",
        "NL info@ even with role_addresses on: still not exempt",
        "NL address published for offers: sent",
        "NL same local part, other company: not sent",
        "BE has no offer-address list: not sent",
    ],
)
def test_role_addresses_follow_the_jurisdiction(
    email: str, rules: PolicyRules, expected: Basis | SkipReason
) -> None:
    assert decide(ContactFacts(email), NEWS, NOW, rules).label == str(expected)


def test_a_decision_has_exactly_one_of_basis_and_skip() -> None:
    with pytest.raises(ValueError, match="either a basis or a skip reason"):
        Decision(basis=Basis.CONSENT, skip=SkipReason.NO_BASIS)
    with pytest.raises(ValueError, match="either a basis or a skip reason"):
        Decision()


# ---- properties: for any facts --------------------------------------------------------------

# Hours before NOW, weighted towards NOW itself and a few shared instants (ties, boundaries).
times = (
    st.sampled_from([0, 0, 1, 24, -1, 48]) | st.integers(min_value=-5 * 24, max_value=60 * 24)
).map(lambda h: NOW - h * DAY / 24)
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
    SuppressionFact, st.sampled_from(["unsubscribed", "objected", "erased", "hard_bounce"]), times,
    st.sampled_from([None, "newsletter", "offers"]),
)  # fmt: skip
contacts = st.builds(
    ContactFacts,
    st.sampled_from(["info@bedrijf.be", "Info@Bedrijf.nl", "jan@x.nl", "SALES@bedrijf.be",
                     "offertes@groothandel.example", "Offertes@Groothandel.example"]),
    st.lists(consents, max_size=6),
    st.lists(purchases, max_size=3),
    st.lists(suppressions, max_size=3),
)  # fmt: skip
rules = st.builds(
    PolicyRules, st.sampled_from(["NL", "BE"]), st.booleans(), st.booleans(),
    st.just(frozenset({"offertes@groothandel.example"})),
)  # fmt: skip
campaigns = st.builds(
    CampaignFacts, st.sampled_from(["newsletter", "offers"]), st.sampled_from([None, "brood"])
)


@settings(max_examples=400)
@given(contacts, campaigns, rules)
def test_decide_agrees_with_a_naive_reading_of_rule_1(
    facts: ContactFacts, campaign: CampaignFacts, policy: PolicyRules
) -> None:
    # tests/policy_oracle.py reads the rule off DESIGN.md with no code of decide's; `times`
    # puts many facts at NOW itself and at the same instant, where the boundaries are.
    expected = naive_label(
        email=facts.email, consents=facts.consents, purchases=facts.purchases,
        suppressions=facts.suppressions, list_name=campaign.list_name,
        category=campaign.category, now=NOW, jurisdiction=policy.jurisdiction,
        soft_optin=policy.soft_optin, role_addresses=policy.role_addresses,
        offer_addresses=policy.offer_addresses,
    )  # fmt: skip
    assert decide(facts, campaign, NOW, policy).label == expected


@given(contacts, campaigns, rules)
def test_a_suppressed_person_is_mailed_only_after_their_own_later_web_confirmation(
    facts: ContactFacts, campaign: CampaignFacts, policy: PolicyRules
) -> None:
    decision = decide(facts, campaign, NOW, policy)
    blocking = [s.at for s in facts.suppressions
                if s.at <= NOW and s.scope in (None, campaign.list_name)]  # fmt: skip
    if blocking and decision.allowed:
        assert decision.basis is Basis.CONSENT
        own = [c.at for c in facts.consents if c.list_name == campaign.list_name
               and c.event is CONF and c.origin is WEB and c.at <= NOW]  # fmt: skip
        assert own and max(own) > max(blocking)


@given(contacts, campaigns, rules, st.lists(consents | purchases | suppressions, max_size=4))
def test_facts_after_now_never_change_the_decision(
    facts: ContactFacts,
    campaign: CampaignFacts,
    policy: PolicyRules,
    extra: list[ConsentFact | PurchaseFact | SuppressionFact],
) -> None:
    later = [replace(f, at=NOW + DAY + (NOW - f.at) % DAY) for f in extra]
    with_future = replace(
        facts,
        consents=[*facts.consents, *(f for f in later if isinstance(f, ConsentFact))],
        purchases=[*facts.purchases, *(f for f in later if isinstance(f, PurchaseFact))],
        suppressions=[*facts.suppressions, *(f for f in later if isinstance(f, SuppressionFact))],
    )
    assert decide(with_future, campaign, NOW, policy) == decide(facts, campaign, NOW, policy)


class SmallDecider(Decider):
    KEPT = 3  # so that the answers kept are dropped and worked out again during the test


@settings(max_examples=200)
@given(st.lists(contacts, min_size=1, max_size=4), st.lists(st.integers(0, 3), max_size=12),
       campaigns, rules)  # fmt: skip
def test_the_decider_for_many_contacts_answers_as_decide_does_for_each(
    pool: list[ContactFacts], picks: list[int], campaign: CampaignFacts, policy: PolicyRules
) -> None:
    # The planner asks one Decider for every contact of a campaign; contacts with equal facts
    # (picked twice here) share an answer, which must be the one decide gives each of them.
    decider = SmallDecider(campaign, NOW, policy)
    for facts in [pool[i % len(pool)] for i in picks] + pool:
        answer = decider.decide(facts.email, facts.consents, facts.purchases, facts.suppressions)
        assert answer == decide(facts, campaign, NOW, policy)
