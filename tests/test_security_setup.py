"""Mistakes refused at set-up (issue 14, row 10): short keys, open files, bad argument bytes.
Real `mailer` processes against a project folder. (Future consent times on import: issue 15's
importer refuses them, tests/test_import_refusals.py on main.)"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET
from tests.process_support import MAILER, env, write_project


def test_a_secret_key_shorter_than_32_bytes_is_refused_with_how_to_make_one(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=1)
    for keys, which in (("x", "the key is 1 bytes"), (f"{SECRET},short", "key 2 of 2 is 5 bytes")):
        result = subprocess.run(
            [MAILER, "--config", str(config), "campaign", "plan", "weekly"],
            env={**env(), "MAILER_SECRET_KEY": keys}, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 2
        assert f"MAILER_SECRET_KEY: {which} long; a signing key must be at least 32" in (
            result.stderr
        )
        assert "secrets.token_urlsafe(32)" in result.stderr
        assert "short" not in result.stderr.replace("shorter", "")


def test_the_database_and_its_wal_files_are_readable_by_their_owner_only(
    tmp_path: Path, sink: SmtpSink
) -> None:
    write_project(tmp_path, sink, rate=0, recipients=2)  # init, import, campaign create
    files = [tmp_path / "mailer.db", *tmp_path.glob("mailer.db-*")]
    assert tmp_path / "mailer.db" in files
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_an_argument_that_is_not_utf8_is_refused_with_a_sentence(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=1)
    result = subprocess.run(
        [os.fsencode(MAILER), b"--config", os.fsencode(config), b"contacts", b"import",
         b"klanten-\xff.csv"],
        env=env(), capture_output=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    assert b"argument 5 (klanten-\\xff.csv) is not valid UTF-8" in result.stderr
