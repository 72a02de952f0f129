"""Pause, cancel and SIGTERM of a running `mailer campaign send`, each from another process.

Real processes against the real SMTP sink with a slow throttle: what the server received before
and after the command returned is what a user would check.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from mailer.delivery.sink import SmtpSink
from tests.process_support import MAILER, env, mailer, wait_for, write_project

pytestmark = pytest.mark.slow
TOTAL = 40
CONNECTIONS = 2  # smtp.max_connections in write_project


def start_send(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MAILER, "--config", str(config), "campaign", "send", "weekly"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def by_status(config: Path) -> Counter[str]:
    report = json.loads(mailer(config, "campaign", "report", "weekly", "--json").stdout)
    return Counter(r["status"] for r in report["recipients"])


def assert_nobody_twice(sink: SmtpSink) -> None:
    assert Counter(m.recipients[0] for m in sink.messages).most_common(1)[0][1] == 1


def test_pause_from_another_process_stops_the_send_and_resume_finishes_it(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=2, recipients=TOTAL)
    sending = start_send(config)
    try:
        wait_for(lambda: len(sink.messages) >= 3, timeout=60)
        paused = mailer(config, "campaign", "pause", "weekly", "--reason", "checking a link")
        at_return = len(sink.messages)
        assert paused.returncode == 0, paused.stderr
        assert 'Campaign "weekly" paused' in paused.stdout
    finally:
        code, out, err = finish(sending)
    # What was being handed over when the pause committed may finish: one per connection.
    assert at_return <= len(sink.messages) <= at_return + CONNECTIONS
    assert code == 1
    assert 'Campaign "weekly" was paused (checking a link, ' in err
    assert "To continue: `mailer campaign resume weekly`, then `mailer campaign send weekly`" in (
        err
    )
    stopped_at = len(sink.messages)
    assert stopped_at < TOTAL
    counts = by_status(config)
    assert counts["claimed"] == counts["sending"] == 0  # nothing held by the stopped run
    assert counts["queued"] == TOTAL - stopped_at

    again = mailer(config, "campaign", "send", "weekly")
    assert again.returncode == 1 and "was paused" in again.stderr
    assert len(sink.messages) == stopped_at  # a paused campaign is not sent

    resumed = mailer(config, "campaign", "resume", "weekly", check=True)
    assert 'Campaign "weekly" is running again' in resumed.stdout
    done = mailer(config, "campaign", "send", "weekly")
    assert done.returncode == 0, done.stderr
    assert sorted(m.recipients[0] for m in sink.messages) == sorted(
        f"p{n}@example.nl" for n in range(TOTAL)
    )
    assert_nobody_twice(sink)


def test_cancel_from_another_process_stops_the_send_and_counts_the_rest_cancelled(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=2, recipients=TOTAL)
    sending = start_send(config)
    try:
        wait_for(lambda: len(sink.messages) >= 3, timeout=60)
        cancelled = mailer(config, "campaign", "cancel", "weekly")
        at_return = len(sink.messages)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "deliveries not yet sent are marked cancelled" in cancelled.stdout
    finally:
        code, _out, err = finish(sending)
    assert at_return <= len(sink.messages) <= at_return + CONNECTIONS
    assert code == 1
    assert 'Campaign "weekly" was cancelled (cancelled by `mailer campaign cancel` on ' in err
    counts = by_status(config)
    assert counts["sent"] == len(sink.messages)
    assert counts["cancelled"] == TOTAL - len(sink.messages)
    report = mailer(config, "campaign", "report", "weekly").stdout
    assert "cancelled" in report

    later = mailer(config, "campaign", "send", "weekly")
    assert later.returncode == 1
    assert f"{TOTAL - len(sink.messages)} deliveries were cancelled and are never sent" in (
        later.stderr
    )
    assert by_status(config)["cancelled"] == TOTAL - len(sink.messages)
    assert_nobody_twice(sink)


def test_sigterm_of_campaign_send_gives_back_its_claims_and_says_how_to_resume(
    tmp_path: Path, sink: SmtpSink
) -> None:
    config = write_project(tmp_path, sink, rate=2, recipients=TOTAL)
    sending = start_send(config)
    try:
        wait_for(lambda: len(sink.messages) >= 3, timeout=60)
        sending.send_signal(signal.SIGTERM)
    finally:
        code, _out, err = finish(sending)
    assert code == 1
    assert "was stopped; what this run had claimed was given back" in err
    assert "To continue: `mailer campaign send weekly`" in err
    stopped_at = len(sink.messages)
    counts = by_status(config)
    assert counts["claimed"] == counts["sending"] == counts["unknown"] == 0
    assert counts["queued"] == TOTAL - stopped_at

    done = mailer(config, "campaign", "send", "weekly")
    assert done.returncode == 0, done.stderr
    assert len(sink.messages) == TOTAL
    assert_nobody_twice(sink)


def test_a_running_worker_stops_at_a_pause_and_picks_the_campaign_up_again_on_resume(
    tmp_path: Path, sink: SmtpSink
) -> None:
    extra = "[worker]\nbatch_size = 10\npoll_seconds = 0.2\n"
    config = write_project(tmp_path, sink, rate=2, recipients=TOTAL, extra=extra)
    mailer(config, "campaign", "queue", "weekly", check=True)
    # Every running campaign, until stopped: the worker stays up through pause and resume.
    worker = subprocess.Popen(
        [MAILER, "--config", str(config), "worker"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: len(sink.messages) >= 3, timeout=60)
        mailer(config, "campaign", "pause", "weekly", check=True)
        at_return = len(sink.messages)
        # Its claims go back to the queue without waiting for throttle turns.
        wait_for(lambda: by_status(config)["claimed"] == 0, timeout=30)
        assert at_return <= len(sink.messages) <= at_return + CONNECTIONS
        assert by_status(config)["queued"] == TOTAL - len(sink.messages)
        assert worker.poll() is None

        mailer(config, "campaign", "resume", "weekly", check=True)
        wait_for(lambda: len(sink.messages) == TOTAL, timeout=120)
        wait_for(lambda: "done" in mailer(config, "campaign", "report", "weekly").stdout, 30)
    finally:
        worker.send_signal(signal.SIGTERM)
        code, _out, err = finish(worker)
    assert code == 0, err
    assert_nobody_twice(sink)
