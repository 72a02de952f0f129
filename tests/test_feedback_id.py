"""Gmail's Feedback-ID header: present when sender.feedback_id is set, and DKIM-signed."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest

from mailer.config import Settings
from mailer.core.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.delivery.dkimkeys import GeneratedKey, generate_key_pair, load_signing_key
from mailer.errors import ConfigError
from tests.conftest import make_settings

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
ZOE = Recipient(3, "zoe@voorbeeld.example", "Zoë", None, "nl")


@pytest.fixture
def key(tmp_path: Path) -> GeneratedKey:
    return generate_key_pair("mail2026", "bakkerij.example", "rsa", tmp_path)


def _settings(key: GeneratedKey, **sender: Any) -> Settings:
    dkim_section = {"selector": "mail2026", "domain": "bakkerij.example",
                    "private_key_file": str(key.private_key_file)}  # fmt: skip
    return make_settings("sqlite://", dkim=dkim_section, sender=sender)


def _render(settings: Settings, basis: str = "consent") -> bytes:
    factory = MessageFactory(
        make_environment(settings),
        settings,
        CampaignContent("nov-2026", "Nieuws van de bakker", "newsletter", "newsletter"),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
        load_signing_key(settings),
    )
    return factory.render(ZOE, basis=basis, now=NOW).data


def _dns(key: GeneratedKey) -> Any:
    return lambda name, timeout=5: key.txt_value.encode()


def test_the_feedback_id_names_campaign_list_basis_and_sender_and_is_signed(
    key: GeneratedKey,
) -> None:
    message = _render(_settings(key, feedback_id="bakkerij"), basis="existing_customer")
    parsed = email.message_from_bytes(message)
    assert parsed.get_all("Feedback-ID") == ["nov-2026:newsletter:existing_customer:bakkerij"]
    signature = dict(dkim.util.parse_tag_value(message.split(b"\r\n\r\n")[0][16:]))
    signed = [h.strip() for h in signature[b"h"].replace(b"\r\n", b"").split(b":")]
    assert signed.count(b"feedback-id") == 2  # oversigned: a second one cannot be added
    assert dkim.verify(message, dnsfunc=_dns(key))
    changed = message.replace(b":bakkerij\r\n", b":someone-else\r\n", 1)
    assert changed != message and not dkim.verify(changed, dnsfunc=_dns(key))


def test_without_a_feedback_id_there_is_no_header_and_none_can_be_added(
    key: GeneratedKey,
) -> None:
    message = _render(_settings(key))
    assert email.message_from_bytes(message).get("Feedback-ID") is None
    head, _, body = message.partition(b"\r\n\r\n")
    added = head + b"\r\nFeedback-ID: x:y:z:forged\r\n\r\n" + body
    assert dkim.verify(message, dnsfunc=_dns(key))
    assert not dkim.verify(added, dnsfunc=_dns(key))


def test_a_feedback_id_with_a_colon_or_line_break_is_refused() -> None:
    for bad in ("a:b", "bakkerij\r\nBcc: x@y", ""):
        with pytest.raises(ConfigError, match="sender.feedback_id"):
            make_settings("sqlite://", sender={"feedback_id": bad})
