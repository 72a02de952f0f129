"""Real processes: a run killed with SIGKILL and started again, and a schedule under serve."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer.delivery.sink import SmtpSink
from tests.process_support import MAILER, env, mailer, wait_for, write_project


@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_started_again_mails_everyone_once(
    tmp_path: Path, sink: SmtpSink
) -> None:
    total = 150
    config = write_project(tmp_path, sink, rate=60, recipients=total)
    first = subprocess.Popen(
        [MAILER, "--config", str(config), "campaign", "send", "weekly"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: len(sink.messages) >= 40, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = len(sink.messages)
    assert killed_at < total

    second = mailer(config, "campaign", "send", "weekly")
    assert second.returncode == 0, second.stderr

    received = Counter(m.recipients[0] for m in sink.messages)
    assert max(received.values()) == 1, "somebody was mailed twice"
    report = json.loads(mailer(config, "campaign", "report", "weekly", "--json").stdout)
    by_status = Counter(r["status"] for r in report["recipients"])
    in_doubt = {r["email"] for r in report["recipients"] if r["status"] == "unknown"}
    # Only messages in flight at the kill may be in doubt: at most one per connection.
    assert len(in_doubt) <= 2
    assert by_status["sent"] + len(in_doubt) == total
    not_received = {f"p{n}@example.nl" for n in range(total)} - set(received)
    assert not_received <= in_doubt


@pytest.mark.slow
def test_a_schedule_at_a_time_fires_once_under_serve_and_not_again_after_a_restart(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=5)
    at = datetime.now(ZoneInfo("Europe/Amsterdam")) + timedelta(seconds=3)
    added = mailer(config, "schedule", "add", "weekly", "--at", at.isoformat(), check=True)
    assert "next run" in added.stdout

    serve_for(config, 8)
    assert sorted(m.recipients[0] for m in sink.messages) == [f"p{n}@example.nl" for n in range(5)]
    assert "No schedules." in mailer(config, "schedule", "list").stdout
    serve_for(config, 4)
    assert len(sink.messages) == 5


@pytest.mark.slow
def test_a_run_missed_while_the_service_was_down_runs_once_at_start(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=3)
    at = datetime.now(ZoneInfo("Europe/Amsterdam")) + timedelta(seconds=1)
    mailer(config, "schedule", "add", "weekly", "--at", at.isoformat(), check=True)
    time.sleep(2)  # the service is down when the run is due
    serve_for(config, 5)
    assert sorted(m.recipients[0] for m in sink.messages) == [f"p{n}@example.nl" for n in range(3)]


def serve_for(config: Path, seconds: float) -> None:
    service = subprocess.Popen(
        [MAILER, "--config", str(config), "serve"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(seconds)
    finally:
        service.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (as systemd expects)
        assert service.wait(timeout=20) in (0, -signal.SIGTERM)


def test_a_second_run_of_a_campaign_that_is_running_is_refused(
    tmp_path: Path, sink: SmtpSink
) -> None:
    # 10 s of sending: the second `mailer` must start while the first still runs, and a
    # process start alone takes 3-5 s on a loaded 2-core machine (60 at 20/s was often over).
    config = write_project(tmp_path, sink, rate=20, recipients=200)
    first = subprocess.Popen(
        [MAILER, "--config", str(config), "campaign", "send", "weekly"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: len(sink.messages) >= 3, timeout=30)
        second = mailer(config, "campaign", "send", "weekly")
        assert second.returncode == 1
        assert "already being sent by" in second.stderr
    finally:
        first.wait(timeout=60)
    assert Counter(m.recipients[0] for m in sink.messages).most_common(1)[0][1] == 1
