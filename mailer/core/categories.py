"""Product categories as the soft opt-in compares them (DESIGN rule 1: "own similar products").

A shop writes the same category in more than one way ("Brood", "brood ", "BROOD"), and shops
such as WooCommerce write a category below another as a path, "Gebak > Taarten". So:

- names compare case- and whitespace-insensitively (casefold, runs of spaces as one);
- a name with ">" is a path, and a campaign's category matches a purchase of that category and
  of every category below it: "Gebak" matches "Gebak > Taarten", never the other way round (a
  campaign about cakes is not similar to every pastry bought).

Pure: planning, `campaign create` and the policy all compare through `category_matches`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["category_key", "category_matches", "distinct_categories"]


def category_key(name: str) -> tuple[str, ...]:
    """The comparable form: the path's parts, casefolded, inner whitespace as one space."""
    parts = (" ".join(part.split()).casefold() for part in name.split(">"))
    return tuple(part for part in parts if part)


def category_matches(campaign_category: str | None, purchase_category: str) -> bool:
    """True if a purchase of `purchase_category` is of the campaign's category or below it."""
    if campaign_category is None:
        return False
    wanted = category_key(campaign_category)
    return bool(wanted) and category_key(purchase_category)[: len(wanted)] == wanted


def distinct_categories(names: Iterable[str]) -> list[str]:
    """One spelling per category (the first seen), sorted by its comparable form."""
    seen: dict[tuple[str, ...], str] = {}
    for name in names:
        seen.setdefault(category_key(name), " > ".join(p.strip() for p in name.split(">")))
    return [seen[key] for key in sorted(seen) if key]
