"""Signed link tokens (itsdangerous) and keyed address hashes.

Each purpose has its own salt, so an unsubscribe token can never be used as a confirm token.
`keys` are oldest first; the last one signs, all of them verify (key rotation).

The contact in a token is opaque (issue 14, row 5): its id goes through a keyed permutation
(a 4-round Feistel network on 64 bits with HMAC-SHA256 rounds), so a token shows neither how
many contacts there are nor how fast they grow, and a short tag binds it to the address it was
made for, so that an id given again to someone else after an erasure does not act on them.
Tokens made before (a plain id first) keep working.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.signer import HMACAlgorithm

from mailer.errors import ExpiredToken, ForgedToken

__all__ = [
    "OBJECTION_BASES",
    "ConfirmClaim",
    "TokenSigner",
    "UnsubscribeClaim",
    "address_hash",
    "address_hashes",
    "key_fingerprint",
    "message_ref",
]

UNSUBSCRIBE_SALT = "mailer.unsubscribe.v1"
CONFIRM_SALT = "mailer.confirm.v1"
_HASH_CONTEXT = b"mailer.suppression.v1:"
_FINGERPRINT_CONTEXT = b"mailer.key-fingerprint.v1"
_ID_CONTEXT = b"mailer.opaque-id.v1:"
_BIND_CONTEXT = b"mailer.token-address.v1:"
_REF_CONTEXT = b"mailer.message-ref.v1:"

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
    # Checks the address the token was made for (TokenSigner.made_for); None: an old token.
    binding: _Binding | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ConfirmClaim:
    contact_id: int
    list_names: tuple[str, ...]
    signed_at: datetime
    binding: _Binding | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class _Binding:
    key: str
    contact_id: int
    tag: str

    def matches(self, email: str) -> bool:
        return hmac.compare_digest(self.tag, _tag(self.key, self.contact_id, email))


class _OneCallHMAC(HMACAlgorithm):
    """itsdangerous's HMAC-SHA1, byte for byte, in one call into OpenSSL. itsdangerous passes a
    Python function as the digest, which sends `hmac.new` down its pure-Python path on every
    token: the largest part of reading one, measured under a burst of unsubscribes."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha1")


# Every serializer signs and verifies with it (also those of _AtTime).
_SIGNER_KWARGS: dict[str, Any] = {"algorithm": _OneCallHMAC()}


class _UnsubscribeDumps:
    """`URLSafeSerializer(key, salt=UNSUBSCRIBE_SALT).dumps` in a few calls, never compressed.

    itsdangerous makes a signer, derives its key and walks several layers for every token,
    and tries zlib on the payload; a campaign makes one token per message, where that was a
    sixth of the sending loop's time (zlib alone about 35 µs a token, for payloads of hex and
    a list name it rarely shortens). The derived key ("django-concat") is computed once here.
    itsdangerous reads these tokens like its own (a payload without a leading "." is not
    compressed), and where it would not have compressed the bytes are the same:
    tests/test_tokens.py checks both over generated payloads.
    """

    _JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # itsdangerous's

    def __init__(self, key: str) -> None:
        salted = UNSUBSCRIBE_SALT.encode("utf-8") + b"signer" + key.encode("utf-8")
        self._key = hashlib.sha1(salted).digest()

    def __call__(self, payload: list[object]) -> str:
        body = _b64(self._JSON.encode(payload).encode("utf-8"))
        return (body + b"." + _b64(hmac.digest(self._key, body, "sha1"))).decode("ascii")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _round(key: str, number: int, half: int) -> int:
    message = _ID_CONTEXT + bytes([number]) + half.to_bytes(4, "big")
    return int.from_bytes(hmac.digest(key.encode("utf-8"), message, "sha256")[:4], "big")


def _opaque(key: str, contact_id: int) -> str:
    left, right = contact_id >> 32, contact_id & 0xFFFFFFFF
    for number in range(4):
        left, right = right, left ^ _round(key, number, right)
    return f"{(left << 32) | right:016x}"


