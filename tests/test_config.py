"""Settings: good TOML parses; bad TOML names the file, the line and the dotted key (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.cli import main
from mailer.config import load_settings
from mailer.errors import ConfigError, InputError

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"

# Line numbers matter: the error messages below name them.
GOOD = """\
locale = "nl"

[sender]
organization = "Bakkerij Voorbeeld B.V."
from_name = "Bakkerij Voorbeeld"
from_address = "nieuws@bakkerij.example"
postal_address = "Dorpsstraat 1, 1234 AB Voorbeeld"

[smtp]
host = "localhost"
port = 587
security = "starttls"

[database]
url = "sqlite:///{db}"

[lists.newsletter]
title = "Nieuwsbrief"
wording = "Ja, ik wil de maandelijkse nieuwsbrief per e-mail ontvangen."
"""


def write_config(tmp_path: Path, old: str = "", new: str = "") -> Path:
    text = GOOD.format(db=tmp_path / "mailer.db")
    if old:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "mailer.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_configuration_parses_with_its_documented_defaults() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert settings.sender.organization == "Bakkerij Voorbeeld B.V."
    assert settings.sender.domain == "bakkerij.example"
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.security) == (
        "localhost", 587, "starttls",
    )  # fmt: skip
    assert settings.throttle.messages_per_second == 10.0
    assert settings.policy.jurisdiction == "NL" and settings.policy.role_addresses is False
    assert set(settings.lists) == {"newsletter", "offers"}
    assert settings.source == str(EXAMPLE)


def test_a_minimal_configuration_fills_in_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path), environ={})
    assert settings.web.confirm_ttl_hours == 48.0
    assert settings.policy.retention_days == 365
    assert settings.sender.unsubscribe_mailto == "unsubscribe@bakkerij.example"


def test_secret_keys_come_from_the_environment_oldest_first(tmp_path: Path) -> None:
    environ = {"MAILER_SECRET_KEY": " old-key , new-key ,", "MAILER_SMTP_PASSWORD": "pw"}
    settings = load_settings(write_config(tmp_path), environ=environ)
    assert settings.secret_keys == ("old-key", "new-key")
    assert settings.smtp_password == "pw"


BAD = [
    ("bad TOML syntax", "port = 587", "port = = 587",
     "{path}:11: is not valid TOML: Invalid value (column 8)."),
    ("unknown key", 'host = "localhost"', 'hots = "x"',
     '{path}:10: key "smtp.hots": is not a known setting (see config.example.toml).'),
    ("missing required key", 'organization = "Bakkerij Voorbeeld B.V."\n', "",
     '{path}:3: key "sender.organization": is required but missing.'),
    ("wrong type", "port = 587", 'port = "abc"',
     '{path}:11: key "smtp.port": input should be a valid integer, unable to parse string as an '
     "integer."),
    ("bad enum", 'security = "starttls"', 'security = "ssl"',
     "{path}:12: key \"smtp.security\": input should be 'none', 'starttls' or 'tls'."),
    ("value out of range", "port = 587", "port = 70000",
     '{path}:11: key "smtp.port": input should be less than or equal to 65535.'),
    ("secret in the file", 'locale = "nl"', 'secret_keys = ["x"]',
     '{path}: key "secret_keys": is not a setting; secrets come from the environment.'),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "message"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])  # fmt: skip
def test_a_bad_setting_names_the_file_the_line_and_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = write_config(tmp_path, old, new)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(error.value) == message.format(path=path)
    assert isinstance(error.value, InputError) and isinstance(error.value, ValueError)


VALIDATED = [
    ("from_address without a domain", 'from_address = "nieuws@bakkerij.example"',
     'from_address = "nieuws"', 6, "sender.from_address",
     "must be an e-mail address like nieuws@bakkerij.example."),
    ("line break in a header value", 'organization = "Bakkerij Voorbeeld B.V."',
     'organization = "Bakkerij\\nBcc: iedereen@example.nl"', 4, "sender.organization",
     "must not contain a line break."),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "line", "key", "reason"), [c[1:] for c in VALIDATED],
                         ids=[c[0] for c in VALIDATED])  # fmt: skip
def test_a_value_refused_by_our_own_checks_names_the_file_the_line_and_the_key(
    tmp_path: Path, old: str, new: str, line: int, key: str, reason: str
) -> None:
    path = write_config(tmp_path, old, new)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    message = str(error.value)
    assert message.startswith(f'{path}:{line}: key "{key}": ')
    assert message.endswith(reason)


def test_a_config_error_carries_the_key_as_a_value(tmp_path: Path) -> None:
    path = write_config(tmp_path, "port = 587", 'port = "abc"')
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert error.value.key == "smtp.port"


def test_a_config_error_carries_the_file_and_the_line_as_separate_values(tmp_path: Path) -> None:
    # STYLE.md 3: InputError has `file`, `line`, `field`, so a caller can point at the spot.
    path = write_config(tmp_path, "port = 587", 'port = "abc"')
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert (error.value.file, error.value.line) == (str(path), 11)


def test_a_bad_key_in_a_copy_of_the_example_names_its_line(tmp_path: Path) -> None:
    # Users start from config.example.toml, whose table headers carry a comment:
    # `[smtp]                              # your provider's relay ...`.
    text = EXAMPLE.read_text(encoding="utf-8")
    line = next(n for n, raw in enumerate(text.splitlines(), 1) if raw.startswith("port = 587"))
    path = tmp_path / "mailer.toml"
    path.write_text(text.replace("port = 587", 'port = "abc"', 1), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(error.value) == (
        f'{path}:{line}: key "smtp.port": input should be a valid integer, unable to parse '
        "string as an integer."
    )


def test_the_command_line_reports_a_bad_config_with_exit_2_and_creates_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, 'security = "starttls"', 'security = "ssl"')
    assert main(["--config", str(path), "init"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: {path}:12: key \"smtp.security\": input should be 'none', 'starttls' or 'tls'.\n"
    )
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mailer.toml"]


def test_the_command_line_names_a_missing_config_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing), "init"]) == 2
    assert capsys.readouterr().err == (
        f"error: {missing}: the configuration file does not exist; copy config.example.toml "
        "to start\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_good_config_lets_init_create_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(write_config(tmp_path)), "init"]) == 0
    assert (tmp_path / "mailer.db").is_file()
    assert capsys.readouterr().err == ""
