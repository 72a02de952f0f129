"""Signed link tokens (itsdangerous) and keyed address hashes.

Each purpose has its own salt, so an unsubscribe token can never be used as a confirm token.
`keys` are oldest first; the last one signs, all of them verify (key rotation).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from mailer.errors import ExpiredToken, ForgedToken

__all__ = [
    "OBJECTION_BASES",
    "ConfirmClaim",
    "TokenSigner",
    "UnsubscribeClaim",
    "address_hash",
    "address_hashes",
    "key_fingerprint",
]

UNSUBSCRIBE_SALT = "mailer.unsubscribe.v1"
CONFIRM_SALT = "mailer.confirm.v1"
_HASH_CONTEXT = b"mailer.suppression.v1:"
_FINGERPRINT_CONTEXT = b"mailer.key-fingerprint.v1"


# The bases whose unsubscribe means more than "not this list" (issue 14, row 4): carried in
# the token of a mail sent on them. A consent-basis token is the same as before.
OBJECTION_BASES = frozenset({"existing_customer", "role_address"})


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    contact_id: int
    list_name: str
    # The basis of the mail the link came in, when it was not consent (OBJECTION_BASES):
    # existing_customer = an objection to the customer basis (Tw 11.7(2), ePrivacy 13(2));
    # role_address = no more mail to the address on any list.
    basis: str | None = None


@dataclass(frozen=True, slots=True)
class ConfirmClaim:
    contact_id: int
    list_names: tuple[str, ...]
    signed_at: datetime


class TokenSigner:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._unsubscribe = URLSafeSerializer(list(keys), salt=UNSUBSCRIBE_SALT)
        self._confirm = URLSafeTimedSerializer(list(keys), salt=CONFIRM_SALT)

    def unsubscribe_token(self, contact_id: int, list_name: str, basis: str | None = None) -> str:
        # No expiry: RFC 8058 links in old mail must keep working.
        payload: list[object] = [contact_id, list_name]
        if basis in OBJECTION_BASES:
            payload.append(basis)
        return str(self._unsubscribe.dumps(payload))

    def read_unsubscribe(self, token: str) -> UnsubscribeClaim:
        forged = ForgedToken("This unsubscribe link is not valid.")
        try:
            payload = self._unsubscribe.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise forged from None
        if not isinstance(payload, list) or len(payload) not in (2, 3):
            raise forged
        contact_id, list_name, *rest = payload
        basis = rest[0] if rest else None
        if not isinstance(contact_id, int) or not isinstance(list_name, str):
            raise forged
        if basis is not None and basis not in OBJECTION_BASES:
            raise forged
        return UnsubscribeClaim(contact_id, list_name, basis)

    def confirm_token(
        self, contact_id: int, list_names: Sequence[str], *, now: datetime | None = None
    ) -> str:
        # `now` signs at the caller's clock, so the age read_confirm(now=...) sees is consistent.
        serializer = self._confirm if now is None else _AtTime(self._confirm, now)
        return str(serializer.dumps([contact_id, list(list_names)]))

    def read_confirm(
        self, token: str, *, max_age_seconds: float, now: datetime | None = None
    ) -> ConfirmClaim:
        serializer = self._confirm
        if now is not None:
            # itsdangerous reads the clock through get_timestamp(); tests move time with `now`.
            serializer = _AtTime(serializer, now)
        try:
            (contact_id, list_names), signed = serializer.loads(
                token, max_age=int(max_age_seconds), return_timestamp=True
            )
        except SignatureExpired as exc:
            raise ExpiredToken(
                "This confirmation link has expired.", signed_at=exc.date_signed
            ) from None
        except (BadSignature, ValueError, TypeError):
            raise ForgedToken("This confirmation link is not valid.") from None
        return ConfirmClaim(int(contact_id), tuple(list_names), signed)


class _AtTime(URLSafeTimedSerializer):
    def __init__(self, base: URLSafeTimedSerializer, now: datetime) -> None:
        super().__init__(base.secret_keys, salt=base.salt)
        self._now = int(now.astimezone(UTC).timestamp())

    def make_signer(self, salt: str | bytes | None = None):  # type: ignore[no-untyped-def]
        signer = super().make_signer(salt)
        signer.get_timestamp = lambda: self._now  # type: ignore[attr-defined]
        return signer


def address_hash(email: str, key: str) -> str:
    """HMAC-SHA256 of the normalised address: recognises an address without storing it."""
    message = _HASH_CONTEXT + email.strip().lower().encode("utf-8")
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def address_hashes(email: str, keys: Sequence[str]) -> list[str]:
    """The hash under every key, newest first (suppressions made before a rotation still hold)."""
    return [address_hash(email, key) for key in reversed(keys)]


def key_fingerprint(key: str) -> str:
    """16 hex digits that name a key without revealing it (stored, printed in messages)."""
    return hmac.new(key.encode("utf-8"), _FINGERPRINT_CONTEXT, hashlib.sha256).hexdigest()[:16]