def _clear(key: str, opaque: str) -> int:
    value = int(opaque, 16)
    left, right = value >> 32, value & 0xFFFFFFFF
    for number in reversed(range(4)):
        left, right = right ^ _round(key, number, left), left
    return (left << 32) | right


def _tag(key: str, contact_id: int, email: str) -> str:
    message = _BIND_CONTEXT + f"{contact_id}:{email.strip().lower()}".encode()
    return hmac.digest(key.encode("utf-8"), message, "sha256").hex()[:12]


def _is_opaque(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)
    )


class TokenSigner:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._keys = list(keys)
        fast = _SIGNER_KWARGS
        self._unsubscribe_dumps = _UnsubscribeDumps(self._keys[-1])
        self._confirm = URLSafeTimedSerializer(self._keys, salt=CONFIRM_SALT, signer_kwargs=fast)
        # One serializer per key, newest first: the key that verifies also decodes the id.
        self._unsubscribe_each = [
            (k, URLSafeSerializer(k, salt=UNSUBSCRIBE_SALT, signer_kwargs=fast))
            for k in reversed(self._keys)
        ]
        self._confirm_each = [
            (k, URLSafeTimedSerializer(k, salt=CONFIRM_SALT, signer_kwargs=fast))
            for k in reversed(self._keys)
        ]

    def _contact(self, contact_id: int, email: str | None) -> list[object]:
        key = self._keys[-1]
        return [_opaque(key, contact_id), _tag(key, contact_id, email) if email else ""]

    def unsubscribe_token(
        self, contact_id: int, list_name: str, basis: str | None = None, email: str | None = None
    ) -> str:
        # No expiry: RFC 8058 links in old mail must keep working.
        payload: list[object] = [*self._contact(contact_id, email), list_name]
        if basis in OBJECTION_BASES:
            payload.append(basis)
        return self._unsubscribe_dumps(payload)

    def read_unsubscribe(self, token: str) -> UnsubscribeClaim:
        forged = ForgedToken("This unsubscribe link is not valid.")
        verified = self._verified_unsubscribe(token)
        if verified is None:
            raise forged
        key, payload = verified
        if not isinstance(payload, list):
            raise forged
        binding = None
        if payload and _is_opaque(payload[0]):  # [opaque id, tag, list, basis?]
            if len(payload) not in (3, 4) or not isinstance(payload[1], str):
                raise forged
            contact_id = _clear(key, payload[0])
            binding = _Binding(key, contact_id, payload[1]) if payload[1] else None
            list_name, *rest = payload[2:]
        elif len(payload) in (2, 3):  # before issue 14: [id, list, basis?]
            contact_id, list_name, *rest = payload
        else:
            raise forged
        basis = rest[0] if rest else None
        if not isinstance(contact_id, int) or isinstance(contact_id, bool):
            raise forged
        if not isinstance(list_name, str) or (basis is not None and basis not in OBJECTION_BASES):
            raise forged
        return UnsubscribeClaim(contact_id, list_name, basis, binding)

    def _verified_unsubscribe(self, token: str) -> tuple[str, Any] | None:
        """The key that signed `token` and its payload, or None if no key did."""
        for key, serializer in self._unsubscribe_each:
            try:
                return key, serializer.loads(token)
            except (BadSignature, ValueError, TypeError):
                continue
        return None

    def confirm_token(
        self,
        contact_id: int,
        list_names: Sequence[str],
        *,
        now: datetime | None = None,
        email: str | None = None,
    ) -> str:
        # `now` signs at the caller's clock, so the age read_confirm(now=...) sees is consistent.
        serializer = self._confirm if now is None else _AtTime(self._confirm, now)
        return str(serializer.dumps([*self._contact(contact_id, email), list(list_names)]))

    def read_confirm(
        self, token: str, *, max_age_seconds: float | None, now: datetime | None = None
    ) -> ConfirmClaim:
        """The claim of a confirm token; `max_age_seconds` None reads an expired one too (a
        new mail may be asked for with it: its signature still proves where it came from)."""
        expired: SignatureExpired | None = None
        for key, serializer in self._confirm_each:
            if now is not None:
                # itsdangerous reads the clock through get_timestamp(); tests move time.
                serializer = _AtTime(serializer, now)
            try:
                payload, signed = serializer.loads(
                    token,
                    max_age=None if max_age_seconds is None else int(max_age_seconds),
                    return_timestamp=True,
                )
            except SignatureExpired as exc:
                expired = exc
                continue
            except (BadSignature, ValueError, TypeError):
                continue
            return _confirm_claim(key, payload, signed)
        if expired is not None:
            raise ExpiredToken(
                "This confirmation link has expired.", signed_at=expired.date_signed
            ) from None
        raise ForgedToken("This confirmation link is not valid.")

    @staticmethod
    def made_for(claim: UnsubscribeClaim | ConfirmClaim, email: str) -> bool:
        """False if the token was made for another address than `email` (the id was given to
        someone else after an erasure); True for a match and for tokens without a tag."""
        return claim.binding is None or claim.binding.matches(email)


