"""The ledger as a queue shared by workers: claims, leases, take-over, and the shared rate.

These run on SQLite and on PostgreSQL, with a clock the test moves, and no SMTP server: what
is checked is which worker may send which row, and when.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from mailer.config import Settings
from mailer.core.throttle import TokenBucket
from mailer.core.tokens import address_hashes
from mailer.delivery.sending import queue_campaign
from mailer.store.ledger import DueDelivery, Ledger, TakeOver
from mailer.store.models import (
    Campaign,
    ConsentEvent,
    ConsentOrigin,
    Delivery,
    DeliveryStatus,
    SuppressionReason,
)
from mailer.store.planning import ConsentFact, materialise
from mailer.store.sharedrate import SharedRate
from tests.conftest import SECRET, make_settings
from tests.factories import add_contact, new_campaign, seed_consenting_contacts, suppress

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
LEASE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def queued_campaign(engine: Engine, settings: Settings, people: int) -> int:
    for n in range(people):
        add_contact(
            engine, settings, f"p{n}@example.nl", at=NOW,
            consents=[ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB,
                                  NOW - timedelta(days=3))],
        )  # fmt: skip
    campaign = new_campaign(engine, settings, "nov", at=NOW)
    queue_campaign(engine, settings, campaign, clock=lambda: NOW)
    assert campaign.id is not None
    return campaign.id


def worker(engine: Engine, name: str, clock: Clock) -> Ledger:
    return Ledger(engine, owner=name, key_count=1, lease_seconds=LEASE, clock=clock)


def start(ledger: Ledger, job: DueDelivery) -> int | str | None:
    """Mark the row `sending` on one of the worker's lanes, as a sending connection does."""
    lane = ledger.lane()
    try:
        return lane.start(job, "newsletter", address_hashes(job.recipient.email, (SECRET,)))
    finally:
        lane.close()


def record(ledger: Ledger, delivery_id: int, **outcome: Any) -> None:
    lane = ledger.lane()
    try:
        lane.record(delivery_id, **outcome)
    finally:
        lane.close()


def status_counts(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(select(Delivery.status)).scalars())


def test_two_workers_claim_disjoint_batches_until_nothing_is_left(
    engine: Engine, settings: Settings
) -> None:
    queued_campaign(engine, settings, 7)
    clock = Clock()
    with worker(engine, "a", clock) as a, worker(engine, "b", clock) as b:
        first, second, third = a.claim(3), b.claim(3), a.claim(3)
        assert [len(first), len(second), len(third)] == [3, 3, 1]
        emails = [job.recipient.email for job in first + second + third]
        assert sorted(emails) == sorted(f"p{n}@example.nl" for n in range(7))
        assert b.claim(3) == []
        assert status_counts(engine) == {"claimed": 7}


def test_a_row_is_sent_only_by_the_worker_that_holds_it(engine: Engine, settings: Settings) -> None:
    queued_campaign(engine, settings, 2)
    clock = Clock()
    with worker(engine, "a", clock) as a, worker(engine, "b", clock) as b:
        job = a.claim(1)[0]
        assert start(b, job) is None  # b never claimed it
        assert start(a, job) == 1  # first attempt
        assert start(a, job) is None  # already being sent


def test_a_suppression_made_after_the_claim_still_stops_the_send(
    engine: Engine, settings: Settings
) -> None:
    queued_campaign(engine, settings, 1)
    with worker(engine, "a", Clock()) as a:
        job = a.claim(1)[0]
        suppress(engine, settings, job.recipient.email, SuppressionReason.UNSUBSCRIBED, NOW)
        assert start(a, job) == "suppressed"
    assert status_counts(engine) == {"suppressed": 1}


def test_claims_of_a_worker_that_stopped_renewing_are_taken_over_after_the_lease(
    engine: Engine, settings: Settings
) -> None:
    queued_campaign(engine, settings, 4)
    clock = Clock()
    with worker(engine, "gone:1:x", clock) as gone, worker(engine, "b", clock) as b:
        held = gone.claim(4)
        assert start(gone, held[0]) == 1  # handed to the server when the worker vanished

        clock.now += timedelta(seconds=LEASE - 1)
        assert b.take_over() == TakeOver()  # the lease still holds
        assert b.claim(4) == []

        clock.now += timedelta(seconds=2)
        assert b.take_over() == TakeOver(requeued=3, in_doubt=1)
        assert status_counts(engine) == {"queued": 3, "unknown": 1}  # in doubt: never resent
        retaken = b.claim(4)
        assert {j.delivery_id for j in retaken} == {j.delivery_id for j in held[1:]}
        assert start(gone, held[1]) is None  # woken up, the old owner may not send it


