"""Rules 2 and 5: what every rendered campaign message carries, parsed as a mail client would."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.config import Settings
from mailer.core.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.errors import HeaderInjectionError, InputError, TemplateError
from tests.conftest import make_settings

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
BASE_URL = "https://bakkerij.example"
ORGANIZATION = "Bakkerij Voorbeeld B.V."
POSTAL_ADDRESS = "Dorpsstraat 1, 1234 AB Voorbeeld"


@pytest.fixture
def mail_settings(tmp_path: Path) -> Settings:
    # Rendering touches no database; the URL is only there because Settings needs one.
    return make_settings(f"sqlite:///{tmp_path / 'unused.db'}")


def factory_for(
    settings: Settings,
    *,
    subject: str = "Nieuws van de bakker",
    template: str = "newsletter",
    list_name: str = "newsletter",
) -> MessageFactory:
    """A MessageFactory built as mailer.store.campaign.create_campaign builds it."""
    return MessageFactory(
        make_environment(settings),
        settings,
        CampaignContent(name="maart", subject=subject, template=template, list_name=list_name),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
    )


def render(
    settings: Settings,
    recipient: Recipient | None = None,
    *,
    subject: str = "Nieuws van de bakker",
    list_name: str = "newsletter",
) -> bytes:
    recipient = recipient or Recipient(7, "anna@example.nl", "Anna", "de Vries", "nl")
    factory = factory_for(settings, subject=subject, list_name=list_name)
    return factory.render(recipient, basis="consent", now=NOW).data


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text/plain, text/html) of a multipart/alternative message, decoded."""
    plain, html = message.iter_parts()
    return str(plain.get_content()), str(html.get_content())


def test_the_message_is_for_one_person_from_the_named_sender(mail_settings: Settings) -> None:
    message = parse(render(mail_settings))
    assert len(message.get_all("To") or []) == 1
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Anna de Vries", "anna@example.nl")
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Bakkerij Voorbeeld",
                                                       "nieuws@bakkerij.example")  # fmt: skip
    assert message["Reply-To"] == "info@bakkerij.example"
    assert "Bcc" not in message and "Cc" not in message


def test_the_message_has_subject_date_message_id_and_list_id(mail_settings: Settings) -> None:
    message = parse(render(mail_settings))
    assert message["Subject"] == "Nieuws van de bakker"
    assert message["Date"].datetime == NOW
    assert re.fullmatch(r"<[^<>@\s]+@bakkerij\.example>", message["Message-ID"])
    assert message["List-Id"] == '"Nieuwsbrief" <newsletter.bakkerij.example>'


def test_every_message_gets_its_own_message_id(mail_settings: Settings) -> None:
    factory = factory_for(mail_settings)
    anna = Recipient(7, "anna@example.nl")
    ids = {factory.render(anna, basis="consent", now=NOW).message_id for _ in range(3)}
    assert len(ids) == 3


def list_unsubscribe_uris(message: EmailMessage) -> list[str]:
    return re.findall(r"<([^<>]+)>", str(message["List-Unsubscribe"]))


def test_list_unsubscribe_has_an_https_and_a_mailto_uri_and_one_click(
    mail_settings: Settings,
) -> None:
    message = parse(render(mail_settings))
    https, mailto = list_unsubscribe_uris(message)
    assert https.startswith(f"{BASE_URL}/unsubscribe/")
    assert mailto.startswith("mailto:unsubscribe@bakkerij.example?subject=")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058 §3.1


def test_the_message_is_text_then_html_alternatives(mail_settings: Settings) -> None:
    message = parse(render(mail_settings))
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in message.iter_parts())


def test_both_parts_name_the_organisation_and_its_postal_address(mail_settings: Settings) -> None:
    text, html = parts(parse(render(mail_settings)))
    for body in (text, html):
        assert ORGANIZATION in body
        assert POSTAL_ADDRESS in body


