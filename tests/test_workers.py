"""Several `mailer worker` processes on one PostgreSQL database and one real SMTP server.

What a user of several workers checks: everybody is mailed exactly once however the work was
shared; a worker that is killed or hangs leaves its share to the others; the configured rate
holds for all workers together, not for each.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailer.delivery.sink import SmtpSink
from tests.process_support import MAILER, env, mailer, wait_for, write_project

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)]

WORKER_SETTINGS = """
[worker]
batch_size = 10
lease_seconds = 2
poll_seconds = 0.2
"""


def start_worker(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A `mailer worker` process; what it prints goes to worker.log beside the config."""
    log = (config.parent / "worker.log").open("ab")
    with log:
        return subprocess.Popen(
            [MAILER, "--config", str(config), "worker", "--campaign", "weekly", *extra],
            env=env(), stdout=log, stderr=log,
        )  # fmt: skip


def log_of(config: Path) -> str:
    return (config.parent / "worker.log").read_text(encoding="utf-8", errors="replace")


def report(config: Path) -> dict[str, Any]:
    shown = mailer(config, "campaign", "report", "weekly", "--json", check=True)
    result: dict[str, Any] = json.loads(shown.stdout)
    return result


def statuses(config: Path) -> list[dict[str, str]]:
    recipients: list[dict[str, str]] = report(config)["recipients"]
    return recipients


def mailed_at_most_once(config: Path, sink: SmtpSink, total: int) -> set[str]:
    """Check nobody got two messages and every row is sent or in doubt; return those in doubt.

    In doubt (`unknown`) are only rows a stopped worker was handing to the server: they may or
    may not have arrived, and are never sent again.
    """
    received = Counter(m.recipients[0] for m in sink.messages)
    assert max(received.values()) == 1, "somebody was mailed twice"
    rows = statuses(config)
    in_doubt = {r["email"] for r in rows if r["status"] == "unknown"}
    assert Counter(r["status"] for r in rows)["sent"] + len(in_doubt) == total
    assert {f"p{n}@example.nl" for n in range(total)} - set(received) <= in_doubt
    return in_doubt


def busiest_second(times: list[float]) -> int:
    return max(sum(1 for t in times if first <= t < first + 1.0) for first in times)


def test_three_workers_mail_everyone_once_and_share_one_rate(
    tmp_path: Path, sink: SmtpSink, db_url: str
) -> None:
    total, rate = 90, 30
    config = write_project(
        tmp_path, sink, rate=rate, recipients=total, database_url=db_url, extra=WORKER_SETTINGS
    )
    sent = mailer(config, "campaign", "send", "weekly", "--workers", "3")
    assert sent.returncode == 0, sent.stderr

    received = Counter(m.recipients[0] for m in sink.messages)
    assert received == {f"p{n}@example.nl": 1 for n in range(total)}
    assert {r["status"] for r in statuses(config)} == {"sent"}
    assert report(config)["status"] == "done"
    times = sorted(m.received_at for m in sink.messages)
    # Three workers, each allowed the full rate on its own, would take a third of this.
    assert times[-1] - times[0] >= (total - 1) / rate - 0.25
    # Slots are spaced 1/rate apart for all workers together; a message can arrive a little
    # after its slot (the process was not scheduled at once), so one such late arrival may
    # share a second with the next slots.
    assert busiest_second(times) <= rate + 3


def test_a_killed_worker_leaves_its_share_to_the_others(
    tmp_path: Path, sink: SmtpSink, db_url: str
) -> None:
    total = 120
    config = write_project(
        tmp_path, sink, rate=40, recipients=total, database_url=db_url, extra=WORKER_SETTINGS
    )
    mailer(config, "campaign", "queue", "weekly", check=True)
    workers = [start_worker(config, "--until-done") for _ in range(3)]
    wait_for(lambda: len(sink.messages) >= 30, timeout=60)
    workers[0].send_signal(signal.SIGKILL)
    for survivor in workers[1:]:
        assert survivor.wait(timeout=60) == 0, log_of(config)
    workers[0].wait()

    in_doubt = mailed_at_most_once(config, sink, total)
    # Only what the killed worker was handing over may be in doubt: one per connection.
    assert len(in_doubt) <= 2
    sent_by_survivors = re.findall(r"Worker stopped: .*?(\d+) sent", log_of(config))
    assert len(sent_by_survivors) == 2 and all(int(n) > 0 for n in sent_by_survivors)


def test_a_hung_worker_loses_its_claims_when_its_lease_expires(
    tmp_path: Path, sink: SmtpSink, db_url: str
) -> None:
    total = 100
    config = write_project(
        tmp_path, sink, rate=40, recipients=total, database_url=db_url, extra=WORKER_SETTINGS
    )
    mailer(config, "campaign", "queue", "weekly", check=True)
    workers = [start_worker(config, "--until-done") for _ in range(2)]
    wait_for(lambda: len(sink.messages) >= 20, timeout=60)
    workers[0].send_signal(signal.SIGSTOP)  # alive, so only the lease can free its claims
    stopped_at = time.monotonic()
    try:
        assert workers[1].wait(timeout=60) == 0, log_of(config)
        finished_at = time.monotonic()
    finally:
        workers[0].send_signal(signal.SIGCONT)
    # Woken up, it finds its claims gone and does not send them: it just finishes.
    assert workers[0].wait(timeout=30) == 0, log_of(config)

    mailed_at_most_once(config, sink, total)
    assert finished_at - stopped_at >= 2 - 0.5  # the other waited for the 2 s lease


def test_a_worker_stopped_with_sigterm_gives_back_what_it_had_claimed(
    tmp_path: Path, sink: SmtpSink, db_url: str
) -> None:
    total = 60
    config = write_project(
        tmp_path, sink, rate=10, recipients=total, database_url=db_url, extra=WORKER_SETTINGS
    )
    mailer(config, "campaign", "queue", "weekly", check=True)
    worker = start_worker(config)  # no --until-done: it would wait for more work
    wait_for(lambda: len(sink.messages) >= 5, timeout=60)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0, log_of(config)

    assert report(config)["status"] == "running"
    by_status = Counter(r["status"] for r in statuses(config))
    assert set(by_status) <= {"sent", "queued"}, by_status
    assert by_status["sent"] == len(sink.messages)
    assert by_status["queued"] == total - len(sink.messages) > 0

    # A next worker finishes the campaign and marks it done.
    again = start_worker(config, "--until-done")
    assert again.wait(timeout=60) == 0, log_of(config)
    assert Counter(m.recipients[0] for m in sink.messages) == {
        f"p{n}@example.nl": 1 for n in range(total)
    }
    assert report(config)["status"] == "done"
