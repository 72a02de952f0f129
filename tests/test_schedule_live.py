"""A running `mailer serve` picks up schedules written by other processes, and says what it did.

Real processes throughout: `mailer serve` as a subprocess, `mailer schedule ...` from another
one, the real SMTP sink. Waits are polls with deadlines.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from mailer.delivery.sink import SmtpSink
from tests.process_support import MAILER, env, mailer, wait_for, write_project

pytestmark = pytest.mark.slow
ZONE = ZoneInfo("Europe/Amsterdam")


def tune(config: Path, *, grace: float = 60, poll: float = 0.5) -> None:
    """Set the scheduler's misfire grace and job-store poll in the project's settings file."""
    text = config.read_text(encoding="utf-8").replace(
        "misfire_grace_seconds = 60", f"misfire_grace_seconds = {grace}\npoll_seconds = {poll}"
    )
    config.write_text(text, encoding="utf-8")


@contextmanager
def serving(config: Path) -> Iterator[Path]:
    """`mailer serve` running until the block ends; entered once its web side answers.
    Yields the file its log goes to."""
    port = int(re.search(r"\[web\]\nport = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    log = config.parent / "serve.log"
    with log.open("ab") as log_file:
        service = subprocess.Popen(
            [MAILER, "--config", str(config), "serve"],
            env=env(), stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip

    def answers() -> bool:
        assert service.poll() is None, "mailer serve stopped"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, timeout=60)
        yield log
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=20) in (0, -signal.SIGTERM)


def subjects(sink: SmtpSink) -> list[str]:
    return [str(BytesParser(policy=default).parsebytes(m.data)["Subject"]) for m in sink.messages]


# Starting a `mailer` process takes seconds on a loaded machine: times are set this far ahead.
AHEAD = 8.0


def schedule_at(config: Path, name: str, seconds: float = AHEAD) -> datetime:
    at = datetime.now(ZONE) + timedelta(seconds=seconds)
    mailer(config, "schedule", "add", name, "--at", at.isoformat(), check=True)
    return at


def test_a_schedule_added_while_serve_runs_is_sent_within_seconds_and_listed_as_running(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=2, recipients=20)
    tune(config)
    with serving(config):
        due = schedule_at(config, "weekly")
        wait_for(lambda: len(sink.messages) >= 1, timeout=60)
        first_at = datetime.now(ZONE)
        # Picked up by the running service, not after a restart: within 5 s of its time.
        assert first_at - due < timedelta(seconds=5)
        listed = mailer(config, "schedule", "list").stdout
        assert re.search(r"weekly\s+running now\s+last: running since ", listed), listed
        wait_for(lambda: len(sink.messages) == 20, timeout=60)
        wait_for(lambda: "No schedules." in mailer(config, "schedule", "list").stdout, 30)
    assert sorted(m.recipients[0] for m in sink.messages) == sorted(
        f"p{n}@example.nl" for n in range(20)
    )


def test_a_schedule_removed_while_serve_runs_is_not_sent(tmp_path: Path, sink: SmtpSink) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=3)
    tune(config)
    mailer(config, "campaign", "create", "other", "--list", "newsletter", "--subject", "Other",
           "--template", "newsletter", check=True)  # fmt: skip
    with serving(config):
        schedule_at(config, "weekly", 3 * AHEAD)
        mailer(config, "schedule", "remove", "weekly", check=True)
        # A later schedule that does fire shows that the service was awake past the first time.
        schedule_at(config, "other", 4 * AHEAD)
        wait_for(lambda: len(sink.messages) == 3, timeout=4 * AHEAD + 60)
    assert set(subjects(sink)) == {"Other"}


def test_a_changed_schedule_takes_the_new_time(tmp_path: Path, sink: SmtpSink) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=2)
    tune(config)
    with serving(config):
        schedule_at(config, "weekly", 3600)
        listed = mailer(config, "schedule", "list").stdout
        assert re.search(r"weekly\s+date\[.*\]\s+next run ", listed), listed
        due = schedule_at(config, "weekly")
        wait_for(lambda: len(sink.messages) == 2, timeout=60)
        assert datetime.now(ZONE) - due < timedelta(seconds=6)


def test_a_run_missed_beyond_the_grace_is_skipped_and_listed_as_missed(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=2)
    tune(config, grace=1)
    mailer(config, "campaign", "create", "other", "--list", "newsletter", "--subject", "Other",
           "--template", "newsletter", check=True)  # fmt: skip
    due = schedule_at(config, "weekly")
    # While nothing serves, the list says the run is overdue and what will happen to it.
    wait_for(lambda: "MISSED" in mailer(config, "schedule", "list").stdout, timeout=60)
    listed = mailer(config, "schedule", "list").stdout
    assert (
        "it is later than scheduler.misfire_grace_seconds (1 s), so that run will be skipped"
        in (listed)
    )
    assert datetime.now(ZONE) > due + timedelta(seconds=1)
    with serving(config) as log:
        # "other" fires after the service has looked at "weekly": then the outcome is known.
        schedule_at(config, "other")
        wait_for(lambda: len(sink.messages) == 2, timeout=60)
    listed = mailer(config, "schedule", "list").stdout
    skipped = (
        r"weekly\s+no further runs\s+last: missed .*\(due .*\): \d+ s late, more than "
        r"scheduler.misfire_grace_seconds \(1 s\): not sent"
    )
    assert re.search(skipped, listed), listed
    assert set(subjects(sink)) == {"Other"}
    logged = log.read_text(encoding="utf-8")
    assert 'scheduled run of "weekly" due' in logged and "skipped" in logged
    # The record stays until the schedule is removed.
    mailer(config, "schedule", "remove", "weekly", check=True)
    assert "No schedules." in mailer(config, "schedule", "list").stdout


def test_a_run_missed_within_the_grace_runs_once_when_serve_starts(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=3)
    tune(config)
    due = schedule_at(config, "weekly")
    wait_for(lambda: datetime.now(ZONE) > due + timedelta(seconds=1), timeout=60)
    with serving(config):
        wait_for(lambda: len(sink.messages) == 3, timeout=60)
    with serving(config):
        # A second start finds nothing due: the job left the store when it ran.
        assert "No schedules." in mailer(config, "schedule", "list").stdout
    assert len(sink.messages) == 3


def test_an_at_time_further_in_the_past_than_the_grace_is_refused(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=0, recipients=1)
    past = (datetime.now(ZONE) - timedelta(minutes=5)).isoformat()
    refused = mailer(config, "schedule", "add", "weekly", "--at", past)
    assert refused.returncode == 2
    assert f'--at "{past}" is more than scheduler.misfire_grace_seconds (60 s) in the past' in (
        refused.stderr
    )
    assert "No schedules." in mailer(config, "schedule", "list").stdout
