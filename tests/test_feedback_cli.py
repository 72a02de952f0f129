"""Bounces, complaints and the guard through the real `mailer` command and a real SMTP server."""

from __future__ import annotations

import json
import mailbox
import signal
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, select

from mailer.delivery.sink import SmtpSink
from mailer.store.models import Campaign
from tests.process_support import MAILER, env, mailer, wait_for, write_project
from tests.test_bounces import arf
from tests.test_guard import _refuse_every_fifth


def test_a_paused_campaign_reports_the_rate_that_tripped_and_its_complaints(
    tmp_path: Path,
) -> None:
    with SmtpSink(reply=_refuse_every_fifth) as sink:
        config = write_project(tmp_path, sink, rate=0, recipients=150)
        assert mailer(config, "campaign", "queue", "weekly").returncode == 0
        worker = subprocess.Popen(
            [MAILER, "--config", str(config), "worker"], env=env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        engine = create_engine(f"sqlite:///{tmp_path / 'mailer.db'}")
        try:

            def paused() -> bool:
                with engine.connect() as conn:
                    return conn.execute(select(Campaign.status)).scalar() == "paused"

            wait_for(paused, timeout=60)
        finally:
            worker.send_signal(signal.SIGTERM)
            _out, errors = worker.communicate(timeout=60)
            assert worker.returncode == 0, errors
            engine.dispose()
        complained = next(m for m in sink.messages if m.recipients == ("p1@example.nl",))

    maildir = tmp_path / "Maildir"
    box = mailbox.Maildir(maildir, create=True)
    box.add(arf("arf-yahoo.eml", mail_from=complained.mail_from, recipient="p1@example.nl",
                original=complained.data.decode("ascii")))  # fmt: skip
    processed = mailer(config, "bounces", "process", "--maildir", str(maildir))
    assert processed.returncode == 0, processed.stderr
    assert "Processed 1 messages: 0 hard bounce, 0 failed, 0 soft bounce, 1 complaint, " \
        "0 unmatched" in processed.stdout  # fmt: skip

    shown = mailer(config, "campaign", "report", "weekly")
    assert shown.returncode == 0, shown.stderr
    assert "Paused: guard: hard_bounce_rate" in shown.stdout
    assert "is over the limit 5.00%" in shown.stdout
    assert "complaints (" in shown.stdout and "hard bounces (" in shown.stdout

    document = json.loads(mailer(config, "campaign", "report", "weekly", "--json").stdout)
    assert document["status"] == "paused"
    assert document["status_reason"].startswith("guard: hard_bounce_rate ")
    assert document["feedback"]["complaint"] == 1
    attempts = document["attempts"]
    assert 100 <= attempts < 200
    assert 0.15 < document["rates"]["hard_bounce_rate"] < 0.25  # every fifth refused
    assert document["rates"]["complaint_rate"] == round(1 / attempts, 6)
