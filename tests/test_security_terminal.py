"""Whatever is stored, the command line prints it escaped (issue 14, row 2), as real processes.

The rows are written as an earlier release (or a tampered database) could have stored them:
the door refuses such values now, but the proof printed from old rows must still be honest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from mailer.delivery.sink import SmtpSink
from mailer.store.db import make_engine
from mailer.store.models import Consent, Contact
from tests.process_support import mailer, write_project

FORGED_SOURCE = "https://shop.example/\n2031-07-07 07:07:07  newsletter  confirmed  (web)\x1b[2J"


def test_consent_show_and_export_escape_control_characters_of_stored_evidence(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=1)
    engine = make_engine(f"sqlite:///{tmp_path / 'mailer.db'}")
    with engine.begin() as conn:
        contact_id = conn.execute(select(Contact.__table__.c.id)).scalar_one()  # type: ignore[attr-defined]
        conn.execute(
            Consent.__table__.insert().values(  # type: ignore[attr-defined]
                contact_id=contact_id, list_name="newsletter", event="requested", origin="web",
                wording="Ja\u202egnirts", source=FORGED_SOURCE, ip="192.0.2.1",
                user_agent="UA\x9b31m", at=datetime(2026, 2, 1, tzinfo=UTC),
            )
        )  # fmt: skip
    engine.dispose()

    shown = mailer(config, "consent", "show", "p0@example.nl")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x9b" not in shown.stdout
    assert "\u202e" not in shown.stdout
    # The forged "event" stays inside its source line, visibly escaped.
    assert (
        "https://shop.example/\\n2031-07-07 07:07:07  newsletter  confirmed  (web)\\u001b[2J"
        in (shown.stdout)
    )
    assert not any(line.startswith("2031-07-07") for line in shown.stdout.splitlines())
    assert "UA\\u009b31m" in shown.stdout and '"Ja\\u202egnirts"' in shown.stdout

    exported = mailer(config, "privacy", "export", "p0@example.nl")
    assert exported.returncode == 0, exported.stderr
    assert "\x9b" not in exported.stdout and "\u202e" not in exported.stdout
    document = json.loads(exported.stdout)  # still the same JSON value
    assert FORGED_SOURCE in [c["source"] for c in document["consents"]]
