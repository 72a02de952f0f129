"""The `mailer` command as a user runs it: exit codes, messages, and nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from mailer.cli import main
from mailer.sink import SmtpSink
from tests.conftest import SECRET

CONFIG = """
[sender]
organization = "Bakkerij Voorbeeld B.V."
from_name = "Bakkerij Voorbeeld"
from_address = "nieuws@bakkerij.example"
postal_address = "Dorpsstraat 1, 1234 AB Voorbeeld"

[smtp]
host = "127.0.0.1"
port = {port}
security = "none"

[throttle]
messages_per_second = 0

[database]
url = "sqlite:///{db}"

[lists.newsletter]
title = "Nieuwsbrief"
wording = "Ja, ik wil de nieuwsbrief."
"""

CONTACTS = """email,first_name,list,requested_at,confirmed_at
anna@example.nl,Anna,newsletter,2026-01-01T10:00:00,2026-01-01T10:05:00
bram@example.nl,Bram,newsletter,2026-01-01T10:00:00,
henk@example.nl,Henk,,,
"""
CUSTOMERS = """email,category,purchased_at,optout_offered
dirk@example.nl,brood,2026-05-01T15:00:00,true
"""


@pytest.fixture
def project(tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mailer.toml"
    config.write_text(CONFIG.format(port=sink.port, db=tmp_path / "m.db"), encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    (tmp_path / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    return config


def mailer(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def count(config: Path, table: str) -> int:
    with create_engine(f"sqlite:///{config.parent / 'm.db'}").connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_init_is_idempotent(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mailer(project, "init") == 0
    assert "created or upgraded" in capsys.readouterr().out
    assert mailer(project, "init") == 0
    assert "is up to date" in capsys.readouterr().out


def test_import_plan_send_and_report_through_the_command_line(
    project: Path, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "init") == 0
    assert mailer(project, "contacts", "import", "contacts.csv") == 0
    assert mailer(project, "customers", "import", "customers.csv") == 0
    assert mailer(project, "campaign", "create", "nov", "--list", "newsletter", "--subject",
                  "Nieuws", "--template", "newsletter", "--category", "brood") == 0  # fmt: skip
    capsys.readouterr()
    assert mailer(project, "campaign", "plan", "nov") == 0
    plan = capsys.readouterr().out
    for label in ("consent", "existing_customer", "pending_confirmation", "no_basis"):
        assert label in plan
    assert "2 to send" in plan
    assert sink.messages == [] and count(project, "delivery") == 0

    assert mailer(project, "campaign", "send", "nov") == 0
    assert sorted(m.recipients[0] for m in sink.messages) == ["anna@example.nl", "dirk@example.nl"]
    capsys.readouterr()
    assert mailer(project, "campaign", "report", "nov", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["by_status"] == {"sent": 2, "skipped": 2}
    people = {r["email"]: (r["status"], r["basis"], r["skip_reason"]) for r in report["recipients"]}
    assert people == {
        "anna@example.nl": ("sent", "consent", None),
        "dirk@example.nl": ("sent", "existing_customer", None),
        "bram@example.nl": ("skipped", None, "pending_confirmation"),
        "henk@example.nl": ("skipped", None, "no_basis"),
    }


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("email,shoe_size\nanna@example.nl,42\n", 'bad.csv:1: unknown column "shoe_size"'),
        ("email\nanna@example.nl\nanna@\n",
         'bad.csv:3: column "email": "anna@" is not a valid e-mail address'),
        ("email,list,confirmed_at\nanna@example.nl,newsletter,yesterday\n",
         'bad.csv:2: column "confirmed_at": "yesterday" is not a date like 2026-03-01T12:00:00.'),
    ],
    ids=["unknown-column", "bad-address", "bad-date"],
)  # fmt: skip
def test_a_bad_csv_exits_2_naming_file_line_and_column_and_imports_nothing(
    project: Path, csv: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "init") == 0
    (project.parent / "bad.csv").write_text(csv, encoding="utf-8")
    capsys.readouterr()
    assert mailer(project, "contacts", "import", "bad.csv") == 2
    assert message in capsys.readouterr().err
    assert count(project, "contact") == 0 and count(project, "consent") == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("port = ", 'port = "abc" #'), 'key "smtp.port": input should be a valid integer'),
        (("[smtp]", "[smtp]\nhots = 1"), 'mailer.toml:9: key "smtp.hots": is not a known setting'),
        (
            ('organization = "Bakkerij Voorbeeld B.V."\n', ""),
            'mailer.toml:2: key "sender.organization": is required but missing.',
        ),
        (('security = "none"', 'security = "ssl"'), 'key "smtp.security": input should be'),
        (("[lists.newsletter]", "[lists.newsletter"), "mailer.toml: is not valid TOML"),
    ],
    ids=["wrong-type", "unknown-key", "missing-key", "bad-choice", "toml-syntax"],
)
def test_a_bad_config_exits_2_naming_the_file_and_key_and_writes_nothing(
    project: Path, change: tuple[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project.write_text(project.read_text().replace(*change, 1), encoding="utf-8")
    assert mailer(project, "init") == 2
    assert message in capsys.readouterr().err
    assert not (project.parent / "m.db").exists()


def test_a_missing_config_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "init"]) == 2
    assert "nope.toml: the configuration file does not exist" in capsys.readouterr().err


def test_unknown_campaign_exits_1_and_unknown_list_exits_2(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "init") == 0
    assert mailer(project, "campaign", "send", "nope") == 1
    assert 'There is no campaign named "nope".' in capsys.readouterr().err
    assert mailer(project, "campaign", "create", "x", "--list", "weekly", "--subject", "S",
                  "--template", "newsletter") == 2  # fmt: skip
    assert '--list "weekly" is not a configured list' in capsys.readouterr().err


def test_demo_shows_every_basis_and_every_skip_reason_and_writes_eml_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo-out")]) == 0
    out = capsys.readouterr().out
    for label in ("consent", "existing_customer", "role_address", "suppressed",
                  "pending_confirmation", "other_list", "other_category", "optout_not_offered",
                  "objected", "no_basis"):  # fmt: skip
        assert label in out
    files = sorted((tmp_path / "demo-out").glob("*.eml"))
    assert len(files) == 5
    assert all(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in f.read_bytes()
               for f in files)  # fmt: skip


def test_the_console_script_starts() -> None:
    script = Path(sys.executable).parent / "mailer"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "campaign" in result.stdout and "demo" in result.stdout
