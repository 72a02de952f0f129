"""DKIM signing (RFC 6376), pure: bytes and a loaded key in, signed bytes out.

Since 2024 Gmail and Yahoo reject bulk mail that is not authenticated, and RFC 8058 §4 asks that
the one-click unsubscribe headers be covered by a DKIM signature. Reading and checking the key
file is I/O and happens once per campaign at the edge (mailer.delivery.dkimkeys), which also
parses it into a `cryptography` key object once, so a message costs one hash and one
signature: RSA-2048 in about 0.35 ms, Ed25519 in 0.04 ms (dkimpy's pure-Python RSA: 8 ms).

The output is byte for byte what dkimpy 1.1 writes for the same key, message, selector and
timestamp (tests/test_dkim_identical.py proves it over generated messages): the same tag order,
the same folding at column 72 and the same relaxed canonicalization, so a receiver sees nothing
new. The clock stays outside: the caller passes the signature's `t=` (RFC 6376 §3.5).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = [
    "SIGNED_HEADERS",
    "Algorithm",
    "PrivateKey",
    "SigningKey",
    "sign_message",
    "signature_headers",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# The headers a receiver must be able to trust. Those named twice are "oversigned" (RFC 6376
# §8.15): the signature also covers their absence of a second copy, so a relay or a forwarder
# cannot add another From, Subject or List-Unsubscribe without breaking it. Reply-To is signed
# even when absent, so one cannot be added.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"from",
    b"to",
    b"subject", b"subject",
    b"date",
    b"message-id",
    b"reply-to", b"reply-to",
    b"list-id",
    b"list-unsubscribe", b"list-unsubscribe",
    b"list-unsubscribe-post", b"list-unsubscribe-post",
    b"feedback-id", b"feedback-id",  # Gmail's feedback loop trusts only a signed one
    b"mime-version",
    b"content-type",
)  # fmt: skip

_H_TAG = b" : ".join(SIGNED_HEADERS)
_HEADER_NAME = b"DKIM-Signature"
# A placeholder as long as a signature's first line, so folding the header before and after
# signing puts the tags in front of b= on the same lines (what dkimpy does, and why).
_PLACEHOLDER = b"0" * 60
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
_LINE_END = re.compile(rb"\r?\n")
_WSP_RUN = re.compile(rb"[\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_FWS = rb"(?:(?:\s*\r?\n)?\s+)?"
_B_VALUE = re.compile(rb"([;\s]b" + _FWS + rb"=)(?:" + _FWS + rb"[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A DKIM private key with its selector and domain, read and parsed once per campaign."""

    selector: str
    domain: str
    algorithm: Algorithm
    private_key: PrivateKey

    def __repr__(self) -> str:  # never print the key material
        return f"SigningKey({self.selector}._domainkey.{self.domain}, {self.algorithm})"


def sign_message(
    message: bytes, key: SigningKey | Sequence[SigningKey], timestamp: int | None = None
) -> bytes:
    """`message` with a DKIM-Signature header per key in front. `message` uses CRLF line ends.

    `timestamp` (seconds since the epoch) becomes the `t=` tag; without it there is no `t=`,
    which RFC 6376 §3.5 allows. Several keys (RFC 8463 §6: an RSA and an Ed25519 key, each
    under its own selector) give one signature each, over the same message, the first on top.
    """
    return signature_headers(message, key, timestamp) + message


def signature_headers(
    message: bytes, key: SigningKey | Sequence[SigningKey], timestamp: int | None = None
) -> bytes:
    """The DKIM-Signature header fields that `sign_message` puts in front of `message`.

    For a signer that is not where the message is (mailer.delivery.signing): what comes back
    is a few hundred bytes, not the message again.
    """
    keys = (key,) if isinstance(key, SigningKey) else tuple(key)
    headers, body = _parse(message)
    canonical = [(name.lower(), _relaxed_value(value)) for name, value in headers]
    signed = _select(canonical)
    body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
    return b"".join(_signature(k, signed, body_hash, timestamp) for k in keys)


