"""The suppression list: addresses never to mail again, stored only as keyed hashes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, inspect, or_, select

from mailer.core.tokens import address_hashes, key_fingerprint
from mailer.errors import ConfigError
from mailer.store.models import Suppression, SuppressionKey, SuppressionReason

__all__ = ["ADD_SUPPRESSION", "add_suppression", "check_hash_keys", "is_suppressed"]

_suppression = Suppression.__table__  # type: ignore[attr-defined]
_key = SuppressionKey.__table__  # type: ignore[attr-defined]


def add_suppression(
    conn: Connection,
    keys: Sequence[str],
    email: str,
    reason: SuppressionReason,
    at: datetime,
    scope: str | None = None,
) -> None:
    """Suppress `email` for every list (scope None) or for one list."""
    # One insert built once: under a burst of unsubscribes, building it per call cost more
    # than running it.
    values = {"address_hash": address_hashes(email, keys)[0], "reason": reason, "scope": scope}
    conn.execute(ADD_SUPPRESSION, {**values, "at": at})


# Each column named as a bind, so the web's unsubscribe can also run it compiled once, on
# the DB-API cursor (mailer.store.signups), under the newest key's hash as here.
ADD_SUPPRESSION = _suppression.insert().values(
    {name: bindparam(name, type_=_suppression.c[name].type)
     for name in ("address_hash", "reason", "scope", "at")}
)  # fmt: skip


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


def check_hash_keys(conn: Connection, keys: Sequence[str], now: datetime) -> None:
    """Refuse (ConfigError, exit 2) when a key that hashed stored suppressions is missing.

    `keys` is `Settings.require_hash_keys()`: the last one hashes new suppressions and is
    registered here, so the next run knows it is needed. While no suppression exists, nothing
    is needed and the register starts afresh (a new set-up may still change its key freely).
    A database from before the register (suppressions, no fingerprints) registers every key
    supplied now: any of them may have made those hashes.
    """
    if not inspect(conn).has_table(_key.name):
        return  # `mailer init` not yet run after the upgrade; it creates the register
    supplied = {key_fingerprint(key): key for key in keys}
    has_suppressions = conn.execute(select(_suppression.c.id).limit(1)).first() is not None
    registered = set(conn.execute(select(_key.c.fingerprint)).scalars())
    current = key_fingerprint(keys[-1])
    if not has_suppressions:
        if registered and registered != {current}:
            conn.execute(_key.delete())
            registered = set()
    elif not registered:
        for fingerprint in supplied:
            conn.execute(_key.insert().values(fingerprint=fingerprint, first_used_at=now))
        registered = set(supplied)
    missing = sorted(registered - set(supplied))
    if missing:
        raise ConfigError(
            f"the suppressions in the database were hashed with the key(s) with fingerprint "
            f"{', '.join(missing)}, which neither MAILER_SECRET_KEY nor MAILER_HASH_KEY holds. "
            "Without it they no longer match and suppressed people would be mailed again. "
            "Put that key in MAILER_HASH_KEY (it only hashes, never signs a link; see "
            'docs/security.md, "Rotating the secret key").',
            file="MAILER_HASH_KEY",
        )
    if current not in registered:  # the steady state writes nothing: no lock is taken
        conn.execute(_key.insert().values(fingerprint=current, first_used_at=now))