def test_the_unsubscribe_link_in_every_place_leads_to_this_contact_and_list(
    mail_settings: Settings,
) -> None:
    message = parse(render(mail_settings, Recipient(42, "piet@example.nl"), list_name="offers"))
    text, html = parts(message)
    pattern = re.escape(BASE_URL) + r"/unsubscribe/([A-Za-z0-9_.-]+)"
    https, mailto = list_unsubscribe_uris(message)
    tokens = {
        "text part": re.findall(pattern, text),
        "html part": re.findall(r'href="' + pattern + '"', html),
        "List-Unsubscribe https": re.findall(pattern, https),
        "List-Unsubscribe mailto": [
            unquote(parse_qs(urlsplit(mailto).query)["subject"][0]).removeprefix("unsubscribe ")
        ],
    }
    signer = TokenSigner(mail_settings.require_secret_keys())
    for place, found in tokens.items():
        assert len(found) == 1, place
        claim = signer.read_unsubscribe(found[0])
        assert (claim.contact_id, claim.list_name) == (42, "offers"), place


def test_a_contacts_name_is_escaped_in_the_html_part(mail_settings: Settings) -> None:
    evil = Recipient(7, "anna@example.nl", first_name='<script>alert("x")</script>')
    text, html = parts(parse(render(mail_settings, evil)))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert '<script>alert("x")</script>' in text  # the text part is not HTML: shown as typed


def test_non_ascii_names_and_subjects_round_trip(mail_settings: Settings) -> None:
    joel = Recipient(7, "joel@example.nl", first_name="Joël", last_name="Müller")
    message = parse(render(mail_settings, joel, subject="Nieuws – ñ"))
    assert message["Subject"] == "Nieuws – ñ"
    assert message["To"].addresses[0].display_name == "Joël Müller"
    text, html = parts(message)
    assert "Beste Joël," in text
    assert "Beste Joël," in html
    assert "<h1" in html and "Nieuws – ñ</h1>" in html


def assert_crlf_and_short_lines(data: bytes) -> None:
    assert data.endswith(b"\r\n")
    for line in data[:-2].split(b"\r\n"):
        assert b"\n" not in line and b"\r" not in line, line  # no bare LF or CR
        assert len(line) < 998, line  # RFC 5322 §2.1.1, without the CRLF


def test_every_line_ends_with_crlf_and_is_under_998_octets(mail_settings: Settings) -> None:
    long_name = Recipient(7, "anna@example.nl", first_name="Anna" * 300, last_name="Ö" * 300)
    assert_crlf_and_short_lines(render(mail_settings, long_name, subject="Aanbieding " * 120))


header_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1,
    max_size=120,
).filter(lambda s: s == " ".join(s.split()))  # display names and subjects are single-spaced


# Rendering reads no database: one Settings value serves every generated example.
STATIC_SETTINGS = make_settings("sqlite:///never-opened.db")


@settings(max_examples=60, deadline=None)
@given(name=header_text, subject=header_text)
def test_any_name_and_subject_survive_encoding(name: str, subject: str) -> None:
    recipient = Recipient(7, "anna@example.nl", first_name=name)
    data = render(STATIC_SETTINGS, recipient, subject=subject)
    assert_crlf_and_short_lines(data)
    assert parse(data)["Subject"] == subject
    assert rfc2047_display_name(data) == name


def rfc2047_display_name(data: bytes) -> str:
    """The To display name, decoded by RFC 2047 §6.2: space between encoded words is dropped.

    (Python's policy.default address parser keeps that space, so a long name split over two
    encoded words would come back with a space that is not in the header.)
    """
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    name, _address = parseaddr(str(raw))
    return str(make_header(decode_header(name)))


@pytest.mark.parametrize("subject", ["Nieuws\r\nBcc: iedereen@example.nl", "Nieuws\nX: y",
                                     "Nieuws\r"])  # fmt: skip
def test_a_subject_with_a_line_break_is_refused(mail_settings: Settings, subject: str) -> None:
    with pytest.raises(HeaderInjectionError) as refused:
        factory_for(mail_settings, subject=subject)
    assert str(refused.value) == "the subject header value contains a line break"


