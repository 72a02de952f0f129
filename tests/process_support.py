"""Running `mailer` as real processes against a project folder: config, contacts, a campaign."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET
from tests.project_files import settings_toml

MAILER = str(Path(sys.executable).parent / "mailer")


def write_project(
    tmp_path: Path,
    sink: SmtpSink,
    *,
    rate: float,
    recipients: int,
    database_url: str | None = None,
    extra: str = "",
) -> Path:
    """A settings file, contacts.csv with `recipients` subscribers, and campaign "weekly"."""
    config = tmp_path / "mailer.toml"
    database_url = database_url or f"sqlite:///{tmp_path / 'mailer.db'}"
    web = f"[scheduler]\nmisfire_grace_seconds = 60\n[web]\nport = {free_port()}\n"
    settings = settings_toml(
        sink.port, database_url, smtp="max_connections = 2", extra=web + extra,
        throttle=f"messages_per_second = {rate}\nper_domain_per_minute = 0",
    )  # fmt: skip
    config.write_text(settings, encoding="utf-8")
    rows = ["email,list,requested_at,confirmed_at"] + [
        f"p{n}@example.nl,newsletter,2026-01-01T10:00:00,2026-01-01T10:05:00"
        for n in range(recipients)
    ]
    (tmp_path / "contacts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for args in (
        ["init"],
        ["contacts", "import", str(tmp_path / "contacts.csv")],
        ["campaign", "create", "weekly", "--list", "newsletter", "--subject", "Week",
         "--template", "newsletter"],
    ):  # fmt: skip
        mailer(config, *args, check=True)
    return config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mailer(config: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAILER, "--config", str(config), *args],
        env=env(), capture_output=True, text=True, check=check, timeout=120,
    )  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "MAILER_SECRET_KEY": SECRET}


def wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
