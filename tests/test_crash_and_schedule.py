"""Real processes: a run killed with SIGKILL and started again, and a schedule under serve."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import tomllib
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer.delivery.sink import CapturedMessage, SmtpSink
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

    with serving(config, tmp_path / "serve-1.log") as first:
        wait_for(lambda: len(sink.messages) == 5, timeout=60)
        wait_for(lambda: RUN_LOGGED in first.log(), timeout=30)
    assert sorted(m.recipients[0] for m in sink.messages) == [f"p{n}@example.nl" for n in range(5)]
    assert "No schedules." in mailer(config, "schedule", "list").stdout

    # Restarted: the scheduler comes up without the job (it left the store when it fired), so
    # it cannot fire again; the count it logs at start is one job fewer than the first time.
    with serving(config, tmp_path / "serve-2.log") as second:
        pass
    assert jobs_at_start(second.log()) == jobs_at_start(first.log()) - 1
    assert first.log().count(RUN_LOGGED) == 1 and RUN_LOGGED not in second.log()
    assert len(sink.messages) == 5


@pytest.mark.slow
def test_a_run_missed_while_the_service_was_down_runs_once_at_start(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=3)
    zone = ZoneInfo("Europe/Amsterdam")
    at = datetime.now(zone) + timedelta(seconds=1)
    mailer(config, "schedule", "add", "weekly", "--at", at.isoformat(), check=True)
    wait_for(lambda: datetime.now(zone) > at, timeout=10)  # due while the service is down
    with serving(config, tmp_path / "serve.log") as service:
        wait_for(lambda: RUN_LOGGED in service.log(), timeout=60)
    assert sorted(m.recipients[0] for m in sink.messages) == [f"p{n}@example.nl" for n in range(3)]
    assert service.log().count(RUN_LOGGED) == 1


RUN_LOGGED = "scheduled run of weekly"  # mailer/scheduler.py logs it when a run ends


@dataclass
class Service:
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")


def jobs_at_start(log: str) -> int:
    [count] = re.findall(r"scheduler started; (\d+) jobs", log)
    return int(count)


@contextmanager
def serving(config: Path, log_file: Path) -> Iterator[Service]:
    """`mailer serve` until the block ends; entered once it answers /healthz (the scheduler is
    started before the web server listens), left once it has shut down."""
    port = tomllib.loads(config.read_text(encoding="utf-8"))["web"]["port"]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [MAILER, "--config", str(config), "serve"],
            env=env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: process.poll() is not None or answers(port), timeout=60)
        assert process.poll() is None, log_file.read_text(encoding="utf-8")
        yield Service(log_file)
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (as systemd expects)
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_a_second_run_of_a_campaign_that_is_running_is_refused(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=20, recipients=60)
    # The server holds the fourth message until the second run has been tried, so the first
    # run is certainly still running then (on a busy machine it could otherwise finish first).
    release = threading.Event()

    def hold_after_three(message: CapturedMessage) -> None:
        if len(sink.messages) >= 3:
            release.wait(timeout=60)

    sink.reply = hold_after_three
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
        release.set()
        first.wait(timeout=60)
    assert len(sink.messages) == 60
    assert Counter(m.recipients[0] for m in sink.messages).most_common(1)[0][1] == 1