def test_a_worker_that_renews_keeps_its_claims(engine: Engine, settings: Settings) -> None:
    queued_campaign(engine, settings, 2)
    clock = Clock()
    with worker(engine, "a", clock) as a, worker(engine, "b", clock) as b:
        a.claim(2)
        for _ in range(3):
            clock.now += timedelta(seconds=LEASE * 2 / 3)
            a.renew()
            assert b.take_over() == TakeOver()
        assert status_counts(engine) == {"claimed": 2}


def test_claims_of_a_dead_process_on_this_host_are_taken_over_at_once(
    engine: Engine, settings: Settings
) -> None:
    queued_campaign(engine, settings, 3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    clock = Clock()
    owner = f"{socket.gethostname()}:{dead.stdout.strip()}:x"
    with worker(engine, owner, clock) as gone, worker(engine, "b", clock) as b:
        gone.claim(3)
        assert b.take_over() == TakeOver(requeued=3)


def test_release_gives_back_what_was_claimed_and_marks_what_was_being_sent_unknown(
    engine: Engine, settings: Settings
) -> None:
    queued_campaign(engine, settings, 3)
    with worker(engine, "a", Clock()) as a:
        jobs = a.claim(3)
        start(a, jobs[0])
        assert a.release() == TakeOver(requeued=2, in_doubt=1)
    assert status_counts(engine) == {"queued": 2, "unknown": 1}


def campaign_status(engine: Engine, campaign_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(Campaign.status).where(Campaign.id == campaign_id)).scalar())


def test_only_running_campaigns_are_claimed_and_a_finished_one_is_marked_done(
    engine: Engine, settings: Settings
) -> None:
    campaign_id = queued_campaign(engine, settings, 1)
    draft = new_campaign(engine, settings, "draft", at=NOW)
    materialise(engine, settings, draft, NOW)  # queued rows, but nobody started the campaign
    with worker(engine, "a", Clock()) as a:
        jobs = a.claim(5)
        assert [j.campaign_id for j in jobs] == [campaign_id]
        a.finish_campaigns()
        assert campaign_status(engine, campaign_id) == "running"  # a row is still held
        assert start(a, jobs[0]) == 1
        record(a, jobs[0].delivery_id, status=DeliveryStatus.SENT, smtp_reply="250 OK",
                 message_id="<m@x>", at=NOW)  # fmt: skip
        assert not a.pending(campaign_id)
        a.finish_campaigns()
    assert campaign_status(engine, campaign_id) == "done"
    assert campaign_status(engine, draft.id or 0) == "draft"


def test_a_deferred_row_is_claimed_again_when_its_retry_is_due(
    engine: Engine, settings: Settings
) -> None:
    queued_campaign(engine, settings, 1)
    clock = Clock()
    with worker(engine, "a", clock) as a:
        job = a.claim(1)[0]
        start(a, job)
        retry_at = NOW + timedelta(seconds=60)
        record(a, job.delivery_id, status=DeliveryStatus.DEFERRED, smtp_reply="451 later",
                 message_id="<m@x>", at=NOW, next_attempt_at=retry_at)  # fmt: skip
        assert a.claim(1) == []
        assert a.next_retry_at() == retry_at
        clock.now = retry_at
        assert [j.delivery_id for j in a.claim(1)] == [job.delivery_id]
        assert start(a, job) == 2  # the second attempt


