"""Product categories: case- and space-insensitive, paths with " > ", and the campaign check.

The matching rule is pure (mailer/core/categories.py); the policy and `campaign create` both use
it, so a campaign that `create` accepts is one the plan can find customers for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.core.categories import category_key, category_matches, distinct_categories
from mailer.core.policy import (
    Basis,
    CampaignFacts,
    ContactFacts,
    PolicyRules,
    PurchaseFact,
    SkipReason,
    decide,
)
from mailer.errors import InputError
from mailer.store.categories import check_campaign_category, known_categories
from mailer.store.importer import import_customers
from tests.import_support import NOW, write

NOW_POLICY = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "campaign, purchase, matches",
    [
        ("brood", "Brood", True),
        ("  Brood ", "BROOD", True),
        ("Gebak", "Gebak > Taarten", True),
        ("gebak", "Gebak>Taarten>Bruidstaarten", True),
        ("Gebak > Taarten", "gebak >  taarten", True),
        ("Gebak > Taarten", "Gebak", False),  # a cake campaign is not about every pastry
        ("Gebak > Taarten", "Gebak > Koekjes", False),
        ("Geb", "Gebak", False),  # a prefix of a name is not a category above it
        ("Taarten", "Gebak > Taarten", False),  # nor is a name lower in the path
        ("", "Brood", False),
        (None, "Brood", False),
    ],
)
def test_category_matching(campaign: str | None, purchase: str, matches: bool) -> None:
    assert category_matches(campaign, purchase) is matches


@given(
    st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=5), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=4),
    st.sampled_from([" > ", ">", "  >  "]),
)
def test_a_category_matches_itself_and_everything_below_in_any_spelling(
    parts: list[str], depth: int, separator: str
) -> None:
    purchase = separator.join(parts)
    campaign = " > ".join(p.upper() for p in parts[:depth])
    assert category_matches(campaign, purchase)
    assert category_matches(f"  {purchase.title()}  ", purchase)


def test_distinct_categories_keeps_one_spelling_each() -> None:
    names = ["Brood", "brood ", "Gebak>Taarten", "Gebak > Taarten", "Gebak"]
    assert distinct_categories(names) == ["Brood", "Gebak", "Gebak > Taarten"]
    assert category_key(" Gebak  >  Taarten ") == ("gebak", "taarten")


def _customer(category: str) -> ContactFacts:
    return ContactFacts(
        "klant@example.nl",
        purchases=[PurchaseFact(category, NOW_POLICY - timedelta(days=30), optout_offered=True)],
    )


def test_policy_finds_customers_of_a_category_below_the_campaigns() -> None:
    rules = PolicyRules()
    gebak = CampaignFacts("newsletter", "Gebak")
    assert decide(_customer("Gebak > Taarten"), gebak, NOW_POLICY, rules).basis is (
        Basis.EXISTING_CUSTOMER
    )
    assert decide(_customer("gebak"), gebak, NOW_POLICY, rules).basis is Basis.EXISTING_CUSTOMER
    assert decide(_customer("Brood"), gebak, NOW_POLICY, rules).skip is SkipReason.OTHER_CATEGORY
    taarten = CampaignFacts("newsletter", "Gebak > Taarten")
    assert decide(_customer("Gebak"), taarten, NOW_POLICY, rules).skip is (
        SkipReason.OTHER_CATEGORY
    )


def test_campaign_category_without_any_purchase_is_refused_listing_the_known_ones(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        check_campaign_category(engine, "Brood")
    assert "known categories: none yet." in str(caught.value)
    path = write(
        "customers.csv",
        "email,category,purchased_at,optout_offered",
        "jan@example.nl,Brood,2026-02-01,true",
        "piet@example.nl,brood ,2026-02-02,true",
        "kees@example.nl,Gebak > Taarten,2026-02-03,true",
    )
    import_customers(engine, settings, path, now=NOW)

    assert known_categories(engine) == ["Brood", "Gebak > Taarten"]
    check_campaign_category(engine, "BROOD")
    check_campaign_category(engine, "gebak")
    with pytest.raises(InputError) as caught:
        check_campaign_category(engine, "Taart")
    assert str(caught.value) == (
        '--category "Taart": no purchase is of this category or one below it, so no existing '
        'customer would get this campaign; known categories: "Brood", "Gebak > Taarten". Use '
        "--force to create it anyway."
    )
