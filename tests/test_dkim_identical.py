"""DKIM on `cryptography`: byte for byte what dkimpy signs, and dual signing (RFC 8463 §6).

dkimpy stays the reference: for any message, our RSA-SHA256 signature header is the one dkimpy
writes for the same key, selector and timestamp (PKCS#1 v1.5 and Ed25519 are deterministic),
and dkimpy verifies every message we sign.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from mailer.core.dkim import SIGNED_HEADERS, SigningKey, sign_message
from mailer.delivery.dkimkeys import generate_key_pair, load_signing_keys
from mailer.delivery.sink import SmtpSink
from mailer.errors import ConfigError
from tests.conftest import make_settings
from tests.factories import add_contact
from tests.sending_support import NOW, send, subscribed

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_PEM = _RSA.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
_ED = ed25519.Ed25519PrivateKey.generate()
_ED_SEED = base64.b64encode(
    _ED.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
)


def _txt(algorithm: str) -> bytes:
    if algorithm == "rsa-sha256":
        public = _RSA.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    raw = _ED.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


def _dns(name: bytes, timeout: int = 5) -> bytes:
    selector = name.split(b".")[0]
    return _txt("rsa-sha256" if selector == b"rsa" else "ed25519-sha256")


# Header fields as a sender writes them: the signed names (some twice, in any case, some
# absent), others beside them, values with runs of spaces and tabs, folded lines. From is
# there once (dkimpy's verifier refuses a message with two, whatever the signature).
_NAMES = st.sampled_from(
    sorted({n.decode() for n in SIGNED_HEADERS} - {"from"} | {"x-mailer", "received"})
).flatmap(lambda n: st.sampled_from([n, n.title(), n.upper()]))
_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
_WSP = st.text(st.sampled_from(" \t"), min_size=1, max_size=3)
_VALUE = st.lists(st.tuples(_TEXT, st.booleans(), _WSP), min_size=1, max_size=3).map(
    lambda pieces: "".join(t + ("\r\n" if fold else "") + ws for t, fold, ws in pieces)
)
_HEADER = st.tuples(_NAMES, _WSP | st.just(""), _VALUE).map(lambda h: f"{h[0]}:{h[1]}{h[2]}")
_BODY_LINE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"), max_size=80
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(_HEADER, max_size=12))
    headers.insert(draw(st.integers(0, len(headers))), "From: a@bakkerij.example")
    lines = draw(st.lists(_BODY_LINE, max_size=12))
    trailing = draw(st.integers(0, 3))  # empty lines at the end are not signed
    body = "".join(line + "\r\n" for line in lines) + "\r\n" * trailing
    message = ("\r\n".join(headers) + "\r\n\r\n" + body).encode("ascii")
    # Bare LF line ends are read as dkimpy reads them (the renderer always writes CRLF).
    return message.replace(b"\r\n", b"\n") if draw(st.integers(0, 9)) == 0 else message


def _dkimpy(message: bytes, algorithm: str) -> tuple[bytes, int]:
    private = _RSA_PEM if algorithm == "rsa-sha256" else _ED_SEED
    selector = b"rsa" if algorithm == "rsa-sha256" else b"ed"
    header = bytes(
        dkim.sign(
            message, selector, b"bakkerij.example", private,
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=algorithm.encode(),
            include_headers=list(SIGNED_HEADERS),
        )
    )  # fmt: skip
    tags = dict(dkim.util.parse_tag_value(header[len(b"DKIM-Signature:") :]))
    return header, int(tags[b"t"])


def _ours(algorithm: str) -> SigningKey:
    if algorithm == "rsa-sha256":
        return SigningKey("rsa", "bakkerij.example", "rsa-sha256", _RSA)
    return SigningKey("ed", "bakkerij.example", "ed25519-sha256", _ED)


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
@settings(max_examples=100, deadline=None)
@given(message=messages())
def test_the_signature_is_byte_identical_to_dkimpys_and_verifies(
    algorithm: str, message: bytes
) -> None:
    reference, timestamp = _dkimpy(message, algorithm)
    signed = sign_message(message, _ours(algorithm), timestamp=timestamp)
    assert signed == reference + message
    assert dkim.verify(signed, dnsfunc=_dns)


def test_without_a_timestamp_there_is_no_t_tag_and_it_still_verifies() -> None:
    message = b"From: a@bakkerij.example\r\nSubject: hoi\r\n\r\nhoi\r\n"
    signed = sign_message(message, _ours("rsa-sha256"))
    tags = dict(dkim.util.parse_tag_value(signed.split(b"\r\n\r\n")[0][len(b"DKIM-Signature:") :]))
    assert b"t" not in tags and dkim.verify(signed, dnsfunc=_dns)


def _dual_settings(tmp_path: Path, **overrides: Any) -> Any:
    rsa_key = generate_key_pair("rsa", "bakkerij.example", "rsa", tmp_path)
    ed_key = generate_key_pair("ed", "bakkerij.example", "ed25519", tmp_path)
    section = {
        "selector": "rsa", "domain": "bakkerij.example",
        "private_key_file": str(rsa_key.private_key_file),
        "second_selector": "ed", "second_private_key_file": str(ed_key.private_key_file),
        **overrides,
    }  # fmt: skip
    records = {k.dns_name.encode(): k.txt_value.encode() for k in (rsa_key, ed_key)}
    return make_settings("sqlite://", dkim=section), records


def test_dual_signing_adds_an_rsa_and_an_ed25519_signature_and_both_verify(
    tmp_path: Path,
) -> None:
    settings_, records = _dual_settings(tmp_path)
    keys = load_signing_keys(settings_)
    assert [k.algorithm for k in keys] == ["rsa-sha256", "ed25519-sha256"]
    message = b"From: nieuws@bakkerij.example\r\nSubject: hoi\r\n\r\nhoi\r\n"
    signed = sign_message(message, keys, timestamp=1_764_000_000)

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    assert signed.count(b"DKIM-Signature:") == 2
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256")  # the first key on top
    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=lookup)
    assert dkim.DKIM(signed).verify(idx=1, dnsfunc=lookup)


def test_a_second_key_without_its_selector_is_refused_with_the_key_named(
    tmp_path: Path,
) -> None:
    settings_, _records = _dual_settings(tmp_path, second_selector=None)
    with pytest.raises(ConfigError) as caught:
        load_signing_keys(settings_)
    assert str(caught.value) == (
        'test.toml: key "dkim.second_selector": a second signature needs both second_selector '
        "and second_private_key_file."
    )


def test_a_second_key_under_the_first_selector_is_refused(tmp_path: Path) -> None:
    settings_, _records = _dual_settings(tmp_path, second_selector="rsa")
    with pytest.raises(ConfigError, match='"dkim.second_selector": the second key needs its own'):
        load_signing_keys(settings_)


def test_a_campaign_sent_with_dual_signing_arrives_with_both_signatures_valid(
    tmp_path: Path, engine: Engine, sink: SmtpSink, db_url: str
) -> None:
    dual, records = _dual_settings(tmp_path)
    settings_ = make_settings(db_url, smtp={"port": sink.port}, dkim=dict(dual.dkim))
    for n in range(4):
        add_contact(engine, settings_, f"p{n}@example.nl", at=NOW, consents=subscribed())
    send(engine, settings_, "nov")

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    assert len(sink.messages) == 4
    for message in sink.messages:  # signed in the signing process (mailer.delivery.signing)
        assert dkim.DKIM(message.data).verify(idx=0, dnsfunc=lookup)
        assert dkim.DKIM(message.data).verify(idx=1, dnsfunc=lookup)
