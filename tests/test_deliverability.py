"""End to end: Dutch names across a real SMTP server, and a real spam filter's verdict."""

from __future__ import annotations

import asyncio
import email
import email.policy
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from sqlalchemy import Engine

import mailer.demo
from mailer.cli import main
from mailer.config import Settings
from mailer.delivery.dkimkeys import GeneratedKey, generate_key_pair
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.delivery.spamcheck import AIM, parse_report, score_message, spamassassin_path
from mailer.demo import run_demo
from mailer.store.campaign import create_campaign
from mailer.store.importer import import_contacts

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
needs_spamassassin = pytest.mark.skipif(
    spamassassin_path() is None,
    reason="spamassassin is not installed (apt-get install spamassassin; ./dev test does it)",
)

REPORT = """\
Content analysis details:   (2.3 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
-0.0 NO_RELAYS              Informational: message was not relayed via SMTP
 2.0 HTML_IMAGE_ONLY_16     BODY: HTML: images with 1200-1600 bytes of
                            words
 0.3 MIME_HTML_ONLY         BODY: Message only has text/html MIME parts

"""


def test_the_spamassassin_report_is_read_into_score_and_rules() -> None:
    verdict = parse_report("X-Spam-Status: No\n\n" + REPORT + "--=_boundary\n 9.9 NOT_A_RULE x\n")
    assert (verdict.score, verdict.required, verdict.is_spam) == (2.3, 5.0, False)
    assert [(r.name, r.points) for r in verdict.rules] == [
        ("NO_RELAYS", -0.0),
        ("HTML_IMAGE_ONLY_16", 2.0),
        ("MIME_HTML_ONLY", 0.3),
    ]
    assert verdict.rules[1].description == "BODY: HTML: images with 1200-1600 bytes of words"


def test_dutch_names_and_subjects_survive_a_real_smtp_server_and_the_parser(
    engine: Engine, send_settings: Settings, sink: SmtpSink, tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "email,first_name,last_name,list,confirmed_at\n"
        "joel@voorbeeld.example,Joël,Müller,newsletter,2026-01-05T10:04:00\n"
        "zoe@voorbeeld.example,Zoë,van 't Hoff,newsletter,2026-01-05T10:04:00\n",
        encoding="utf-8",
    )
    import_contacts(engine, send_settings, contacts, now=NOW)
    campaign = create_campaign(
        engine, send_settings, name="nov", list_name="newsletter",
        subject="Nieuws – café crème", template="newsletter", category=None, now=NOW,
    )  # fmt: skip
    asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    received = {}
    for captured in sink.messages:
        assert b"\n" not in captured.data.replace(b"\r\n", b"")  # CRLF on the wire, no bare LF
        parsed = email.message_from_bytes(captured.data, policy=email.policy.default)
        assert not parsed.defects
        received[captured.recipients[0]] = parsed
    assert set(received) == {"joel@voorbeeld.example", "zoe@voorbeeld.example"}
    for address, name, first in (
        ("joel@voorbeeld.example", "Joël Müller", "Joël"),
        ("zoe@voorbeeld.example", "Zoë van 't Hoff", "Zoë"),
    ):
        parsed = received[address]
        assert str(parsed["Subject"]) == "Nieuws – café crème"
        assert parsed["To"].addresses[0].display_name == name
        assert parsed["From"].addresses[0].display_name == "Bakkerij Voorbeeld"
        assert parsed["Message-ID"].endswith("@bakkerij.example>")
        text = parsed.get_body(("plain",))
        html = parsed.get_body(("html",))
        assert text is not None and html is not None
        assert f"Beste {first}," in text.get_content()
        assert f"Beste {first}," in html.get_content()


