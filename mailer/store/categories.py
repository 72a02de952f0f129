"""The product categories purchases are on record with, and the check `campaign create` makes."""

from __future__ import annotations

from sqlalchemy import Engine, Table, select
from sqlmodel import SQLModel

from mailer.core.categories import category_matches, distinct_categories
from mailer.errors import InputError
from mailer.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

__all__ = ["check_campaign_category", "known_categories"]

_PURCHASE: Table = SQLModel.metadata.tables["purchase"]


def known_categories(engine: Engine) -> list[str]:
    """Every category a purchase is on record with, one spelling each."""
    with engine.connect() as conn:
        names = conn.execute(select(_PURCHASE.c.category).distinct()).scalars()
        return distinct_categories(names)


def check_campaign_category(engine: Engine, category: str) -> None:
    """Refuse a campaign category no purchase has (nor one below it): a typo, or a campaign no
    existing customer may get on the soft opt-in basis (`--force` creates it anyway)."""
    known = known_categories(engine)
    if any(category_matches(category, name) for name in known):
        return
    listed = ", ".join(f'"{name}"' for name in known) if known else "none yet"
    raise InputError(
        f'--category "{category}": no purchase is of this category or one below it, so no '
        f"existing customer would get this campaign; known categories: {listed}. "
        "Use --force to create it anyway."
    )
