"""DKIM keys: read and check the keys of `[dkim]` once per campaign, and make a key pair to publish.

The signing itself is pure and lives in mailer.core.dkim; this module is the file I/O around it.
Each key is parsed into a `cryptography` key object here, once, so a message costs only its
signature (parsing a PEM key per message would cost more than signing with it).

Key files are what dkimpy and OpenDKIM read: RSA as a PEM private key (PKCS#1 "RSA PRIVATE
KEY", or PKCS#8), ed25519 (RFC 8463) as the base64 of the 32-byte seed.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailer.config import Settings
from mailer.core.dkim import Algorithm, PrivateKey, SigningKey, sign_message
from mailer.errors import ConfigError, InputError

__all__ = ["GeneratedKey", "generate_key_pair", "load_signing_key", "load_signing_keys"]

_PROBE = b"From: probe@example.invalid\r\nSubject: probe\r\n\r\nprobe\r\n"
_MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers must reject smaller keys; we generate 2048


def load_signing_key(settings: Settings) -> SigningKey | None:
    """The first key of `[dkim]`, read and test-signed once; None when DKIM is not configured."""
    keys = load_signing_keys(settings)
    return keys[0] if keys else None


def load_signing_keys(settings: Settings) -> tuple[SigningKey, ...]:
    """Every key of `[dkim]` (one, or two for dual signing), read and test-signed once."""
    config = settings.dkim
    if config is None:
        return ()
    sender_domain = settings.sender.domain
    if sender_domain != config.domain and not sender_domain.endswith("." + config.domain):
        # DMARC (RFC 7489 §3.1.1) passes on DKIM only when d= aligns with the From domain.
        raise ConfigError(
            f'"{config.domain}" must be the domain of sender.from_address ("{sender_domain}") '
            "or a parent of it, or receivers applying DMARC will not count the signature.",
            file=settings.source,
            key="dkim.domain",
        )
    keys = [
        _load(config.selector, config.domain, config.algorithm, config.private_key_file,
              settings.source, "dkim.private_key_file")
    ]  # fmt: skip
    if (config.second_selector is None) != (config.second_private_key_file is None):
        missing = "second_selector" if config.second_selector is None else "second_private_key_file"
        raise ConfigError(
            "a second signature needs both second_selector and second_private_key_file.",
            file=settings.source,
            key=f"dkim.{missing}",
        )
    if config.second_selector is not None and config.second_private_key_file is not None:
        if config.second_selector == config.selector:
            # One key per selector: a selector holding two TXT records fails to verify.
            raise ConfigError(
                "the second key needs its own selector, not the first one's.",
                file=settings.source,
                key="dkim.second_selector",
            )
        keys.append(
            _load(config.second_selector, config.domain, config.second_algorithm,
                  config.second_private_key_file, settings.source,
                  "dkim.second_private_key_file")
        )  # fmt: skip
    return tuple(keys)


def _load(
    selector: str, domain: str, algorithm: Algorithm, file: str, source: str, setting: str
) -> SigningKey:
    path = Path(file)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f'the private key file "{path}" does not exist; create a key pair with '
            "`mailer dkim keygen`.",
            file=source,
            key=setting,
        ) from None
    except OSError as exc:
        raise ConfigError(
            f'the private key file "{path}" cannot be read: {exc.strerror or exc}.',
            file=source,
            key=setting,
        ) from None
    # The exception texts are not shown: they could quote part of the key.
    expected = "a PEM RSA private key" if algorithm == "rsa-sha256" else "an ed25519 key"
    problem = f'the private key file "{path}" does not hold {expected} for "{algorithm}"'
    private = _parse_key(data.strip(), algorithm)
    if private is None:
        raise ConfigError(problem + ".", file=source, key=setting)
    if isinstance(private, rsa.RSAPrivateKey) and private.key_size < _MIN_RSA_BITS:
        raise ConfigError(
            f"{problem}: the RSA key has {private.key_size} bits; receivers refuse fewer than "
            "1024. Generate a 2048-bit key with `mailer dkim keygen`.",
            file=source,
            key=setting,
        )
    key = SigningKey(selector, domain, algorithm, private)
    try:
        # Sign a probe now, so a damaged key fails before the first recipient, not at it.
        sign_message(_PROBE, key)
    except Exception:
        raise ConfigError(problem + ".", file=source, key=setting) from None
    return key


def _parse_key(data: bytes, algorithm: Algorithm) -> PrivateKey | None:
    if algorithm == "rsa-sha256":
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            return None
        return loaded if isinstance(loaded, rsa.RSAPrivateKey) else None
    try:
        seed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(seed) != 32:
        return None
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    private_key_file: Path
    dns_file: Path
    dns_name: str  # selector._domainkey.domain.
    txt_value: str  # v=DKIM1; k=...; p=...
    algorithm: Algorithm

    def zone_record(self) -> str:
        """The TXT record in zone-file syntax, split in strings of at most 255 octets."""
        chunks = [self.txt_value[i : i + 255] for i in range(0, len(self.txt_value), 255)]
        strings = " ".join(f'"{c}"' for c in chunks)
        return f"{self.dns_name} IN TXT ( {strings} )"


def generate_key_pair(
    selector: str, domain: str, algorithm: Literal["rsa", "ed25519"], out_dir: Path
) -> GeneratedKey:
    """Write a new private key (mode 600) and its DNS record to `out_dir`; never overwrite."""
    selector, domain = selector.lower(), domain.lower().rstrip(".")
    for name, value in (("--selector", selector), ("--domain", domain)):
        labels = value.split(".")
        if not all(lab and lab.replace("-", "").replace("_", "").isalnum() for lab in labels):
            raise InputError(f'{name} "{value}" must be a DNS name (letters, digits, "-", dots)')
        if not value.isascii():
            raise InputError(f'{name} "{value}" must be ASCII (use the xn-- form of the domain)')
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_bytes = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, what dkimpy reads
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        txt = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"
        full: Algorithm = "rsa-sha256"
    else:
        seed = ed25519.Ed25519PrivateKey.generate()
        raw = seed.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        key_bytes = base64.b64encode(raw) + b"\n"
        public = seed.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        txt = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode('ascii')}"
        full = "ed25519-sha256"
    out_dir.mkdir(parents=True, exist_ok=True)
    # One key per selector: a selector holding two TXT records (rsa and ed25519) fails to verify.
    key_file = out_dir / f"{selector}.{domain}.key"
    dns_file = out_dir / f"{selector}.{domain}.dns"
    result = GeneratedKey(key_file, dns_file, f"{selector}._domainkey.{domain}.", txt, full)
    try:
        # O_EXCL: an existing key may be the one in DNS right now; replacing it breaks signing.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(
            f'"{key_file}" already exists; choose another --selector or --out (a key that is '
            "published must not be replaced in place)."
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    dns_file.write_text(result.zone_record() + "\n", encoding="ascii")
    return result
