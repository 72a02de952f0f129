"""DKIM: messages signed in the render path verify with dkimpy against the keygen record."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest

from mailer.cli import main
from mailer.core.dkim import sign_message
from mailer.core.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.delivery.dkimkeys import GeneratedKey, generate_key_pair, load_signing_key
from mailer.errors import ConfigError, InputError
from tests.conftest import make_settings

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
ALGORITHMS = ["rsa", "ed25519"]


def _dns(key: GeneratedKey) -> Any:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == key.dns_name.encode()
        return key.txt_value.encode()

    return lookup


def _factory(key: GeneratedKey | None, **dkim_overrides: str) -> MessageFactory:
    section = (
        {}
        if key is None
        else {
            "dkim": {
                "selector": "mail2026",
                "domain": "bakkerij.example",
                "private_key_file": str(key.private_key_file),
                "algorithm": key.algorithm,
                **dkim_overrides,
            }
        }
    )
    settings = make_settings("sqlite://", **section)
    return MessageFactory(
        make_environment(settings),
        settings,
        CampaignContent("nov", "Nieuws – café crème", "newsletter", "newsletter"),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
        load_signing_key(settings),
    )


def _message(factory: MessageFactory) -> bytes:
    recipient = Recipient(3, "zoe@voorbeeld.example", "Zoë", "van 't Hoff", "nl")
    return factory.render(recipient, basis="consent", now=NOW).data


@pytest.fixture(params=ALGORITHMS)
def key(request: pytest.FixtureRequest, tmp_path: Path) -> GeneratedKey:
    return generate_key_pair("mail2026", "bakkerij.example", request.param, tmp_path)


def test_every_message_is_signed_and_verifies_against_the_published_record(
    key: GeneratedKey,
) -> None:
    message = _message(_factory(key))
    assert message.startswith(b"DKIM-Signature: v=1; a=" + key.algorithm.encode())
    assert dkim.verify(message, dnsfunc=_dns(key))


def test_the_signature_covers_the_headers_receivers_and_rfc_8058_require(
    key: GeneratedKey,
) -> None:
    message = _message(_factory(key))
    signature = dict(dkim.util.parse_tag_value(message.split(b"\r\n\r\n")[0][16:]))
    signed = [h.strip() for h in signature[b"h"].replace(b"\r\n", b"").split(b":")]
    required = b"from to subject date message-id list-unsubscribe list-unsubscribe-post list-id"
    for header in [*required.split(), b"mime-version", b"content-type"]:
        assert header in signed
    assert signature[b"d"] == b"bakkerij.example" and signature[b"s"] == b"mail2026"
    assert signature[b"c"] == b"relaxed/relaxed"


@pytest.mark.parametrize(
    ("change", "replacement"),
    [
        (b"Beste Zo=C3=AB", b"Beste Zo=C3=AC"),  # the body
        (b"Subject: =?utf-8?", b"Subject: =?UTF-8?"),  # a signed header (case is not relaxed)
        (b"List-Unsubscribe-Post:", b"List-Unsubscribe-Post: x\r\nList-Unsubscribe-Post:"),
    ],
)
def test_a_changed_message_fails_verification(
    key: GeneratedKey, change: bytes, replacement: bytes
) -> None:
    message = _message(_factory(key))
    assert change in message
    tampered = message.replace(change, replacement, 1)
    assert not dkim.verify(tampered, dnsfunc=_dns(key))


def test_the_key_file_is_read_once_per_campaign_not_per_message(
    key: GeneratedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = _factory(key)
    key.private_key_file.unlink()  # every later message still signs: the key is in memory
    for n in range(3):
        message = factory.render(Recipient(n, f"p{n}@v.example"), basis="consent", now=NOW)
        assert dkim.verify(message.data, dnsfunc=_dns(key))


def test_sign_message_is_bytes_in_bytes_out_and_leaves_the_message_intact(
    key: GeneratedKey,
) -> None:
    unsigned = _message(_factory(None))
    loaded = _factory(key)._dkim
    assert loaded is not None and "BEGIN" not in repr(loaded)  # no key material in a repr
    signed = sign_message(unsigned, loaded)
    assert signed.endswith(unsigned) and dkim.verify(signed, dnsfunc=_dns(key))


def test_a_missing_key_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    fake = GeneratedKey(missing, missing, "", "", "rsa-sha256")
    with pytest.raises(ConfigError) as caught:
        _factory(fake)
    assert str(caught.value) == (
        f'test.toml: key "dkim.private_key_file": the private key file "{missing}" does not '
        "exist; create a key pair with `mailer dkim keygen`."
    )


def test_an_unreadable_key_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    folder = GeneratedKey(tmp_path, tmp_path, "", "", "rsa-sha256")  # a folder, not a file
    with pytest.raises(ConfigError) as caught:
        _factory(folder)
    assert str(caught.value) == (
        f'test.toml: key "dkim.private_key_file": the private key file "{tmp_path}" cannot be '
        "read: Is a directory."
    )


def test_a_key_that_does_not_fit_the_algorithm_is_refused_before_any_message(
    tmp_path: Path,
) -> None:
    ed = generate_key_pair("mail2026", "bakkerij.example", "ed25519", tmp_path)
    with pytest.raises(ConfigError) as caught:
        _factory(ed, algorithm="rsa-sha256")
    assert str(caught.value) == (
        f'test.toml: key "dkim.private_key_file": the private key file "{ed.private_key_file}" '
        'does not hold a PEM RSA private key for "rsa-sha256".'
    )


def test_a_signing_domain_that_does_not_align_with_from_is_refused(key: GeneratedKey) -> None:
    with pytest.raises(ConfigError, match='key "dkim.domain": "esp.example" must be the domain'):
        _factory(key, domain="esp.example")


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    made = generate_key_pair("Mail2026", "Bakkerij.Example.", "rsa", tmp_path / "keys")
    assert made.private_key_file == tmp_path / "keys" / "mail2026.bakkerij.example.key"
    assert stat.S_IMODE(made.private_key_file.stat().st_mode) == 0o600
    assert made.private_key_file.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert made.dns_name == "mail2026._domainkey.bakkerij.example."
    assert made.txt_value.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    record = made.dns_file.read_text()
    assert all(len(chunk) <= 255 for chunk in record.split('"')[1::2])  # TXT strings
    with pytest.raises(InputError, match="already exists; choose another --selector"):
        generate_key_pair("mail2026", "bakkerij.example", "ed25519", tmp_path / "keys")


def test_mailer_dkim_keygen_prints_the_record_and_the_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dkim", "keygen", "--selector", "s1", "--domain", "bakkerij.example",
                 "--algorithm", "ed25519", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert 's1._domainkey.bakkerij.example. IN TXT ( "v=DKIM1; k=ed25519; p=' in out
    assert 'algorithm = "ed25519-sha256"' in out
    assert main(["dkim", "keygen", "--selector", "s2", "--domain", "b.example",
                 "--algorithm", "dsa"]) == 2  # fmt: skip
