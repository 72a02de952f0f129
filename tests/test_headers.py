"""Header hygiene: RFC 5322 lines, RFC 2047 encoding, Message-ID on the sender's domain.

Hypothesis generates subjects and names; every message must parse back to the same text.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.core.headers import encode_address, encode_header, encode_phrase
from mailer.core.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.errors import HeaderInjectionError
from tests.conftest import make_settings

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
# Any text a subject or name could hold: everything but surrogates, control characters and
# line/paragraph separators (those are refused, see test_control_characters_...).
header_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=200
)
dutch_word = st.text(
    st.sampled_from("abcdeijklmnoprstuvzABDJKMVZëüïéèöáç'-."), min_size=1, max_size=12
)
dutch_name = st.lists(dutch_word, min_size=1, max_size=3).map(" ".join)
many = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _factory(subject: str = "Nieuws – café crème", **overrides: Any) -> MessageFactory:
    config = make_settings("sqlite://", **overrides)
    return MessageFactory(
        make_environment(config),
        config,
        CampaignContent("nov", subject, "newsletter", "newsletter"),
        TokenSigner(config.require_secret_keys()).unsubscribe_token,
    )


def _rfc2047(value: str) -> str:
    # The RFC 2047 reading (what mail clients show); Python's newer parser differs at one point.
    return str(make_header(decode_header(value)))


def _assert_wire_format(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii(), "8-bit header"
    for line in data.split(b"\r\n"):
        assert len(line) < 998, "line over 998 octets (RFC 5322 §2.1.1)"
    for line in head.split(b"\r\n"):
        # RFC 5322 §2.1.1: SHOULD stay within 78 where there is a space to fold at.
        body = line.strip() if line.startswith(b" ") else line.split(b": ", 1)[-1]
        assert len(line) <= 78 or b" " not in body, line


@many
@given(header_text)
def test_any_subject_is_encoded_folded_and_reads_back_the_same(subject: str) -> None:
    line = encode_header("Subject", subject)
    _assert_wire_format(line.encode("ascii") + b"\r\n\r\n")
    parsed = email.message_from_bytes(
        line.encode("ascii") + b"\r\n\r\n", policy=email.policy.default
    )
    assert str(parsed["Subject"]) == subject


def _shown_name(line: str) -> str:
    """The display name of a `To:` line as a mail client shows it."""
    parsed = email.message_from_bytes(
        line.encode("ascii") + b"\r\n\r\n", policy=email.policy.default
    )
    assert not parsed["To"].defects
    name = str(parsed["To"].addresses[0].display_name)
    if re.search(r"\?=(\r\n)? =\?", line):
        # Python's parser puts a space between adjacent encoded words of a phrase, against
        # RFC 2047 §6.2 (a run of words longer than one encoded word holds): read it per RFC.
        rfc = _rfc2047(line[4:].rsplit(" <", 1)[0])
        assert rfc.replace(" ", "") == name.replace(" ", "")
        return rfc
    return name


@many
@given(header_text)
def test_any_display_name_reads_back_the_same(name: str) -> None:
    line = "To: " + encode_address(name, "joel@voorbeeld.example")
    _assert_wire_format(line.encode("ascii") + b"\r\n\r\n")
    parsed = email.message_from_bytes(
        line.encode("ascii") + b"\r\n\r\n", policy=email.policy.default
    )
    assert parsed["To"].addresses[0].addr_spec == "joel@voorbeeld.example"
    assert _shown_name(line) == " ".join(name.split())  # runs of whitespace become one space


@many
@given(dutch_name, dutch_name)
def test_dutch_names_read_back_exactly_with_pythons_parser(first: str, last: str) -> None:
    name = f"{first} {last}"
    line = "To: " + encode_address(name, "zoe@voorbeeld.example")
    assert _shown_name(line) == name
    if len(name.encode()) <= 40:  # fits one encoded word: Python's own reading is exact too
        parsed = email.message_from_bytes(line.encode() + b"\r\n\r\n", policy=email.policy.default)
        assert parsed["To"].addresses[0].display_name == name


_ENCODED_WORD = re.compile(r"=\?utf-8\?[bq]\?[^?]*\?=", re.IGNORECASE)


@pytest.mark.parametrize(
    ("name", "readable"),
    [("Joël Müller", ""), ("Zoë van 't Hoff", "van 't Hoff"), ("Jan Bakker-Müller", "Jan")],
    ids=["every word needs encoding", "only the first word does", "only the last word does"],
)
def test_only_the_words_that_need_it_are_encoded(name: str, readable: str) -> None:
    # RFC 2047 §5(3): encoded words may stand in a phrase among plain words; the plain ones
    # stay as they are, so a reader without RFC 2047 still sees them.
    line = encode_address(name, "j@v.example")
    assert line.isascii()
    phrase, _, address = line.rpartition(" <")
    assert address == "j@v.example>"
    words = _ENCODED_WORD.findall(phrase)
    assert words, "a non-ASCII name must be encoded"
    assert " ".join(_ENCODED_WORD.sub(" ", phrase).split()) == readable
    assert _rfc2047(phrase) == name
    assert _shown_name("To: " + line) == name


@pytest.mark.parametrize(
    "name", ["Anna de Vries", 'Jan "de Bakker"', "A. de Vries-Smit", "Piet \\ Klaas"]
)
def test_a_plain_ascii_name_is_a_quoted_string_and_never_encoded(name: str) -> None:
    # RFC 5322 §3.2.4: a quoted-string holds any printable ASCII, `"` and `\` as quoted pairs.
    line = encode_address(name, "j@v.example")
    assert "=?" not in line
    assert line.startswith('"') and line.endswith('" <j@v.example>')
    assert _shown_name("To: " + line) == name


@pytest.mark.parametrize("name", [None, "", " \x00 "])
def test_without_a_name_the_mailbox_is_the_bare_address(name: str | None) -> None:
    assert encode_address(name, "j@v.example") == "j@v.example"


def test_a_line_break_in_a_header_value_is_refused() -> None:
    with pytest.raises(HeaderInjectionError, match="the Subject header value contains a line"):
        encode_header("Subject", "Nieuws\r\nBcc: iedereen@example.org")
    with pytest.raises(HeaderInjectionError, match="contains a line break"):
        encode_address("Joël\nBcc: x@example.org", "j@v.example")


def test_control_characters_are_refused_in_a_subject_and_blanked_in_a_name() -> None:
    # U+001D and U+0085 are line breaks to some parsers (str.splitlines) and spaces to others.
    with pytest.raises(HeaderInjectionError, match="contains a control character"):
        encode_header("Subject", "Nieuws\x1dvan de bakker")
    assert encode_address("Joël\x85Müller\x00", "j@v.example") == encode_address(
        "Joël Müller", "j@v.example"
    )


def test_a_non_ascii_address_is_refused_not_sent_mangled() -> None:
    with pytest.raises(HeaderInjectionError, match="is not ASCII"):
        encode_address("Joël", "joël@voorbeeld.example")


def test_list_id_encodes_only_its_phrase() -> None:
    factory = _factory(lists={"newsletter": {"title": "Nieuws – café", "wording": "Ja."}})
    message = factory.render(Recipient(1, "a@v.example"), basis="consent", now=NOW).data
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert re.search(
        rb"List-Id: Nieuws =\?utf-8\?[^ ]+\?= <newsletter\.bakkerij\.example>", message
    )
    assert str(parsed["List-Id"]) == "Nieuws – café <newsletter.bakkerij.example>"


@many
@given(subject=header_text, first=header_text, last=dutch_name)
def test_every_rendered_message_is_rfc_5322_clean(subject: str, first: str, last: str) -> None:
    message = _factory(subject).render(
        Recipient(7, "joel@voorbeeld.example", first, last, "nl"), basis="consent", now=NOW
    )
    _assert_wire_format(message.data)
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert str(parsed["Subject"]) == subject
    assert parsed["To"].addresses[0].addr_spec == "joel@voorbeeld.example"
    assert parsed["Date"].datetime == NOW
    assert parsed["Message-ID"] == message.message_id
    assert re.fullmatch(r"<[A-Za-z0-9.]+@bakkerij\.example>", message.message_id)
    assert not parsed.defects
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
        assert not parsed[name].defects, name
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_a_line_break_in_an_address_or_a_bare_phrase_is_refused() -> None:
    # mutation run: dropping these checks survived; a CR/LF in an address is header injection.
    with pytest.raises(HeaderInjectionError, match="the address header value contains a line"):
        encode_address("Joël", "j@v.example\r\nBcc: iedereen@example.org")
    with pytest.raises(HeaderInjectionError, match="the display name header value contains a"):
        encode_phrase("Joël\r\nBcc: iedereen@example.org")
    with pytest.raises(HeaderInjectionError, match="the address 'joël@v.example' is not ASCII"):
        encode_address(None, "joël@v.example")
