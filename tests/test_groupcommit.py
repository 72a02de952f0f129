"""Group commit: the lane statements of one worker's connections in one transaction.

On SQLite and PostgreSQL (where the group goes out in one round trip, pipelined): a group is
written as a whole or not at all, each lane gets its own answer, and a failed group leaves
the shared connection fit for the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.core.tokens import address_hashes
from mailer.store.lane import DueDelivery, Lane, LaneConnection, Outcome, Steps
from mailer.store.ledger import Ledger
from mailer.store.models import Delivery, DeliveryStatus, SuppressionReason
from tests.conftest import SECRET
from tests.factories import suppress
from tests.test_ledger_queue import NOW, Clock, queued_campaign, worker

World = tuple[Ledger, LaneConnection, list[Lane], list[DueDelivery]]


@pytest.fixture
def world(engine: Engine, settings: Settings) -> Iterator[World]:
    queued_campaign(engine, settings, 4)
    with worker(engine, "a", Clock()) as ledger:
        jobs = ledger.claim(4)
        shared = LaneConnection(engine)
        lanes = [ledger.lane(shared) for _ in range(3)]
        try:
            yield ledger, shared, lanes, jobs
        finally:
            for lane in lanes:
                lane.close()
            shared.close()


def _starting(lane: Lane, job: DueDelivery, previous: Outcome | None = None) -> Steps[object]:
    hashes = address_hashes(job.recipient.email, (SECRET,))
    return lane.starting(job, "newsletter", hashes, previous=previous)


def _refused(cursor: Any) -> Steps[None]:
    """A lane statement the database refuses."""
    cursor.execute("SELECT no_such_column FROM delivery")
    yield


def _status(engine: Engine) -> dict[int, str]:
    d = Delivery.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return {r.id: r.status for r in conn.execute(select(d.c.id, d.c.status))}


def test_a_group_writes_every_lane_and_answers_each(engine: Engine, world: World) -> None:
    _ledger, shared, (one, two, three), (first, second, third, _fourth) = world
    assert shared.together([lambda: _starting(one, first)]) == [1]
    sent = Outcome(first.delivery_id, DeliveryStatus.SENT, "250 ok", "<m@x>", NOW)
    answers = shared.together(
        [lambda: _starting(one, second, previous=sent), lambda: _starting(two, third)]
    )
    assert answers == [1, 1]
    status = _status(engine)
    assert status[first.delivery_id] == "sent"
    assert status[second.delivery_id] == status[third.delivery_id] == "sending"


def test_a_lane_found_suppressed_in_a_group_is_marked_so_and_the_others_start(
    engine: Engine, settings: Settings, world: World
) -> None:
    _ledger, shared, (one, two, _three), (first, second, _third, _fourth) = world
    suppress(engine, settings, second.recipient.email, SuppressionReason.UNSUBSCRIBED, NOW)
    answers = shared.together([lambda: _starting(one, first), lambda: _starting(two, second)])
    assert answers == [1, "suppressed"]
    status = _status(engine)
    assert (status[first.delivery_id], status[second.delivery_id]) == ("sending", "suppressed")


def test_a_group_with_a_failing_statement_writes_nothing_and_the_next_group_works(
    engine: Engine, world: World
) -> None:
    _ledger, shared, (one, two, three), (first, second, third, _fourth) = world
    cursor = shared.new_cursor()
    with pytest.raises(Exception, match="no_such_column"):
        shared.together(
            [
                lambda: _starting(one, first),
                lambda: _refused(cursor),
                lambda: _starting(two, second),
            ]
        )
    status = _status(engine)
    assert status[first.delivery_id] == status[second.delivery_id] == "claimed"
    assert shared.together([lambda: _starting(one, first), lambda: _starting(three, third)]) == [
        1,
        1,
    ]
    status = _status(engine)
    assert status[first.delivery_id] == status[third.delivery_id] == "sending"