def _confirm_claim(key: str, payload: Any, signed: datetime) -> ConfirmClaim:
    forged = ForgedToken("This confirmation link is not valid.")
    try:
        if isinstance(payload, list) and len(payload) == 3 and _is_opaque(payload[0]):
            opaque, tag, names = payload
            contact_id = _clear(key, opaque)
            binding = _Binding(key, contact_id, tag) if isinstance(tag, str) and tag else None
        else:  # before issue 14: [id, lists]
            contact_id, names = payload
            contact_id, binding = int(contact_id), None
        list_names = tuple(str(n) for n in names)
    except (ValueError, TypeError):
        raise forged from None
    return ConfirmClaim(contact_id, list_names, signed, binding)


class _AtTime(URLSafeTimedSerializer):
    def __init__(self, base: URLSafeTimedSerializer, now: datetime) -> None:
        super().__init__(base.secret_keys, salt=base.salt, signer_kwargs=_SIGNER_KWARGS)
        self._now = int(now.astimezone(UTC).timestamp())

    def make_signer(self, salt: str | bytes | None = None):  # type: ignore[no-untyped-def]
        signer = super().make_signer(salt)
        signer.get_timestamp = lambda: self._now  # type: ignore[attr-defined]
        return signer


def address_hash(email: str, key: str) -> str:
    """HMAC-SHA256 of the normalised address: recognises an address without storing it."""
    inner, outer = _address_pads(key)
    inner = inner.copy()
    inner.update(email.strip().lower().encode("utf-8"))
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


@functools.lru_cache(maxsize=16)
def _address_pads(key: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    # HMAC (RFC 2104) by hand: the inner hash keyed and fed the context once per key, then two
    # hash copies per address. Planning hashes every contact; this is half the cost of
    # copying an `hmac.HMAC` (1.52 -> 0.78 µs), with the same digests (tests/test_tokens.py).
    block = key.encode("utf-8")
    if len(block) > 64:  # SHA-256's block size
        block = hashlib.sha256(block).digest()
    block = block.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    inner.update(_HASH_CONTEXT)
    return inner, hashlib.sha256(bytes(b ^ 0x5C for b in block))


def address_hashes(email: str, keys: Sequence[str]) -> list[str]:
    """The hash under every key, newest first (suppressions made before a rotation still hold)."""
    return [address_hash(email, key) for key in reversed(keys)]


def key_fingerprint(key: str) -> str:
    """16 hex digits that name a key without revealing it (stored, printed in messages)."""
    return hmac.new(key.encode("utf-8"), _FINGERPRINT_CONTEXT, hashlib.sha256).hexdigest()[:16]


def message_ref(key: str, ref: str) -> str:
    """An opaque, keyed stand-in for a delivery reference in a Message-ID (issue 14, row 5):
    unique per reference, but it shows no campaign or delivery number."""
    return hmac.new(key.encode("utf-8"), _REF_CONTEXT + ref.encode(), hashlib.sha256).hexdigest()[
        :16
    ]
