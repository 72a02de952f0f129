"""One commit per message: a connection's last outcome is written with the start of its next.

On SQLite and PostgreSQL: the one statement records the last row and marks the next `sending`,
so after it (or a crash right after it) the connection holds exactly one row in doubt; and the
last outcome is written even when the next row turns out suppressed or no longer ours.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.core.tokens import address_hashes
from mailer.store.lane import DueDelivery, Lane, Outcome
from mailer.store.ledger import Ledger
from mailer.store.models import Delivery, DeliveryStatus, SuppressionReason
from tests.conftest import SECRET
from tests.factories import suppress
from tests.test_ledger_queue import NOW, Clock, queued_campaign, worker


@pytest.fixture
def lane(engine: Engine, settings: Settings) -> Iterator[tuple[Ledger, Lane, list[DueDelivery]]]:
    queued_campaign(engine, settings, 3)
    with worker(engine, "a", Clock()) as ledger:
        jobs = ledger.claim(3)
        lane = ledger.lane()
        try:
            yield ledger, lane, jobs
        finally:
            lane.close()


def _start(lane: Lane, job: DueDelivery, previous: Outcome | None = None) -> int | str | None:
    hashes = address_hashes(job.recipient.email, (SECRET,))
    return lane.start(job, "newsletter", hashes, previous=previous)


def _rows(engine: Engine) -> dict[int, tuple[str, int, str | None, str | None]]:
    d = Delivery.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        columns = (d.c.id, d.c.status, d.c.attempts, d.c.smtp_reply, d.c.lease_owner)
        rows = conn.execute(select(*columns))
        return {r.id: (r.status, r.attempts, r.smtp_reply, r.lease_owner) for r in rows}


def _sent(job: DueDelivery) -> Outcome:
    return Outcome(job.delivery_id, DeliveryStatus.SENT, "250 OK", "<m@x>", NOW)


def test_the_last_outcome_and_the_next_start_are_written_together(
    engine: Engine, lane: tuple[Ledger, Lane, list[DueDelivery]]
) -> None:
    _ledger, path, (first, second, third) = lane
    assert _start(path, first) == 1
    assert _start(path, second, previous=_sent(first)) == 1
    rows = _rows(engine)
    assert rows[first.delivery_id] == ("sent", 1, "250 OK", None)
    assert rows[second.delivery_id] == ("sending", 1, None, "a")  # the one row in doubt
    assert rows[third.delivery_id][0] == "claimed"  # untouched: queued again after a crash


def test_the_last_outcome_is_written_when_the_next_person_was_suppressed_meanwhile(
    engine: Engine, settings: Settings, lane: tuple[Ledger, Lane, list[DueDelivery]]
) -> None:
    _ledger, path, (first, second, _third) = lane
    assert _start(path, first) == 1
    suppress(engine, settings, second.recipient.email, SuppressionReason.UNSUBSCRIBED, NOW)
    assert _start(path, second, previous=_sent(first)) == "suppressed"
    rows = _rows(engine)
    assert rows[first.delivery_id][0] == "sent"
    assert rows[second.delivery_id][0] == "suppressed"


def test_the_last_outcome_is_written_when_the_next_row_is_no_longer_this_workers(
    engine: Engine, lane: tuple[Ledger, Lane, list[DueDelivery]]
) -> None:
    ledger, path, (first, second, _third) = lane
    assert _start(path, first) == 1
    with worker(engine, "b", Clock()) as other:
        others = other.lane()
        try:
            assert _start(others, second) is None  # b never claimed it
        finally:
            others.close()
    ledger.release()  # a's claims go back to the queue: second is not a's any more
    assert _start(path, second, previous=_sent(first)) is None
    rows = _rows(engine)
    # Released while sending it was marked unknown; the reply that came tells what happened.
    assert rows[first.delivery_id][0] == "sent"
    assert rows[second.delivery_id][0] == "queued"
