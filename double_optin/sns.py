"""Amazon SNS message signatures, for SES bounce and complaint notifications.

SNS signs each message it posts (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) over a
string made of chosen fields in a fixed order, with the key of the certificate at
SigningCertURL. That URL is trusted only if it is https on a host `sns.<region>.amazonaws.com`
(`.amazonaws.com.cn` in China) and names a .pem file: otherwise anyone could sign with a
certificate of their own. Certificates are fetched by an injected `fetch` (tests serve their
own) and cached by URL.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.errors import MailerError

__all__ = ["Fetch", "SnsRefused", "SnsVerifier", "fetch_https", "is_sns_url", "string_to_sign"]

Fetch = Callable[[str], bytes]

_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
# The fields signed, in order (AWS SNS "Verifying the signatures of Amazon SNS messages").
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsRefused(MailerError, PermissionError):
    """The message is not one SNS signed (the sentence says why, without the message)."""


def is_sns_url(url: str, *, pem: bool = False) -> bool:
    """Whether `url` is https on an SNS host (and, with `pem`, names a .pem file)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed URL or port
        return False
    if parts.scheme != "https" or port not in (None, 443) or parts.username:
        return False
    if not _SNS_HOST.fullmatch(parts.hostname or ""):
        return False
    return parts.path.endswith(".pem") if pem else True


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed: "Name\\nvalue\\n" per signed field present, in order."""
    fields = _SIGNED.get(str(message.get("Type")))
    if fields is None:
        raise SnsRefused("is not an SNS message type (Type)")
    out = []
    for name in fields:
        if name not in message:
            if name == "Subject":  # the only optional signed field
                continue
            raise SnsRefused(f"lacks the signed field {name}")
        out.append(f"{name}\n{message[name]}\n")
    return "".join(out).encode("utf-8")


def fetch_https(url: str) -> bytes:
    """Production fetcher: one GET of an SNS URL (checked again here), at most 64 KiB."""
    if not is_sns_url(url):
        raise SnsRefused("refuses to fetch a URL outside https://sns.<region>.amazonaws.com")
    request = urllib.request.Request(url, headers={"user-agent": "consent-mailer"})
    with urllib.request.urlopen(request, timeout=10) as answer:  # the URL was checked above
        data: bytes = answer.read(64 * 1024)
    return data


class SnsVerifier:
    """Checks SNS signatures; holds the certificates it fetched (by URL) for the process."""

    def __init__(self, fetch: Fetch = fetch_https) -> None:
        self._fetch = fetch
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._keys.get(url)
        if key is None:
            try:
                certificate = x509.load_pem_x509_certificate(self._fetch(url))
            except (ValueError, OSError) as exc:
                raise SnsRefused("has a signing certificate that cannot be read") from exc
            public = certificate.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise SnsRefused("has a signing certificate without an RSA key")
            key = self._keys[url] = public
        return key

    def verify(self, message: Mapping[str, Any]) -> None:
        """Raise `SnsRefused` unless SNS signed `message`."""
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise SnsRefused("has an unknown SignatureVersion")
        url = str(message.get("SigningCertURL") or message.get("SigningCertUrl") or "")
        if not is_sns_url(url, pem=True):
            raise SnsRefused("has a SigningCertURL outside https://sns.<region>.amazonaws.com")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsRefused("has a Signature that is not base64") from exc
        data = string_to_sign(message)
        try:
            self._key(url).verify(signature, data, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsRefused("has a signature that does not verify") from None
