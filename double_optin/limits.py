"""The signup limits against abuse: per IP per hour, and confirmation mails per mailbox per day.

Both count rows of `signup_attempt` inside the caller's transaction, after a write (SQLite) or
an advisory lock (PostgreSQL, store.serialise_on), so that counting and recording are one step:
30 parallel signups for one address send 3 mails, not 6. An attempt over the IP limit raises
`RateLimited`, which rolls the whole signup back: nothing of it is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection as DbConnection

from mailer.core.tokens import address_hash
from mailer.store import signups as store

__all__ = ["MAX_MAILS_PER_ADDRESS_PER_DAY", "RateLimited", "SignupLimits", "mailbox"]

# Subscription bombing: someone types a victim's address into many forms. Three mails a day is
# enough for a person who lost the first one, and too few to be a weapon.
MAX_MAILS_PER_ADDRESS_PER_DAY = 3
_ADDRESS_WINDOW = timedelta(hours=24)
_IP_WINDOW = timedelta(hours=1)


class RateLimited(Exception):
    """Rolls the signup transaction back: nothing of an over-limit attempt is kept."""


def mailbox(email: str) -> str:
    """The mailbox an address delivers to, for the per-address limit: `victim+1@` and
    `victim+2@` (subaddresses, RFC 5233) reach the same person as `victim@`."""
    local, _, domain = email.rpartition("@")
    return f"{local.split('+', 1)[0] or local}@{domain}"


class SignupLimits:
    def __init__(self, keys: Sequence[str], signups_per_ip_per_hour: int) -> None:
        self._key = keys[-1]  # counters live a day at most: the newest key is enough
        self._per_ip = signups_per_ip_per_hour

    def check_ip(self, conn: DbConnection, evidence: store.Evidence) -> None:
        """Record this attempt from `evidence.ip`; raise RateLimited past the hourly limit.
        Its first statement writes (the prune), which on SQLite takes the write lock."""
        store.prune_attempts(conn, evidence.at - max(_ADDRESS_WINDOW, _IP_WINDOW))
        if not self._per_ip or not evidence.ip:
            return
        key = address_hash(f"ip:{evidence.ip}", self._key)
        store.serialise_on(conn, key)
        store.record_attempt(conn, "ip", key, evidence.at)
        if store.count_attempts(conn, "ip", key, evidence.at - _IP_WINDOW) > self._per_ip:
            raise RateLimited

    def allow_mail(self, conn: DbConnection, email: str, now: datetime) -> bool:
        """True, and the mail counted, if `email`'s mailbox may get another confirmation mail."""
        key = address_hash(mailbox(email), self._key)
        store.serialise_on(conn, key)  # count and record as one step, also on PostgreSQL
        sent = store.count_attempts(conn, "address", key, now - _ADDRESS_WINDOW)
        if sent >= MAX_MAILS_PER_ADDRESS_PER_DAY:
            return False
        store.record_attempt(conn, "address", key, now)
        return True
