"""Removing a person from every table, so the address is gone from the database file itself.

Used by `privacy erase` (the person asks, AVG art. 17) and by `privacy purge` (retention). What
stays is proof without a person: the delivery ledger keeps campaign, basis and status (rule 8),
and an erased address stays suppressed through a keyed hash (rule 6), never the address.

On SQLite a DELETE only unlinks a row; its bytes stay in the page until overwritten, and the old
page images stay in the -wal file until a checkpoint. So every connection runs with
`PRAGMA secure_delete=ON` (mailer.store.db: freed cells and pages are zeroed, also the old copy of a
row an import rewrote long before), and after an erasure the WAL is checkpointed and truncated.
A file written by an older version or another tool without secure delete may still hold such
old copies in its free space; `VACUUM` once rewrites it (README, "Privacy"). PostgreSQL keeps
dead tuples until VACUUM reuses their space: the README says so; autovacuum does it, and
`VACUUM` on the tables makes it happen now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, Engine, delete, insert, update

from mailer.core.policy import SkipReason
from mailer.core.tokens import address_hashes
from mailer.store.models import (
    Consent,
    Contact,
    Delivery,
    DeliveryStatus,
    Purchase,
    SignupAttempt,
    Suppression,
    SuppressionReason,
)

__all__ = ["Erased", "erase_contacts", "erase_rows", "in_secure_transaction", "secure_connection"]

T = TypeVar("T")

_contact = Contact.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]
_purchase = Purchase.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_attempt = SignupAttempt.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]

_NOT_YET_SENT = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)
_CHECKPOINT_TRIES = 5


@dataclass(frozen=True, slots=True)
class Erased:
    """What one erasure removed, counted per table."""

    consents: int
    purchases: int
    deliveries: int  # ledger rows that lost the person (they keep campaign, basis, status)
    signup_attempts: int


def erase_rows(
    conn: Connection,
    keys: Sequence[str],
    contact_id: int,
    email: str,
    now: datetime,
    *,
    suppress: bool,
) -> Erased:
    """Delete the contact and everything keyed to it; `suppress` keeps an `erased` hash."""
    return erase_contacts(conn, keys, [(contact_id, email)], now, suppress=suppress)


def erase_contacts(
    conn: Connection,
    keys: Sequence[str],
    people: Sequence[tuple[int, str]],
    now: datetime,
    *,
    suppress: bool,
) -> Erased:
    """`erase_rows` for several contacts (id, address) at once: a statement per table, not
    per person (the purge erases in batches of hundreds)."""
    ids = [contact_id for contact_id, _ in people]
    hashes = [h for _, email in people for h in address_hashes(email, keys)]
    consents = conn.execute(delete(_consent).where(_consent.c.contact_id.in_(ids)))
    purchases = conn.execute(delete(_purchase).where(_purchase.c.contact_id.in_(ids)))
    # A queued row would wait forever for a contact that no longer exists: settle it now, so a
    # report does not show it as still to be sent.
    conn.execute(
        update(_delivery)
        .where(_delivery.c.contact_id.in_(ids), _delivery.c.status.in_(_NOT_YET_SENT))
        .values(status=DeliveryStatus.SUPPRESSED, skip_reason=SkipReason.SUPPRESSED)
    )
    # The SMTP reply may quote the address; the Message-ID links to the provider's logs.
    deliveries = conn.execute(
        update(_delivery)
        .where(_delivery.c.contact_id.in_(ids))
        .values(contact_id=None, message_id=None, smtp_reply=None)
    )
    # The web side's anti-bombing counters are keyed by the same hash (double_optin.flow).
    attempts = conn.execute(
        delete(_attempt).where(_attempt.c.kind == "address", _attempt.c.key_hash.in_(hashes))
    )
    conn.execute(delete(_contact).where(_contact.c.id.in_(ids)))
    if suppress and people:
        # Only the hash under the newest key, as add_suppression stores it.
        conn.execute(
            insert(_suppression),
            [
                {"address_hash": address_hashes(email, keys)[0], "reason": SuppressionReason.ERASED,
                 "scope": None, "at": now}
                for _, email in people
            ],
        )  # fmt: skip
    return Erased(
        int(consents.rowcount), int(purchases.rowcount), int(deliveries.rowcount),
        int(attempts.rowcount),
    )  # fmt: skip


@contextmanager
def secure_connection(engine: Engine) -> Iterator[tuple[Connection, Callable[[], bool]]]:
    """A connection that zeroes what it deletes, and a `checkpoint()` to call after the last
    commit: True if the SQLite WAL was checkpointed and truncated (always True elsewhere).

    Leaving the block rolls back whatever was not committed.
    """
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # Zero freed cells and pages instead of only unlinking them (SQLite pragma docs).
            # mailer.store.db sets this on every connection; said again here for an engine made
            # elsewhere, and never switched off again (the connection returns to the pool).
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
            conn.commit()
        yield conn, (lambda: _checkpoint(conn)) if sqlite else (lambda: True)


def in_secure_transaction(engine: Engine, work: Callable[[Connection], T]) -> tuple[T, bool]:
    """Run `work` in one transaction with secure delete; returns its result and whether the
    SQLite WAL was checkpointed and truncated (always True on other databases)."""
    with secure_connection(engine) as (conn, checkpoint):
        result = work(conn)
        conn.commit()
        return result, checkpoint()


def _checkpoint(conn: Connection) -> bool:
    """Copy the WAL into the database file and truncate it, so no old page image survives.

    A reader in the middle of a transaction (the web side) keeps the checkpoint from finishing;
    it is tried a few times, then reported rather than waited for indefinitely.
    """
    for attempt in range(_CHECKPOINT_TRIES):
        busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        conn.commit()
        if not busy:
            return True
        time.sleep(0.05 * 2**attempt)
    return False
