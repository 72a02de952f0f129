"""Queueing a mixed file records, per contact, exactly the decision of the per-contact policy.

The planner reads contacts, consents, purchases and suppressions in bulk (chunks, raw rows,
shared facts, COPY on PostgreSQL) for speed; this checks that none of that changes what is
decided. Every contact is seeded with facts drawn at random (seeded), and the ledger row of
each must carry what `mailer.core.policy.decide` says for the very same facts: its basis, or
its skip reason. Events at one instant are many here, so the order of ties counts too: the
trail is read in the order it was written (contact, time, id).

The chunks are made small so that contacts, consents and suppressions cross chunk boundaries,
and the ledger rows go to the writer's thread in many chunks.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from mailer.config import Settings
from mailer.core.policy import (
    CampaignFacts,
    ConsentFact,
    ContactFacts,
    Decision,
    PurchaseFact,
    SuppressionFact,
    decide,
)
from mailer.core.states import ConsentEvent, ConsentOrigin, SuppressionReason
from mailer.store import planning, planwrite
from mailer.store.models import Delivery, DeliveryStatus
from mailer.store.planning import iter_decisions, materialise, plan_counts, rules_from
from tests.conftest import make_settings
from tests.factories import add_consent, add_contact, new_campaign, suppress

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
# Few instants, so that many events fall on the same one; two lie after the run's clock.
INSTANTS = [NOW - timedelta(days=d) for d in (40, 20, 20, 5, 1)] + [
    NOW + timedelta(days=1),
    NOW - timedelta(seconds=1),
]
LOCAL_PARTS = ["jan", "piet", "info", "sales", "offertes"]
_delivery = Delivery.__table__  # type: ignore[attr-defined]


def random_facts(
    rng: random.Random,
) -> tuple[list[ConsentFact], list[PurchaseFact], list[SuppressionFact]]:
    consents = [
        ConsentFact(
            rng.choice(["newsletter", "offers"]),
            rng.choice(list(ConsentEvent)),
            rng.choice(list(ConsentOrigin)),
            rng.choice(INSTANTS),
        )
        for _ in range(rng.choice([0, 1, 2, 2, 3, 5]))
    ]
    purchases = [
        PurchaseFact(
            rng.choice(["brood", "Brood > Volkoren", "taart"]),
            rng.choice(INSTANTS),
            rng.random() < 0.7,
            rng.choice([None, None, None, rng.choice(INSTANTS)]),
        )
        for _ in range(rng.choice([0, 0, 0, 1, 2]))
    ]
    suppressions = [
        SuppressionFact(
            str(rng.choice(list(SuppressionReason))),
            rng.choice(INSTANTS[:5]),  # a suppression on file is never in the future
            rng.choice([None, "newsletter", "offers"]),
        )
        for _ in range(rng.choice([0, 0, 0, 0, 1, 2]))
    ]
    return consents, purchases, suppressions


def seed_mixed_file(
    engine: Engine, settings: Settings, count: int, seed: int
) -> dict[int, ContactFacts]:
    """`count` contacts with random facts; their facts by contact id, in the order written."""
    rng = random.Random(seed)
    people: dict[int, ContactFacts] = {}
    for n in range(count):
        email = f"{rng.choice(LOCAL_PARTS)}{n % 3 or ''}@n{n}.example"
        consents, purchases, suppressions = random_facts(rng)
        contact_id = add_contact(
            engine, settings, email, at=NOW - timedelta(days=50), consents=consents,
            purchases=purchases, suppressions=suppressions,
        )  # fmt: skip
        people[contact_id] = ContactFacts(email, consents, purchases, suppressions)
    return people


def ledger_labels(engine: Engine, campaign_id: int) -> dict[int, tuple[str, str]]:
    query = select(
        _delivery.c.contact_id, _delivery.c.basis, _delivery.c.skip_reason, _delivery.c.status
    ).where(_delivery.c.campaign_id == campaign_id)
    with engine.connect() as conn:
        return {
            row.contact_id: (row.basis or row.skip_reason, row.status)
            for row in conn.execute(query)
        }


def expected(decision: Decision) -> tuple[str, str]:
    status = DeliveryStatus.QUEUED if decision.allowed else DeliveryStatus.SKIPPED
    return decision.label, str(status)


@pytest.mark.parametrize(
    "policy",
    [
        {"jurisdiction": "BE", "role_addresses": True},
        {"jurisdiction": "NL", "soft_optin": False, "offer_addresses": ["offertes@n3.example"]},
    ],
    ids=["BE-role-addresses", "NL-no-soft-optin"],
)
def test_queue_records_the_policys_decision_for_every_contact(
    db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, policy: dict[str, object]
) -> None:
    settings = make_settings(db_url, policy=policy)
    monkeypatch.setattr(planning, "CHUNK", 7)
    monkeypatch.setattr(planwrite, "CHUNK", 6)
    people = seed_mixed_file(engine, settings, 90, seed=len(str(policy)))
    campaign = new_campaign(engine, settings, "mixed", at=NOW, category="brood")
    assert campaign.id is not None
    facts, rules = CampaignFacts("newsletter", "brood"), rules_from(settings)
    want = {cid: decide(person, facts, NOW, rules) for cid, person in people.items()}
    assert len({d.label for d in want.values()}) >= 6  # the file is mixed: most outcomes occur

    summary = materialise(engine, settings, campaign, NOW)

    assert ledger_labels(engine, campaign.id) == {cid: expected(d) for cid, d in want.items()}
    assert summary.by_label == Counter(d.label for d in want.values())
    assert plan_counts(engine, settings, campaign, NOW).by_label == summary.by_label
    some = sorted(people)[::11]  # `campaign preview --email`: the one-contact path agrees
    with engine.connect() as conn:
        for cid in some:
            assert list(iter_decisions(conn, settings, campaign, NOW, contact_id=cid)) == [
                (cid, want[cid])
            ]


def test_a_second_queue_decides_only_the_skipped_rows_again(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planning, "CHUNK", 5)
    monkeypatch.setattr(planwrite, "CHUNK", 4)
    people = seed_mixed_file(engine, settings, 40, seed=7)
    campaign = new_campaign(engine, settings, "again", at=NOW, category="brood")
    assert campaign.id is not None
    materialise(engine, settings, campaign, NOW)
    first = ledger_labels(engine, campaign.id)
    queued = [cid for cid, (_, status) in first.items() if status == DeliveryStatus.QUEUED]
    skipped = [cid for cid, (_, status) in first.items() if status == DeliveryStatus.SKIPPED]
    assert queued and skipped
    # Since then: one queued person unsubscribed, one skipped person confirmed on our page.
    later = NOW + timedelta(hours=1)
    suppress(engine, settings, people[queued[0]].email, SuppressionReason.UNSUBSCRIBED, later)
    confirm = ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, later)
    add_consent(engine, skipped[0], confirm)
    people[skipped[0]] = ContactFacts(
        people[skipped[0]].email,
        [*people[skipped[0]].consents, confirm],
        people[skipped[0]].purchases,
        people[skipped[0]].suppressions,
    )

    materialise(engine, settings, campaign, later + timedelta(seconds=1))

    second = ledger_labels(engine, campaign.id)
    facts, rules = CampaignFacts("newsletter", "brood"), rules_from(settings)
    for cid in skipped:  # decided again at the new instant
        decision = decide(people[cid], facts, later + timedelta(seconds=1), rules)
        assert second[cid] == expected(decision)
    assert {cid: second[cid] for cid in queued} == {cid: first[cid] for cid in queued}
    assert second[skipped[0]][1] == DeliveryStatus.QUEUED  # confirmed on our page since


def test_a_write_that_fails_stops_the_plan_and_leaves_no_row(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rows are written from a thread of their own: its error must reach the caller, and
    # the transaction must leave nothing behind. Here the campaign is gone (a foreign key).
    monkeypatch.setattr(planning, "CHUNK", 5)
    monkeypatch.setattr(planwrite, "CHUNK", 4)
    seed_mixed_file(engine, settings, 12, seed=3)
    campaign = new_campaign(engine, settings, "gone", at=NOW)
    gone = campaign.model_copy(update={"id": 10_000})

    with pytest.raises(IntegrityError):
        materialise(engine, settings, gone, NOW)

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(_delivery)).scalar() == 0
