"""The property: over generated contacts and settings, the SMTP server receives exactly the
addresses rule 1 allows, and the ledger labels each with the rule's basis or skip reason.

What rule 1 allows comes from tests/policy_oracle.py, a second, naive reading of DESIGN.md
that shares no code with `mailer.core.policy.decide`: the pipeline (import, planning, the
send-time re-check, the ledger) and the policy are checked together against it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.core.policy import CampaignFacts, ConsentFact, PurchaseFact, SuppressionFact
from mailer.delivery.sink import SmtpSink
from mailer.store.db import create_schema, make_engine
from mailer.store.models import SuppressionReason
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign
from tests.policy_oracle import naive_label
from tests.sending_support import CONF, DAY, IMPORT, NOW, REQ, WD, WEB, ledger, received, run

# -- the property: the server receives exactly what the policy allows -------------------------

LOCAL_PARTS = ["jan", "piet", "info", "sales", "contact", "offertes"]
# Addresses an NL company published for receiving offers; the test picks which are configured.
PUBLISHED = ["offertes@n0.example", "offertes@n1.example", "info@n2.example", "jan@n3.example"]

past = st.integers(min_value=0, max_value=90).map(lambda d: NOW - d * DAY)
# Consents and purchases may lie a little after the run's clock (decide ignores them until then).
# Suppressions never do: the send-time re-check rightly honours every suppression on file.
dates = st.integers(min_value=-2, max_value=90).map(lambda d: NOW - d * DAY)
consent_facts = st.builds(
    ConsentFact, st.sampled_from(["newsletter", "offers"]), st.sampled_from([REQ, CONF, WD]),
    st.sampled_from([WEB, IMPORT]), dates,
)  # fmt: skip
purchase_facts = st.builds(
    PurchaseFact, st.sampled_from(["brood", "taart"]), dates, st.booleans(), st.none() | dates
)
suppression_facts = st.builds(
    SuppressionFact, st.sampled_from([str(r) for r in SuppressionReason]), past,
    st.sampled_from([None, "newsletter", "offers"]),
)  # fmt: skip
person = st.tuples(
    st.sampled_from(LOCAL_PARTS),
    # One event per instant: the order of two events at the same instant is not defined by
    # the database (planning reads them without ORDER BY), nor by DESIGN.md.
    st.lists(consent_facts, max_size=4, unique_by=lambda c: c.at),
    st.lists(purchase_facts, max_size=2),
    st.lists(suppression_facts, max_size=2),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    people=st.lists(person, min_size=1, max_size=8),
    campaign_facts=st.builds(
        CampaignFacts, st.sampled_from(["newsletter", "offers"]), st.sampled_from(["brood", None])
    ),
    jurisdiction=st.sampled_from(["NL", "BE"]),
    role_addresses=st.booleans(),
    soft_optin=st.booleans(),
    offer_addresses=st.lists(st.sampled_from(PUBLISHED), unique=True, max_size=3),
)
def test_the_server_receives_exactly_the_addresses_the_policy_allows(
    sink: SmtpSink,
    people: list[tuple[str, list[ConsentFact], list[PurchaseFact], list[SuppressionFact]]],
    campaign_facts: CampaignFacts,
    jurisdiction: str,
    role_addresses: bool,
    soft_optin: bool,
    offer_addresses: list[str],
) -> None:
    sink.messages.clear()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            f"sqlite:///{Path(tmp) / 'p.db'}",
            smtp={"port": sink.port},
            policy={"jurisdiction": jurisdiction, "role_addresses": role_addresses,
                    "soft_optin": soft_optin, "offer_addresses": offer_addresses},
        )  # fmt: skip
        engine = make_engine(settings.database.url)
        try:
            create_schema(engine)
            expected: dict[str, str] = {}
            for n, (local, consents, purchases, suppressions) in enumerate(people):
                address = f"{local}@n{n}.example"
                add_contact(engine, settings, address, at=NOW, consents=consents,
                            purchases=purchases, suppressions=suppressions)  # fmt: skip
                expected[address] = naive_label(
                    email=address, consents=consents, purchases=purchases,
                    suppressions=suppressions, list_name=campaign_facts.list_name,
                    category=campaign_facts.category, now=NOW, jurisdiction=jurisdiction,
                    soft_optin=soft_optin, role_addresses=role_addresses,
                    offer_addresses=offer_addresses,
                )  # fmt: skip
            campaign = new_campaign(engine, settings, "property", at=NOW,
                                    list_name=campaign_facts.list_name,
                                    category=campaign_facts.category)  # fmt: skip
            run(engine, settings, campaign)
            rows = ledger(engine, campaign)
        finally:
            engine.dispose()
    allowed = sorted(a for a, label in expected.items() if label in BASES)
    assert received(sink) == allowed  # the same set, and each address exactly once
    assert {a: row[2] or row[3] for a, row in rows.items()} == expected


BASES = {"consent", "existing_customer", "role_address"}  # DESIGN.md rule 1: may be sent