def test_many_threads_claiming_at_once_take_every_row_exactly_once(
    engine: Engine, settings: Settings
) -> None:
    queued_campaign(engine, settings, 200)
    taken: list[int] = []
    lock = threading.Lock()

    def claim_all(name: str) -> None:
        with worker(engine, name, Clock()) as ledger:
            while batch := ledger.claim(7):
                with lock:
                    taken.extend(job.delivery_id for job in batch)

    threads = [threading.Thread(target=claim_all, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == len(set(taken)) == 200


def test_the_shared_rate_books_the_same_slots_as_a_token_bucket_across_workers(
    engine: Engine,
) -> None:
    now = [1000.0]
    workers = [SharedRate(engine, clock=lambda: now[0]) for _ in range(3)]
    bucket = TokenBucket(4.0)  # 0.25 s apart
    try:
        for step, at in enumerate([1000.0, 1000.0, 1000.1, 1000.1, 1002.0, 1002.05, 1010.0]):
            now[0] = at
            expected = bucket.reserve(at) - at
            assert workers[step % 3].delay("*", 0.25) == pytest.approx(expected)
        # Another bucket (a domain) is independent of the global one.
        assert workers[0].delay("@example.nl", 1.0) == 0.0
    finally:
        for rate in workers:
            rate.close()


def test_the_shared_rate_uses_the_database_clock(engine: Engine) -> None:
    rate = SharedRate(engine)
    try:
        delays = [rate.delay("*", 0.5) for _ in range(3)]
    finally:
        rate.close()
    assert delays[0] == pytest.approx(0.0, abs=0.05)
    assert delays[1] == pytest.approx(0.5, abs=0.05)
    assert delays[2] == pytest.approx(1.0, abs=0.05)


def test_after_queueing_on_postgresql_a_claim_picks_its_rows_by_index_not_by_sorting_them(
    postgres_url: str, postgres_engine: Engine
) -> None:
    """A worker started right after `campaign queue` claims a batch without sorting the whole
    queue (the planner had no statistics for the rows just copied in) nor reading every
    contact to find the batch's people."""
    settings = make_settings(postgres_url)
    seed_consenting_contacts(postgres_engine, 20_000)
    campaign = new_campaign(postgres_engine, settings, "nov", at=NOW)
    queue_campaign(postgres_engine, settings, campaign, clock=lambda: NOW)
    ledger = worker(postgres_engine, "w1", Clock())
    claimed: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        claimed.append((sql, params))

    event.listen(postgres_engine, "before_cursor_execute", keep)
    try:
        assert len(ledger.claim(50)) == 50
    finally:
        event.remove(postgres_engine, "before_cursor_execute", keep)
    plans = []
    with postgres_engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for sql, params in claimed:
            if sql.lstrip().upper().startswith(("WITH", "SELECT")):
                cursor.execute("EXPLAIN " + sql, params)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
        conn.rollback()
    assert len(plans) == 2, plans  # the claim, then the batch's people
    claim, people = plans
    assert "Sort" not in claim, claim
    assert "Seq Scan on contact" not in people, people
    ledger.close()


def test_a_worker_stopped_inside_a_transaction_holds_the_others_up_no_longer_than_its_lease(
    postgres_url: str, postgres_engine: Engine
) -> None:
    """A worker stopped (SIGSTOP, a paused VM) between the statement and the commit of its
    lease renewal keeps the locks on every row it holds: the server ends that session after
    the lease, so another worker's take-over goes through; the stopped one, going on, finds
    its rows gone and claims again on a new connection."""
    settings = make_settings(postgres_url)
    seed_consenting_contacts(postgres_engine, 20)
    campaign = new_campaign(postgres_engine, settings, "nov", at=NOW)
    queue_campaign(postgres_engine, settings, campaign, clock=lambda: NOW)
    clock = Clock()
    stopped = Ledger(postgres_engine, owner="stopped", key_count=1, lease_seconds=1, clock=clock)
    other = Ledger(postgres_engine, owner="other", key_count=1, lease_seconds=1, clock=clock)
    held = {job.delivery_id for job in stopped.claim(5)}
    inside, resume = threading.Event(), threading.Event()
    failures: list[Exception] = []

    def stop_before_the_commit(conn: Any, cursor: Any, sql: str, *rest: Any) -> None:
        if threading.current_thread() is renewing and sql.startswith("UPDATE delivery SET lease"):
            inside.set()
            resume.wait(30)  # stopped, its transaction open, its rows locked

    def renew() -> None:
        try:
            stopped.renew()
        except Exception as error:  # what the test reports
            failures.append(error)

    event.listen(postgres_engine, "after_cursor_execute", stop_before_the_commit)
    renewing = threading.Thread(target=renew)
    try:
        renewing.start()
        assert inside.wait(30)
        clock.now += timedelta(seconds=5)  # the stopped worker's lease has expired
        taken = other.take_over()  # waits for those locks until the server ends that session
        assert renewing.is_alive()  # it went through while the other worker was still stopped
    finally:
        resume.set()
        renewing.join(30)
        event.remove(postgres_engine, "after_cursor_execute", stop_before_the_commit)
    assert taken.requeued == len(held) == 5
    assert failures == []  # its renewal was made again, on a new connection: nothing to renew
    mine = {job.delivery_id for job in stopped.claim(5)}
    theirs = {job.delivery_id for job in other.claim(50)}
    assert len(mine) == 5 and not mine & theirs
    assert held <= theirs | mine
    stopped.close()
    other.close()