def _signature(
    key: SigningKey, signed: list[tuple[bytes, bytes]], body_hash: bytes, timestamp: int | None
) -> bytes:
    domain = key.domain.encode("ascii")
    fields: list[tuple[bytes, bytes]] = [
        (b"v", b"1"),
        (b"a", key.algorithm.encode("ascii")),
        (b"c", b"relaxed/relaxed"),  # survives what relays do to whitespace (RFC 6376 §3.4)
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        *([(b"t", str(timestamp).encode("ascii"))] if timestamp is not None else []),
        (b"h", _H_TAG),
        (b"bh", body_hash),
        (b"b", _PLACEHOLDER),
    ]
    # RFC 6376 §3.7: the signature covers the signed headers and then this header itself with
    # an empty b=, canonicalized like the others and without its trailing CRLF.
    folded = _fold(_join(fields), len(_HEADER_NAME))
    # The placeholder is the header's last token and shorter than a line, so it is never split:
    # cutting it off is what removing the b= value with a regular expression (dkimpy) gives.
    if folded.endswith(b"b=" + _PLACEHOLDER):
        unsigned = folded[: -len(_PLACEHOLDER)]
    else:  # pragma: no cover - kept for a fold we did not foresee
        unsigned = _B_VALUE.sub(rb"\1", folded)
    hashed = b"".join(name + b":" + value for name, value in signed)
    hashed += b"dkim-signature:" + _relaxed_value(b" " + unsigned).rstrip()
    if isinstance(key.private_key, rsa.RSAPrivateKey):
        signature = key.private_key.sign(hashed, padding.PKCS1v15(), hashes.SHA256())
    else:
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data, not the data itself.
        signature = key.private_key.sign(hashlib.sha256(hashed).digest())
    fields[-1] = (b"b", base64.b64encode(signature))
    return _HEADER_NAME + b": " + _fold(_join(fields) + b"\r\n", len(_HEADER_NAME))


def _join(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(name + b"=" + value for name, value in fields)


def _parse(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields as (name, value with its CRLFs) and the body, as RFC 5322 reads them."""
    end = message.find(b"\r\n\r\n")
    if end != -1 and message.count(b"\n") == message.count(b"\r\n"):
        # CRLF throughout (what we render): the body is the rest as it is, not split and
        # joined again line by line (which was most of the cost of signing a message).
        return _fields(message[:end].split(b"\r\n"))[0], message[end + 4 :]
    lines = _LINE_END.split(message)
    headers, index = _fields(lines)
    return headers, b"\r\n".join(lines[index:])


def _fields(lines: list[bytes]) -> tuple[list[tuple[bytes, bytes]], int]:
    """The header fields of `lines` up to the first empty one, and where the body starts."""
    headers: list[list[bytes]] = []
    index = 0
    for index, line in enumerate(lines):  # noqa: B007 - the index is where the body starts
        if not line:
            index += 1
            break
        if line[0] in (0x09, 0x20):  # a folded continuation line
            headers[-1][1] += line + b"\r\n"
            continue
        match = _FIELD_NAME.match(line)
        if match is not None:
            headers.append([match.group(1), line[match.end() :] + b"\r\n"])
        elif not line.startswith(b"From "):  # an mbox separator is not a header
            raise ValueError(f"not a header line: {line[:40]!r}")
    else:
        index = len(lines)
    return [(name, value) for name, value in headers], index


def _relaxed_value(value: bytes) -> bytes:
    # RFC 6376 §3.4.2: unfold, compress whitespace runs to one space, strip both ends. The
    # plain replaces do what the pattern \r?\n does, without a regular expression per field.
    value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return value.strip() + b"\r\n"


def _relaxed_body(body: bytes) -> bytes:
    # RFC 6376 §3.4.4: no whitespace at line ends, runs compressed, no empty lines at the end;
    # an empty body is hashed as nothing.
    # The regular expressions run only when there is something to change (quoted-printable
    # bodies rarely have any): each would otherwise scan the whole body.
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    body = body + b"\r\n" if end == len(body) else body[: end + 2]
    return b"" if body == b"\r\n" else body


def _select(canonical: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The signed fields in `h=` order, each name's instances taken from the bottom up.

    RFC 6376 §5.4.2: a name listed again takes the next instance above; one with none left
    signs its absence (nothing is hashed for it).
    """
    # One pass over the fields, not one per signed name: over-signing lists names twice.
    instances: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for field in canonical:
        instances.setdefault(field[0], []).append(field)
    chosen = []
    for name in SIGNED_HEADERS:
        left = instances.get(name)
        if left:
            chosen.append(left.pop())
    return chosen


def _fold(header: bytes, name_length: int) -> bytes:
    """Fold at spaces so no line passes column 72, the field name counted on the first line."""
    limit = 72 - name_length
    if len(header) <= limit:
        return header
    if len(header) - header.rfind(b"\r\n") == 2 and len(header) <= limit + 2:
        return header
    # Lines already folded stay as they are; only the last one is folded further.
    done = header.rfind(b"\r\n ")
    folded = b"" if done == -1 else header[: done + 3]
    header = header if done == -1 else header[done + 3 :]
    while len(header) > limit:
        space = header[:limit].rfind(b" ")
        if space == -1:  # no space to fold at: break the token (never in our tags)
            folded += header[:limit] + b"\r\n "
            header = header[limit:]
        else:
            folded += header[:space] + b"\r\n "
            header = header[space + 1 :]
        limit = 71
    return folded + header
