"""Suppressions survive key rotation (issue 14, row 1), through the real command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mailer.core.tokens import address_hash, key_fingerprint
from mailer.delivery.sink import SmtpSink
from tests.conftest import SECRET
from tests.process_support import MAILER, write_project

NEW_KEY = "new-key-after-the-leak-0123456789abcdef"


def run(config: Path, *args: str, **keys: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return subprocess.run(
        [MAILER, "--config", str(config), *args],
        env={**environ, **keys}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def plan_rows(output: str) -> dict[str, int]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 3 and cells[2].isdigit():
            rows[f"{cells[0]} {cells[1]}"] = int(cells[2])
    return rows


def test_dropping_the_key_that_hashed_suppressions_is_refused_until_it_is_kept_as_hash_key(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=2)
    erased = run(config, "privacy", "erase", "p0@example.nl", MAILER_SECRET_KEY=SECRET)
    assert erased.returncode == 0
    contacts = str(tmp_path / "contacts.csv")

    # The careful operator drops the leaked key: every command refuses, nothing is imported.
    for args in (["contacts", "import", contacts], ["campaign", "plan", "weekly"]):
        refused = run(config, *args, MAILER_SECRET_KEY=NEW_KEY)
        assert refused.returncode == 2, refused.stderr
        assert key_fingerprint(SECRET) in refused.stderr
        assert "Put that key in MAILER_HASH_KEY" in refused.stderr
        assert SECRET not in refused.stderr + refused.stdout

    # Kept as hash key only, it still recognises the erased address; the new key signs.
    keys = {"MAILER_SECRET_KEY": NEW_KEY, "MAILER_HASH_KEY": SECRET}
    assert run(config, "contacts", "import", contacts, **keys).returncode == 0
    plan = run(config, "campaign", "plan", "weekly", **keys)
    assert plan.returncode == 0, plan.stderr
    assert plan_rows(plan.stdout) == {
        "send consent": 1, "skip suppressed": 1, "total 1 to send": 2
    }  # fmt: skip


def test_adding_a_signing_key_keeps_hashing_with_the_first_so_the_old_one_may_leave_later(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=2)
    rotating = {"MAILER_SECRET_KEY": f"{SECRET},{NEW_KEY}"}
    assert run(config, "privacy", "erase", "p1@example.nl", **rotating).returncode == 0
    contacts = str(tmp_path / "contacts.csv")
    keys = {"MAILER_SECRET_KEY": NEW_KEY, "MAILER_HASH_KEY": SECRET}
    assert run(config, "contacts", "import", contacts, **keys).returncode == 0
    plan = run(config, "campaign", "plan", "weekly", **keys)
    assert plan_rows(plan.stdout)["skip suppressed"] == 1


def test_a_set_up_with_only_the_secret_key_hashes_exactly_as_before() -> None:
    # Stored suppressions of earlier releases must keep matching: the hash is unchanged.
    assert (
        address_hash("anna@example.nl", SECRET)
        == "a656e3177ebe8a1734f0226726b69b39c141b6c0607f3b9b8f8fa6179e9dcb26"
    )
    assert key_fingerprint(SECRET) != key_fingerprint(NEW_KEY)
    assert SECRET not in key_fingerprint(SECRET)
