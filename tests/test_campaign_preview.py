"""`campaign preview` and `campaign test` through the command line, against the real sink."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from mailer.cli import main
from mailer.delivery.dkimkeys import generate_key_pair
from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET
from tests.dkim_support import dual_dkim, verifies
from tests.project_files import settings_toml

TEST_ADDRESSES = 'test_addresses = ["Marketing@Bakkerij.example", "baas@bakkerij.example"]'

CONTACTS = """email,first_name,list,requested_at,confirmed_at
anna@example.nl,Anna,newsletter,2026-01-01T10:00:00,2026-01-01T10:05:00
bram@example.nl,Bram,newsletter,2026-01-01T10:00:00,
"""


@pytest.fixture
def project(tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mailer.toml"
    settings = settings_toml(sink.port, f"sqlite:///{tmp_path / 'm.db'}", sender=TEST_ADDRESSES)
    config.write_text(settings, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    for args in (
        ["init"],
        ["contacts", "import", "contacts.csv"],
        ["campaign", "create", "weekly", "--list", "newsletter", "--subject", "Week 48",
         "--template", "newsletter"],
    ):  # fmt: skip
        assert mailer(config, *args) == 0
    return config


def mailer(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def deliveries(config: Path) -> int:
    engine = create_engine(f"sqlite:///{config.parent / 'm.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM delivery")).scalar_one())
    finally:
        engine.dispose()


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_preview_writes_the_exact_message_and_its_html_and_says_the_basis(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert mailer(project, "campaign", "preview", "weekly", "--email", "Anna@Example.nl",
                  "--out", "anna.eml") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "anna@example.nl would be mailed by campaign weekly on basis consent." in out
    message = parsed((project.parent / "anna.eml").read_bytes())
    assert "anna@example.nl" in message["To"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = (project.parent / "anna.html").read_text(encoding="utf-8")
    body = message.get_body(preferencelist=("html",))
    assert body is not None and html == body.get_content().replace("\r\n", "\n")
    assert "/unsubscribe/" in html and "Anna" in html
    # A preview is not a send: nothing reached the server, nothing is in the ledger.
    assert sink.messages == [] and deliveries(project) == 0


def test_preview_of_a_person_who_would_be_skipped_gives_the_reason_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert mailer(project, "campaign", "preview", "weekly", "--email", "bram@example.nl") == 0
    out = capsys.readouterr().out
    assert "bram@example.nl would not be mailed by campaign weekly: skipped, reason " in out
    assert "pending_confirmation" in out
    assert not list(project.parent.glob("*.eml"))


def test_preview_without_email_renders_the_sample_recipient(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "campaign", "preview", "weekly") == 0
    assert "Sample recipient joel.muller@example.com (not a contact)" in capsys.readouterr().out
    message = parsed((project.parent / "preview-weekly.eml").read_bytes())
    assert "joel.muller@example.com" in message["To"]
    assert (project.parent / "preview-weekly.html").exists()


def test_preview_of_an_unknown_address_exits_1_saying_so(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "campaign", "preview", "weekly", "--email", "nobody@example.nl") == 1
    assert "No contact with the address nobody@example.nl is stored" in capsys.readouterr().err


def test_a_test_send_goes_to_a_listed_address_with_a_test_subject_and_is_no_delivery(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert mailer(project, "campaign", "test", "weekly", "--to", "marketing@bakkerij.example",
                  "--to", "baas@bakkerij.example") == 0  # fmt: skip
    assert "Test of weekly to marketing@bakkerij.example: accepted by the server." in (
        capsys.readouterr().out
    )
    assert sorted(m.recipients[0] for m in sink.messages) == [
        "baas@bakkerij.example", "marketing@bakkerij.example"
    ]  # fmt: skip
    assert {parsed(m.data)["Subject"] for m in sink.messages} == {"[TEST] Week 48"}
    assert deliveries(project) == 0
    assert mailer(project, "campaign", "report", "weekly", "--json") == 0
    assert json.loads(capsys.readouterr().out)["total"] == 0


def test_a_test_send_to_an_unlisted_address_is_refused_with_exit_2_and_sends_nothing(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = mailer(project, "campaign", "test", "weekly", "--to", "baas@bakkerij.example",
                  "--to", "anna@example.nl")  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "anna@example.nl is not in sender.test_addresses" in err
    assert "a test send goes only to the addresses listed there" in err
    assert sink.messages == []


def test_preview_after_a_send_says_the_person_is_not_mailed_again_and_a_pause_is_named(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "campaign", "send", "weekly") == 0
    assert mailer(project, "campaign", "pause", "weekly") == 1  # done: nothing to pause
    capsys.readouterr()
    assert mailer(project, "campaign", "preview", "weekly", "--email", "anna@example.nl") == 0
    out = capsys.readouterr().out
    assert "This campaign's ledger already has anna@example.nl as sent: a run does not mail" in (
        out
    )
    assert len(sink.messages) == 1


def test_preview_of_a_paused_campaign_says_it_is_paused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "campaign", "pause", "weekly") == 0
    capsys.readouterr()
    assert mailer(project, "campaign", "preview", "weekly", "--email", "anna@example.nl") == 0
    out = capsys.readouterr().out
    assert "Campaign weekly is paused: nothing is sent until `mailer campaign resume`." in out


def test_a_test_send_is_signed_with_both_keys_when_dual_signing(
    project: Path, sink: SmtpSink, tmp_path: Path
) -> None:
    rsa = generate_key_pair("rsa2026", "bakkerij.example", "rsa", tmp_path)
    ed = generate_key_pair("ed2026", "bakkerij.example", "ed25519", tmp_path)
    section = "\n[dkim]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in dual_dkim(rsa, ed).items()
    )
    project.write_text(project.read_text(encoding="utf-8") + section, encoding="utf-8")
    assert mailer(project, "campaign", "test", "weekly", "--to", "baas@bakkerij.example") == 0
    [message] = sink.messages
    assert verifies(message.data, [rsa, ed]) == [True, True]
