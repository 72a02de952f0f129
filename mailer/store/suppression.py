"""The suppression list: addresses never to mail again, stored only as keyed hashes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, or_, select

from mailer.core.tokens import address_hashes
from mailer.store.models import Suppression, SuppressionReason

__all__ = ["add_suppression", "is_suppressed"]

_suppression = Suppression.__table__  # type: ignore[attr-defined]


def add_suppression(
    conn: Connection,
    keys: Sequence[str],
    email: str,
    reason: SuppressionReason,
    at: datetime,
    scope: str | None = None,
) -> None:
    """Suppress `email` for every list (scope None) or for one list."""
    conn.execute(
        _suppression.insert().values(
            address_hash=address_hashes(email, keys)[0], reason=reason, scope=scope, at=at
        )
    )


def is_suppressed(conn: Connection, keys: Sequence[str], email: str, list_name: str) -> bool:
    """True if a suppression for all lists, or for `list_name`, holds `email`."""
    query = (
        select(_suppression.c.id)
        .where(
            _suppression.c.address_hash.in_(bindparam("hashes", expanding=True)),
            or_(_suppression.c.scope.is_(None), _suppression.c.scope == list_name),
        )
        .limit(1)
    )
    return conn.execute(query, {"hashes": address_hashes(email, keys)}).first() is not None