def test_a_reply_to_address_that_is_not_ascii_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    # Like sender.from_address (refused by encode_address): a non-ASCII address cannot go in a
    # header without SMTPUTF8. It must be refused as InputError (exit 2, a sentence), at the
    # latest when the message is rendered, never an exception outside the error tree mid-run.
    with pytest.raises(InputError) as refused:
        settings = make_settings(f"sqlite:///{tmp_path / 'unused.db'}",
                                 sender={"reply_to": "info@bäckerij.example"})  # fmt: skip
        factory_for(settings).render(Recipient(7, "anna@example.nl"), basis="consent", now=NOW)
    message = str(refused.value)
    assert "reply_to" in message or "Reply-To" in message or "info@bäckerij.example" in message


def test_a_name_with_a_line_break_cannot_add_a_header(mail_settings: Settings) -> None:
    factory = factory_for(mail_settings)
    sneaky = Recipient(7, "anna@example.nl", first_name="Anna\r\nBcc: iedereen@example.nl")
    with pytest.raises(HeaderInjectionError):
        factory.render(sneaky, basis="consent", now=NOW)


@pytest.mark.parametrize(
    ("html", "scheme"),
    [
        ('<p>Hallo</p><img src="cid:logo" alt="logo">', "cid:"),
        ('<img alt="" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB">', "data:"),
    ],
    ids=["cid: part", "data: URI"],
)
def test_a_template_that_embeds_images_is_refused(tmp_path: Path, html: str, scheme: str) -> None:
    campaign = tmp_path / "templates" / "campaigns" / "bad"
    campaign.mkdir(parents=True)
    (campaign / "nl.html").write_text(f"<html><body>{html}</body></html>\n", encoding="utf-8")
    (campaign / "nl.txt").write_text("Hallo\n", encoding="utf-8")
    settings = make_settings(f"sqlite:///{tmp_path / 'unused.db'}",
                             templates_dir=str(tmp_path / "templates"))  # fmt: skip
    with pytest.raises(TemplateError) as refused:
        factory_for(settings, template="bad")
    assert str(refused.value) == (
        f"campaigns/bad/nl.html: embeds images ({scheme}); marketing mail must link images by "
        "https URL, not embed them"
    )


def test_a_template_linking_images_by_https_is_accepted(tmp_path: Path) -> None:
    campaign = tmp_path / "templates" / "campaigns" / "good"
    campaign.mkdir(parents=True)
    (campaign / "nl.html").write_text(
        '<html><body><img src="https://bakkerij.example/logo.png" alt="logo"></body></html>\n',
        encoding="utf-8",
    )
    (campaign / "nl.txt").write_text("Hallo\n", encoding="utf-8")
    settings = make_settings(f"sqlite:///{tmp_path / 'unused.db'}",
                             templates_dir=str(tmp_path / "templates"))  # fmt: skip
    rendered = factory_for(settings, template="good").render(
        Recipient(7, "anna@example.nl"), basis="consent", now=NOW
    )
    _, html = parts(parse(rendered.data))
    assert 'src="https://bakkerij.example/logo.png"' in html


@pytest.mark.parametrize(
    ("locale", "greeting", "footer"),
    [
        ("en", "Dear Anna,", "You receive this message from"),
        ("nl", "Beste Anna,", "Je ontvangt dit bericht van"),
        ("fr", "Beste Anna,", "Je ontvangt dit bericht van"),  # no such locale: settings.locale
        (None, "Beste Anna,", "Je ontvangt dit bericht van"),
    ],
    ids=["english contact", "dutch contact", "unknown locale falls back", "no locale"],
)
def test_the_contacts_language_chooses_the_template(
    mail_settings: Settings, locale: str | None, greeting: str, footer: str
) -> None:
    anna = Recipient(7, "anna@example.nl", first_name="Anna", locale=locale)
    text, html = parts(parse(render(mail_settings, anna)))
    for body in (text, html):
        assert greeting in body
        assert footer in body


def test_the_fallback_locale_follows_the_settings(tmp_path: Path) -> None:
    english = make_settings(f"sqlite:///{tmp_path / 'unused.db'}", locale="en")
    text, _ = parts(parse(render(english, Recipient(7, "a@example.nl", "Anna", locale="fr"))))
    assert "Dear Anna," in text
