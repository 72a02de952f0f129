"""The `mailer` command as a user runs it: exit codes, messages, and nothing half-written."""

from __future__ import annotations

import email
import email.policy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from mailer.cli import main
from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET
from tests.project_files import line_of, settings_toml

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
    settings = settings_toml(sink.port, f"sqlite:///{tmp_path / 'm.db'}")
    config.write_text(settings, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    (tmp_path / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    return config


def mailer(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def count(config: Path, table: str) -> int:
    engine = create_engine(f"sqlite:///{config.parent / 'm.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def snapshot(config: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the tables an import writes to."""
    engine = create_engine(f"sqlite:///{config.parent / 'm.db'}")
    try:
        with engine.connect() as conn:
            return {
                table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
                for table in ("contact", "consent", "purchase", "suppression")
            }
    finally:
        engine.dispose()


def table_rows(out: str) -> dict[tuple[str, str], int]:
    """The rows of a printed plan or report table: (kind, label) -> recipients."""
    rows = re.findall(r"^│ (\w+) +│ ([\w ]*?) *│ +(\d+) │$", out, flags=re.MULTILINE)
    return {(kind, label): int(n) for kind, label, n in rows}


def test_init_is_idempotent(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mailer(project, "init") == 0
    assert "created or upgraded" in capsys.readouterr().out
    assert mailer(project, "init") == 0
    assert "is up to date" in capsys.readouterr().out


def test_a_database_of_an_older_version_is_named_until_init_upgrades_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "contacts", "import", "contacts.csv") == 1
    assert "has no tables yet. Run `mailer init` first." in capsys.readouterr().err
    assert mailer(project, "init") == 0
    old = create_engine(f"sqlite:///{project.parent / 'm.db'}")
    with old.begin() as conn:  # what a database made before campaign control looks like
        conn.execute(text("ALTER TABLE campaign DROP COLUMN status_reason"))
    old.dispose()
    assert mailer(project, "contacts", "import", "contacts.csv") == 1
    err = capsys.readouterr().err
    assert "was made by an older version (it lacks campaign.status_reason)" in err
    assert "Run `mailer init` to upgrade it." in err
    assert mailer(project, "init") == 0
    assert "created or upgraded campaign.status_reason" in capsys.readouterr().out
    assert mailer(project, "contacts", "import", "contacts.csv") == 0


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
    assert table_rows(plan) == {
        ("send", "consent"): 1,
        ("send", "existing_customer"): 1,
        ("skip", "pending_confirmation"): 1,
        ("skip", "no_basis"): 1,
        ("total", "2 to send"): 4,
    }
    assert sink.messages == [] and count(project, "delivery") == 0

    assert mailer(project, "campaign", "send", "nov") == 0
    assert sorted(m.recipients[0] for m in sink.messages) == ["anna@example.nl", "dirk@example.nl"]
    assert table_rows(capsys.readouterr().out)[("status", "sent")] == 2

    assert mailer(project, "campaign", "send", "nov") == 0  # again: nobody is mailed twice
    assert len(sink.messages) == 2
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
    ("command", "csv", "message"),
    [
        ("contacts", "email,shoe_size\nnieuw@example.nl,42\n",
         'bad.csv:1: unknown column "shoe_size"'),
        ("contacts", "email\nnieuw@example.nl\nanna@\n",
         'bad.csv:3: column "email": "anna@" is not a valid e-mail address'),
        ("contacts", "email,list,confirmed_at\nnieuw@example.nl,newsletter,\n"
                     "anna@example.nl,newsletter,yesterday\n",
         'bad.csv:3: column "confirmed_at": "yesterday" is not a date like 2026-03-01T12:00:00.'),
        ("customers", "email,category,purchased_at,optout_offered\n"
                      "nieuw@example.nl,brood,2026-05-01T15:00:00,true\n"
                      "anna@example.nl,brood,gisteren,true\n",
         'bad.csv:3: column "purchased_at": "gisteren" is not a date like 2026-03-01T12:00:00.'),
    ],
    ids=["unknown-column", "bad-address", "bad-date", "customers-bad-date"],
)  # fmt: skip
def test_a_bad_csv_exits_2_naming_file_line_and_column_and_leaves_the_database_unchanged(
    project: Path, command: str, csv: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mailer(project, "init") == 0
    assert mailer(project, "contacts", "import", "contacts.csv") == 0
    assert mailer(project, "customers", "import", "customers.csv") == 0
    before = snapshot(project)
    (project.parent / "bad.csv").write_text(csv, encoding="utf-8")
    capsys.readouterr()
    assert mailer(project, command, "import", "bad.csv") == 2
    assert message in capsys.readouterr().err
    assert snapshot(project) == before  # the valid rows before the bad one were not kept either


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("port = ", 'port = "abc" #'), 'key "smtp.port": input should be a valid integer'),
        (("[smtp]", "[smtp]\nhots = 1"), 'mailer.toml:{line}: key "smtp.hots": is not a known'),
        (
            ('organization = "Bakkerij Voorbeeld B.V."\n', ""),
            'mailer.toml:{line}: key "sender.organization": is required but missing.',
        ),
        (('security = "none"', 'security = "ssl"'), 'key "smtp.security": input should be'),
        (("[lists.newsletter]", "[lists.newsletter"), "mailer.toml:{line}: is not valid TOML"),
    ],
    ids=["wrong-type", "unknown-key", "missing-key", "bad-choice", "toml-syntax"],
)
def test_a_bad_config_exits_2_naming_the_file_and_key_and_writes_nothing(
    project: Path, change: tuple[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = project.read_text().replace(*change, 1)
    project.write_text(changed, encoding="utf-8")
    assert mailer(project, "init") == 2
    # The line named is the one the change is on (for a missing key: its section's header).
    needle = {"hots": "hots", "sender.": "[sender]", "TOML": "[lists.newsletter"}
    line = next((line_of(changed, n) for key, n in needle.items() if key in message), 0)
    assert message.format(line=line) in capsys.readouterr().err
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", str(tmp_path / "demo-out")]) == 0
    rows = table_rows(capsys.readouterr().out)
    bases = {label: n for (kind, label), n in rows.items() if kind == "basis"}
    reasons = {label: n for (kind, label), n in rows.items() if kind == "skipped"}
    assert set(bases) == {"consent", "existing_customer", "role_address"}
    assert set(reasons) == {"suppressed", "pending_confirmation", "other_list", "other_category",
                            "optout_not_offered", "objected", "no_basis"}  # fmt: skip
    assert rows[("status", "sent")] == sum(bases.values())

    files = sorted((tmp_path / "demo-out").glob("*.eml"))
    assert len(files) == sum(bases.values())
    for file in files:
        message = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
        assert message.get_content_type() == "multipart/alternative"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_console_script_starts() -> None:
    script = Path(sys.executable).parent / "mailer"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "campaign" in result.stdout and "demo" in result.stdout