def test_demo_messages_are_dkim_signed_and_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo makes its key pair in a temporary folder; keep the DNS record it would publish
    # (the real generate_key_pair runs), so dkimpy can check each signature against it.
    made: list[GeneratedKey] = []

    def keeping_the_record(*args: Any, **kwargs: Any) -> GeneratedKey:
        made.append(generate_key_pair(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(mailer.demo, "generate_key_pair", keeping_the_record)
    result = run_demo(tmp_path / "out", {"MAILER_SECRET_KEY": "demo-test-key-0123456789abcdefgh"})
    [key] = made
    assert key.dns_name == "demo._domainkey.bakkerij.example."

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == key.dns_name.encode()  # the selector and domain the signature names
        return key.txt_value.encode()

    assert len(result.eml_files) == 5
    for path in result.eml_files:
        data = path.read_bytes()
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        assert dkim.verify(data, dnsfunc=dns), path.name
        # A changed body no longer verifies: the signature covers what the reader sees.
        head, _, body = data.partition(b"\r\n\r\n")
        tampered = head + b"\r\n\r\nWin een taart!\r\n" + body
        assert not dkim.verify(tampered, dnsfunc=dns), path.name


@needs_spamassassin
@pytest.mark.slow
def test_demo_messages_score_below_two_with_spamassassin(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "out", {"MAILER_SECRET_KEY": "demo-test-key-0123456789abcdefgh"})
    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = dict(
            zip(
                result.eml_files,
                pool.map(score_message, (p.read_bytes() for p in result.eml_files)),
                strict=True,
            )
        )
    for path, verdict in verdicts.items():
        fired = ", ".join(f"{r.name} {r.points}" for r in verdict.rules)
        assert verdict.score < AIM, f"{path.name}: {verdict.score} ({fired})"


def _cli_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, templates: Path | None) -> Path:
    monkeypatch.setenv("MAILER_SECRET_KEY", "cli-test-key-0123456789abcdefghi")
    config = tmp_path / "mailer.toml"
    extra = f'templates_dir = "{templates}"\n' if templates else ""
    config.write_text(
        extra
        + f"""
[sender]
organization = "Bakkerij Voorbeeld B.V."
from_name = "Bakkerij Voorbeeld"
from_address = "nieuws@bakkerij.example"
postal_address = "Dorpsstraat 1, 1234 AB Voorbeeld"
[web]
base_url = "https://bakkerij.example"
[database]
url = "sqlite:///{tmp_path / "m.db"}"
[lists.newsletter]
title = "Nieuwsbrief"
wording = "Ja, stuur mij de nieuwsbrief."
""",
        encoding="utf-8",
    )
    assert main(["--config", str(config), "init"]) == 0
    return config


@needs_spamassassin
@pytest.mark.slow
def test_campaign_check_prints_the_score_and_the_rules_of_an_html_only_campaign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = tmp_path / "templates"
    (templates / "campaigns" / "kerst").mkdir(parents=True)
    (templates / "campaigns" / "kerst" / "nl.html").write_text(
        "<html><head><style>p { color: #333333; }</style></head><body>"
        "<p>Beste {{ first_name or 'klant' }},</p><p>Vanaf vrijdag liggen de eerste kerststollen "
        "in de winkel, met amandelspijs uit eigen keuken.</p><p>Bekijk "
        '<a href="https://bakkerij.example/kerst">het hele kerstassortiment</a>.</p>'
        "<p>Tot ziens in de winkel,<br>Bakkerij Voorbeeld</p></body></html>",
        encoding="utf-8",
    )  # no nl.txt: the text part is made from the HTML
    config = _cli_project(tmp_path, monkeypatch, templates)
    create = ["--config", str(config), "campaign", "create", "kerst", "--list", "newsletter",
              "--subject", "Kerststollen – vers uit de oven", "--template", "kerst"]  # fmt: skip
    assert main(create) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "campaign", "check", "kerst"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "SpamAssassin score of kerst: " in out and "our aim is below 2.0" in out
    score = float(out.split("SpamAssassin score of kerst: ")[1].split(" ")[0])
    assert score < AIM, out
    assert "Rules that fired" in out


def test_campaign_check_says_clearly_when_spamassassin_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _cli_project(tmp_path, monkeypatch, None)
    create = ["--config", str(config), "campaign", "create", "nov", "--list", "newsletter",
              "--subject", "Nieuws", "--template", "newsletter"]  # fmt: skip
    assert main(create) == 0
    monkeypatch.setattr("mailer.delivery.spamcheck.spamassassin_path", lambda: None)
    assert main(["--config", str(config), "campaign", "check", "nov"]) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps at the terminal width
    assert err == (
        "error: SpamAssassin is not installed, so there is no score to show. Install it "
        "(Debian/Ubuntu: apt-get install spamassassin) and run the check again."
    )
